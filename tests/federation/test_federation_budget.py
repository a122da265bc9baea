"""Budget ledger and breaker: defaults, ceilings, hop accounting, default breaker policy."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ruflo_consensus.federation.budget import (
    DEFAULT_MAX_HOPS,
    MAX_HOPS_CEILING,
    MAX_TOKENS_CEILING,
    MAX_USD_CEILING,
    BreakerPolicy,
    BreakerState,
    Budget,
    BudgetLedger,
    validate_budget,
)
from ruflo_consensus.federation.errors import InvalidBudget
from ruflo_consensus.statemachine import CommandError

T0 = 2_000_000_000
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
INF = float("inf")
NAN = float("nan")


def rejected(machine: Any, command: dict[str, Any], code: str) -> CommandError:
    before = machine.snapshot()
    with pytest.raises(CommandError) as info:
        machine.apply(command)
    assert info.value.code == code, info.value
    assert machine.snapshot() == before
    return info.value


def ledger(*peers: str, policy: BreakerPolicy | None = None) -> BudgetLedger:
    bl = BudgetLedger(policy)
    for p in peers:
        bl.apply({"op": "add_peer", "peer": p, "now": T0})
    return bl


def open_(bl: BudgetLedger, name: str, now: int = T0, **budget: Any) -> None:
    bl.apply({"op": "open", "delegation": name, "budget": budget, "now": now})


def hop(bl: BudgetLedger, name: str, peer: str, now: int = T0, **spend: Any) -> dict[str, Any]:
    result: dict[str, Any] = bl.apply(
        {"op": "budget.hop", "delegation": name, "peer": peer, "now": now, **spend}
    )
    return result


# ------------------------------------------------------------ budget validation


def test_defaults_and_ceilings() -> None:
    assert validate_budget(None) == Budget(max_hops=8, max_tokens=None, max_usd_micros=None)
    assert (DEFAULT_MAX_HOPS, MAX_HOPS_CEILING) == (8, 64)
    assert (MAX_TOKENS_CEILING, MAX_USD_CEILING) == (1_000_000_000, 1_000_000)
    top = validate_budget({"max_hops": 64, "max_tokens": 1_000_000_000, "max_usd": 1_000_000})
    assert top == Budget(64, 1_000_000_000, 1_000_000_000_000)
    assert validate_budget({"max_hops": 3.0, "max_usd": 0.1}) == Budget(3, None, 100_000)
    # +inf is the unbounded default for tokens and USD.
    assert validate_budget({"max_tokens": INF, "max_usd": INF}) == Budget(8, None, None)
    assert validate_budget({"max_hops": 0}).max_hops == 0


@pytest.mark.parametrize(
    "budget",
    [
        {"max_hops": 65},
        {"max_hops": -1},
        {"max_hops": 2.5},
        {"max_hops": NAN},
        {"max_hops": INF},
        {"max_hops": True},
        {"max_hops": "8"},
        {"max_tokens": 1_000_000_001},
        {"max_tokens": -INF},
        {"max_tokens": 10.5},
        {"max_tokens": -1},
        {"max_usd": 1_000_000.01},
        {"max_usd": NAN},
        {"max_usd": -0.01},
        {"max_usd": -INF},
        {"maxHops": 3},
        [8],
    ],
)
def test_invalid_budgets(budget: Any) -> None:
    with pytest.raises(InvalidBudget):
        validate_budget(budget)
    bl = ledger("a")
    rejected(bl, {"op": "open", "delegation": "d", "budget": budget, "now": T0}, "INVALID_BUDGET")


# ------------------------------------------------------------- hop accounting


def test_default_hop_limit_is_eight() -> None:
    bl = ledger("a")
    open_(bl, "d")
    assert [hop(bl, "d", "a")["hops"] for _ in range(8)] == list(range(1, 9))
    rejected(bl, {"op": "hop", "delegation": "d", "peer": "a", "now": T0}, "HOP_LIMIT_EXCEEDED")


def test_zero_hops_forbids_remote_delegation() -> None:
    bl = ledger("a")
    open_(bl, "d", max_hops=0)
    rejected(bl, {"op": "hop", "delegation": "d", "peer": "a", "now": T0}, "HOP_LIMIT_EXCEEDED")


def test_tokens_and_usd_to_exactly_zero() -> None:
    bl = ledger("a")
    open_(bl, "d", max_tokens=100, max_usd=1.0)
    hop(bl, "d", "a", tokens=60, usd=0.6)
    err = rejected(
        bl,
        {"op": "hop", "delegation": "d", "peer": "a", "tokens": 41, "now": T0},
        "BUDGET_EXCEEDED",
    )
    assert not re.search(r"\d", err.message), "errors must not reveal the remaining budget"
    err = rejected(
        bl, {"op": "hop", "delegation": "d", "peer": "a", "usd": 0.41, "now": T0}, "BUDGET_EXCEEDED"
    )
    assert not re.search(r"\d", err.message)
    hop(bl, "d", "a", tokens=40, usd=0.4)
    d = bl.delegations["d"]
    assert (d.hops, d.tokens_spent, d.usd_spent_micros) == (2, 100, 1_000_000)


def test_negative_spends_are_clamped_to_zero() -> None:
    bl = ledger("a")
    open_(bl, "d", max_tokens=10)
    hop(bl, "d", "a", tokens=-500, usd=-3.0)
    d = bl.delegations["d"]
    assert (d.hops, d.tokens_spent, d.usd_spent_micros) == (1, 0, 0)


def test_hop_limit_checked_before_budget() -> None:
    bl = ledger("a")
    open_(bl, "d", max_hops=1, max_tokens=5)
    hop(bl, "d", "a", tokens=5)
    cmd = {"op": "hop", "delegation": "d", "peer": "a", "tokens": 99, "now": T0}
    rejected(bl, cmd, "HOP_LIMIT_EXCEEDED")


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"op": "hop", "delegation": "d", "peer": "ghost", "now": T0}, "UNKNOWN_PEER"),
        ({"op": "hop", "delegation": "nope", "peer": "a", "now": T0}, "UNKNOWN_DELEGATION"),
        ({"op": "hop", "delegation": "d", "peer": "a", "usd": NAN, "now": T0}, "BAD_ARGUMENT"),
        ({"op": "hop", "delegation": "d", "peer": "a", "tokens": 1.5, "now": T0}, "BAD_ARGUMENT"),
        ({"op": "hop", "delegation": "d", "peer": "a", "tokens": "1", "now": T0}, "BAD_ARGUMENT"),
        ({"op": "open", "delegation": "d", "now": T0}, "DELEGATION_EXISTS"),
        ({"op": "close", "delegation": "zz", "now": T0}, "UNKNOWN_DELEGATION"),
        ({"op": "add_peer", "peer": "a", "now": T0}, "PEER_EXISTS"),
        ({"op": "outcome", "peer": "a", "ok": 1, "now": T0}, "BAD_ARGUMENT"),
        ({"op": "outcome", "peer": "a", "ok": True, "now": -1}, "BAD_ARGUMENT"),
    ],
)
def test_bad_commands_leave_state_byte_identical(command: dict[str, Any], code: str) -> None:
    bl = ledger("a")
    open_(bl, "d", max_tokens=100)
    hop(bl, "d", "a", tokens=3, usd=0.01)
    rejected(bl, command, code)


def test_two_nodes_cannot_both_spend_the_last_dollar() -> None:
    """The ledger is replicated: whichever hop the log orders second fails on every replica."""
    log = [
        {"op": "add_peer", "peer": "a", "now": T0},
        {"op": "add_peer", "peer": "b", "now": T0},
        {"op": "open", "delegation": "d", "budget": {"max_usd": 1.0}, "now": T0},
        {"op": "hop", "delegation": "d", "peer": "a", "usd": 0.5, "now": T0 + 1},
        # node A and node B both believe $0.50 is left and forward concurrently:
        {"op": "hop", "delegation": "d", "peer": "a", "usd": 0.5, "now": T0 + 2, "node": "A"},
        {"op": "hop", "delegation": "d", "peer": "b", "usd": 0.5, "now": T0 + 2, "node": "B"},
    ]
    outcomes = []
    for _ in range(2):
        bl = BudgetLedger()
        codes = []
        for cmd in log:
            try:
                bl.apply(cmd)
                codes.append("ok")
            except CommandError as exc:
                codes.append(exc.code)
        outcomes.append((codes, bl.snapshot()))
        assert bl.delegations["d"].usd_spent_micros == 1_000_000
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0][-2:] == ["ok", "BUDGET_EXCEEDED"]


# -------------------------------------------------------------------- breaker


def test_suspend_when_24h_spend_above_five_dollars() -> None:
    bl = ledger("a")
    open_(bl, "d", max_hops=64)
    hop(bl, "d", "a", usd=5.0)
    assert bl.state("a") == BreakerState.ACTIVE  # $5.00 is not above $5.00
    result = hop(bl, "d", "a", now=T0 + 1, usd=0.01)
    assert result["transition"]["reason"] == "spend"
    assert bl.state("a") == BreakerState.SUSPENDED
    rejected(bl, {"op": "hop", "delegation": "d", "peer": "a", "now": T0 + 2}, "PEER_SUSPENDED")


def test_spend_window_is_24_hours() -> None:
    bl = ledger("a")
    open_(bl, "d", max_hops=64)
    hop(bl, "d", "a", usd=5.0)
    hop(bl, "d", "a", now=T0 + DAY, usd=1.0)  # the first $5 left the window
    assert bl.state("a") == BreakerState.ACTIVE


def test_failure_ratio_needs_ten_samples_and_more_than_half() -> None:
    bl = ledger("a", "b", "c")
    for i in range(9):
        bl.apply({"op": "outcome", "peer": "a", "ok": False, "now": T0 + i})
    assert bl.state("a") == BreakerState.ACTIVE  # 9 samples < 10
    result = bl.apply({"op": "outcome", "peer": "a", "ok": False, "now": T0 + 9})
    assert result["transition"]["reason"] == "failures"
    for i in range(10):  # 5 of 10 failed: ratio 0.5 is not above 0.5
        bl.apply({"op": "outcome", "peer": "b", "ok": i % 2 == 0, "now": T0 + 20 + i})
    assert bl.state("b") == BreakerState.ACTIVE
    bl.apply({"op": "outcome", "peer": "b", "ok": False, "now": T0 + 40})  # 6 of 11
    assert bl.state("b") == BreakerState.SUSPENDED
    for i in range(9):
        bl.apply({"op": "outcome", "peer": "c", "ok": False, "now": T0 + 50 + i})
    # An hour later the old failures are out of the window.
    bl.apply({"op": "outcome", "peer": "c", "ok": False, "now": T0 + 50 + HOUR})
    assert bl.state("c") == BreakerState.ACTIVE


def test_spend_is_checked_before_failures() -> None:
    bl = ledger("a")
    breaker = bl.breakers["a"]
    breaker.spends.append((T0, 6_000_000))
    breaker.outcomes.extend((T0, False) for _ in range(10))
    change = bl._evaluate("a", breaker, T0)
    assert change is not None and change["reason"] == "spend"


def test_reactivation_after_thirty_minutes() -> None:
    bl = ledger("a")
    bl.apply({"op": "suspend", "peer": "a", "now": T0})
    early = {"op": "reactivate", "peer": "a", "now": T0 + 30 * MIN - 1}
    rejected(bl, early, "INVALID_TRANSITION")
    bl.apply({"op": "reactivate", "peer": "a", "now": T0 + 30 * MIN})
    assert bl.state("a") == BreakerState.ACTIVE


def test_eviction_after_24_hours_suspended() -> None:
    bl = ledger("a")
    open_(bl, "d")
    bl.apply({"op": "suspend", "peer": "a", "now": T0})
    bl.apply({"op": "tick", "now": T0 + DAY - 1})
    assert bl.state("a") == BreakerState.SUSPENDED
    # Due but not yet materialised: the hop already sees EVICTED and changes nothing.
    rejected(bl, {"op": "hop", "delegation": "d", "peer": "a", "now": T0 + DAY}, "PEER_EVICTED")
    assert bl.breakers["a"].state == BreakerState.SUSPENDED
    bl.apply({"op": "tick", "now": T0 + DAY + 5})
    assert bl.state("a") == BreakerState.EVICTED
    assert bl.breakers["a"].since == T0 + DAY


def test_operator_moves() -> None:
    bl = ledger("a")
    rejected(bl, {"op": "reactivate", "peer": "a", "now": T0}, "INVALID_TRANSITION")
    bl.apply({"op": "evict", "peer": "a", "now": T0})  # ACTIVE -> EVICTED (operator)
    rejected(bl, {"op": "evict", "peer": "a", "now": T0}, "INVALID_TRANSITION")
    rejected(bl, {"op": "suspend", "peer": "a", "now": T0}, "INVALID_TRANSITION")
    bl.apply({"op": "reactivate", "peer": "a", "now": T0 + 1})  # EVICTED -> ACTIVE, any time
    assert bl.state("a") == BreakerState.ACTIVE
    bl.apply({"op": "suspend", "peer": "a", "now": T0 + 2})
    bl.apply({"op": "evict", "peer": "a", "now": T0 + 3})  # SUSPENDED -> EVICTED
    assert bl.state("a") == BreakerState.EVICTED


def test_reactivation_clears_the_windows() -> None:
    bl = ledger("a")
    open_(bl, "d", max_hops=64)
    hop(bl, "d", "a", usd=5.5)
    assert bl.state("a") == BreakerState.SUSPENDED
    bl.apply({"op": "reactivate", "peer": "a", "now": T0 + 30 * MIN})
    hop(bl, "d", "a", now=T0 + 31 * MIN, usd=0.5)
    assert bl.state("a") == BreakerState.ACTIVE


def test_spend_samples_are_capped() -> None:
    assert BreakerPolicy().max_samples == 100_000
    bl = ledger("a", policy=BreakerPolicy(max_samples=5, spend_limit_micros=10**12))
    open_(bl, "d", max_hops=64)
    for i in range(7):
        hop(bl, "d", "a", now=T0 + i, usd=0.01)
    assert [ts for ts, _ in bl.breakers["a"].spends] == [T0 + i for i in range(2, 7)]


def test_snapshot_roundtrip() -> None:
    bl = ledger("a", "b")
    open_(bl, "d", max_tokens=50, max_usd=2.5)
    hop(bl, "d", "a", tokens=7, usd=0.25)
    bl.apply({"op": "outcome", "peer": "b", "ok": False, "now": T0})
    other = BudgetLedger()
    other.restore(bl.snapshot())
    assert other.snapshot() == bl.snapshot()
    with pytest.raises(CommandError) as info:
        other.restore(b"\x93\x01\x02")
    assert info.value.code == "BAD_SNAPSHOT"
    assert other.snapshot() == bl.snapshot()
