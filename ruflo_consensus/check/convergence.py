"""Checkers for the CRDT backend: convergence, acknowledged writes, monotonic reads.

A CRDT backend promises *strong eventual consistency*, not linearizability, so its runs
are checked against three properties instead of a sequential model:

1. **Convergence** (:func:`converged`): once the network has healed and anti-entropy has
   run, every replica holds the same state — equal application-level values *and* equal
   state vectors (optionally equal document fingerprints, which also cover deletions).
2. **No lost acknowledged write** (:func:`check_acknowledged_writes`): every ``put`` or
   ``delete`` a client saw acknowledged is in the converged state unless a write with a
   greater ``(hlc, node)`` timestamp superseded it; every counter equals the sum of the
   increments applied to it (exactly, when every applied increment was acknowledged).
3. **Monotonic reads** (:func:`check_monotonic_reads`): within one client session, the
   timestamp of the value read for a key never goes backwards.

The simulator records :class:`AckedWrite` and :class:`ClientRead` values while it runs and
calls these functions at the end; each returns a list of human-readable violations (empty
when the property holds) or, for :func:`converged`, a :class:`ConvergenceReport`.

Values are compared as encoded states (:func:`~ruflo_consensus.check.encoded.state_bytes`:
msgpack with maps in key order), never with ``==``: a value holding a NaN is not ``==`` to
itself, and replicas that hold the very same bytes must not be reported as diverged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ruflo_consensus.check.encoded import same_state, state_bytes
from ruflo_consensus.core.crdt import decode_state_vector
from ruflo_consensus.crdt_machines import HlcTimestamp

__all__ = [
    "KV_MERGE_RULE",
    "AckedWrite",
    "ClientRead",
    "ConvergenceReport",
    "CrdtReplica",
    "KvMergeRule",
    "MergeRule",
    "check_acknowledged_writes",
    "check_convergence",
    "check_monotonic_reads",
    "converged",
]

NodeId = str

WRITE_OPS = ("put", "delete", "incr")


# --------------------------------------------------------------------------- convergence


@dataclass(frozen=True, slots=True)
class ConvergenceReport:
    """Whether replicas hold the same state, and if not, which ones differ.

    Replicas are grouped by equal value (``value_groups``) and by equal state vector
    (``state_vector_groups``), largest group first (ties: smallest node id first). The
    first group of each is the reference; ``differing_values`` /
    ``differing_state_vectors`` / ``differing_fingerprints`` list the nodes outside it.
    """

    converged: bool
    value_groups: tuple[tuple[NodeId, ...], ...]
    state_vector_groups: tuple[tuple[NodeId, ...], ...]
    fingerprint_groups: tuple[tuple[NodeId, ...], ...]
    differing_values: tuple[NodeId, ...]
    differing_state_vectors: tuple[NodeId, ...]
    differing_fingerprints: tuple[NodeId, ...]

    def __bool__(self) -> bool:
        """True when every replica agrees."""
        return self.converged

    def describe(self) -> str:
        """A one-paragraph human-readable summary."""
        if self.converged:
            return "converged"
        parts = []
        if self.differing_values:
            parts.append(f"values differ on {', '.join(self.differing_values)}")
        if self.differing_state_vectors:
            parts.append(f"state vectors differ on {', '.join(self.differing_state_vectors)}")
        if self.differing_fingerprints:
            parts.append(f"documents differ on {', '.join(self.differing_fingerprints)}")
        return "not converged: " + "; ".join(parts)


def _group(items: Mapping[NodeId, Any]) -> tuple[tuple[NodeId, ...], ...]:
    """Nodes grouped by equal encoded state (see :func:`state_bytes`)."""
    groups: dict[bytes, list[NodeId]] = {}
    for node in sorted(items):
        groups.setdefault(state_bytes(items[node]), []).append(node)
    ordered = sorted((tuple(members) for members in groups.values()), key=lambda g: (-len(g), g))
    return tuple(ordered)


def _outside_reference(groups: tuple[tuple[NodeId, ...], ...]) -> tuple[NodeId, ...]:
    return tuple(sorted(n for g in groups[1:] for n in g))


def _canonical_sv(raw: bytes) -> Any:
    # Compare decoded vectors: Yrs encodes entries in hash-map order, so equal vectors can
    # differ as bytes. Undecodable bytes are compared as they are.
    try:
        return tuple(sorted(decode_state_vector(raw).items()))
    except ValueError:
        return raw


def converged(
    values: Mapping[NodeId, Any],
    state_vectors: Mapping[NodeId, bytes],
    fingerprints: Mapping[NodeId, bytes] | None = None,
) -> ConvergenceReport:
    """Compare replicas' application values, state vectors and (optionally) fingerprints.

    ``values`` maps node → ``core.value()``; ``state_vectors`` node → ``core.state_vector()``
    (decoded before comparing, so any valid encoding works); ``fingerprints`` node →
    ``core.fingerprint()``, which also covers deletions. The node sets must be equal.
    """
    if set(values) != set(state_vectors) or (
        fingerprints is not None and set(fingerprints) != set(values)
    ):
        raise ValueError("values, state_vectors and fingerprints must cover the same nodes")
    value_groups = _group(values)
    sv_groups = _group({n: _canonical_sv(sv) for n, sv in state_vectors.items()})
    fp_groups = _group(fingerprints) if fingerprints is not None else ()
    ok = len(value_groups) <= 1 and len(sv_groups) <= 1 and len(fp_groups) <= 1
    return ConvergenceReport(
        converged=ok,
        value_groups=value_groups,
        state_vector_groups=sv_groups,
        fingerprint_groups=fp_groups,
        differing_values=_outside_reference(value_groups),
        differing_state_vectors=_outside_reference(sv_groups),
        differing_fingerprints=_outside_reference(fp_groups),
    )


class CrdtReplica(Protocol):
    """What :func:`check_convergence` reads from a replica (``CrdtCore`` has all three)."""

    def value(self) -> Any:
        """The canonical application-level value."""
        ...

    def state_vector(self) -> bytes:
        """The encoded state vector."""
        ...

    def fingerprint(self) -> bytes:
        """A digest of the state vector and delete set."""
        ...


def check_convergence(replicas: Mapping[NodeId, CrdtReplica]) -> ConvergenceReport:
    """:func:`converged` over live replica objects (e.g. ``{node: CrdtCore}``)."""
    return converged(
        {n: r.value() for n, r in replicas.items()},
        {n: r.state_vector() for n, r in replicas.items()},
        {n: r.fingerprint() for n, r in replicas.items()},
    )


# --------------------------------------------------------------------------- merge rules


class MergeRule(Protocol):
    """How to read a converged value: the LWW winner of a key and a counter's parts."""

    def winner(self, final_value: Any, key: str) -> tuple[Any, HlcTimestamp] | None:
        """``(value, timestamp)`` of the key's winning write, None when never written.

        ``value`` is None for a tombstone.
        """
        ...

    def contributions(self, final_value: Any, key: str) -> dict[NodeId, int]:
        """Each node's contribution to counter ``key`` (empty when never incremented)."""
        ...

    def counter_keys(self, final_value: Any) -> list[str]:
        """Every counter present in ``final_value``."""
        ...


