"""Data-driven interaction tests for the Raft core, in the style of etcd's ``testdata/``.

Each file in ``testdata/raft/`` is a scenario: commands that build a small cluster of real
:class:`RaftCore` instances, tick them, move their messages and carry out their
``Ready``s by hand, each followed by the text the command is expected to print. The
driver here (:class:`RaftInteractions`) uses only the public API of the core; the runner
(:mod:`tests.helpers.datadriven`) compares outputs and, with ``--rewrite-testdata`` or
``RUFLO_REWRITE_TESTDATA=1``, records them. ``testdata/README.md`` lists the commands.

The runner is tested on its own below, and so is the claim that the scenarios can fail:
cores that are wrong in small, public ways must make at least one file mismatch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from ruflo_consensus.core import (
    ConfChangeKind,
    ConfChangeRefused,
    ConsensusError,
    Entry,
    Message,
    NodeId,
    Proposal,
    ProtocolError,
    RaftConfig,
    RaftCore,
    Ready,
    Role,
    Snapshot,
)
from ruflo_consensus.core.raft import (
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)
from ruflo_consensus.storage import MemoryStorage
from tests.helpers.datadriven import (
    REWRITE_ENV,
    DataDrivenError,
    Mismatch,
    TestData,
    check_file,
    format_mismatch,
    parse,
    rewrite_requested,
    run_file,
)

TESTDATA = Path(__file__).parent / "testdata" / "raft"
SCENARIOS = sorted(TESTDATA.glob("*.txt"))

# Small timeouts keep the files short: a heartbeat every 3 ticks, elections after 10–19.
DRIVER_DEFAULTS: dict[str, Any] = {
    "tick_ms": 10,
    "heartbeat_ms": 30,
    "election_timeout_min_ms": 100,
    "election_timeout_max_ms": 200,
    # the driver compacts only when a file says so (`compact`)
    "snapshot_entries": 0,
    "snapshot_bytes": 0,
}

# --------------------------------------------------------------------------- text forms


def node_id(n: int | str) -> NodeId:
    """File node number → core node id ("1" → "n1")."""
    return f"n{int(n)}"


def short(nid: NodeId | None) -> str:
    """Core node id → file node number ("n1" → "1"; None → "none")."""
    if nid is None:
        return "none"
    return nid[1:] if nid.startswith("n") and nid[1:].isdigit() else nid


def nodes_text(ids: Iterable[NodeId]) -> str:
    return "(" + ",".join(short(i) for i in ids) + ")"


def entry_text(e: Entry) -> str:
    pos = f"{e.term}/{e.index}"
    if e.proposal is not None:
        cmd = e.proposal.command
        body = f'"{cmd}"' if isinstance(cmd, str) else repr(cmd)
        return f"{pos} EntryNormal {body}"
    if e.conf is not None:
        c = e.conf
        kind = c.kind.value if isinstance(c.kind, ConfChangeKind) else str(c.kind)
        return (
            f"{pos} EntryConfChange {kind} {short(c.node)} "
            f"voters={nodes_text(c.voters)} learners={nodes_text(c.learners)}"
        )
    return f"{pos} EntryNoop"


def message_text(m: Message) -> str:
    """One stable line per message: ``src->dst Type field=value ...``."""
    head = f"{short(m.src)}->{short(m.dst)}"
    if isinstance(m, RequestVote):
        kind = "MsgPreVote" if m.pre_vote else "MsgVote"
        extra = " transfer" if m.transfer else ""
        return f"{head} {kind} term={m.term} last={m.last_term}/{m.last_index}{extra}"
    if isinstance(m, VoteResponse):
        kind = "MsgPreVoteResp" if m.pre_vote else "MsgVoteResp"
        verdict = "granted" if m.granted else "rejected"
        return f"{head} {kind} term={m.term} {verdict}"
    if isinstance(m, AppendEntries):
        kind = "MsgHeartbeat" if m.round and not m.entries else "MsgApp"
        text = f"{head} {kind} term={m.term} prev={m.prev_term}/{m.prev_index} commit={m.commit}"
        if m.round:
            text += f" round={m.round}"
        if m.entries:
            text += " entries=[" + ", ".join(entry_text(e) for e in m.entries) + "]"
        return text
    if isinstance(m, AppendResponse):
        text = f"{head} MsgAppResp term={m.term}"
        if m.success:
            text += f" index={m.index}"
        else:
            text += f" reject index={m.index} hint={m.hint_term}/{m.hint_index}"
        if m.round:
            text += f" round={m.round}"
        return text
    if isinstance(m, TimeoutNow):
        return f"{head} MsgTimeoutNow term={m.term}"
    if isinstance(m, ReadIndexRequest):
        return f"{head} MsgReadIndex term={m.term} id={m.ctx}"
    if isinstance(m, ReadIndexResponse):
        return f"{head} MsgReadIndexResp term={m.term} id={m.ctx} index={m.index}"
    if isinstance(m, InstallSnapshot):
        end = m.offset + len(m.data)
        return (
            f"{head} MsgSnap term={m.term} snap={m.snap_term}/{m.index} "
            f"voters={nodes_text(m.voters)} learners={nodes_text(m.learners)} "
            f"bytes=[{m.offset},{end})/{m.total}" + (" done" if m.done else "")
        )
    if isinstance(m, InstallSnapshotResponse):
        return f"{head} MsgSnapResp term={m.term} snap-index={m.index} received={m.received}" + (
            " done" if m.done else ""
        )
    return f"{head} {type(m).__name__}"


# --------------------------------------------------------------------------- the driver


def _parse_value(raw: str, like: object) -> object:
    if isinstance(like, bool):
        if raw not in ("true", "false"):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw == "true"
    if isinstance(like, int):
        return int(raw)
    if isinstance(like, float):
        return float(raw)
    return raw


def _encode_machine(applied: list[tuple[int, str]]) -> bytes:
    return ";".join(f"{i}={cmd}" for i, cmd in applied).encode()


def _decode_machine(data: bytes) -> list[tuple[int, str]]:
    out = []
    for item in data.decode().split(";") if data else []:
        index, _, cmd = item.partition("=")
        out.append((int(index), cmd))
    return out


class Node:
    """A core with the storage and the state machine its driver keeps for it."""

    def __init__(self, core: RaftCore) -> None:
        self.core = core
        self.storage = MemoryStorage()
        self.machine: list[tuple[int, str]] = []  # (index, command) applied, in order
        self.applied = 0  # last index handed out for applying (or restored)


class RaftInteractions:
    """Runs the commands of a scenario file against real cores; see testdata/README.md."""

    def __init__(self, core_class: type[RaftCore] = RaftCore) -> None:
        self.core_class = core_class
        self.nodes: dict[int, Node] = {}
        self.bootstrap: list[NodeId] = []
        self.queue: list[Message] = []
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.seq = 0
        self.commands: dict[str, Callable[[TestData], str]] = {
            "add-nodes": self.add_nodes,
            "campaign": self.campaign,
            "elect": self.elect,
            "tick": self.tick,
            "tick-election": self.tick_election,
            "tick-heartbeat": self.tick_heartbeat,
            "stabilize": self.stabilize,
            "process-ready": self.process_ready,
            "deliver-msgs": self.deliver_msgs,
            "propose": self.propose,
            "propose-conf-change": self.propose_conf_change,
            "read-index": self.read_index,
            "transfer-leadership": self.transfer_leadership,
            "partition": self.partition,
            "heal": self.heal,
            "compact": self.compact,
            "status": self.status,
            "raft-log": self.raft_log,
        }

    def handle(self, td: TestData) -> str:
        command = self.commands.get(td.cmd)
        if command is None:
            raise DataDrivenError(f"{td.pos}: unknown command {td.cmd!r}")
        return command(td)

    # ------------------------------------------------------------------ helpers

    def _node(self, n: str | int) -> Node:
        try:
            return self.nodes[int(n)]
        except (KeyError, ValueError):
            raise DataDrivenError(f"no node {n!r}") from None

    def _targets(self, td: TestData, default_all: bool = False) -> list[int]:
        ids = [int(p) for p in td.positional()]
        if not ids and default_all:
            ids = sorted(self.nodes)
        if not ids:
            raise DataDrivenError(f"{td.pos}: {td.cmd} needs node numbers")
        for i in ids:
            self._node(i)
        return ids

    def _config(self, td: TestData) -> RaftConfig:
        defaults = RaftConfig()
        settings = dict(DRIVER_DEFAULTS)
        names = {f.name for f in fields(RaftConfig)}
        for key, vals in td.keyed().items():
            if key == "join":
                continue
            name = key.replace("-", "_")
            if name not in names:
                raise DataDrivenError(f"{td.pos}: {key} is not a RaftConfig field")
            settings[name] = _parse_value(vals[0], getattr(defaults, name))
        return RaftConfig(**settings)

    def _snapshot_role(self, n: int) -> tuple[Role, int, NodeId | None]:
        core = self._node(n).core
        return core.role, core.term, core.leader

    def _role_line(self, n: int) -> str:
        core = self._node(n).core
        return f"{n} is {core.role.value} at term {core.term} (leader {short(core.leader)})"

    # ------------------------------------------------------------------ cluster set-up

    def add_nodes(self, td: TestData) -> str:
        """``add-nodes N [join=true] [raft-config-field=value ...]``."""
        (count,) = td.positional()
        join = td.get("join", "false") == "true"
        config = self._config(td)
        first = len(self.nodes) + 1
        new = list(range(first, first + int(count)))
        if not join:
            if self.nodes:
                raise DataDrivenError(f"{td.pos}: later nodes must join (join=true)")
            self.bootstrap = [node_id(i) for i in new]
        lines = []
        for i in new:
            core = self.core_class(node_id(i), self.bootstrap, random.Random(i), config, join=join)
            self.nodes[i] = Node(core)
            lines.append(
                f"{i}: {core.role.value} term={core.term} voters={nodes_text(core.voters)} "
                f"learners={nodes_text(core.learners)}" + (" (joining)" if join else "")
            )
        return "\n".join(lines)

    def partition(self, td: TestData) -> str:
        """``partition 1 / 2 3``: cut every link between nodes of different groups."""
        groups: list[list[int]] = [[]]
        for token in td.positional():
            if token == "/":
                groups.append([])
            else:
                groups[-1].append(int(token))
        cuts = []
        for gi, group in enumerate(groups):
            for other in groups[gi + 1 :]:
                for a in group:
                    for b in other:
                        self.cut.add((node_id(a), node_id(b)))
                        self.cut.add((node_id(b), node_id(a)))
                        cuts.append(f"{min(a, b)}-{max(a, b)}")
        return "cut " + " ".join(sorted(cuts))

    def heal(self, td: TestData) -> str:
        self.cut.clear()
        return "ok"

    # ------------------------------------------------------------------ time

    def _tick(self, ids: list[int], times: int) -> str:
        before = {i: self._snapshot_role(i) for i in ids}
        for i in ids:
            core = self._node(i).core
            for _ in range(times):
                core.tick()
        lines = [self._role_line(i) for i in ids if self._snapshot_role(i) != before[i]]
        return "\n".join(lines) or "ok"

    def tick(self, td: TestData) -> str:
        """``tick N... [n=K]``: K ticks (default 1) on each node, no Ready taken."""
        return self._tick(self._targets(td), int(td.get("n", "1") or 1))

    def tick_election(self, td: TestData) -> str:
        """``tick-election N...``: the minimum election timeout's worth of ticks."""
        ids = self._targets(td)
        return self._tick(ids, self._node(ids[0]).core.config.election_ticks)

    def tick_heartbeat(self, td: TestData) -> str:
        """``tick-heartbeat N...``: one heartbeat interval's worth of ticks."""
        ids = self._targets(td)
        return self._tick(ids, self._node(ids[0]).core.config.heartbeat_ticks)

    def campaign(self, td: TestData) -> str:
        """``campaign N``: tick a follower until its election timer fires."""
        (n,) = self._targets(td)
        core = self._node(n).core
        if core.role is not Role.FOLLOWER:
            return f"error: {n} is {core.role.value}, not a follower"
        for _ in range(core.config.election_ticks_max):
            core.tick()
            if self._snapshot_role(n)[0] is not Role.FOLLOWER:
                return self._role_line(n)
        return f"{n} did not campaign ({self._role_line(n)})"

    def elect(self, td: TestData) -> str:
        """``elect N``: ``campaign N`` then ``stabilize``, printing only ``status``."""
        (n,) = self._targets(td)
        first = self.campaign(td)
        if not first.startswith(f"{n} is "):
            return first
        self.stabilize(TestData(td.path, td.line, "stabilize", [], "", ""))
        return self.status(TestData(td.path, td.line, "status", [], "", ""))

    # ------------------------------------------------------------------ Ready and messages

    def _carry_out(self, n: int, rd: Ready) -> list[str]:
        """Persist, send, restore, apply — and say what happened, in that order."""
        node = self._node(n)
        out: list[str] = []
        for rc in rd.role_changes:
            out.append(f"became {rc.role.value} at term {rc.term} (leader {short(rc.leader)})")
        p = rd.persist
        if p.snapshot is not None:
            s = p.snapshot
            out.append(
                f"Snapshot {s.term}/{s.index} voters={nodes_text(s.voters)} "
                f"learners={nodes_text(s.learners)} bytes={len(s.data)}"
            )
        if p.hard_state is not None:
            hs = p.hard_state
            out.append(f"HardState term={hs.term} vote={short(hs.vote)} commit={hs.commit}")
        if p.entries:
            out.append("Entries:")
            out.extend(entry_text(e) for e in p.entries)
        elif p.truncate_from is not None:
            out.append(f"Truncate from {p.truncate_from}")
        try:
            node.storage.save(p)
        except ValueError as exc:
            out.append(f"storage refused the write: {exc}")
        if rd.messages:
            out.append("Messages:")
            out.extend(message_text(m) for m in rd.messages)
            self.queue.extend(rd.messages)
        if rd.snapshot is not None:
            node.machine = _decode_machine(rd.snapshot.data)
            node.applied = rd.snapshot.index
            out.append(f"Restore {rd.snapshot.term}/{rd.snapshot.index}")
        if rd.committed:
            out.append("CommittedEntries:")
            for c in rd.committed:
                e = c.entry
                out.append(entry_text(e))
                if e.proposal is not None:
                    node.machine.append((e.index, str(e.proposal.command)))
                node.applied = e.index
        if rd.reads:
            out.append("Reads:")
            out.extend(f"{r.ctx} index={r.index}" for r in rd.reads)
        for proposal, reason in rd.dropped:
            out.append(f"Dropped {proposal.command!r}: {reason}")
        if rd.snapshot_request is not None:
            out.append(f"SnapshotRequest index={rd.snapshot_request}")
        return out or ["(empty)"]

    def _process_ready(self, n: int) -> list[str]:
        core = self._node(n).core
        if not core.has_ready():
            return []
        lines = [f"> {n} handling Ready"]
        lines.extend("  " + line for line in self._carry_out(n, core.ready()))
        return lines

    def _deliver(self, n: int, drop: bool = False) -> list[str]:
        dst = node_id(n)
        mine = [m for m in self.queue if m.dst == dst]
        if not mine:
            return []
        self.queue = [m for m in self.queue if m.dst != dst]
        core = self._node(n).core
        lines = [f"> {n} receiving messages"]
        for m in mine:
            text = "  " + message_text(m)
            if drop:
                lines.append(text + " (dropped)")
                continue
            if (m.src, m.dst) in self.cut:
                lines.append(text + " (dropped: partitioned)")
                continue
            lines.append(text)
            counted = dict(core.rejected)
            try:
                core.step(m)
            except ProtocolError as exc:
                lines.append(f"  rejected: {exc.reason}")
                continue
            # the core counts what it ignores or refuses without an error (a vote request
            # inside a leader's lease, a stale term, ...): say so, it is often the point
            for reason, count in sorted(core.rejected.items()):
                if count > counted.get(reason, 0):
                    lines.append(f"  counted: {reason}")
        return lines

    def _drop_undeliverable(self) -> list[str]:
        """Messages to nodes that do not exist (yet) are lost."""
        lost = [m for m in self.queue if int(short(m.dst)) not in self.nodes]
        self.queue = [m for m in self.queue if m not in lost]
        return [f"  {message_text(m)} (dropped: no such node)" for m in lost]

    def process_ready(self, td: TestData) -> str:
        """``process-ready N...``: take and carry out each node's Ready."""
        lines: list[str] = []
        for n in self._targets(td):
            lines.extend(self._process_ready(n) or [f"> {n} has no Ready"])
        return "\n".join(lines)

    def deliver_msgs(self, td: TestData) -> str:
        """``deliver-msgs N... [drop=true]``: step (or lose) every message queued for N."""
        drop = td.get("drop", "false") == "true"
        lines: list[str] = []
        for n in self._targets(td):
            lines.extend(self._deliver(n, drop) or [f"> {n} has no messages"])
        return "\n".join(lines)

    def stabilize(self, td: TestData) -> str:
        """``stabilize [N...]``: process Readys and deliver messages until nothing moves."""
        ids = self._targets(td, default_all=True)
        lines: list[str] = []
        for _ in range(1000):
            moved = False
            for n in ids:
                out = self._process_ready(n)
                moved = moved or bool(out)
                lines.extend(out)
            lost = self._drop_undeliverable()
            if lost:
                lines.append("> network")
                lines.extend(lost)
            for n in ids:
                out = self._deliver(n)
                moved = moved or bool(out)
                lines.extend(out)
            if not moved:
                return "\n".join(lines) or "ok"
        raise DataDrivenError(f"{td.pos}: no quiet state after 1000 rounds")

    # ------------------------------------------------------------------ client requests

    def propose(self, td: TestData) -> str:
        """``propose N command``."""
        n, command = td.positional()
        self.seq += 1
        try:
            self._node(n).core.propose(Proposal("c", self.seq, command))
        except ConsensusError as exc:
            return f"error: {type(exc).__name__}: {exc}"
        return "ok"

    def propose_conf_change(self, td: TestData) -> str:
        """``propose-conf-change N kind M`` (kind: add-learner, promote-learner, ...)."""
        n, kind, target = td.positional()
        try:
            index = self._node(n).core.propose_conf_change(kind, node_id(target))
        except ConfChangeRefused as exc:
            return f"refused: {exc.reason}"
        return f"ok index={index}"

    def read_index(self, td: TestData) -> str:
        """``read-index N ctx``."""
        n, ctx = td.positional()
        try:
            self._node(n).core.read_index(ctx)
        except ConsensusError as exc:
            return f"error: {type(exc).__name__}: {exc}"
        return "ok"

    def transfer_leadership(self, td: TestData) -> str:
        """``transfer-leadership N to=M``."""
        (n,) = td.positional()
        try:
            self._node(n).core.transfer_leadership(node_id(td.get("to") or "0"))
        except ConsensusError as exc:
            return f"error: {type(exc).__name__}: {exc}"
        return "ok"

    def compact(self, td: TestData) -> str:
        """``compact N index=K``: snapshot the state machine through K and drop the log."""
        (n,) = self._targets(td)
        node = self._node(n)
        index = int(td.get("index") or 0)
        data = _encode_machine([(i, c) for i, c in node.machine if i <= index])
        try:
            snap = node.core.compact(index, data)
        except ValueError as exc:
            return f"error: {exc}"
        if snap is None:
            return "nothing to compact"
        return (
            f"snapshot {snap.term}/{snap.index} bytes={len(snap.data)}; "
            f"log holds {node.core.first_index}..{node.core.last_index}"
        )

    # ------------------------------------------------------------------ inspection

    def status(self, td: TestData) -> str:
        """``status [N...]``: one line per node."""
        lines = []
        for n in self._targets(td, default_all=True):
            node = self._node(n)
            core = node.core
            hs = core.hard_state()
            machine = " ".join(cmd for _, cmd in node.machine)
            lines.append(
                f"{n}: {core.role.value} term={core.term} vote={short(hs.vote)} "
                f"leader={short(core.leader)} commit={core.commit} applied={node.applied} "
                f"last={core.last_index} voters={nodes_text(core.voters)} "
                f"learners={nodes_text(core.learners)} machine=[{machine}]"
            )
        return "\n".join(lines)

    def raft_log(self, td: TestData) -> str:
        """``raft-log N``: what the node's storage holds (snapshot, then entries)."""
        (n,) = self._targets(td)
        stored = self._node(n).storage.load()
        lines = []
        if stored.snapshot is not None:
            s = stored.snapshot
            lines.append(
                f"snapshot {s.term}/{s.index} voters={nodes_text(s.voters)} "
                f"learners={nodes_text(s.learners)}"
            )
        lines.extend(entry_text(e) for e in stored.entries)
        return "\n".join(lines) or "log is empty"


