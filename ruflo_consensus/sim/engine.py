"""The backend-neutral part of the simulator: clock, event heap, network, nemesis, trace.

One ``random.Random(seed)`` drives everything. Time is virtual (integer microseconds) and
advances by popping the earliest event off a heap; ties break by insertion order. Nothing
reads the wall clock, iterates a hash-ordered set, or uses the global random generator, so
the same config gives the same run — and the same trace hash — in any process.

Backends subclass :class:`SimEngine` and implement the node hooks (``on_message``,
``on_tick``, ``crash_node``, ``restart_node``, ``on_check``) plus their own event kinds.
Messages travel along the topology: between nodes without a direct link they are relayed
hop by hop, each hop a link with its own latency and faults.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from math import log
from typing import Any

from ..check.history import Op
from ..core.base import ConsensusCore, Message, NodeId, ProtocolError
from ..topology import Topology, build_topology
from .config import SimConfig
from .invariants import InvariantViolation

__all__ = ["EngineNode", "SimEngine", "SimResult"]

# event kinds shared by every backend; backends number theirs from FIRST_BACKEND_KIND
DELIVER, TICK, NEMESIS, HEAL, CHECK, STOP_FAULTS = range(6)
FIRST_BACKEND_KIND = 16


@dataclass
class SimResult:
    """What a run produced; :mod:`ruflo_consensus.sim.report` turns it into a report."""

    config: SimConfig
    trace_hash: str
    history: list[Op]
    violation: InvariantViolation | None
    recent_events: list[str]
    invariant_checks: dict[str, int]
    faults: dict[str, int]
    leader_changes: int
    terms: int
    messages_delivered: int
    messages_dropped: int
    messages_duplicated: int
    messages_relayed: int
    events: int
    sim_seconds: float
    wall_seconds: float
    rejected: dict[str, int]
    commit_index: int
    properties: dict[str, Any] = field(default_factory=dict)
    property_violations: list[str] = field(default_factory=list)


@dataclass(slots=True)
class EngineNode:
    """A simulated node's liveness and clock; backends keep their state in ``state``."""

    id: NodeId
    index: int
    up: bool = True
    paused: bool = False
    inbox: list[tuple[int, Any]] = field(default_factory=list)
    rate: float = 1.0
    tick_gen: int = 0
    missed_ticks: int = 0
    state: Any = None