class KvMergeRule:
    """The merge rule of :class:`~ruflo_consensus.crdt_machines.CrdtKV` values.

    Registers: last writer wins by ``(physical, logical, node)``; counters: sum of per-node
    contributions. Reads the ``{"kv": …, "counters": …}`` form of ``CrdtKV.value()``.
    """

    def winner(self, final_value: Any, key: str) -> tuple[Any, HlcTimestamp] | None:
        """The winner recorded under ``final_value["kv"][key]``."""
        entry = final_value.get("kv", {}).get(key)
        if entry is None:
            return None
        return entry["value"], HlcTimestamp.from_wire(entry["ts"])

    def contributions(self, final_value: Any, key: str) -> dict[NodeId, int]:
        """``final_value["counters"][key]["by_node"]``."""
        entry = final_value.get("counters", {}).get(key)
        if entry is None:
            return {}
        return {str(n): int(c) for n, c in entry["by_node"].items()}

    def counter_keys(self, final_value: Any) -> list[str]:
        """The keys of ``final_value["counters"]``."""
        return sorted(final_value.get("counters", {}))


KV_MERGE_RULE = KvMergeRule()
"""The default rule, for :class:`~ruflo_consensus.crdt_machines.CrdtKV`."""


# --------------------------------------------------------------------------- acked writes


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """One write a replica applied, as the simulator recorded it.

    - ``node``: the replica that applied it (the one the client talked to);
    - ``op``: ``"put"``, ``"delete"`` or ``"incr"``; ``key``: the key written;
    - ``value``: the value of a ``put`` (None for ``delete`` and ``incr``);
    - ``amount``: the increment of an ``incr`` (0 otherwise);
    - ``ts``: the write's timestamp, from the put/delete result
      (``HlcTimestamp.from_wire(result)``); required for put/delete, None for incr;
    - ``client``: who issued it (informational);
    - ``acknowledged``: True when the client received the result. A write the replica
      applied whose acknowledgement was lost (the replica crashed after applying it) is
      recorded with ``acknowledged=False``: it *may* be in the final state, so it widens
      the counter bounds but is never required to be present.
    """

    node: NodeId
    op: str
    key: str
    value: str | None = None
    amount: int = 0
    ts: HlcTimestamp | None = None
    client: str | None = None
    acknowledged: bool = True

    def __post_init__(self) -> None:
        if self.op not in WRITE_OPS:
            raise ValueError(f"op must be one of {WRITE_OPS}, got {self.op!r}")
        if self.op in ("put", "delete") and self.ts is None:
            raise ValueError(f"a {self.op} needs its timestamp")
        if self.op == "put" and self.value is None:
            raise ValueError("a put needs its value")