# --------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_raft_scenario(path: Path, rewrite_testdata: bool) -> None:
    check_file(path, RaftInteractions().handle, rewrite=rewrite_testdata)


def test_the_scenarios_are_all_there() -> None:
    names = {p.name for p in SCENARIOS}
    wanted = {"campaign", "prevote", "checkquorum", "confchange", "readindex", "snapshot"}
    assert {f"{w}.txt" for w in wanted} <= names


def test_rewriting_a_scenario_with_its_outputs_removed_gives_it_back(tmp_path: Path) -> None:
    """The recorded files are exactly what the driver prints, with nothing edited by hand."""
    original = (TESTDATA / "campaign.txt").read_text(encoding="utf-8")
    blocks = parse(original)
    lines = original.split("\n")
    blank: list[str] = []
    at = 0
    for td in blocks:
        blank.extend(lines[at : td.out_start])
        blank.append("----")
        at = td.out_end
    blank.extend(lines[at:])
    path = tmp_path / "campaign.txt"
    path.write_text("\n".join(blank), encoding="utf-8")
    assert run_file(path, RaftInteractions().handle)  # empty outputs mismatch ...
    assert run_file(path, RaftInteractions().handle, rewrite=True) == []
    assert path.read_text(encoding="utf-8") == original  # ... and rewriting restores them


