"""PBFT checkpoints, garbage collection, state transfer, view change and crash recovery."""

from __future__ import annotations

import pytest

from ruflo_consensus.core.base import ProtocolError, Role
from ruflo_consensus.core.pbft import (
    PbftConfig,
    PbftFrame,
    Signed,
    batch_digest,
    decode_body,
    seal,
    sign_request,
    state_digest,
)
from ruflo_consensus.core.pbft.messages import (
    CHECKPOINT as CHECKPOINT_KIND,
)
from ruflo_consensus.core.pbft.messages import (
    COMMIT,
    NEW_VIEW,
    PRE_PREPARE,
    PREPARE,
    STATE,
    VIEW_CHANGE,
    Checkpoint,
    Vote,
)
from tests.helpers.pbft_harness import Cluster


def put(key: str, value: str) -> dict[str, str]:
    return {"op": "put", "key": key, "value": value}


def run_requests(c: Cluster, count: int, client: str = "c0", to: list[str] | None = None) -> None:
    for i in range(count):
        c.request(client, put(f"k{i % 3}", f"v{i}"), to=to)
        c.deliver_all()


def without(kind: type, c: Cluster) -> None:
    """Drop every envelope of ``kind`` from now on (frames keep their other envelopes)."""

    def drop(frame: PbftFrame) -> bool:
        kept = tuple(e for e in frame.items if not isinstance(decode_body(e.body), kind))
        if len(kept) != len(frame.items):
            if not kept:
                return True
            c.queue.appendleft(PbftFrame(frame.src, frame.dst, kept))
            return True
        return False

    c.drop = drop


def test_checkpoints_become_stable_and_the_log_is_collected() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=4, window=8))
    run_requests(c, 10)
    for node in c.ids:
        core = c.cores[node]
        assert core.stable_checkpoint[0] == 8
        assert core.last_executed == 10
        assert all(s > 8 for s in core._slots)  # everything at or below h is forgotten
        assert all(s >= 8 for s in core._own_cps)
        assert all(s > 8 for s in core._cp_votes)
        assert len(core.stable_proof) == core.q
    digests = {c.cores[n].stable_checkpoint[1] for n in c.ids}
    assert len(digests) == 1


def test_the_primary_stops_at_the_high_watermark_until_a_checkpoint_is_stable() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=4, window=8), clients=1)
    without(Checkpoint, c)  # no checkpoint ever arrives: h stays 0
    run_requests(c, 11)
    assert all(c.cores[n].last_executed == 8 for n in c.ids)  # h + L = 8, no further
    assert all(c.cores[n].stable_checkpoint[0] == 0 for n in c.ids)
    c.drop = lambda frame: False
    c.tick(60)  # status replies carry the checkpoints that were lost
    assert all(c.cores[n].stable_checkpoint[0] >= 8 for n in c.ids)
    assert all(c.cores[n].last_executed == 9 for n in c.ids)  # the waiting request went on


def test_a_replica_behind_the_stable_checkpoint_fetches_the_state() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=4, window=8))
    c.down.add("n3")
    run_requests(c, 10)
    assert c.cores["n3"].last_executed == 0
    c.down.clear()
    c.tick(40)
    lagger = c.cores["n3"]
    assert lagger.counters["state-transfers"] == 1
    assert lagger.last_executed == 10  # the state at 8, then 9 and 10 from certificates
    assert lagger.counters["commit-certs-used"] == 2
    assert lagger.state_digest() == c.cores["n0"].state_digest()
    run_requests(c, 2)
    assert all(c.cores[n].last_executed == 12 for n in c.ids)


def test_a_state_that_does_not_match_its_proof_is_rejected() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=4, window=8))
    c.down.add("n3")
    run_requests(c, 5)
    honest = c.cores["n1"]
    proof = list(honest.stable_proof)
    snapshot = honest._own_cps[4][1]
    assert state_digest(snapshot) == honest.stable_checkpoint[1]
    bad = snapshot[:-1] + bytes([snapshot[-1] ^ 1])
    lagger = c.cores["n3"]
    before = (lagger.last_executed, lagger.state_digest())
    for state, reason in ((bad, "bad-checkpoint-proof"), (b"\x90", "bad-checkpoint-proof")):
        with pytest.raises(ProtocolError) as exc:
            lagger.step(PbftFrame("n1", "n3", (seal(c.signers["n1"], STATE, 4, state, proof),)))
        assert exc.value.reason == reason
    assert (lagger.last_executed, lagger.state_digest()) == before
    good = seal(c.signers["n1"], STATE, 4, snapshot, proof)
    lagger.step(PbftFrame("n1", "n3", (good,)))
    assert lagger.last_executed == 4 and lagger.state_digest() == state_digest(snapshot)