def check_acknowledged_writes(
    acks: Sequence[AckedWrite],
    final_value: Any,
    merge_rule: MergeRule = KV_MERGE_RULE,
    *,
    complete: bool = True,
) -> list[str]:
    """Every acknowledged write survives in the converged value unless superseded.

    - ``put`` / ``delete`` acknowledged at timestamp ``t``: the key's winner must have a
      timestamp ≥ ``t``; when it is exactly ``t`` it must carry the acknowledged value
      (None for a delete). A smaller winner (or no winner) means the write was lost.
    - ``incr``: per key and per node, the node's contribution must lie between the sum of
      its acknowledged increments plus its unacknowledged *negative* ones, and that sum
      plus its unacknowledged *positive* ones. With every increment acknowledged the
      bounds meet: the counter equals the sum of all increments exactly. With
      ``complete=True`` (``acks`` lists every write applied anywhere, acknowledged or
      not) every counter of the final value is checked, and a contribution nobody
      recorded must be 0; with ``complete=False`` only the recorded keys and nodes are.

    Returns the violations found (empty when none).
    """
    problems: list[str] = []
    lower: dict[tuple[str, NodeId], int] = {}
    upper: dict[tuple[str, NodeId], int] = {}
    counter_keys: set[str] = set()
    for w in acks:
        if w.op == "incr":
            slot = (w.key, w.node)
            counter_keys.add(w.key)
            lo = w.amount if w.acknowledged else min(0, w.amount)
            hi = w.amount if w.acknowledged else max(0, w.amount)
            lower[slot] = lower.get(slot, 0) + lo
            upper[slot] = upper.get(slot, 0) + hi
            continue
        if not w.acknowledged:
            continue
        assert w.ts is not None
        expected = w.value if w.op == "put" else None
        won = merge_rule.winner(final_value, w.key)
        if won is None:
            problems.append(f"{w.op} {w.key!r}={expected!r} at {tuple(w.ts)} on {w.node} lost")
        elif won[1] < w.ts:
            problems.append(
                f"{w.op} {w.key!r}={expected!r} at {tuple(w.ts)} on {w.node} lost: the "
                f"converged winner {won[0]!r} is older, at {tuple(won[1])}"
            )
        elif won[1] == w.ts and not same_state(won[0], expected):
            problems.append(
                f"{w.op} {w.key!r} at {tuple(w.ts)} on {w.node} acknowledged {expected!r} "
                f"but converged to {won[0]!r} with the same timestamp"
            )
    if complete:
        counter_keys |= set(merge_rule.counter_keys(final_value))
    for key in sorted(counter_keys):
        parts = merge_rule.contributions(final_value, key)
        nodes = {n for k, n in lower if k == key} | (set(parts) if complete else set())
        for node in sorted(nodes):
            got = parts.get(node, 0)
            lo, hi = lower.get((key, node), 0), upper.get((key, node), 0)
            if not lo <= got <= hi:
                want = str(lo) if lo == hi else f"between {lo} and {hi}"
                problems.append(f"counter {key!r}: {node}'s contribution is {got}, expected {want}")
    return problems


# --------------------------------------------------------------------------- session reads


@dataclass(frozen=True, slots=True)
class ClientRead:
    """One completed read of a key, in the order the client session issued them.

    - ``client``: the session (one client with one request outstanding at a time);
    - ``key``: the key read;
    - ``ts``: the timestamp of the value returned (the ``"ts"`` of a ``CrdtKV`` ``read``
      result, via ``HlcTimestamp.from_wire``), None when the key had never been written;
    - ``value``: the value returned (for the report);
    - ``node``: the replica that answered (for the report).
    """

    client: str
    key: str
    ts: HlcTimestamp | None
    value: Any = None
    node: NodeId | None = None


def check_monotonic_reads(reads: Sequence[ClientRead]) -> list[str]:
    """Per client session and key, the timestamp read never goes backwards.

    ``reads`` must be in each client's issue order (interleaving across clients does not
    matter). Reading "never written" after having read a value is a violation, and so is
    reading two different values with the same timestamp. A session pinned to one replica
    always passes (a replica's winner only moves forward); a session that moves to a
    replica that has not merged what it read before can fail — that is what this finds.
    """
    problems: list[str] = []
    last: dict[tuple[str, str], ClientRead] = {}
    for r in reads:
        prev = last.get((r.client, r.key))
        if prev is not None and prev.ts is not None:
            if r.ts is None or r.ts < prev.ts:
                seen = "nothing" if r.ts is None else f"{r.value!r} at {tuple(r.ts)}"
                problems.append(
                    f"client {r.client} read {r.key!r}: {seen} from {r.node} after "
                    f"{prev.value!r} at {tuple(prev.ts)} from {prev.node}"
                )
                continue
            if r.ts == prev.ts and not same_state(r.value, prev.value):
                problems.append(
                    f"client {r.client} read {r.key!r} at {tuple(r.ts)} as {prev.value!r} "
                    f"and then {r.value!r}"
                )
        last[(r.client, r.key)] = r
    return problems
