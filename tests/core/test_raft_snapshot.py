"""Snapshots, log compaction and chunked InstallSnapshot in the sans-IO Raft core."""

from __future__ import annotations

import itertools
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruflo_consensus.core.base import Entry, HardState, Proposal, ProtocolError, Snapshot
from ruflo_consensus.core.raft import (
    AppendEntries,
    InstallSnapshot,
    InstallSnapshotResponse,
    RaftConfig,
    RaftCore,
)
from ruflo_consensus.statemachine import (
    CommandError,
    KVStateMachine,
    RegisterStateMachine,
    SessionTable,
)
from tests.helpers.raft_harness import Harness

CFG = RaftConfig(snapshot_entries=10, snapshot_bytes=0, snapshot_chunk_bytes=16)


def _put(h: Harness, leader: str, seq: int, client: str = "c1") -> None:
    value = f"v{seq}-" + "x" * (seq % 5)
    cmd = {"op": "put", "key": f"k{seq % 4}", "value": value}
    h.cores[leader].propose(Proposal(client, seq, cmd))
    h.run()


def _steady(n: int = 3, **kw: Any) -> tuple[Harness, str]:
    h = Harness(n, seed=7, config=kw.pop("config", CFG), compact=kw.pop("compact", True), **kw)
    leader = h.elect()
    h.tick(6)
    return h, leader


def _state(h: Harness, nid: str) -> bytes:
    return h.machines[nid].snapshot()


def _snapshot_messages(messages: list[Any]) -> list[InstallSnapshot]:
    return [m for m in messages if isinstance(m, InstallSnapshot)]


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs",
    [
        {"snapshot_entries": -1},
        {"snapshot_bytes": -1},
        {"snapshot_chunk_bytes": 0},
        {"max_snapshot_bytes": 0},
    ],
)
def test_bad_snapshot_settings_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RaftConfig(**kwargs)


# --------------------------------------------------------------------------- compaction


def test_the_core_asks_for_a_snapshot_past_the_threshold_and_compacts_on_request() -> None:
    h, leader = _steady(compact=False)
    core = h.cores[leader]
    for seq in range(1, 25):
        _put(h, leader, seq)
    asked = h.requests[leader]
    assert asked, "no snapshot request after passing snapshot_entries"
    assert asked[0] >= CFG.snapshot_entries
    assert all(b - a >= CFG.snapshot_entries for a, b in itertools.pairwise(asked))
    assert all(h.requests[n] for n in h.ids)  # followers are asked too
    index = core.applied
    last = core.last_index
    snap = core.compact(index, h.machines[leader].snapshot())
    assert snap is not None and snap.index == index and snap.term == core.term
    assert sorted(snap.voters) == sorted(h.ids) and snap.learners == ()
    assert core.snapshot_index == index and core.first_index == index + 1
    assert core.last_index == last  # entries after the snapshot stay
    assert core.term_at(index) == snap.term  # the snapshot point keeps its term
    assert core.term_at(index - 1) == -1  # compacted away
    assert core.term_at(0) == 0
    assert core.entry(index) is None
    assert core.entry(index + 1) == (None if index == last else core.log[1])
    rd = core.ready()
    assert rd.persist.snapshot == snap  # the driver stores it with the next Ready
    h.storage[leader].save(rd.persist)
    stored = h.storage[leader].load()
    assert stored.snapshot == snap
    assert [e.index for e in stored.entries] == list(range(index + 1, last + 1))


def test_compact_refuses_what_was_not_applied_and_ignores_what_is_already_covered() -> None:
    h, leader = _steady(compact=False)
    for seq in range(1, 5):
        _put(h, leader, seq)
    core = h.cores[leader]
    with pytest.raises(ValueError, match="applied"):
        core.compact(core.applied + 1, b"")
    assert core.compact(core.applied, _state(h, leader)) is not None
    assert core.compact(core.applied, b"again") is None  # nothing new to compact
    assert core.compact(1, b"older") is None


def test_snapshots_keep_the_log_short_and_every_replica_agrees() -> None:
    h, leader = _steady(5)
    for seq in range(1, 60):
        _put(h, leader, seq)
    h.tick(10)
    states = {_state(h, nid) for nid in h.ids}
    assert len(states) == 1
    for nid in h.ids:
        core = h.cores[nid]
        assert core.snapshot_index > 40, (nid, core.snapshot_index)
        assert len(core.log) - 1 <= CFG.snapshot_entries + 5
        stored = h.storage[nid].load()
        assert stored.snapshot is not None
        assert len(stored.entries) == core.last_index - stored.snapshot.index