def test_a_failed_primary_is_replaced_and_prepared_requests_survive_at_their_seq() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=16, window=32, view_change_ticks=5))
    without(Vote, c)  # pre-prepares arrive, no prepare or commit does
    t = c.request("c0", put("x", "prepared"), to=c.ids)  # the client sends to everyone
    c.deliver_all()
    assert all(c.cores[n].last_executed == 0 for n in c.ids)
    # let the prepares through (so the backups are prepared), but never the commits
    c.drop = lambda frame: any(
        isinstance(p := decode_body(e.body), Vote) and p.kind == COMMIT for e in frame.items
    )
    for node in c.ids:
        c.cores[node]._last_status = -(10**6)
    c.tick(6)
    prepared = [n for n in c.ids[1:] if c.cores[n]._slots[1].cert is not None]
    assert len(prepared) == 3
    c.drop = lambda frame: False
    c.crash("n0")
    c.tick(30)
    for node in c.ids[1:]:
        core = c.cores[node]
        assert core.view == 1 and core.active
        assert core.role is (Role.PRIMARY if node == "n1" else Role.BACKUP)
        got = [(e.index, e.proposal.client, e.proposal.seq) for e in c.executed[node]]
        assert got == [(1, "c0", t)]  # re-proposed in view 1 at the same sequence number
    assert c.accepted("c0", t) is None


def _vc(c: Cluster, node: str, view: int, certs: list[list[object]] | None = None) -> Signed:
    digest = c.cores[node].stable_checkpoint[1]
    return seal(c.signers[node], VIEW_CHANGE, view, 0, digest, [], certs or [])


def test_new_view_messages_are_verified_by_every_backup() -> None:
    c = Cluster(4)
    core = c.cores["n3"]
    vcs = [_vc(c, n, 1) for n in ("n0", "n1", "n2")]
    primary = c.signers["n1"]
    env = sign_request(c.client_signers["c0"], 1, put("a", "1"))
    pp = seal(primary, PRE_PREPARE, 1, 1, batch_digest([env.body]), [env])
    cases = [
        (seal(primary, NEW_VIEW, 1, vcs[:2], []), "bad-new-view"),  # 2 < q view changes
        (seal(primary, NEW_VIEW, 1, vcs, [pp]), "bad-new-view"),  # a pre-prepare not due
        (seal(c.signers["n2"], NEW_VIEW, 1, vcs, []), "not-primary"),
        (seal(primary, NEW_VIEW, 1, [vcs[0], vcs[0], vcs[1]], []), "bad-new-view"),
    ]
    for nv, reason in cases:
        with pytest.raises(ProtocolError) as exc:
            core.step(PbftFrame("n1", "n3", (nv,)))
        assert exc.value.reason == reason
        assert core.view == 0 and core.active
    core.step(PbftFrame("n1", "n3", (seal(primary, NEW_VIEW, 1, vcs, []),)))
    assert core.view == 1 and core.active and core.leader == "n1"


def test_a_view_change_with_an_unproven_certificate_is_rejected() -> None:
    c = Cluster(4)
    env = sign_request(c.client_signers["c0"], 1, put("a", "1"))
    d = batch_digest([env.body])
    pp = seal(c.signers["n0"], PRE_PREPARE, 0, 1, d, [env])
    one_prepare = [seal(c.signers["n1"], PREPARE, 0, 1, d)]
    bad = _vc(c, "n2", 1, [[pp, one_prepare]])  # needs q - 1 = 2 prepares
    with pytest.raises(ProtocolError, match="bad-view-change"):
        c.cores["n3"].step(PbftFrame("n2", "n3", (bad,)))
    prepares = [*one_prepare, seal(c.signers["n2"], PREPARE, 0, 1, d)]
    ok = _vc(c, "n2", 1, [[pp, prepares]])
    c.cores["n3"].step(PbftFrame("n2", "n3", (ok,)))
    assert c.cores["n3"].active  # one view change alone does not move a replica


def test_f_plus_1_view_changes_make_a_replica_join() -> None:
    c = Cluster(4)
    core = c.cores["n3"]
    core.step(PbftFrame("n1", "n3", (_vc(c, "n1", 2),)))
    assert core.active
    core.step(PbftFrame("n2", "n3", (_vc(c, "n2", 3),)))
    assert core.role is Role.VIEW_CHANGING and core.view == 2  # the smallest of the two
    vc = decode_body(core._own_vc.body)  # type: ignore[union-attr]
    assert vc.view == 2 and vc.signer == "n3"  # type: ignore[union-attr]


