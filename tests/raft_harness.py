"""A tiny synchronous router for driving RaftCore instances by hand in unit tests."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from ruflo_consensus.core.base import Entry, HardState, Message, ReadState, Role
from ruflo_consensus.core.raft import RaftConfig, RaftCore


class Harness:
    """Cores plus a message queue; ``cut`` holds (src, dst) pairs whose messages are lost."""

    def __init__(self, n: int = 3, seed: int = 0, config: RaftConfig | None = None) -> None:
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.config = config or RaftConfig()
        self.rng = random.Random(seed)
        self.cores: dict[str, RaftCore] = {
            nid: RaftCore(nid, self.ids, random.Random(self.rng.getrandbits(32)), self.config)
            for nid in self.ids
        }
        self.persisted: dict[str, tuple[HardState | None, list[Entry]]] = {
            nid: (None, []) for nid in self.ids
        }
        self.queue: list[Message] = []
        self.cut: set[tuple[str, str]] = set()
        self.applied: dict[str, list[Entry]] = {nid: [] for nid in self.ids}
        self.reads: dict[str, list[ReadState]] = {nid: [] for nid in self.ids}
        self.down: set[str] = set()

    def flush(self, nid: str) -> None:
        core = self.cores[nid]
        if not core.has_ready():
            return
        rd = core.ready()
        hs, log = self.persisted[nid]
        if rd.persist.truncate_from is not None:
            del log[rd.persist.truncate_from - 1 :]
        log.extend(rd.persist.entries)
        self.persisted[nid] = (rd.persist.hard_state or hs, log)
        self.queue.extend(rd.messages)
        self.applied[nid].extend(c.entry for c in rd.committed)
        self.reads[nid].extend(rd.reads)

    def run(self, max_steps: int = 10_000, drop: Callable[[Message], bool] | None = None) -> int:
        """Deliver queued messages until quiet; returns how many were delivered."""
        for nid in self.ids:
            if nid not in self.down:
                self.flush(nid)
        delivered = 0
        while self.queue and delivered < max_steps:
            m = self.queue.pop(0)
            if (m.src, m.dst) in self.cut or m.dst in self.down or (drop and drop(m)):
                continue
            self.cores[m.dst].step(m)
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

    def restart(self, nid: str) -> None:
        hs, log = self.persisted[nid]
        self.cores[nid] = RaftCore(
            nid, self.ids, random.Random(self.rng.getrandbits(32)), self.config, hs, list(log)
        )
        self.applied[nid] = []
        self.down.discard(nid)