# --------------------------------------------------------------------------- InstallSnapshot


def _lagging(n: int = 3, entries: int = 40, **kw: Any) -> tuple[Harness, str, str]:
    """A follower cut off while the others commit and compact; then healed."""
    h, leader = _steady(n, **kw)
    lag = next(x for x in h.ids if x != leader)
    h.isolate(lag)
    h.cut = {c for c in h.cut if lag in c}
    for seq in range(1, entries + 1):
        _put(h, leader, seq)
    assert h.cores[leader].snapshot_index > h.cores[lag].last_index
    return h, leader, lag


def test_a_follower_behind_the_snapshot_gets_it_in_chunks_and_resumes() -> None:
    h, leader, lag = _lagging()
    h.heal()
    mark = len(h.delivered)
    h.tick(30)
    sent = _snapshot_messages(h.delivered[mark:])
    assert len(sent) >= 3, "the snapshot should take several chunks of 16 bytes"
    offsets = [m.offset for m in sent if m.index == sent[0].index]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(len(m.data) <= CFG.snapshot_chunk_bytes for m in sent)
    assert sum(m.done for m in sent) >= 1
    assert h.restored[lag] and h.restored[lag][0] == sent[0].index
    # the follower resumed: it has the leader's state and keeps replicating
    _put(h, leader, 100)
    h.tick(3)
    assert _state(h, lag) == _state(h, leader)
    assert h.cores[lag].commit == h.cores[leader].commit
    stored = h.storage[lag].load()
    assert stored.snapshot is not None and stored.snapshot.index >= sent[0].index
    # it never applied the compacted entries one by one
    assert min(e.index for e in h.applied[lag] if e.index > 1) > sent[0].index


@pytest.mark.parametrize("machine", [RegisterStateMachine], ids=["register"])
def test_install_works_with_any_state_machine(machine: Any) -> None:
    h, leader = _steady(3, machine=machine)
    lag = next(x for x in h.ids if x != leader)
    h.isolate(lag)
    h.cut = {c for c in h.cut if lag in c}
    for seq in range(1, 30):
        h.cores[leader].propose(Proposal("c1", seq, {"op": "write", "value": [seq, "x" * seq]}))
        h.run()
    h.heal()
    h.tick(20)
    assert h.restored[lag]
    assert h.machines[lag].machine.value == h.machines[leader].machine.value == [29, "x" * 29]


def test_exactly_once_survives_a_snapshot_install() -> None:
    h, leader, lag = _lagging()
    h.heal()
    h.tick(20)
    assert h.restored[lag]
    table = h.machines[lag]
    assert table.sessions["c1"][0] == 40  # the session table came with the snapshot
    applied_before = table.applied_count
    # a retry of an old request commits again; every replica answers it from the table
    h.cores[leader].propose(Proposal("c1", 40, {"op": "put", "key": "k0", "value": "dup"}))
    h.run()
    h.tick(3)
    assert table.applied_count == applied_before
    assert table.machine.data["k0"] != "dup"  # type: ignore[attr-defined]
    assert _state(h, lag) == _state(h, leader)


def test_restart_from_snapshot_and_wal_restores_the_machine_first() -> None:
    h, leader = _steady(3)
    for seq in range(1, 35):
        _put(h, leader, seq)
    h.tick(3)
    victim = next(x for x in h.ids if x != leader)
    stored = h.storage[victim].load()
    assert stored.snapshot is not None and stored.entries
    h.restart(victim)
    core = h.cores[victim]
    assert core.applied == stored.snapshot.index and core.snapshot_index == stored.snapshot.index
    rd = core.ready()
    assert rd.snapshot == stored.snapshot  # restore first ...
    # ... then the entries after it (up to the persisted commit) are applied
    assert [c.entry.index for c in rd.committed][:1] == [stored.snapshot.index + 1]
    h.storage[victim].save(rd.persist)
    h.machines[victim].restore(rd.snapshot.data)
    for c in rd.committed:
        p = c.entry.proposal
        if p is not None:
            h.machines[victim].apply(p.client, p.seq, p.command)
    # the state of exactly the entries up to the persisted commit index (the commit index
    # is written along with other writes, so it may be behind what the node had applied)
    replay = SessionTable(KVStateMachine())
    for e in h.applied[leader]:
        if e.index <= core.commit and e.proposal is not None:
            replay.apply(e.proposal.client, e.proposal.seq, e.proposal.command)
    assert core.commit >= stored.snapshot.index
    assert _state(h, victim) == replay.snapshot()
    h.tick(5)
    _put(h, leader, 99)
    h.tick(3)
    assert _state(h, victim) == _state(h, leader)


