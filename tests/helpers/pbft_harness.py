"""A hand-routed PBFT cluster for unit tests: a FIFO of frames, no simulator."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ruflo_consensus.core.base import Entry, ProtocolError
from ruflo_consensus.core.pbft import (
    Keyring,
    PbftConfig,
    PbftCore,
    PbftFrame,
    Signed,
    Signer,
    decode_body,
    decode_result,
    sign_request,
)
from ruflo_consensus.core.pbft.messages import ReadReply, Reply
from ruflo_consensus.statemachine import KVStateMachine

SECRET = b"pbft-unit-tests"

NOTHING = object()
Filter = Callable[[PbftFrame], bool]


class Cluster:
    """``n`` replicas, clients and a FIFO network with a drop filter and a down set."""

    def __init__(self, n: int = 4, config: PbftConfig | None = None, clients: int = 2) -> None:
        self.ids = [f"n{i}" for i in range(n)]
        self.signers = {i: Signer.derived(SECRET, i) for i in self.ids}
        self.client_signers = {f"c{i}": Signer.derived(SECRET, f"c{i}") for i in range(clients)}
        self.keyring = Keyring(
            {i: s.public_key for i, s in self.signers.items()},
            {c: s.public_key for c, s in self.client_signers.items()},
        )
        self.config = config or PbftConfig(checkpoint_interval=4, window=8)
        self.durable: dict[str, bytes | None] = dict.fromkeys(self.ids)
        self.cores = {i: self._make(i) for i in self.ids}
        self.queue: deque[PbftFrame] = deque()
        self.replies: dict[str, list[tuple[str, Reply]]] = {c: [] for c in self.client_signers}
        self.executed: dict[str, list[Entry]] = {i: [] for i in self.ids}
        self.down: set[str] = set()
        self.drop: Filter = lambda frame: False
        self.errors: list[ProtocolError] = []
        self.timestamps = dict.fromkeys(self.client_signers, 0)

    def _make(self, node: str) -> PbftCore:
        return PbftCore(
            node,
            self.ids,
            self.signers[node],
            self.keyring,
            KVStateMachine(),
            self.config,
            self.durable[node],
        )

    def collect(self, node: str) -> None:
        core = self.cores[node]
        if core is None or not core.has_ready():
            return
        rd = core.ready()
        if rd.persist.state is not None:
            self.durable[node] = rd.persist.state
        self.queue.extend(m for m in rd.messages if isinstance(m, PbftFrame))
        self.executed[node].extend(c.entry for c in rd.committed)

    def deliver_all(self, limit: int = 100_000) -> int:
        delivered = 0
        for node in self.ids:
            self.collect(node)
        while self.queue and delivered < limit:
            frame = self.queue.popleft()
            if self.drop(frame) or frame.src in self.down or frame.dst in self.down:
                continue
            delivered += 1
            if frame.dst in self.replies:
                for env in frame.items:
                    payload = decode_body(env.body)
                    assert isinstance(payload, Reply | ReadReply)
                    self.replies[frame.dst].append((payload.signer, payload))  # type: ignore[arg-type]
                continue
            try:
                self.cores[frame.dst].step(frame)
            except ProtocolError as exc:
                self.errors.append(exc)
            self.collect(frame.dst)
        return delivered

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for node in self.ids:
                if node not in self.down:
                    self.cores[node].tick()
                    self.collect(node)
            self.deliver_all()

    def request(self, client: str, op: dict[str, Any], to: list[str] | None = None) -> int:
        self.timestamps[client] += 1
        t = self.timestamps[client]
        env = sign_request(self.client_signers[client], t, op)
        for node in to or [self.cores[self.ids[0]].leader or self.ids[0]]:
            self.send_env(client, node, env)
        return t

    def send_env(self, src: str, node: str, *envs: Signed) -> None:
        self.queue.append(PbftFrame(src, node, tuple(envs)))

    def accepted(self, client: str, t: int) -> Any:
        """The result f+1 replicas agree on for ``(client, t)`` (NOTHING when there is none)."""
        f = (len(self.ids) - 1) // 3
        votes: dict[bytes, set[str]] = {}
        values: dict[bytes, Any] = {}
        import msgpack

        for signer, reply in self.replies[client]:
            if not isinstance(reply, Reply) or reply.t != t:
                continue
            key = msgpack.packb(reply.result)
            votes.setdefault(key, set()).add(signer)
            values[key] = decode_result(reply.result)
        for key, signers in votes.items():
            if len(signers) >= f + 1:
                return values[key]
        return NOTHING

    def crash(self, node: str) -> None:
        self.down.add(node)
        self.cores[node] = None  # type: ignore[assignment]

    def restart(self, node: str) -> None:
        self.down.discard(node)
        self.cores[node] = self._make(node)
        self.collect(node)
