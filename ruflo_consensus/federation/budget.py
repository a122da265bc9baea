"""Budget ledger and per-peer circuit breaker.

**Budgets.** A delegation carries ``max_hops`` (default 8, integer 0..64; 0 forbids remote
delegation), ``max_tokens`` (integer 0..1,000,000,000) and ``max_usd`` (0..1,000,000), the last
two unbounded by default (``None`` or ``+inf``). NaN, ``-inf``, negatives, non-integer hops or
tokens and values above a ceiling are rejected with ``INVALID_BUDGET``. Each hop: ``next =
hops + 1`` fails ``HOP_LIMIT_EXCEEDED`` when ``next > max_hops``; spends are clamped at 0;
``BUDGET_EXCEEDED`` when tokens or USD would go below zero. USD is kept as integer
micro-dollars so that sums are exact. Errors never reveal the remaining budget.

Because the ledger is one replicated state, a delegation's cap holds for the whole
federation: two nodes forwarding the same delegation are ordered by the log, and the second
one to spend the last dollar gets ``BUDGET_EXCEEDED`` on every replica (**gap** closed).

**Breaker.** Each peer is ACTIVE, SUSPENDED or EVICTED. Default policy: suspend when the
24-hour USD spend is above $5.00 (checked first) or when the 1-hour failure ratio is above
0.5 over at least 10 samples; a peer suspended for 24 h is evicted; after 30 min suspended an
operator may reactivate it. ACTIVE→EVICTED and EVICTED→ACTIVE are operator moves. At most
100,000 spend samples are kept per peer. Sending to a non-ACTIVE peer fails with
``PEER_SUSPENDED`` or ``PEER_EVICTED``.

Commands (``budget.`` prefix optional; ``now`` in ms; ``usd`` in dollars)::

    {"op": "add_peer", "peer": p, "now": t}
    {"op": "open", "delegation": d, "budget": {"max_hops": 8, "max_tokens": n, "max_usd": x},
     "origin": p?, "now": t}
    {"op": "hop", "delegation": d, "peer": p, "tokens": n, "usd": x, "now": t}
    {"op": "close", "delegation": d, "now": t}
    {"op": "outcome", "peer": p, "ok": bool, "now": t}
    {"op": "suspend" | "reactivate" | "evict", "peer": p, "reason": r?, "now": t}
    {"op": "tick", "now": t}
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Self

from ruflo_consensus.federation.base import PlannedMachine
from ruflo_consensus.federation.errors import (
    BadArgument,
    BadSnapshot,
    BudgetExceeded,
    DelegationExists,
    HopLimitExceeded,
    InvalidBudget,
    InvalidTransition,
    PeerEvicted,
    PeerExists,
    PeerSuspended,
    UnknownDelegation,
    UnknownPeer,
)
from ruflo_consensus.federation.validation import (
    INT_MAX,
    INT_MIN,
    Commit,
    check_fields,
    check_number,
    opt_str,
    req_bool,
    req_str,
)
from ruflo_consensus.federation.wire import (
    w_bool,
    w_choice,
    w_clock,
    w_count,
    w_int,
    w_map,
    w_opt_text,
    w_opt_time,
    w_pairs,
    w_row,
    w_rows,
    w_text,
    w_time,
)

__all__ = [
    "DEFAULT_MAX_HOPS",
    "MAX_HOPS_CEILING",
    "MAX_TOKENS_CEILING",
    "MAX_USD_CEILING",
    "USD_MICROS",
    "BreakerPolicy",
    "BreakerState",
    "Budget",
    "BudgetLedger",
    "Delegation",
    "PeerBreaker",
    "usd_to_micros",
    "validate_budget",
]

DEFAULT_MAX_HOPS = 8
"""Default ``max_hops`` (spec)."""
MAX_HOPS_CEILING = 64
"""Largest ``max_hops`` (spec)."""
MAX_TOKENS_CEILING = 1_000_000_000
"""Largest ``max_tokens`` (spec)."""
MAX_USD_CEILING = 1_000_000
"""Largest ``max_usd`` in dollars (spec)."""
USD_MICROS = 1_000_000
"""Micro-dollars per dollar (internal unit)."""

_MAX_SPEND_TOKENS = MAX_TOKENS_CEILING
_MAX_SPEND_USD = float(MAX_USD_CEILING)
_MAX_USD_MICROS = MAX_USD_CEILING * USD_MICROS
_REASON_LEN = 512
_MAX_SAMPLES = 10_000_000


class BreakerState(enum.StrEnum):
    """Circuit-breaker state of a peer."""

    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    EVICTED = "EVICTED"


@dataclass(frozen=True, slots=True)
class Budget:
    """A validated delegation budget; ``None`` means unbounded."""

    max_hops: int = DEFAULT_MAX_HOPS
    max_tokens: int | None = None
    max_usd_micros: int | None = None

    def to_wire(self) -> list[Any]:
        """Plain list form."""
        return [self.max_hops, self.max_tokens, self.max_usd_micros]


def usd_to_micros(usd: float) -> int:
    """Dollars to integer micro-dollars (round half to even, deterministic)."""
    return round(usd * USD_MICROS)


def _budget_int(raw: dict[str, Any], name: str, ceiling: int, unbounded: bool) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidBudget(f"{name} must be a number")
    if isinstance(value, float):
        if math.isnan(value):
            raise InvalidBudget(f"{name} must not be NaN")
        if math.isinf(value):
            if value > 0 and unbounded:
                return None
            raise InvalidBudget(f"{name} must be finite")
        if not value.is_integer():
            raise InvalidBudget(f"{name} must be an integer")
        value = int(value)
    if value < 0:
        raise InvalidBudget(f"{name} must not be negative")
    if value > ceiling:
        raise InvalidBudget(f"{name} must be at most {ceiling}")
    return int(value)


def validate_budget(raw: Any) -> Budget:
    """Check a budget map (``max_hops``, ``max_tokens``, ``max_usd``) and apply defaults.

    Raises :class:`InvalidBudget` for NaN, ``-inf`` (``+inf`` means unbounded for tokens and
    USD, and is refused for hops), negatives, non-integer hops or tokens, values above the
    ceilings and unknown keys.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidBudget("budget must be a map")
    extra = sorted(str(k) for k in raw if k not in ("max_hops", "max_tokens", "max_usd"))
    if extra:
        raise InvalidBudget(f"unknown budget field(s): {', '.join(extra)}")
    hops = _budget_int(raw, "max_hops", MAX_HOPS_CEILING, unbounded=False)
    tokens = _budget_int(raw, "max_tokens", MAX_TOKENS_CEILING, unbounded=True)
    usd = raw.get("max_usd")
    usd_micros: int | None = None
    if usd is not None:
        if isinstance(usd, bool) or not isinstance(usd, (int, float)):
            raise InvalidBudget("max_usd must be a number")
        if isinstance(usd, int) and not INT_MIN <= usd <= INT_MAX:
            raise InvalidBudget(f"max_usd must be in [0, {MAX_USD_CEILING}]")
        usd_f = float(usd)
        if math.isnan(usd_f):
            raise InvalidBudget("max_usd must not be NaN")
        if usd_f < 0:
            raise InvalidBudget("max_usd must not be negative")
        if math.isinf(usd_f):
            usd_micros = None
        elif usd_f > MAX_USD_CEILING:
            raise InvalidBudget(f"max_usd must be at most {MAX_USD_CEILING}")
        else:
            usd_micros = usd_to_micros(usd_f)
    return Budget(
        max_hops=DEFAULT_MAX_HOPS if hops is None else hops,
        max_tokens=tokens,
        max_usd_micros=usd_micros,
    )


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """The breaker's numbers; the defaults are the spec's default policy."""

    spend_limit_micros: int = 5 * USD_MICROS
    spend_window_ms: int = 86_400_000
    failure_ratio: Fraction = Fraction(1, 2)
    failure_window_ms: int = 3_600_000
    min_failure_samples: int = 10
    evict_after_ms: int = 86_400_000
    reactivate_after_ms: int = 1_800_000
    max_samples: int = 100_000