def test_a_stored_snapshot_with_a_malformed_membership_is_refused() -> None:
    for voters, learners in [((), ()), (("n1", "n1"), ()), (("n1", "n2"), ("n2",))]:
        snap = Snapshot(5, 1, voters, learners, b"")
        with pytest.raises(ValueError, match="membership"):
            RaftCore("n1", ["n1", "n2", "n3"], random.Random(1), snapshot=snap)
    with pytest.raises(ValueError, match="not contiguous"):
        RaftCore(
            "n1",
            ["n1", "n2", "n3"],
            random.Random(1),
            snapshot=Snapshot(5, 1, ("n1", "n2", "n3"), (), b""),
            entries=[Entry(1, 5, None)],
        )


# --------------------------------------------------------------------------- chunk handling


DATA = msgpack.packb([[], msgpack.packb([["a", "1"], ["b", "2"]])])


def _follower(**kw: Any) -> RaftCore:
    core = RaftCore("n2", ["n1", "n2", "n3"], random.Random(2), RaftConfig(**kw))
    core.step(AppendEntries("n1", "n2", 1, 0, 0, (Entry(1, 1, None),), 1))
    core.ready()
    return core


def _chunk(offset: int, data: bytes, total: int = len(DATA), **kw: Any) -> InstallSnapshot:
    fields: dict[str, Any] = {
        "term": 1,
        "index": 9,
        "snap_term": 1,
        "voters": ("n1", "n2", "n3"),
        "learners": (),
        "offset": offset,
        "total": total,
        "data": data,
        "done": offset + len(data) == total,
    }
    fields.update(kw)
    return InstallSnapshot(kw.pop("src", "n1"), "n2", **fields)


def _observable(core: RaftCore) -> tuple[Any, ...]:
    inc = core._incoming
    return (
        core.term,
        core.commit,
        core.applied,
        core.snapshot_index,
        list(core.log),
        None if inc is None else (inc.first.index, bytes(inc.buf)),
        core.has_ready(),
    )


def test_chunks_reassemble_and_install() -> None:
    core = _follower()
    core.step(_chunk(0, DATA[:5], len(DATA)))
    rd = core.ready()
    assert rd.messages == [InstallSnapshotResponse("n2", "n1", 1, 9, 5, False)]
    assert rd.persist.snapshot is None and rd.snapshot is None  # nothing durable yet
    core.step(_chunk(5, DATA[5:], len(DATA)))
    rd = core.ready()
    assert rd.messages == [InstallSnapshotResponse("n2", "n1", 1, 9, len(DATA), True)]
    snap = Snapshot(9, 1, ("n1", "n2", "n3"), (), DATA)
    assert rd.persist.snapshot == snap and rd.snapshot == snap
    assert rd.persist.hard_state == HardState(1, None, 9)
    assert rd.persist.truncate_from == 10  # the old log does not continue the snapshot
    assert (core.commit, core.applied, core.snapshot_index, core.last_index) == (9, 9, 9, 9)


@pytest.mark.parametrize(
    "second,reason",
    [
        (lambda: _chunk(9, DATA[9:], len(DATA)), "snapshot-out-of-order"),  # a gap
        (lambda: _chunk(3, DATA[3:], len(DATA)), "snapshot-out-of-order"),  # overlaps the end
        (lambda: _chunk(5, DATA[5:], len(DATA), index=10), "snapshot-mismatch"),
        (lambda: _chunk(5, DATA[5:], len(DATA), snap_term=1, term=2), "snapshot-mismatch"),
        (lambda: _chunk(5, DATA[5:], len(DATA) + 1, done=False), "snapshot-mismatch"),
    ],
    ids=["gap", "overlap", "other-index", "other-term", "other-size"],
)
def test_a_bad_chunk_is_a_typed_error_and_changes_nothing(second: Any, reason: str) -> None:
    core = _follower()
    core.step(_chunk(0, DATA[:5], len(DATA)))
    core.ready()
    before = _observable(core)
    with pytest.raises(ProtocolError) as exc:
        core.step(second())
    assert exc.value.reason == reason
    assert _observable(core) == before
    assert core.rejected[reason] == 1