def test_timeouts_double_on_consecutive_view_changes() -> None:
    base = 4
    c = Cluster(7, PbftConfig(checkpoint_interval=16, window=32, view_change_ticks=base))
    c.crash("n0")  # primary of view 0
    c.crash("n1")  # primary of view 1
    c.request("c0", put("a", "1"), to=c.ids[2:])
    c.deliver_all()
    started: dict[int, int] = {}
    for tick in range(1, 80):
        c.tick()
        view = c.cores["n4"].view
        started.setdefault(view, tick)
        if c.cores["n4"].active and view == 2:
            break
    assert set(started) >= {0, 1, 2}
    first = started[1]  # the request timer: base ticks
    second = started[2] - started[1]  # waiting for a new view from n1: doubled
    assert base <= first <= base + 1
    assert 2 * base <= second <= 2 * base + 2
    assert all(c.cores[n].last_executed == 1 for n in c.ids[2:])  # n2 took over
    assert c.cores["n4"]._vc_count == 0  # progress in the new view resets the backoff


def test_a_restarted_replica_keeps_its_promises_and_catches_up() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=4, window=8))
    run_requests(c, 5)
    # n2 accepts a pre-prepare for seq 6 and votes; then it crashes before anything commits
    env = sign_request(c.client_signers["c1"], 1, put("z", "1"))
    d = batch_digest([env.body])
    pp = seal(c.signers["n0"], PRE_PREPARE, 0, 6, d, [env])
    c.cores["n2"].step(PbftFrame("n0", "n2", (pp,)))
    c.collect("n2")
    c.queue.clear()
    c.crash("n2")
    c.restart("n2")
    core = c.cores["n2"]
    assert core.view == 0 and core.stable_checkpoint[0] == 4 and core.last_executed == 5
    assert core.state_digest() == c.cores["n0"].state_digest()
    other = sign_request(c.client_signers["c1"], 1, put("z", "other"))
    conflicting = seal(c.signers["n0"], PRE_PREPARE, 0, 6, batch_digest([other.body]), [other])
    with pytest.raises(ProtocolError, match="conflicting-pre-prepare"):
        core.step(PbftFrame("n0", "n2", (conflicting,)))
    # the primary gives 6 to another batch (to n2 it looks like equivocation): the others
    # commit it without n2, which catches up from relayed certificates or the checkpoint
    run_requests(c, 3, client="c0")
    assert c.cores["n0"].last_executed == 8 and c.cores["n2"].last_executed == 5
    c.tick(20)
    assert c.cores["n2"].last_executed == 8
    caught_up = c.cores["n2"].counters
    assert caught_up["commit-certs-used"] + caught_up["state-transfers"] >= 1
    assert c.cores["n2"].state_digest() == c.cores["n0"].state_digest()


def test_a_flood_of_future_checkpoints_from_one_liar_does_not_evict_honest_votes() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=4, window=8))
    core = c.cores["n3"]
    liar = c.signers["n2"]
    frames = [seal(liar, CHECKPOINT_KIND, 4 * k, bytes([k % 256]) * 32) for k in range(1, 200)]
    for env in frames:
        core.step(PbftFrame("n2", "n3", (env,)))
    held = sum(1 for v in core._cp_votes.values() if "n2" in v)
    assert held <= 2 * (8 // 4) + 4 + 1
    run_requests(c, 5)  # the honest checkpoint at 4 still becomes stable
    assert core.stable_checkpoint[0] == 4


def test_a_late_state_for_an_older_checkpoint_does_not_end_the_fetch() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=4, window=8))
    c.down.add("n3")
    run_requests(c, 5)
    old_proof, old_snapshot = list(c.cores["n1"].stable_proof), c.cores["n1"]._own_cps[4][1]
    run_requests(c, 4)  # the others' stable checkpoint moves on to 8
    lagger = c.cores["n3"]
    for env in c.cores["n1"].stable_proof:  # n3 learns of checkpoint 8 and starts fetching it
        lagger.step(PbftFrame("n1", "n3", (env,)))
    assert lagger.stable_checkpoint[0] == 8 and lagger._fetch is not None
    late = seal(c.signers["n1"], STATE, 4, old_snapshot, old_proof)  # an answer to an old fetch
    lagger.step(PbftFrame("n1", "n3", (late,)))
    assert lagger.last_executed == 0 and lagger._fetch is not None  # still fetching 8
    c.down.clear()
    c.tick(20)
    assert lagger.last_executed == 9 and lagger.state_digest() == c.cores["n0"].state_digest()