# --------------------------------------------------------------------------- can fail
#
# Cores that are wrong in small ways, built from the public API only (they wrap
# ``ready``, ``step`` or the constructor), so that they keep working however the core's
# insides are arranged. Each must make a scenario file mismatch.


class ForgetsToApply(RaftCore):
    """Never hands committed entries to the driver: nothing is ever applied."""

    def ready(self) -> Ready:
        rd = super().ready()
        rd.committed = []
        return rd


class LosesPersistedEntries(RaftCore):
    """Sends its messages but never asks the driver to store new log entries."""

    def ready(self) -> Ready:
        rd = super().ready()
        rd.persist.entries = []
        rd.persist.truncate_from = None
        return rd


class IgnoresPreVoteSetting(RaftCore):
    """Campaigns without pre-vote whatever its configuration says."""

    def __init__(
        self, node: NodeId, peers: list[NodeId], rng: random.Random, config: RaftConfig, **kw: Any
    ) -> None:
        super().__init__(node, peers, rng, replace(config, pre_vote=False), **kw)


class DeafToHeartbeats(RaftCore):
    """Drops every heartbeat (an append of a numbered round without entries) it receives."""

    def step(self, m: Message) -> None:
        if isinstance(m, AppendEntries) and m.round and not m.entries:
            return
        super().step(m)