def test_a_chunk_without_its_beginning_is_refused() -> None:
    core = _follower()
    before = _observable(core)
    with pytest.raises(ProtocolError) as exc:
        core.step(_chunk(5, DATA[5:], len(DATA)))
    assert exc.value.reason == "snapshot-out-of-order"
    assert _observable(core) == before


@pytest.mark.parametrize(
    "bad,reason",
    [
        ({"done": True}, "bad-field"),  # not the last chunk
        ({"total": 3}, "bad-field"),  # data runs past the total
        ({"snap_term": 5}, "bad-field"),  # the snapshot's term is after the leader's
        ({"index": 0}, "bad-field"),
        ({"voters": ()}, "snapshot-membership"),
        ({"learners": ("n1",)}, "snapshot-membership"),  # a voter and a learner at once
    ],
)
def test_malformed_chunks_are_refused(bad: dict[str, Any], reason: str) -> None:
    core = _follower()
    before = _observable(core)
    with pytest.raises(ProtocolError) as exc:
        core.step(_chunk(0, DATA[:5], **{"total": len(DATA), **bad}))
    assert exc.value.reason == reason
    assert _observable(core) == before


def test_a_snapshot_over_the_size_limit_is_refused() -> None:
    core = _follower(max_snapshot_bytes=10)
    with pytest.raises(ProtocolError) as exc:
        core.step(_chunk(0, DATA[:5], len(DATA)))
    assert exc.value.reason == "snapshot-too-large"


def test_a_retransmitted_chunk_is_answered_without_change() -> None:
    core = _follower()
    core.step(_chunk(0, DATA[:5], len(DATA)))
    core.step(_chunk(5, DATA[5:10], len(DATA)))
    core.ready()
    before = _observable(core)
    for offset, end in ((0, 5), (5, 10)):
        core.step(_chunk(offset, DATA[offset:end], len(DATA)))
        rd = core.ready()
        assert rd.messages == [InstallSnapshotResponse("n2", "n1", 1, 9, 10, False)]
    assert _observable(core)[:-1] == before[:-1]


def test_a_snapshot_the_follower_already_has_is_acknowledged_not_installed() -> None:
    core = _follower()
    entries = tuple(Entry(1, i, None) for i in range(2, 12))
    core.step(AppendEntries("n1", "n2", 1, 1, 1, entries, 11))
    core.ready()
    core.step(_chunk(0, DATA[:5], len(DATA)))  # index 9 <= commit 11
    rd = core.ready()
    assert rd.messages == [InstallSnapshotResponse("n2", "n1", 1, 9, 0, True)]
    assert rd.persist.snapshot is None and rd.snapshot is None
    assert core.snapshot_index == 0 and core.last_index == 11


def test_a_log_that_holds_the_snapshot_point_keeps_what_follows() -> None:
    core = _follower()
    entries = tuple(Entry(1, i, None) for i in range(2, 15))
    core.step(AppendEntries("n1", "n2", 1, 1, 1, entries, 1))  # commit stays at 1
    core.ready()
    core.step(_chunk(0, DATA, len(DATA)))
    rd = core.ready()
    assert rd.persist.snapshot is not None and rd.persist.truncate_from is None
    assert (core.snapshot_index, core.last_index, core.commit) == (9, 14, 9)
    assert core.term_at(12) == 1


def test_a_stale_leaders_chunk_gets_the_newer_term() -> None:
    core = _follower()
    core.step(AppendEntries("n3", "n2", 3, 1, 1, (), 1))
    core.ready()
    core.step(_chunk(0, DATA, len(DATA)))  # term 1 < 3
    rd = core.ready()
    assert rd.messages and rd.messages[0].term == 3  # type: ignore[attr-defined]
    assert core.snapshot_index == 0
    assert core.rejected["stale-term"] == 1


# --------------------------------------------------------------------------- leader side


