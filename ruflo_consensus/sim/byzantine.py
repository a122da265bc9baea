"""Byzantine replicas for the PBFT simulator: named behaviours of a colluding adversary.

A Byzantine replica runs an ordinary :class:`~ruflo_consensus.core.pbft.PbftCore` (so it
knows the view, the sequence numbers and holds valid messages to abuse) wrapped in a
:class:`Behaviour` that filters what reaches the core (:meth:`Behaviour.incoming`),
rewrites what leaves it (:meth:`Behaviour.outgoing`) and injects messages of its own on
every tick (:meth:`Behaviour.on_tick`). It holds its own signing key only: whatever it
signs in another replica's or a client's name cannot verify. The Byzantine replicas of a
run share an :class:`Adversary` and collude (an equivocating primary's accomplices vote for
both of its batches).

Behaviours (``--behaviours``): see :data:`~ruflo_consensus.sim.config.BYZANTINE_DESCRIPTIONS`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..canonical import canonical_bytes
from ..core.base import Message, NodeId
from ..core.pbft import PbftCore, PbftFrame, Signed, Signer, batch_digest, decode_body, seal
from ..core.pbft.messages import (
    CHECKPOINT,
    COMMIT,
    COMMIT_CERT,
    PRE_PREPARE,
    PREPARE,
    READ_REPLY,
    REPLY,
    REQUEST,
    STATE,
    VIEW_CHANGE,
    Checkpoint,
    Payload,
    PrePrepare,
    ReadReply,
    ReadRequest,
    Reply,
    Request,
    State,
    ViewChange,
    Vote,
)

__all__ = ["Adversary", "Behaviour", "make_behaviour"]


@dataclass
class Adversary:
    """What a run's Byzantine replicas share: who they are, and the splits they agreed on.

    ``splits[(view, seq)]`` maps each digest an equivocating primary sent to the honest
    replicas it sent it to.
    """

    members: dict[NodeId, Signer]
    replicas: tuple[NodeId, ...]
    honest: list[NodeId]
    f: int
    clients: Callable[[], list[str]]
    victim_client: str = "c0"
    splits: dict[tuple[int, int], dict[bytes, list[NodeId]]] = field(default_factory=dict)

    def primary(self, view: int) -> NodeId:
        """The primary of ``view``."""
        return self.replicas[view % len(self.replicas)]

    def is_victim(self, client: str) -> bool:
        """True for every identity of the censored client (``c0``, ``c0g1``, …)."""
        v = self.victim_client
        return client == v or client.startswith(v + "g")


def _payload(env: Signed) -> Payload | None:
    try:
        return decode_body(env.body)
    except Exception:
        return None


def _forge(signer: Signer, name: str, kind: int, *fields: Any, garbage: bool = False) -> Signed:
    """An envelope in ``name``'s name, signed with ``signer``'s key (or random bytes)."""
    body = canonical_bytes([kind, name, *(_wire(f) for f in fields)])
    if garbage:
        return Signed(body, random.Random(body).randbytes(64))
    return Signed(body, signer.sign(body))


def _wire(value: Any) -> Any:
    if isinstance(value, Signed):
        return value.wire()
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


class Behaviour:
    """Base: an honest replica (forwards everything unchanged). Subclasses misbehave."""

    name = "honest"

    def __init__(
        self,
        node_id: NodeId,
        core: Callable[[], PbftCore | None],
        adversary: Adversary,
        rng: random.Random,
    ) -> None:
        self.node_id = node_id
        self.core = core
        self.adversary = adversary
        self.signer = adversary.members[node_id]
        self.rng = rng
        self.ticks = 0
        self.injected = 0  # messages it made up, altered or (censor) suppressed

    def incoming(self, frame: PbftFrame) -> PbftFrame | None:
        """What of ``frame`` the core gets to see (None: nothing)."""
        return frame

    def outgoing(self, frames: list[Message]) -> list[Message]:
        """What actually leaves, given what the honest core wanted to send."""
        return frames

    def on_tick(self) -> list[Message]:
        """Messages the adversary injects on this tick."""
        self.ticks += 1
        return []

    def _frame(self, dst: NodeId, items: Iterable[Signed]) -> PbftFrame:
        self.injected += 1
        return PbftFrame(self.node_id, dst, tuple(items))

    def _to_honest(self, items: list[Signed]) -> list[Message]:
        return [self._frame(h, items) for h in self.adversary.honest]


class Silent(Behaviour):
    """Sends nothing at all."""

    name = "silent"

    def outgoing(self, frames: list[Message]) -> list[Message]:
        self.injected += len(frames)
        return []


class Equivocate(Behaviour):
    """As primary: two different batches for one sequence number; accomplices vote both."""

    name = "equivocate"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.alternatives: dict[tuple[int, int], Signed] = {}
        self.voted: set[tuple[int, int, bytes]] = set()
        order = list(self.adversary.honest)
        self.rng.shuffle(order)
        half = (len(order) + 1) // 2
        self.group_a, self.group_b = order[:half], order[half:]

    def outgoing(self, frames: list[Message]) -> list[Message]:
        out: list[Message] = []
        for frame in frames:
            if not isinstance(frame, PbftFrame):
                out.append(frame)
                continue
            items: list[Signed] = []
            for env in frame.items:
                p = _payload(env)
                if isinstance(p, PrePrepare) and p.signer == self.node_id and p.requests:
                    alt = self._alternative(p)
                    if frame.dst in self.group_b:
                        env = alt
                        self.injected += 1
                    elif frame.dst in self.adversary.members:
                        items.append(alt)
                elif isinstance(p, Vote) and p.signer == self.node_id:
                    split = self.adversary.splits.get((p.view, p.seq))
                    if split is not None and frame.dst not in split.get(p.digest, [frame.dst]):
                        continue  # this honest replica was shown the other batch
                items.append(env)
            if items:
                out.append(PbftFrame(frame.src, frame.dst, tuple(items)))
        return out + self._collude()

    def _alternative(self, pp: PrePrepare) -> Signed:
        key = (pp.view, pp.seq)
        alt = self.alternatives.get(key)
        if alt is None:
            reqs = list(reversed(pp.requests)) if len(pp.requests) > 1 else []
            digest = batch_digest([e.body for e in reqs])
            alt = seal(self.signer, PRE_PREPARE, pp.view, pp.seq, digest, reqs)
            self.alternatives[key] = alt
            self.adversary.splits[key] = {pp.digest: self.group_a, digest: self.group_b}
        return alt

    def _collude(self) -> list[Message]:
        """Vote (prepare and commit) for every batch of a split, to the replicas shown it."""
        out: list[Message] = []
        for (view, seq), split in self.adversary.splits.items():
            for digest, group in split.items():
                if (view, seq, digest) in self.voted:
                    continue
                self.voted.add((view, seq, digest))
                votes = [seal(self.signer, COMMIT, view, seq, digest)]
                if self.adversary.primary(view) != self.node_id:
                    votes.insert(0, seal(self.signer, PREPARE, view, seq, digest))
                out.extend(self._frame(dst, votes) for dst in group)
        return out

    def on_tick(self) -> list[Message]:
        super().on_tick()
        out = self._collude()
        core = self.core()
        if core is None or self.ticks % 30 or not core.active:
            return out
        if core.leader in self.adversary.members:
            return out
        # push for the next view whose primary is one of us
        view = core.view + 1
        while self.adversary.primary(view) not in self.adversary.members:
            view += 1
        h, digest = core.stable_checkpoint
        vc = seal(self.signer, VIEW_CHANGE, view, h, digest, list(core.stable_proof), [])
        return out + self._to_honest([vc])


class Forge(Behaviour):
    """Fabricates a whole commit path, in other replicas' and a client's names."""

    name = "forge"

    def on_tick(self) -> list[Message]:
        super().on_tick()
        core = self.core()
        if core is None or self.ticks % 7 or not core.active:
            return []
        adv = self.adversary
        view = core.view
        seq = core.highest_seq + 1 + self.rng.randrange(2)
        victim = adv.honest[self.rng.randrange(len(adv.honest))]
        garbage = self.rng.random() < 0.5
        clients = adv.clients() or ["c0"]
        client = clients[self.rng.randrange(len(clients))]
        op = {"key": "k0", "op": "put", "value": f"forged-{self.node_id}-{self.ticks}"}
        req = _forge(self.signer, client, REQUEST, 10**6 + self.ticks, op, garbage=garbage)
        digest = batch_digest([req.body])
        primary = adv.primary(view)
        pp = _forge(self.signer, primary, PRE_PREPARE, view, seq, digest, [req], garbage=garbage)
        prepares = [
            _forge(self.signer, r, PREPARE, view, seq, digest, garbage=garbage)
            for r in adv.replicas
            if r not in (primary, victim)
        ]
        commits = [
            _forge(self.signer, r, COMMIT, view, seq, digest, garbage=garbage)
            for r in adv.replicas
            if r != victim
        ]
        cert = seal(self.signer, COMMIT_CERT, seq, pp, commits)
        return [self._frame(victim, [pp, *prepares, *commits]), self._frame(victim, [cert])]


class Replay(Behaviour):
    """Keeps old messages it received and sends them again, later, to others."""

    name = "replay"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seen: list[Signed] = []

    def incoming(self, frame: PbftFrame) -> PbftFrame | None:
        for env in frame.items:
            if self.rng.random() < 0.3:
                if len(self.seen) >= 400:
                    self.seen[self.rng.randrange(400)] = env
                else:
                    self.seen.append(env)
        return frame

    def on_tick(self) -> list[Message]:
        super().on_tick()
        if self.ticks % 5 or not self.seen:
            return []
        items = [self.seen[self.rng.randrange(len(self.seen))] for _ in range(6)]
        others = [r for r in self.adversary.replicas if r != self.node_id]
        return [self._frame(others[self.rng.randrange(len(others))], items)]


class Conflict(Behaviour):
    """Casts its prepares and commits for a made-up digest to half the replicas."""

    name = "conflict"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.fakes: dict[tuple[int, int, int], Signed] = {}
        self.misled = {r for i, r in enumerate(self.adversary.replicas) if i % 2}

    def outgoing(self, frames: list[Message]) -> list[Message]:
        out: list[Message] = []
        for frame in frames:
            if not isinstance(frame, PbftFrame) or frame.dst not in self.misled:
                out.append(frame)
                continue
            items = []
            for env in frame.items:
                p = _payload(env)
                if isinstance(p, Vote) and p.signer == self.node_id:
                    env = self._fake(p.kind, p.view, p.seq)
                    self.injected += 1
                items.append(env)
            out.append(PbftFrame(frame.src, frame.dst, tuple(items)))
        return out

    def _fake(self, kind: int, view: int, seq: int) -> Signed:
        key = (kind, view, seq)
        fake = self.fakes.get(key)
        if fake is None:
            digest = self.rng.randbytes(32)
            fake = self.fakes[key] = seal(self.signer, kind, view, seq, digest)
            if len(self.fakes) > 4096:
                self.fakes.clear()
        return fake

    def on_tick(self) -> list[Message]:
        super().on_tick()
        core = self.core()
        if core is None or self.ticks % 10:
            return []
        # a commit for a sequence number nobody prepared yet
        return self._to_honest([self._fake(COMMIT, core.view, core.highest_seq + 1)])


class LieCheckpoint(Behaviour):
    """Wrong checkpoint digests, corrupted state transfers, unprovable view-change claims."""

    name = "lie-checkpoint"

    def _lie(self, seq: int) -> Signed:
        digest = random.Random(f"{self.node_id}/{seq}").randbytes(32)
        return seal(self.signer, CHECKPOINT, seq, digest)

    def outgoing(self, frames: list[Message]) -> list[Message]:
        core = self.core()
        k = core.config.checkpoint_interval if core is not None else 128
        out: list[Message] = []
        for frame in frames:
            if not isinstance(frame, PbftFrame):
                out.append(frame)
                continue
            items = []
            for env in frame.items:
                p = _payload(env)
                if isinstance(p, Checkpoint) and p.signer == self.node_id:
                    items += [self._lie(p.seq), self._lie(p.seq + k)]
                    self.injected += 2
                    continue
                if isinstance(p, State) and p.signer == self.node_id:
                    bad = p.snapshot[:-1] + bytes([p.snapshot[-1] ^ 1]) if p.snapshot else b"x"
                    env = seal(self.signer, STATE, p.seq, bad, list(p.proof))
                    self.injected += 1
                elif isinstance(p, ViewChange) and p.signer == self.node_id:
                    claim = p.stable_seq + k
                    lie = self._lie(claim)
                    digest = decode_body(lie.body).state_digest  # type: ignore[union-attr]
                    certs = [[c.pre_prepare, list(c.prepares)] for c in p.prepared]
                    env = seal(self.signer, VIEW_CHANGE, p.view, claim, digest, [lie], certs)
                    self.injected += 1
                items.append(env)
            out.append(PbftFrame(frame.src, frame.dst, tuple(items)))
        return out


class Censor(Behaviour):
    """Ignores one client's requests (so only a view change can serve that client)."""

    name = "censor"

    def incoming(self, frame: PbftFrame) -> PbftFrame | None:
        items = []
        for env in frame.items:
            p = _payload(env)
            if isinstance(p, Request | ReadRequest) and self.adversary.is_victim(p.signer):
                self.injected += 1  # (counts the requests it censored)
                continue
            items.append(env)
        return PbftFrame(frame.src, frame.dst, tuple(items)) if items else None


