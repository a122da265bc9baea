"""The ``membership`` nemesis and the membership-safety checks of the Raft simulation.

The nemesis plays an operator who changes the cluster while it serves. A ``membership``
fault removes a random voter — the leader itself about a third of the time — keeping a
majority of the original nodes as voters; when the fault heals the operator adds the
node back the careful way: as a learner first, promoted to voter once it has caught up.
The operator works like a reconciliation loop: every few tens of milliseconds it asks
the current leader for the next step of every node it manages, so a refusal (no leader,
a change in progress, a learner still behind) is simply tried again later, and several
changes may be asked for at once — which a correct core refuses one at a time.

The checks (``membership-safety``) hold for any core that follows the single-server
rule, and a core that breaks it fails them:

- when a leader appends a configuration entry, no other configuration entry of its log
  lies past the highest commit index any node has reached (one change at a time), and
  an entry of the leader's term is already committed (the rule that closes the 2015
  single-server change bug);
- in every log each configuration entry is one valid single-server step from the
  configuration before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.base import ConfChange, ConfChangeKind, ConfChangeRefused, Entry, Ready, Role
from ..core.raft import RaftCore
from ..core.raft.membership import Configuration, apply_change
from .engine import FIRST_BACKEND_KIND, EngineNode
from .invariants import InvariantViolation

if TYPE_CHECKING:
    from .raft_sim import RaftSimulation

__all__ = ["MEMBERSHIP_STEP", "MembershipInvariants", "MembershipNemesis"]

# the operator's event kind (well above the simulator's own kinds)
MEMBERSHIP_STEP = FIRST_BACKEND_KIND + 40

_OUT, _IN = "out", "in"


def _describe_conf(conf: Configuration) -> str:
    learners = f" learners {list(conf.learners)}" if conf.learners else ""
    return f"voters {list(conf.voters)}{learners}"


def _describe_change(c: ConfChange) -> str:
    return f"({c.kind} {c.node} -> {_describe_conf(Configuration.of(c))})"


class MembershipInvariants:
    """Membership safety over a whole simulated cluster (see the module docstring)."""

    NAME = "membership-safety"

    def __init__(self) -> None:
        self.max_commit = 0
        self.checks: dict[str, int] = {self.NAME: 0}

    def on_ready(self, node: EngineNode, core: RaftCore, rd: Ready, now: int) -> None:
        """A node produced ``rd``: note its commit; check a leader's new configuration entry."""
        if core.commit > self.max_commit:
            self.max_commit = core.commit
        entries = rd.persist.entries
        if not entries or core.role is not Role.LEADER:
            return
        for e in entries:
            if e.conf is not None and e.term == core.term:
                self._check_leader_append(node.id, core, e, now)

    def _check_leader_append(self, node: str, core: RaftCore, entry: Entry, now: int) -> None:
        self.checks[self.NAME] += 1
        conf = entry.conf
        assert conf is not None
        # log[0] stands for the snapshot point: a compacted first entry of the term is there
        first_of_term = next((e.index for e in core.log if e.term == core.term), entry.index)
        what = f"{node} appended configuration change {_describe_change(conf)} at {entry.index}"
        if first_of_term > self.max_commit:
            raise InvariantViolation(
                self.NAME,
                now,
                f"{what} in term {core.term} before any entry of that term was committed "
                f"(the highest commit is {self.max_commit})",
            )
        pending = [
            e.index
            for e in core.log[1:]
            if e.conf is not None and e.index > self.max_commit and e.index != entry.index
        ]
        if pending:
            raise InvariantViolation(
                self.NAME,
                now,
                f"{what} while the change at index {pending[-1]} was not committed (highest "
                f"commit {self.max_commit}): two configuration changes in flight",
            )

    def check_logs(
        self, logs: dict[str, tuple[list[Entry], Configuration | None]], now: int
    ) -> None:
        """Every configuration entry is one single-server step from the one before it.

        ``logs`` maps each node to its log and the configuration at the log's start (None
        when unknown, for a crashed node: its first configuration entry is then not
        checked against anything).
        """
        self.checks[self.NAME] += 1
        for node, (log, base) in logs.items():
            prev = base
            for e in log[1:]:
                c = e.conf
                if c is None:
                    continue
                new = Configuration.of(c)
                if prev is not None and not _one_step(prev, new, c.kind, c.node):
                    raise InvariantViolation(
                        self.NAME,
                        now,
                        f"{node}'s configuration entry {e.index} ({c.kind} {c.node}) goes from "
                        f"{_describe_conf(prev)} to {_describe_conf(new)}: not one "
                        "single-server step",
                    )
                prev = new