def test_lost_chunks_are_resent_and_a_restarted_follower_gets_the_snapshot_again() -> None:
    h, leader, lag = _lagging()
    h.heal()
    dropped: list[InstallSnapshot] = []

    def lose_second_chunk(m: Any) -> bool:
        if isinstance(m, InstallSnapshot) and m.offset > 0 and not dropped:
            dropped.append(m)
            return True
        return False

    h.drop = lose_second_chunk
    h.tick(30)
    assert dropped and h.restored[lag]
    assert _state(h, lag) == _state(h, leader)
    resent = [m for m in _snapshot_messages(h.delivered) if m.offset == dropped[0].offset]
    assert resent, "the lost chunk was sent again"

    # now a follower that restarts in the middle of a transfer (losing what it received)
    h2, leader2, lag2 = _lagging()
    h2.heal()
    seen = 0

    def crash_after_two(m: Any) -> bool:
        nonlocal seen
        if isinstance(m, InstallSnapshot) and m.dst == lag2:
            seen += 1
            if seen == 3:
                h2.restart(lag2)
                return True
        return False

    h2.drop = crash_after_two
    h2.tick(40)
    assert seen > 3
    assert h2.restored[lag2]
    assert _state(h2, lag2) == _state(h2, leader2)
    starts = [m for m in _snapshot_messages(h2.delivered) if m.dst == lag2 and m.offset == 0]
    assert len(starts) >= 2  # the leader started over from the first chunk


def test_a_leader_that_compacts_again_during_a_transfer_still_catches_the_follower_up() -> None:
    cfg = RaftConfig(snapshot_entries=3, snapshot_bytes=0, snapshot_chunk_bytes=16)
    h, leader, lag = _lagging(config=cfg)
    h.heal()
    for seq in range(200, 230):  # keep writing (and compacting) while the snapshot goes out
        _put(h, leader, seq)
        h.tick(1)
    h.tick(30)
    assert h.restored[lag]
    assert _state(h, lag) == _state(h, leader)
    assert h.cores[lag].commit == h.cores[leader].commit


def test_a_snapshot_that_commands_refuse_is_rejected_by_the_machine_not_applied_half() -> None:
    # The core hands over whatever bytes it assembled; a machine that cannot restore them
    # raises a typed CommandError and keeps its state (the driver's restore is atomic).
    from ruflo_consensus.statemachine import KVStateMachine, SessionTable

    table = SessionTable(KVStateMachine())
    table.apply("c1", 1, {"op": "put", "key": "a", "value": "1"})
    before = table.snapshot()
    with pytest.raises(CommandError):
        table.restore(b"\xc1 not msgpack")
    assert table.snapshot() == before


def test_a_new_leader_with_a_compacted_log_sends_its_own_snapshot() -> None:
    h, leader, lag = _lagging()
    h.down.add(leader)  # the leader that compacted dies; the other follower takes over
    h.heal()
    h.tick(60)
    (new,) = h.leaders()
    assert new not in (leader, lag)
    assert h.cores[new].snapshot_index > 0
    assert h.restored[lag]
    _put(h, new, 500)
    h.tick(3)
    assert _state(h, lag) == _state(h, new)


# --------------------------------------------------------------------------- property

_SNAP_A = bytes(range(200))
_SNAP_B = bytes(reversed(range(120)))


def _chunks(data: bytes, size: int, **kw: Any) -> list[InstallSnapshot]:
    return [_chunk(o, data[o : o + size], len(data), **kw) for o in range(0, len(data), size)]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 9)), min_size=1, max_size=40),
    st.sampled_from([16, 25, 64]),
)
def test_any_chunk_order_installs_exactly_the_snapshot_or_changes_nothing(
    steps: list[tuple[str, int]], size: int
) -> None:
    """Chunks of two snapshots in any order, lost or repeated: every chunk is either taken
    (the assembly stays a prefix of its snapshot) or refused with a typed error and no
    change; an installed snapshot is byte for byte the one that was sent."""
    chunks = {
        "a": _chunks(_SNAP_A, size, index=9, snap_term=1),
        "b": _chunks(_SNAP_B, size, index=12, snap_term=1),
    }
    data = {"a": _SNAP_A, "b": _SNAP_B}
    core = _follower()
    for which, k in steps:
        pieces = chunks[which]
        m = pieces[k % len(pieces)]
        before = _observable(core)
        try:
            core.step(m)
        except ProtocolError as exc:
            assert exc.reason in ("snapshot-out-of-order", "snapshot-mismatch")
            assert _observable(core) == before
            continue
        rd = core.ready()
        inc = core._incoming
        if inc is not None:
            name = "a" if inc.first.index == 9 else "b"
            assert data[name].startswith(bytes(inc.buf))
        if rd.snapshot is not None:
            name = "a" if rd.snapshot.index == 9 else "b"
            assert rd.snapshot.data == data[name]
            assert rd.persist.snapshot == rd.snapshot
            assert core.snapshot_index == rd.snapshot.index == core.commit