@dataclass(slots=True)
class Delegation:
    """Replicated accounting of one delegation chain."""

    budget: Budget
    origin: str | None
    created_at: int
    hops: int = 0
    tokens_spent: int = 0
    usd_spent_micros: int = 0
    path: list[tuple[str, int, int, int]] = field(default_factory=list)

    def to_wire(self) -> list[Any]:
        """Plain list form used in snapshots."""
        return [
            self.budget.to_wire(),
            self.origin,
            self.created_at,
            self.hops,
            self.tokens_spent,
            self.usd_spent_micros,
            [list(p) for p in self.path],
        ]

    @classmethod
    def from_wire(cls, value: Any) -> Delegation:
        """Inverse of :meth:`to_wire`; every field checked, ``BadSnapshot`` otherwise."""
        budget, origin, created, hops, tokens, usd, path = w_row(value, "delegation", 7)
        max_hops, max_tokens, max_usd = w_row(budget, "budget", 3)
        return cls(
            budget=Budget(
                max_hops=w_int(max_hops, "max_hops", hi=MAX_HOPS_CEILING),
                max_tokens=None
                if max_tokens is None
                else w_int(max_tokens, "max_tokens", hi=MAX_TOKENS_CEILING),
                max_usd_micros=None
                if max_usd is None
                else w_int(max_usd, "max_usd_micros", hi=_MAX_USD_MICROS),
            ),
            origin=w_opt_text(origin, "origin"),
            created_at=w_time(created, "created_at"),
            hops=w_int(hops, "hops", hi=MAX_HOPS_CEILING),
            tokens_spent=w_count(tokens, "tokens_spent"),
            usd_spent_micros=w_count(usd, "usd_spent_micros"),
            path=[
                (
                    w_text(peer, "path peer"),
                    w_int(spent_tokens, "path tokens", hi=_MAX_SPEND_TOKENS),
                    w_int(spent_usd, "path usd", hi=_MAX_USD_MICROS),
                    w_time(at, "path time"),
                )
                for peer, spent_tokens, spent_usd, at in w_rows(
                    path, "path", 4, max_items=MAX_HOPS_CEILING
                )
            ],
        )