class SnapshotLosesData(RaftCore):
    """Keeps the log position of a snapshot but not the state machine bytes it was given."""

    def compact(self, index: int, data: bytes) -> Snapshot | None:
        return super().compact(index, b"")


@pytest.mark.parametrize(
    ("core_class", "scenario"),
    [
        (ForgetsToApply, "campaign.txt"),
        (LosesPersistedEntries, "campaign.txt"),
        (IgnoresPreVoteSetting, "prevote.txt"),
        (DeafToHeartbeats, "readindex.txt"),
        (DeafToHeartbeats, "checkquorum.txt"),
        (SnapshotLosesData, "snapshot.txt"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_a_broken_core_makes_the_scenario_mismatch(
    core_class: type[RaftCore], scenario: str
) -> None:
    mismatches = run_file(TESTDATA / scenario, RaftInteractions(core_class).handle)
    assert mismatches, f"{core_class.__name__} passed {scenario}: the scenario cannot fail"
    first = mismatches[0]
    file, _, line = first.pos.rpartition(":")
    assert file.endswith(scenario) and int(line) > 0
    assert first.expected != first.actual
    assert "---" in first.diff() and "+++" in first.diff()


# --------------------------------------------------------------------------- the runner

SAMPLE = """\
# a comment, kept when rewriting
echo a b key=value list=(x, y)
----
a b key=value list=(x,y)

# a command with input lines
echo-input
line one
line two
----
line one
line two

echo say=first||second
----
----
first

second
----
----
"""


def echo(td: TestData) -> str:
    """Print the arguments, or the input, or what ``say=`` says (``|`` for a newline)."""
    if td.cmd == "echo-input":
        return td.input
    say = td.get("say")
    if say is not None:
        return say.replace("|", "\n")
    return " ".join(str(a) for a in td.args)


def test_parse_reads_commands_arguments_inputs_and_outputs() -> None:
    blocks = parse(SAMPLE, "sample.txt")
    assert [td.cmd for td in blocks] == ["echo", "echo-input", "echo"]
    first = blocks[0]
    assert first.pos == "sample.txt:2"
    assert first.positional() == ["a", "b"]
    assert first.get("key") == "value"
    assert first.keyed()["list"] == ("x", "y")
    assert first.expected == "a b key=value list=(x,y)"
    assert blocks[1].input == "line one\nline two"
    assert blocks[1].line == 7
    assert blocks[2].expected == "first\n\nsecond"  # fenced: may hold blank lines


def test_the_sample_passes_with_the_echo_handler(tmp_path: Path) -> None:
    path = tmp_path / "sample.txt"
    path.write_text(SAMPLE, encoding="utf-8")
    check_file(path, echo)


@pytest.mark.parametrize(
    "text",
    [
        "echo\nno separator\n",  # input runs into the end of the file
        "echo\n\n----\nx\n",  # a blank line between command and separator
        "----\nx\n",  # a separator without a command
        "echo\n----\n----\nnever closed\n",
        "echo key=(a\n----\n",
    ],
)
def test_malformed_files_are_refused_with_their_position(text: str) -> None:
    with pytest.raises(DataDrivenError, match=r"bad\.txt:\d+"):
        parse(text, "bad.txt")


def test_a_mismatch_names_the_file_line_command_and_shows_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "case.txt"
    path.write_text("echo ok\n----\nok\n\necho say=new\n----\nold\n", encoding="utf-8")
    mismatches = run_file(path, echo)
    assert len(mismatches) == 1
    assert mismatches[0].pos.endswith("case.txt:5")
    with pytest.raises(AssertionError) as failure:
        check_file(path, echo)
    message = str(failure.value)
    assert "case.txt:5: output of 'echo say=new' differs" in message
    assert "-old" in message and "+new" in message
    assert "--rewrite-testdata" in message


def test_a_handler_error_names_the_block(tmp_path: Path) -> None:
    path = tmp_path / "case.txt"
    path.write_text("echo hi\n----\nhi\n\nboom now\n----\n", encoding="utf-8")

    def handler(td: TestData) -> str:
        if td.cmd == "boom":
            raise RuntimeError("no")
        return td.command_line

    with pytest.raises(DataDrivenError, match=r"case\.txt:5: 'boom now' raised RuntimeError"):
        run_file(path, handler)


def test_an_output_the_format_cannot_hold_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "case.txt"
    path.write_text("echo say=a|----|b\n----\n", encoding="utf-8")
    with pytest.raises(DataDrivenError, match="cannot keep"):
        run_file(path, echo, rewrite=True)
    assert path.read_text(encoding="utf-8") == "echo say=a|----|b\n----\n"


def test_rewriting_records_actual_outputs_and_keeps_everything_else(tmp_path: Path) -> None:
    stale = (
        "# header comment\n"
        "\n"
        "echo say=one\n"
        "----\n"
        "stale\n"
        "\n"
        "# comment between blocks\n"
        "echo say=a||b\n"  # an output with a blank line gets fenced
        "----\n"
        "\n"
        "echo-input\n"
        "kept input\n"
        "----\n"
        "----\n"
        "was\n"
        "\n"
        "fenced\n"
        "----\n"
        "----\n"
    )
    path = tmp_path / "case.txt"
    path.write_text(stale, encoding="utf-8")
    assert len(run_file(path, echo)) == 3
    assert run_file(path, echo, rewrite=True) == []
    assert path.read_text(encoding="utf-8") == (
        "# header comment\n"
        "\n"
        "echo say=one\n"
        "----\n"
        "one\n"
        "\n"
        "# comment between blocks\n"
        "echo say=a||b\n"
        "----\n"
        "----\n"
        "a\n"
        "\n"
        "b\n"
        "----\n"
        "----\n"
        "\n"
        "echo-input\n"
        "kept input\n"
        "----\n"
        "kept input\n"
    )
    assert run_file(path, echo) == []  # the rewritten file passes
    before = path.read_text(encoding="utf-8")
    assert run_file(path, echo, rewrite=True) == []
    assert path.read_text(encoding="utf-8") == before  # and a second rewrite is a no-op


def test_the_environment_variable_switches_rewriting_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REWRITE_ENV, raising=False)
    assert not rewrite_requested()
    assert rewrite_requested(True)
    for on in ("1", "true", "yes"):
        monkeypatch.setenv(REWRITE_ENV, on)
        assert rewrite_requested()
    for off in ("0", "false", ""):
        monkeypatch.setenv(REWRITE_ENV, off)
        assert not rewrite_requested()


def test_format_mismatch_is_position_then_diff() -> None:
    m = Mismatch("f.txt:3", "status", "a\nb", "a\nc")
    text = format_mismatch(m)
    assert text.splitlines()[0] == "f.txt:3: output of 'status' differs"
    assert "-b" in text and "+c" in text
