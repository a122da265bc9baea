"""A tiny synchronous router for driving RaftCore instances by hand in unit tests.

Each node persists through a :class:`MemoryStorage` (the same rules as the file WAL) and
applies committed entries to a KV machine behind a :class:`SessionTable`, carrying every
``Ready`` out in the contract's order: persist, send, restore the snapshot, apply, and —
when ``compact`` is on — answer a snapshot request with :meth:`RaftCore.compact`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from ruflo_consensus.core.base import Entry, HardState, Message, ProtocolError, ReadState, Role
from ruflo_consensus.core.raft import RaftConfig, RaftCore
from ruflo_consensus.statemachine import KVStateMachine, SessionTable, StateMachine
from ruflo_consensus.storage import MemoryStorage


class Harness:
    """Cores plus a message queue; ``cut`` holds (src, dst) pairs whose messages are lost.

    ``drop`` (when set) is asked about every message and loses those it returns True for;
    ``delivered`` lists every message that arrived, in order.
    """

    def __init__(
        self,
        n: int = 3,
        seed: int = 0,
        config: RaftConfig | None = None,
        compact: bool = False,
        core_class: type[RaftCore] = RaftCore,
        machine: Callable[[], StateMachine] = KVStateMachine,
    ) -> None:
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.bootstrap = list(self.ids)  # every core's `voters`, also for nodes added later
        self.config = config or RaftConfig()
        self.rng = random.Random(seed)
        self.compact = compact
        self.core_class = core_class
        self.machine = machine
        self.cores: dict[str, RaftCore] = {
            nid: core_class(nid, self.ids, random.Random(self.rng.getrandbits(32)), self.config)
            for nid in self.ids
        }
        self.storage: dict[str, MemoryStorage] = {nid: MemoryStorage() for nid in self.ids}
        self.machines: dict[str, SessionTable] = {nid: SessionTable(machine()) for nid in self.ids}
        self.queue: list[Message] = []
        self.send_before_persist = False
        self.delivered: list[Message] = []
        self.rejected: list[tuple[Message, str]] = []
        self.drop: Callable[[Message], bool] | None = None
        self.cut: set[tuple[str, str]] = set()
        self.applied: dict[str, list[Entry]] = {nid: [] for nid in self.ids}
        self.restored: dict[str, list[int]] = {nid: [] for nid in self.ids}
        self.requests: dict[str, list[int]] = {nid: [] for nid in self.ids}
        self.reads: dict[str, list[ReadState]] = {nid: [] for nid in self.ids}
        self.down: set[str] = set()

    @property
    def persisted(self) -> dict[str, tuple[HardState | None, list[Entry]]]:
        """Each node's stored hard state and log entries (after its snapshot)."""
        out = {}
        for nid, st in self.storage.items():
            stored = st.load()
            out[nid] = (stored.hard_state, stored.entries)
        return out

    def flush(self, nid: str) -> None:
        core = self.cores[nid]
        if not core.has_ready():
            return
        rd = core.ready()
        if self.send_before_persist:  # a deliberately wrong driver, for can-fail tests
            self.sent(nid, rd.messages)
            self.queue.extend(rd.messages)
            self.storage[nid].save(rd.persist)
        else:
            self.storage[nid].save(rd.persist)
            self.sent(nid, rd.messages)
            self.queue.extend(rd.messages)
        table = self.machines[nid]
        if rd.snapshot is not None:
            table.restore(rd.snapshot.data)
            self.restored[nid].append(rd.snapshot.index)
        for c in rd.committed:
            self.applied[nid].append(c.entry)
            p = c.entry.proposal
            if p is not None:
                table.apply(p.client, p.seq, p.command)
        self.reads[nid].extend(rd.reads)
        if rd.snapshot_request is not None:
            self.requests[nid].append(rd.snapshot_request)
        if self.compact and rd.snapshot_request is not None:
            core.compact(rd.snapshot_request, table.snapshot())
            self.flush(nid)

    def sent(self, nid: str, messages: list[Message]) -> None:
        """Called with each batch of messages a node sends (after its persist); a hook."""

    def run(self, max_steps: int = 10_000, drop: Callable[[Message], bool] | None = None) -> int:
        """Deliver queued messages until quiet; returns how many were delivered."""
        for nid in self.ids:
            if nid not in self.down:
                self.flush(nid)
        delivered = 0
        while self.queue and delivered < max_steps:
            m = self.queue.pop(0)
            drop = drop or self.drop
            if (m.src, m.dst) in self.cut or m.dst in self.down or (drop and drop(m)):
                continue
            self.delivered.append(m)
            try:
                self.cores[m.dst].step(m)
            except ProtocolError as exc:  # a driver counts the rejection and goes on
                self.rejected.append((m, exc.reason))
                continue
            delivered += 1
            self.flush(m.dst)
        return delivered

    def tick(self, times: int = 1, nodes: Iterable[str] | None = None) -> None:
        for _ in range(times):
            for nid in nodes or self.ids:
                if nid in self.down:
                    continue
                self.cores[nid].tick()
                self.flush(nid)
            self.run()

    def leaders(self) -> list[str]:
        return [n for n in self.ids if n not in self.down and self.cores[n].role is Role.LEADER]

    def elect(self, max_ticks: int = 200) -> str:
        for _ in range(max_ticks):
            self.tick()
            leaders = self.leaders()
            if len(leaders) == 1:
                return leaders[0]
        raise AssertionError("no leader elected")

    def isolate(self, nid: str) -> None:
        for other in self.ids:
            if other != nid:
                self.cut.add((nid, other))
                self.cut.add((other, nid))

    def heal(self) -> None:
        self.cut.clear()

    def add_node(self, nid: str) -> RaftCore:
        """Start a fresh node that joins the running cluster (``join=True``, empty log)."""
        core = self.core_class(
            nid, self.bootstrap, random.Random(self.rng.getrandbits(32)), self.config, join=True
        )
        self.ids.append(nid)
        self.cores[nid] = core
        self.storage[nid] = MemoryStorage()
        self.machines[nid] = SessionTable(self.machine())
        for d in (self.applied, self.restored, self.requests, self.reads):
            d[nid] = []  # type: ignore[assignment]
        return core

    def restart(self, nid: str) -> None:
        """Rebuild the node from its storage: snapshot, log after it, hard state."""
        stored = self.storage[nid].load()
        self.cores[nid] = self.core_class(
            nid,
            self.bootstrap,
            random.Random(self.rng.getrandbits(32)),
            self.config,
            stored.hard_state,
            stored.entries,
            snapshot=stored.snapshot,
            join=nid not in self.bootstrap,
        )
        self.machines[nid] = SessionTable(self.machine())
        self.applied[nid] = []
        self.down.discard(nid)