@dataclass(slots=True)
class PeerBreaker:
    """Breaker state and samples of one peer."""

    state: BreakerState = BreakerState.ACTIVE
    since: int = 0
    suspended_at: int | None = None
    reason: str | None = None
    spends: deque[tuple[int, int]] = field(default_factory=deque)
    outcomes: deque[tuple[int, bool]] = field(default_factory=deque)

    def effective_state(self, t: int, policy: BreakerPolicy) -> BreakerState:
        """The state at ``t``, counting an eviction that has become due but is not yet applied."""
        if (
            self.state == BreakerState.SUSPENDED
            and self.suspended_at is not None
            and t - self.suspended_at >= policy.evict_after_ms
        ):
            return BreakerState.EVICTED
        return self.state

    def spend_in_window(self, t: int, policy: BreakerPolicy) -> int:
        """Micro-dollars spent within the spend window ending at ``t``."""
        return sum(m for ts, m in self.spends if t - ts < policy.spend_window_ms)

    def failure_counts(self, t: int, policy: BreakerPolicy) -> tuple[int, int]:
        """``(failures, samples)`` within the failure window ending at ``t``."""
        recent = [ok for ts, ok in self.outcomes if t - ts < policy.failure_window_ms]
        return sum(1 for ok in recent if not ok), len(recent)

    def to_wire(self) -> list[Any]:
        """Plain list form used in snapshots."""
        return [
            self.state.value,
            self.since,
            self.suspended_at,
            self.reason,
            [list(s) for s in self.spends],
            [list(o) for o in self.outcomes],
        ]

    @classmethod
    def from_wire(cls, value: Any) -> PeerBreaker:
        """Inverse of :meth:`to_wire`; every field checked, ``BadSnapshot`` otherwise."""
        state, since, suspended_at, reason, spends, outcomes = w_row(value, "breaker", 6)
        breaker = cls(
            state=BreakerState(w_choice(state, "state", [s.value for s in BreakerState])),
            since=w_time(since, "since"),
            suspended_at=w_opt_time(suspended_at, "suspended_at"),
            reason=w_opt_text(reason, "reason", max_len=_REASON_LEN),
            spends=deque(
                (w_time(a, "spend time"), w_int(b, "spend", hi=_MAX_USD_MICROS))
                for a, b in w_rows(spends, "spends", 2, max_items=_MAX_SAMPLES)
            ),
            outcomes=deque(
                (w_time(a, "outcome time"), w_bool(b, "outcome"))
                for a, b in w_rows(outcomes, "outcomes", 2, max_items=_MAX_SAMPLES)
            ),
        )
        if (breaker.state == BreakerState.SUSPENDED) != (breaker.suspended_at is not None):
            raise BadSnapshot("a breaker has a suspension time exactly when it is SUSPENDED")
        return breaker