def _one_step(prev: Configuration, new: Configuration, kind: ConfChangeKind, node: str) -> bool:
    try:
        want = apply_change(prev, kind, node)
    except ConfChangeRefused:
        return False
    return set(want.voters) == set(new.voters) and set(want.learners) == set(new.learners)


class MembershipNemesis:
    """The operator behind the ``membership`` fault (see the module docstring)."""

    def __init__(self, sim: RaftSimulation) -> None:
        self.sim = sim
        self.desired: dict[int, str] = {}
        self._was_out: set[int] = set()
        self.stats: dict[str, int] = {}
        self._scheduled = False
        sim.handle(MEMBERSHIP_STEP, lambda a, b: self._step())

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _leader(self) -> tuple[EngineNode, RaftCore] | None:
        best: tuple[EngineNode, RaftCore] | None = None
        for n, core in self.sim.leaders():
            if best is None or core.term > best[1].term:
                best = (n, core)
        return best

    def _schedule(self, delay_us: int) -> None:
        if not self._scheduled and self.desired and self.sim.now < self.sim.end_us:
            self._scheduled = True
            self.sim.push(self.sim.now + delay_us, MEMBERSHIP_STEP)

    def inject(self) -> Any:
        """Pick a voter to remove (the leader about a third of the time); None to skip."""
        sim = self.sim
        n = len(sim.nodes)
        if len(self.desired) >= (n - 1) // 2:
            return None  # a majority of the original nodes stays in as voters
        candidates = [node.id for node in sim.nodes if node.index not in self.desired]
        found = self._leader()
        if found is not None and found[0].id in candidates and sim.rng.random() < 1 / 3:
            victim = found[0].id
            self._count("leader chosen for removal")
        else:
            victim = candidates[sim.rng.randrange(len(candidates))]
        index = sim.by_id[victim]
        self.desired[index] = _OUT
        sim.trace(f"nemesis membership: remove {victim}")
        self._schedule(1)
        return index

    def heal(self, index: int) -> None:
        """Add the node back: as a learner, then promoted once it has caught up."""
        if self.desired.get(index) == _OUT:
            self.desired[index] = _IN
            self.sim.trace(f"nemesis membership: add back {self.sim.ids[index]}")
            self._schedule(1)

    def _step(self) -> None:
        self._scheduled = False
        found = self._leader()
        if found is not None:
            leader, core = found
            for index in sorted(self.desired):
                # an impatient operator asks for the next step at once (a correct core
                # refuses it while the first is uncommitted)
                if self._act(leader, core, index) and index in self.desired:
                    self._act(leader, core, index)
        lo, hi = 20_000, 80_000
        self._schedule(lo + int(self.sim.rng.random() * (hi - lo)))

    def _act(self, leader: EngineNode, core: RaftCore, index: int) -> bool:
        """Ask the leader for ``index``'s next step; True when it accepted a change."""
        if not leader.up or self.sim.raft[leader.index].core is not core:
            return False  # the leader crashed writing the last change
        node = self.sim.ids[index]
        want = self.desired[index]
        conf = core.configuration
        kind: ConfChangeKind
        if want == _OUT:
            if conf.is_voter(node):
                kind = ConfChangeKind.REMOVE_VOTER
            elif node in conf.learners:
                kind = ConfChangeKind.REMOVE_LEARNER
            else:
                return False  # out; it stays out until the fault heals
        elif conf.is_voter(node):
            if core.conf_index <= core.commit:
                del self.desired[index]  # a voter (again), and that is committed
                if index in self._was_out:
                    self._was_out.discard(index)
                    self._count("nodes re-added as voters")
            return False
        elif node in conf.learners:
            kind = ConfChangeKind.PROMOTE_LEARNER
        else:
            kind = ConfChangeKind.ADD_LEARNER
        try:
            core.propose_conf_change(kind, node)
        except ConfChangeRefused as exc:
            self._count(f"refused ({exc.reason})")
            return False
        self._count(str(kind))
        if want == _OUT:
            self._was_out.add(index)
            if node == leader.id:
                self._count("leaders that removed themselves")
        self.sim.trace(f"{leader.id} conf change {kind} {node}")
        self.sim.process_ready(leader)
        return True