class WrongReply(Behaviour):
    """Answers clients with a made-up result (all liars tell the same lie)."""

    name = "wrong-reply"

    def outgoing(self, frames: list[Message]) -> list[Message]:
        out: list[Message] = []
        for frame in frames:
            if isinstance(frame, PbftFrame) and frame.dst not in self.adversary.replicas:
                items = []
                for env in frame.items:
                    p = _payload(env)
                    if isinstance(p, Reply):
                        env = seal(self.signer, REPLY, p.view, p.client, p.t, ["ok", "lie"])
                        self.injected += 1
                    elif isinstance(p, ReadReply):
                        lie = ["ok", "lie"]
                        env = seal(self.signer, READ_REPLY, p.view, p.client, p.t, p.seq, lie)
                        self.injected += 1
                    items.append(env)
                frame = PbftFrame(frame.src, frame.dst, tuple(items))
            out.append(frame)
        return out


BEHAVIOURS: dict[str, type[Behaviour]] = {
    b.name: b
    for b in (Silent, Equivocate, Forge, Replay, Conflict, LieCheckpoint, Censor, WrongReply)
}


def make_behaviour(
    name: str,
    node_id: NodeId,
    core: Callable[[], PbftCore | None],
    adversary: Adversary,
    rng: random.Random,
) -> Behaviour:
    """The behaviour called ``name`` for Byzantine replica ``node_id``."""
    try:
        cls = BEHAVIOURS[name]
    except KeyError:
        raise ValueError(f"unknown Byzantine behaviour {name!r}") from None
    return cls(node_id, core, adversary, rng)