class SimEngine:
    """Event loop, faulty network along a topology, and the nemesis."""

    def __init__(
        self, config: SimConfig, topology: Topology | None = None, tick_ms: int = 10
    ) -> None:
        self.config = config
        self.topology = topology or build_topology("mesh", config.nodes)
        if len(self.topology.nodes) != config.nodes:
            raise ValueError("the topology and the config disagree on the number of nodes")
        if not self.topology.connected():
            raise ValueError(f"topology {self.topology.name!r} is not connected")
        self.rng = random.Random(config.seed)
        self._random = self.rng.random
        self.now = 0
        self._seq = 0
        self._heap: list[tuple[int, int, int, Any, Any]] = []
        self.ids: list[NodeId] = self.topology.ids
        self.by_id: dict[NodeId, int] = {nid: i for i, nid in enumerate(self.ids)}
        n = len(self.ids)
        self._hop: list[list[int]] = [
            [self.by_id[self.topology.next_hop(a, b) or a] for b in self.ids] for a in self.ids
        ]
        self.tick_us = tick_ms * 1000
        self.end_us = int(config.duration_s * 1e6)
        self.faults_end_us = max(0, self.end_us - int(config.quiet_tail_s * 1e6))
        faults = set(config.faults)
        self.base_drop = config.drop_rate if "drop" in faults else 0.0
        self.base_dup = config.dup_rate if "dup" in faults else 0.0
        self.extra_drop = 0.0
        self.extra_dup = 0.0
        self.jitter_us = 0
        self._lat_base = config.latency_min_ms * 1000
        self._lat_spread = max(0.0, config.latency_mean_ms - config.latency_min_ms) * 1000
        self._lat_kind = config.latency
        self.blocked: dict[tuple[int, int], int] = {}
        self.fault_counts: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self.delivered = 0
        self.relayed = 0
        self.dropped = 0
        self.duplicated = 0
        self.events = 0
        self.last_heal_us = 0
        self._hasher = hashlib.blake2b(digest_size=16)
        self._trace_buf: list[str] = []
        self.recent: deque[str] = deque(maxlen=40)
        self.nodes: list[EngineNode] = [EngineNode(nid, i) for i, nid in enumerate(self.ids)]
        self._active_faults: list[tuple[str, Any]] = []
        self._handlers: dict[int, Callable[[Any, Any], None]] = {
            DELIVER: self._deliver,
            TICK: self._tick,
            NEMESIS: lambda a, b: self._nemesis(),
            HEAL: lambda a, b: self._heal(a),
            STOP_FAULTS: lambda a, b: self._heal_all(),
            CHECK: lambda a, b: self._check(),
        }
        self._max_down = (n - 1) // 2

    # ------------------------------------------------------------------ hooks

    def core_of(self, node: EngineNode) -> ConsensusCore | None:
        """The node's running core (None while it is crashed)."""
        raise NotImplementedError

    def process_ready(self, node: EngineNode) -> None:
        """Carry out the node's pending ``Ready`` the way this backend's driver does."""
        raise NotImplementedError

    def on_message(self, node: EngineNode, message: Message) -> None:
        """Step the node's core with a message; a rejected one is counted by reason."""
        core = self.core_of(node)
        assert core is not None
        try:
            core.step(message)
        except ProtocolError as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            return
        self.process_ready(node)

    def message_key(self, message: Message) -> str:
        """A short, deterministic description of a message for the trace hash."""
        return repr(message)

    def on_tick(self, node: EngineNode) -> None:
        """The node's clock ticked (up and not paused): tick its core."""
        core = self.core_of(node)
        assert core is not None
        core.tick()
        self.process_ready(node)

    def on_queued(self, node: EngineNode, kind: int, item: Any) -> None:
        """A backend event queued while the node was paused, replayed on resume."""
        raise NotImplementedError

    def crash_node(self, node: EngineNode) -> None:
        """Drop the node's volatile state (the engine already marked it down)."""

    def restart_node(self, node: EngineNode) -> None:
        """Rebuild the node from its persisted state (the engine marks it up after)."""

    def on_check(self) -> None:
        """Periodic whole-cluster invariant check."""

    def on_start(self) -> None:
        """Schedule the backend's first events (clients, …)."""

    def backend_fault(self, kind: str) -> Any:
        """Inject a backend-specific fault; return its heal detail, or None if skipped."""
        return None

    def heal_backend_fault(self, kind: str, detail: Any) -> None:
        """Heal a backend-specific fault injected by :meth:`backend_fault`."""

    # ------------------------------------------------------------------ plumbing

    def push(self, at: int, kind: int, a: Any = None, b: Any = None) -> None:
        """Schedule an event at virtual time ``at`` (µs)."""
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, kind, a, b))

    def handle(self, kind: int, handler: Callable[[Any, Any], None]) -> None:
        """Register a backend event kind."""
        self._handlers[kind] = handler

    def trace(self, line: str) -> None:
        """Add a line to the trace hash (and the recent-events ring)."""
        entry = f"{self.now} {line}"
        self._trace_buf.append(entry)
        self.recent.append(entry)
        if len(self._trace_buf) >= 2048:
            self._flush_trace()

    def _flush_trace(self) -> None:
        if self._trace_buf:
            self._hasher.update("\n".join(self._trace_buf).encode())
            self._hasher.update(b"\n")
            self._trace_buf = []

    def trace_hash(self) -> str:
        """The run's trace hash so far (call at the end)."""
        self._flush_trace()
        h = self._hasher.copy()
        h.update(f"end {self.now}".encode())
        return h.hexdigest()

    def latency(self) -> int:
        """One link latency draw in µs: base + a spread whose mean is ``latency_mean_ms``.

        ``exponential`` (default), ``uniform`` (base to base + 2·spread), ``pareto`` (a
        heavy tail: shape 2, so the mean holds but rare draws are very slow) or ``fixed``;
        reorder bursts add uniform jitter on top.
        """
        rand = self._random
        kind = self._lat_kind
        if kind == "exponential":
            lat = self._lat_base - self._lat_spread * log(1.0 - rand())
        elif kind == "uniform":
            lat = self._lat_base + 2.0 * self._lat_spread * rand()
        elif kind == "pareto":
            # shape 2, scale spread/2: mean spread; 1 - rand() is in (0, 1]
            lat = self._lat_base + 0.5 * self._lat_spread * ((1.0 - rand()) ** -0.5)
        else:
            lat = self._lat_base + self._lat_spread
        if self.jitter_us:
            lat += rand() * self.jitter_us
        return int(lat) + 1

    def lossy(self) -> bool:
        """Draw whether the next transmission is lost."""
        if self._random() < self.base_drop + self.extra_drop:
            self.dropped += 1
            return True
        return False

    def push_lossy(self, kind: int, a: Any = None, b: Any = None) -> None:
        """Schedule an event one link latency from now, unless the link loses it.

        What travels between clients and nodes goes this way: one loss draw, then (if it
        got through) one latency draw.
        """
        if not self.lossy():
            self.push(self.now + self.latency(), kind, a, b)

    def accepts(self, node: EngineNode, kind: int, item: Any) -> bool:
        """Whether ``node`` can take a client event now; a paused node queues it.

        A crashed node loses it. A paused one keeps it in its inbox and hands it to
        :meth:`on_queued` when it resumes.
        """
        if not node.up:
            return False
        if node.paused:
            node.inbox.append((kind, item))
            return False
        return True

    def count_fault(self, kind: str) -> None:
        """Count an injected fault by kind."""
        self.fault_counts[kind] = self.fault_counts.get(kind, 0) + 1

    # ------------------------------------------------------------------ network

    def send(self, m: Message, via: int | None = None) -> None:
        """Send ``m`` one hop along the overlay (from ``via``, default its source)."""
        rand = self._random
        if rand() < self.base_drop + self.extra_drop:
            self.dropped += 1
            return
        src = self.by_id[m.src] if via is None else via
        link = (src, self._hop[src][self.by_id[m.dst]])
        self._seq += 1
        heapq.heappush(self._heap, (self.now + self.latency(), self._seq, DELIVER, m, link))
        if rand() < self.base_dup + self.extra_dup:
            self.duplicated += 1
            self.push(self.now + self.latency(), DELIVER, m, link)

    def _deliver(self, m: Message, link: tuple[int, int]) -> None:
        if link in self.blocked:
            self.dropped += 1
            return
        node = self.nodes[link[1]]
        if not node.up:
            self.dropped += 1
            return
        if node.paused:
            node.inbox.append((DELIVER, (m, link)))
            return
        self._arrive(node, m)

    def _arrive(self, node: EngineNode, m: Message) -> None:
        if node.id != m.dst:
            # a relay: forward one more hop; the relay cannot change what it carries
            self.relayed += 1
            self.send(m, via=node.index)
            return
        self.delivered += 1
        line = f"{self.now} {m.src}>{m.dst} {self.message_key(m)}"
        self._trace_buf.append(line)
        self.recent.append(line)
        if len(self._trace_buf) >= 2048:
            self._flush_trace()
        self.on_message(node, m)

    # ------------------------------------------------------------------ nodes

    def schedule_tick(self, node: EngineNode) -> None:
        """Schedule the node's next tick at its (possibly drifting) clock rate."""
        interval = max(1, int(self.tick_us / node.rate))
        self.push(self.now + interval, TICK, node.index, node.tick_gen)

    def _tick(self, index: int, gen: int) -> None:
        node = self.nodes[index]
        if gen != node.tick_gen or not node.up:
            return
        self.schedule_tick(node)
        if node.paused:
            node.missed_ticks += 1  # its clock keeps running while the process is stopped
            return
        self.on_tick(node)

    def _crash(self, node: EngineNode) -> None:
        node.up = False
        node.paused = False
        node.missed_ticks = 0
        node.inbox.clear()
        node.tick_gen += 1
        self.crash_node(node)
        self.trace(f"{node.id} crash")

    def _restart(self, node: EngineNode) -> None:
        node.up = True
        node.tick_gen += 1
        self.restart_node(node)
        self.schedule_tick(node)

    def _resume(self, node: EngineNode) -> None:
        node.paused = False
        self.trace(f"{node.id} resume ({len(node.inbox)} queued, {node.missed_ticks} ticks)")
        # Like a process after SIGSTOP: its monotonic clock moved on, so the time that
        # passed is seen before anything that queued up in the meantime.
        missed, node.missed_ticks = node.missed_ticks, 0
        for _ in range(missed):
            if not node.up:
                return
            self.on_tick(node)
        inbox, node.inbox = node.inbox, []
        for kind, item in inbox:
            if not node.up or node.paused:
                break
            if kind == DELIVER:
                self._arrive(node, item[0])
            else:
                self.on_queued(node, kind, item)

    # ------------------------------------------------------------------ nemesis

    def _nemesis(self) -> None:
        if self.now >= self.faults_end_us:
            return
        cfg = self.config
        rng = self.rng
        lo, hi = cfg.nemesis_interval_s
        self.push(self.now + int(rng.uniform(lo, hi) * 1e6), NEMESIS)
        if not cfg.faults:
            return
        kind = cfg.faults[rng.randrange(len(cfg.faults))]
        dlo, dhi = cfg.fault_duration_s
        heal_at = min(self.faults_end_us, self.now + int(rng.uniform(dlo, dhi) * 1e6))
        n = len(self.nodes)
        detail: Any = None
        if kind == "drop":
            amount = rng.uniform(0.1, 0.5)
            self.extra_drop += amount
            detail = amount
        elif kind == "dup":
            amount = rng.uniform(0.05, 0.3)
            self.extra_dup += amount
            detail = amount
        elif kind == "reorder":
            amount = int(rng.uniform(5, 50) * 1000)
            self.jitter_us += amount
            detail = amount
        elif kind in ("partition", "oneway"):
            if n < 2:
                return
            order = list(range(n))
            rng.shuffle(order)
            cut = rng.randrange(1, n)
            side_a, side_b = order[:cut], order[cut:]
            links = [(a, b) for a in side_a for b in side_b]
            if kind == "partition":
                links += [(b, a) for a, b in links]
            self.block_links(links)
            detail = links
            self.trace(f"nemesis {kind} {sorted(side_a)}|{sorted(side_b)}")
        elif kind in ("crash", "pause"):
            down = sum(1 for x in self.nodes if not x.up or x.paused)
            candidates = [x for x in self.nodes if x.up and not x.paused]
            if down >= self._max_down or not candidates:
                return
            node = candidates[rng.randrange(len(candidates))]
            if kind == "crash":
                self._crash(node)
            else:
                node.paused = True
                self.trace(f"{node.id} pause")
            detail = node.index
        elif kind == "drift":
            node = self.nodes[rng.randrange(n)]
            node.rate = 1.0 + rng.uniform(-cfg.max_drift, cfg.max_drift)
            self.trace(f"{node.id} drift {node.rate:.4f}")
            detail = node.index
        else:
            detail = self.backend_fault(kind)
            if detail is None:
                return
        self.count_fault(kind)
        record = (kind, detail)
        self._active_faults.append(record)
        self.push(heal_at, HEAL, record)

    def _heal(self, record: tuple[str, Any]) -> None:
        if record not in self._active_faults:
            return
        self._active_faults.remove(record)
        kind, detail = record
        self.trace(f"heal {kind}")
        self.last_heal_us = self.now
        if kind == "drop":
            self.extra_drop = max(0.0, self.extra_drop - detail)
        elif kind == "dup":
            self.extra_dup = max(0.0, self.extra_dup - detail)
        elif kind == "reorder":
            self.jitter_us = max(0, self.jitter_us - detail)
        elif kind in ("partition", "oneway"):
            self.unblock_links(detail)
        elif kind == "crash":
            node = self.nodes[detail]
            if not node.up:
                self._restart(node)
        elif kind == "pause":
            node = self.nodes[detail]
            if node.paused:
                self._resume(node)
        elif kind == "drift":
            self.nodes[detail].rate = 1.0
        else:
            self.heal_backend_fault(kind, detail)

    def block_links(self, links: list[tuple[int, int]]) -> None:
        """Cut each directed link ``(from, to)`` (cuts nest: each needs its own unblock)."""
        for link in links:
            self.blocked[link] = self.blocked.get(link, 0) + 1

    def unblock_links(self, links: list[tuple[int, int]]) -> None:
        """Undo one :meth:`block_links` of these links."""
        for link in links:
            left = self.blocked[link] - 1
            if left:
                self.blocked[link] = left
            else:
                del self.blocked[link]

    def _heal_all(self) -> None:
        for record in list(self._active_faults):
            self._heal(record)

    def _check(self) -> None:
        self.on_check()
        self.push(self.now + int(self.config.invariant_interval_s * 1e6), CHECK)

    # ------------------------------------------------------------------ run

    def result(
        self,
        started: float,
        *,
        history: list[Op],
        violation: InvariantViolation | None,
        invariant_checks: dict[str, int],
        leader_changes: int,
        terms: int,
        rejected: dict[str, int],
        commit_index: int,
        properties: dict[str, Any],
        property_violations: list[str] | None = None,
    ) -> SimResult:
        """The run's :class:`SimResult`: the backend's figures plus the engine's own.

        ``started`` is the ``time.perf_counter()`` at the start of the run. Call once, at
        the end: it takes the trace hash.
        """
        return SimResult(
            config=self.config,
            trace_hash=self.trace_hash(),
            history=history,
            violation=violation,
            recent_events=list(self.recent),
            invariant_checks=invariant_checks,
            faults=dict(sorted(self.fault_counts.items())),
            leader_changes=leader_changes,
            terms=terms,
            messages_delivered=self.delivered,
            messages_dropped=self.dropped,
            messages_duplicated=self.duplicated,
            messages_relayed=self.relayed,
            events=self.events,
            sim_seconds=self.now / 1e6,
            wall_seconds=time.perf_counter() - started,
            rejected=dict(sorted(rejected.items())),
            commit_index=commit_index,
            properties=properties,
            property_violations=property_violations or [],
        )

    def run_loop(self) -> None:
        """Run events until the configured end; backend exceptions propagate."""
        for node in self.nodes:
            self.schedule_tick(node)
        self.on_start()
        if self.config.faults:
            self.push(int(self.rng.uniform(*self.config.nemesis_interval_s) * 1e6), NEMESIS)
        self.push(self.faults_end_us, STOP_FAULTS)
        self.push(int(self.config.invariant_interval_s * 1e6), CHECK)
        heap = self._heap
        pop = heapq.heappop
        end = self.end_us
        handlers = self._handlers
        deliver = self._deliver
        while heap:
            at, _, kind, a, b = pop(heap)
            if at > end:
                break
            self.now = at
            self.events += 1
            if kind == DELIVER:
                deliver(a, b)
            else:
                handlers[kind](a, b)
        self.now = min(self.now, end)