def _number(cmd: dict[str, Any], name: str, hi: float) -> float:
    value = cmd.get(name)
    if value is None:
        return 0.0
    return max(0.0, check_number(value, name, lo=-math.inf, hi=hi))


class BudgetLedger(PlannedMachine):
    """Replicated delegation budgets and per-peer circuit breakers."""

    namespace = "budget"
    ops = ("add_peer", "open", "hop", "close", "outcome", "suspend", "reactivate", "evict", "tick")

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        super().__init__()
        self.policy = policy or BreakerPolicy()
        self.delegations: dict[str, Delegation] = {}
        self.breakers: dict[str, PeerBreaker] = {}

    # ----------------------------------------------------------------- queries

    def state(self, peer: str, t: int | None = None) -> BreakerState | None:
        """The peer's breaker state (effective at ``t`` when given), ``None`` if unknown."""
        breaker = self.breakers.get(peer)
        if breaker is None:
            return None
        return breaker.state if t is None else breaker.effective_state(t, self.policy)

    def require_breaker(self, peer: str) -> PeerBreaker:
        """The breaker of ``peer``; :class:`UnknownPeer` when there is none."""
        breaker = self.breakers.get(peer)
        if breaker is None:
            raise UnknownPeer(f"no breaker for peer {peer!r}")
        return breaker

    def require_active(self, peer: str, t: int) -> PeerBreaker:
        """The breaker of a peer that is ACTIVE at ``t``; else PEER_SUSPENDED/PEER_EVICTED."""
        breaker = self.require_breaker(peer)
        state = breaker.effective_state(t, self.policy)
        if state == BreakerState.SUSPENDED:
            raise PeerSuspended(f"peer {peer!r} is suspended")
        if state == BreakerState.EVICTED:
            raise PeerEvicted(f"peer {peer!r} is evicted")
        return breaker

    # ------------------------------------------------------------------ plans

    def _plan_add_peer(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer",))
        peer = req_str(cmd, "peer")
        if peer in self.breakers:
            raise PeerExists(f"peer {peer!r} already has a breaker")

        def commit() -> dict[str, Any]:
            self.breakers[peer] = PeerBreaker(since=t)
            return {"peer": peer, "state": BreakerState.ACTIVE.value}

        return commit

    def _plan_open(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("delegation", "budget", "origin"))
        delegation = req_str(cmd, "delegation")
        origin = opt_str(cmd, "origin")
        budget = validate_budget(cmd.get("budget"))
        if delegation in self.delegations:
            raise DelegationExists(f"delegation {delegation!r} is already open")

        def commit() -> dict[str, Any]:
            self.delegations[delegation] = Delegation(budget=budget, origin=origin, created_at=t)
            return {"delegation": delegation, "hops": 0, "max_hops": budget.max_hops}

        return commit

    def _plan_hop(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("delegation", "peer", "tokens", "usd"))
        peer = req_str(cmd, "peer")
        breaker = self.require_active(peer, t)
        return self.plan_spend(cmd, peer, breaker, t)

    def plan_spend(self, cmd: dict[str, Any], peer: str, breaker: PeerBreaker, t: int) -> Commit:
        """Check a hop of ``cmd["delegation"]`` to an ACTIVE ``peer``; return its commit."""
        name = req_str(cmd, "delegation")
        delegation = self.delegations.get(name)
        if delegation is None:
            raise UnknownDelegation(f"no open delegation {name!r}")
        tokens_f = _number(cmd, "tokens", _MAX_SPEND_TOKENS)
        if not tokens_f.is_integer():
            raise BadArgument("'tokens' must be an integer")
        tokens = int(tokens_f)
        usd = usd_to_micros(_number(cmd, "usd", _MAX_SPEND_USD))
        budget = delegation.budget
        next_hop = delegation.hops + 1
        if next_hop > budget.max_hops:
            raise HopLimitExceeded(f"delegation {name!r} has reached its hop limit")
        if budget.max_tokens is not None and delegation.tokens_spent + tokens > budget.max_tokens:
            raise BudgetExceeded(f"delegation {name!r}: token budget exceeded")
        if (
            budget.max_usd_micros is not None
            and delegation.usd_spent_micros + usd > budget.max_usd_micros
        ):
            raise BudgetExceeded(f"delegation {name!r}: USD budget exceeded")

        def commit() -> dict[str, Any]:
            delegation.hops = next_hop
            delegation.tokens_spent += tokens
            delegation.usd_spent_micros += usd
            delegation.path.append((peer, tokens, usd, t))
            if usd > 0:
                breaker.spends.append((t, usd))
                while len(breaker.spends) > self.policy.max_samples:
                    breaker.spends.popleft()
            transition = self._evaluate(peer, breaker, t)
            return {
                "delegation": name,
                "peer": peer,
                "hops": next_hop,
                "peer_state": breaker.state.value,
                "transition": transition,
            }

        return commit

    def _plan_close(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("delegation",))
        name = req_str(cmd, "delegation")
        delegation = self.delegations.get(name)
        if delegation is None:
            raise UnknownDelegation(f"no open delegation {name!r}")

        def commit() -> dict[str, Any]:
            del self.delegations[name]
            return {
                "delegation": name,
                "hops": delegation.hops,
                "tokens_spent": delegation.tokens_spent,
                "usd_spent": delegation.usd_spent_micros / USD_MICROS,
            }

        return commit

    def _plan_outcome(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "ok"))
        peer = req_str(cmd, "peer")
        breaker = self.require_breaker(peer)
        ok = req_bool(cmd, "ok")

        def commit() -> dict[str, Any]:
            breaker.outcomes.append((t, ok))
            while len(breaker.outcomes) > self.policy.max_samples:
                breaker.outcomes.popleft()
            transition = self._evaluate(peer, breaker, t)
            return {"peer": peer, "state": breaker.state.value, "transition": transition}

        return commit

    def _plan_suspend(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "reason"))
        peer = req_str(cmd, "peer")
        breaker = self.require_breaker(peer)
        reason = opt_str(cmd, "reason", max_len=512) or "operator"
        state = breaker.effective_state(t, self.policy)
        if state != BreakerState.ACTIVE:
            raise InvalidTransition(f"cannot suspend a {state.value} peer")
        return lambda: self.move(peer, BreakerState.SUSPENDED, t, reason)

    def _plan_reactivate(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "reason"))
        peer = req_str(cmd, "peer")
        self.check_reactivate(peer, t)
        reason = opt_str(cmd, "reason", max_len=512) or "operator"
        return lambda: self.move(peer, BreakerState.ACTIVE, t, reason)

    def check_reactivate(self, peer: str, t: int) -> BreakerState:
        """Raise unless an operator may reactivate ``peer`` at ``t``; return its current state."""
        breaker = self.require_breaker(peer)
        state = breaker.effective_state(t, self.policy)
        if state == BreakerState.ACTIVE:
            raise InvalidTransition(f"peer {peer!r} is already ACTIVE")
        if state == BreakerState.SUSPENDED:
            assert breaker.suspended_at is not None
            if t - breaker.suspended_at < self.policy.reactivate_after_ms:
                raise InvalidTransition(f"peer {peer!r} is not yet eligible for reactivation")
        return state

    def _plan_evict(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ("peer", "reason"))
        peer = req_str(cmd, "peer")
        self.check_evict(peer, t)
        reason = opt_str(cmd, "reason", max_len=512) or "operator"
        return lambda: self.move(peer, BreakerState.EVICTED, t, reason)

    def check_evict(self, peer: str, t: int) -> None:
        """Raise unless an operator may evict ``peer`` at ``t``."""
        breaker = self.require_breaker(peer)
        if breaker.effective_state(t, self.policy) == BreakerState.EVICTED:
            raise InvalidTransition(f"peer {peer!r} is already EVICTED")

    def _plan_tick(self, cmd: dict[str, Any], t: int) -> Commit:
        check_fields(cmd, ())
        return lambda: {"now": t}

    # ------------------------------------------------- infallible state moves

    def move(self, peer: str, state: BreakerState, t: int, reason: str) -> dict[str, Any]:
        """Set ``peer``'s breaker state (no checks; used by commits)."""
        breaker = self.breakers[peer]
        previous = breaker.state
        breaker.state = state
        breaker.since = t
        breaker.reason = reason
        if state == BreakerState.SUSPENDED:
            breaker.suspended_at = t
        else:
            breaker.suspended_at = None
        if state == BreakerState.ACTIVE:
            # A reactivated peer starts with fresh windows; otherwise the very samples that
            # tripped the breaker would trip it again on the next hop.
            breaker.spends.clear()
            breaker.outcomes.clear()
        return {"peer": peer, "from": previous.value, "to": state.value, "reason": reason}

    def _evaluate(self, peer: str, breaker: PeerBreaker, t: int) -> dict[str, Any] | None:
        """The default policy for an ACTIVE peer after a new sample; may suspend it."""
        if breaker.state != BreakerState.ACTIVE:
            return None
        policy = self.policy
        if breaker.spend_in_window(t, policy) > policy.spend_limit_micros:
            return self.move(peer, BreakerState.SUSPENDED, t, "spend")
        failures, samples = breaker.failure_counts(t, policy)
        ratio = policy.failure_ratio
        if samples >= policy.min_failure_samples and failures * ratio.denominator > (
            ratio.numerator * samples
        ):
            return self.move(peer, BreakerState.SUSPENDED, t, "failures")
        return None

    def advance(self, t: int) -> list[dict[str, Any]]:
        """Evict peers suspended for ``evict_after_ms``; drop samples outside their windows."""
        changes: list[dict[str, Any]] = []
        policy = self.policy
        for peer in sorted(self.breakers):
            breaker = self.breakers[peer]
            if (
                breaker.state == BreakerState.SUSPENDED
                and breaker.effective_state(t, policy) == BreakerState.EVICTED
            ):
                assert breaker.suspended_at is not None
                due = breaker.suspended_at + policy.evict_after_ms
                changes.append(self.move(peer, BreakerState.EVICTED, due, "suspended-24h"))
            while breaker.spends and t - breaker.spends[0][0] >= policy.spend_window_ms:
                breaker.spends.popleft()
            while breaker.outcomes and t - breaker.outcomes[0][0] >= policy.failure_window_ms:
                breaker.outcomes.popleft()
        return changes

    # ------------------------------------------------------- snapshot/restore

    def to_wire(self) -> dict[str, Any]:
        """Plain map form of the whole state."""
        return {
            "clock": self.clock,
            "delegations": [[d, self.delegations[d].to_wire()] for d in sorted(self.delegations)],
            "breakers": [[p, self.breakers[p].to_wire()] for p in sorted(self.breakers)],
        }

    def _blank(self) -> Self:
        return type(self)(self.policy)

    def _read_wire(self, value: Any) -> None:
        wire = w_map(value, "budget", ("clock", "delegations", "breakers"))
        self.clock = w_clock(wire["clock"])
        for name, raw in w_pairs(wire["delegations"], "delegations"):
            self.delegations[name] = Delegation.from_wire(raw)
        for peer, raw in w_pairs(wire["breakers"], "breakers"):
            self.breakers[peer] = PeerBreaker.from_wire(raw)
