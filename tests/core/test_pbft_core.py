"""The sans-IO PBFT core, routed by hand: normal case, batching, exactly-once, rejections."""

from __future__ import annotations

import pytest

from ruflo_consensus.canonical import canonical_bytes
from ruflo_consensus.core.base import Proposal, ProposalDropped, ProtocolError, Role
from ruflo_consensus.core.pbft import (
    Keyring,
    PbftConfig,
    PbftCore,
    PbftFrame,
    Signed,
    Signer,
    auth_stats,
    batch_digest,
    decode_frame,
    encode_frame,
    quorum_size,
    seal,
    sign_request,
    unsafe_skip_signature_checks_for_tests,
)
from ruflo_consensus.core.pbft.messages import COMMIT, PRE_PREPARE, PREPARE
from ruflo_consensus.statemachine import KVStateMachine
from tests.helpers.pbft_harness import NOTHING, SECRET, Cluster


def put(key: str, value: str) -> dict[str, str]:
    return {"op": "put", "key": key, "value": value}


def get(key: str) -> dict[str, str]:
    return {"op": "get", "key": key}


def test_quorum_sizes() -> None:
    assert quorum_size(4) == (1, 3)
    assert quorum_size(7) == (2, 5)
    assert quorum_size(5) == (1, 4)  # more than 3f + 1: quorums still intersect in f + 1
    assert quorum_size(1) == (0, 1)


def test_a_write_then_a_read_are_executed_everywhere_and_answered_by_f_plus_1() -> None:
    c = Cluster(4)
    t1 = c.request("c0", put("a", "1"))
    c.deliver_all()
    assert c.accepted("c0", t1) is None  # put answers None, agreed by >= f + 1 replicas
    t2 = c.request("c0", get("a"))
    c.deliver_all()
    assert c.accepted("c0", t2) == "1"
    # every replica executed the same two requests at sequence numbers 1 and 2
    for node in c.ids:
        got = [(e.index, e.proposal.client, e.proposal.seq) for e in c.executed[node]]
        assert got == [(1, "c0", 1), (2, "c0", 2)]
        assert c.cores[node].last_executed == 2
    assert len({c.cores[n].state_digest() for n in c.ids}) == 1
    assert c.errors == []


def test_the_primary_batches_requests_that_wait_for_a_free_slot() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=4, window=8, max_inflight=1), clients=4)
    first = c.request("c0", put("a", "0"))
    c.deliver_all(limit=1)  # the primary got the first request and ordered it alone
    ts = {name: c.request(name, put(name, "x")) for name in ("c1", "c2", "c3")}
    c.deliver_all()
    assert c.accepted("c0", first) is None
    for name, t in ts.items():
        assert c.accepted(name, t) is None
    seqs = [e.index for e in c.executed["n1"]]
    assert seqs == [1, 2, 2, 2]  # the three later requests shared sequence number 2
    assert c.cores["n0"].counters["batches"] == 2


def test_a_retried_request_executes_once_and_gets_the_cached_reply() -> None:
    c = Cluster(4)
    t = c.request("c0", {"op": "append", "key": "k", "value": "x"})
    c.deliver_all()
    env = sign_request(c.client_signers["c0"], t, {"op": "append", "key": "k", "value": "x"})
    c.replies["c0"].clear()
    for node in c.ids:  # the client retries to every replica
        c.send_env("c0", node, env)
    c.deliver_all()
    assert c.accepted("c0", t) is None
    t2 = c.request("c0", get("k"))
    c.deliver_all()
    assert c.accepted("c0", t2) == "x"
    for node in c.ids:
        assert c.cores[node].table.applied_count == 2  # append once, get once


def test_an_older_timestamp_is_never_executed_again() -> None:
    c = Cluster(4)
    old = sign_request(c.client_signers["c0"], 1, put("a", "old"))
    c.send_env("c0", "n0", old)
    c.deliver_all()
    c.timestamps["c0"] = 1
    t = c.request("c0", put("a", "new"))
    c.deliver_all()
    c.send_env("c0", "n0", old)
    c.deliver_all()
    t3 = c.request("c0", get("a"))
    c.deliver_all()
    assert t == 2 and c.accepted("c0", t3) == "new"


def test_a_backup_forwards_a_request_to_the_primary() -> None:
    c = Cluster(4)
    t = c.request("c1", put("z", "1"), to=["n2"])
    c.deliver_all()
    assert c.accepted("c1", t) is None
    assert all(c.cores[n].last_executed == 1 for n in c.ids)


def test_propose_takes_a_signed_request_only() -> None:
    c = Cluster(4)
    env = sign_request(c.client_signers["c0"], 1, put("p", "1"))
    c.cores["n0"].propose(Proposal("c0", 1, env))
    c.deliver_all()
    assert all(c.cores[n].last_executed == 1 for n in c.ids)
    with pytest.raises(ProposalDropped):
        c.cores["n0"].propose(Proposal("c0", 2, put("p", "2")))  # not signed
    with pytest.raises(ProposalDropped):
        c.cores["n0"].propose(Proposal("c1", 1, env))  # signed by someone else


def _snapshot(core: PbftCore) -> tuple[object, ...]:
    return (
        core.view,
        core.active,
        core.last_executed,
        core.stable_checkpoint,
        {s: (sl.pp_view, dict(sl.cast), sl.committed) for s, sl in core._slots.items()},
        dict(core._waiting),
        core.table.snapshot(),
    )


def _reject(c: Cluster, node: str, env: Signed, reason: str) -> None:
    core = c.cores[node]
    before = _snapshot(core)
    count = core.rejected.get(reason, 0)
    with pytest.raises(ProtocolError) as exc:
        core.step(PbftFrame("x", node, (env,)))
    assert exc.value.reason == reason, exc.value
    assert core.rejected[reason] == count + 1
    assert _snapshot(core) == before  # a rejected message changes nothing
    assert not core.has_ready() or core.ready().messages == []


def test_bad_messages_are_rejected_by_reason_and_change_nothing() -> None:
    c = Cluster(4)
    t = c.request("c0", put("a", "1"))
    c.deliver_all()
    assert t == 1
    n1 = c.signers["n1"]
    digest = bytes(32)
    # a prepare that n2 did not sign (n1 signed it in n2's name)
    body = canonical_bytes([PREPARE, "n2", 0, 2, digest])
    _reject(c, "n3", Signed(body, n1.sign(body)), "bad-signature")
    # a valid signature over bytes someone altered afterwards
    good = seal(n1, PREPARE, 0, 2, digest)
    tampered = Signed(good.body.replace(digest, b"\x01" * 32), good.sig)
    _reject(c, "n3", tampered, "bad-signature")
    # a sender that is not a replica
    stranger = Signer.derived(SECRET, "mallory")
    _reject(c, "n3", seal(stranger, PREPARE, 0, 2, digest), "unknown-sender")
    _reject(c, "n3", sign_request(stranger, 1, put("a", "x")), "unknown-client")
    # malformed and non-canonical bodies
    _reject(c, "n3", Signed(b"\xc1garbage", bytes(64)), "malformed")
    non_canonical = b"\x95\x03\xa2n1\xd1\x00\x00\x02\xc4\x20" + digest  # a padded int
    _reject(c, "n3", Signed(non_canonical, n1.sign(non_canonical)), "non-canonical")
    import msgpack

    c0 = c.client_signers["c0"]
    unsorted = msgpack.packb([1, "c0", 9, {"value": "x", "op": "put", "key": "a"}])
    _reject(c, "n3", Signed(unsorted, c0.sign(unsorted)), "non-canonical")  # map key order
    minus_zero = msgpack.packb([1, "c0", 9, {"key": "a", "op": "put", "value": -0.0}])
    _reject(c, "n3", Signed(minus_zero, c0.sign(minus_zero)), "non-canonical")
    # sign_request puts the same op in canonical form itself
    ok = sign_request(c0, 9, {"value": "x", "op": "put", "key": "a"})
    assert ok.body != unsorted and c.cores["n3"].step(PbftFrame("c0", "n3", (ok,))) is None
    c.cores["n3"].ready()  # (it forwarded the request to the primary)
    _reject(c, "n3", seal(n1, PREPARE, 0, 0, digest), "bad-field")  # seq 0
    _reject(c, "n3", seal(n1, PREPARE, 0, 2, b"short"), "bad-field")
    _reject(c, "n3", seal(n1, 99, 0), "unknown-kind")
    # protocol rules
    _reject(c, "n3", seal(n1, PREPARE, 5, 2, digest), "future-view")
    _reject(c, "n3", seal(n1, PREPARE, 0, 1000, digest), "above-window")
    _reject(c, "n3", seal(n1, PRE_PREPARE, 0, 2, digest, []), "not-primary")
    _reject(c, "n3", seal(c.signers["n0"], PREPARE, 0, 2, digest), "primary-prepare")
    _reject(c, "n3", seal(c.signers["n0"], PRE_PREPARE, 0, 2, digest, []), "bad-digest")
    other = sign_request(c.client_signers["c1"], 1, put("b", "2"))
    # a vote that contradicts the signer's earlier vote at the same (view, seq)
    c.cores["n3"].step(PbftFrame("n1", "n3", (seal(n1, COMMIT, 0, 3, digest),)))
    _reject(c, "n3", seal(n1, COMMIT, 0, 3, b"\x02" * 32), "conflicting-vote")
    # a request inside a pre-prepare with a bad client signature
    forged = Signed(other.body, c.client_signers["c0"].sign(other.body))
    d = batch_digest([forged.body])
    _reject(c, "n3", seal(c.signers["n0"], PRE_PREPARE, 0, 4, d, [forged]), "bad-signature")


def test_a_conflicting_pre_prepare_is_rejected() -> None:
    c = Cluster(4, PbftConfig(checkpoint_interval=8, window=16))
    c.request("c0", put("a", "1"))
    c.deliver_all()
    other = sign_request(c.client_signers["c1"], 1, put("b", "2"))
    d = batch_digest([other.body])
    pp = seal(c.signers["n0"], PRE_PREPARE, 0, 1, d, [other])
    _reject(c, "n3", pp, "conflicting-pre-prepare")
    for i in range(10):  # past two checkpoints: seq 1 is below the low watermark now
        c.request("c0", put("a", str(i)))
        c.deliver_all()
    assert c.cores["n3"].stable_checkpoint[0] >= 8
    _reject(c, "n3", pp, "below-watermark")


def test_the_test_hook_switches_signature_checks_off_and_back_on() -> None:
    c = Cluster(4)
    n1 = c.signers["n1"]
    body = canonical_bytes([PREPARE, "n2", 0, 1, bytes(32)])
    forged = Signed(body, n1.sign(body))
    with unsafe_skip_signature_checks_for_tests():
        c.cores["n3"].step(PbftFrame("n1", "n3", (forged,)))  # accepted: nothing checks it
    assert ("n2" in str(c.cores["n3"]._slots[1].cast)) is True
    with pytest.raises(ProtocolError, match="bad-signature"):
        c.cores["n2"].step(PbftFrame("n1", "n2", (forged,)))


def test_verification_is_cached() -> None:
    c = Cluster(4)
    stats = auth_stats()
    stats.reset()
    c.request("c0", put("cache", "a value no other test writes"))
    c.deliver_all()
    # each broadcast envelope is checked once and then served from the cache
    assert stats.cache_hits > stats.verifications > 0


def test_frames_round_trip_and_bad_frames_are_typed_errors() -> None:
    c = Cluster(4)
    env = seal(c.signers["n1"], PREPARE, 0, 1, bytes(32))
    frame = PbftFrame("n1", "n2", (env, env))
    assert decode_frame(encode_frame(frame)) == frame
    for bad in (b"", b"\x93\x01", encode_frame(frame)[:-3], b"\x95\x02\xa4pbft\xa1a\xa1b\x90"):
        with pytest.raises(ProtocolError) as exc:
            decode_frame(bad)
        assert exc.value.reason == "malformed"
    with pytest.raises(ProtocolError, match="malformed"):
        c.cores["n2"].step(PbftFrame("n1", "n2", ()))


def test_constructor_checks_its_arguments() -> None:
    s = Signer.derived(SECRET, "n0")
    ring = Keyring({"n0": s.public_key})
    with pytest.raises(ValueError):
        PbftCore("n9", ["n0"], s, ring, KVStateMachine())
    with pytest.raises(ValueError):
        PbftCore("n0", ["n0"], Signer.derived(SECRET, "other"), ring, KVStateMachine())
    with pytest.raises(ValueError):
        PbftConfig(window=4, checkpoint_interval=8)
    with pytest.raises(ValueError):
        Keyring({"n0": b"short"})


def test_a_single_replica_orders_alone() -> None:
    c = Cluster(1)
    t = c.request("c0", put("solo", "1"))
    c.deliver_all()
    assert c.accepted("c0", t) is None
    assert c.cores["n0"].role is Role.PRIMARY and c.cores["n0"].last_executed == 1


def test_nothing_is_accepted_without_f_plus_1_replies() -> None:
    c = Cluster(4)
    c.down = {"n1", "n2"}  # two of four down: no quorum, no reply at all
    t = c.request("c0", put("a", "1"))
    c.deliver_all()
    assert c.accepted("c0", t) is NOTHING
    assert all(c.cores[n].last_executed == 0 for n in c.ids)


def test_the_read_only_fast_path_answers_at_once_with_the_sequence_number() -> None:
    from ruflo_consensus.core.pbft.messages import ReadReply

    def is_get(cmd: object) -> bool:
        return isinstance(cmd, dict) and cmd.get("op") == "get"

    c = Cluster(4)
    for node in c.ids:  # the same replicas, with a read-only predicate
        c.cores[node].read_only = is_get
    t = c.request("c0", put("a", "1"))
    c.deliver_all()
    read = sign_request(c.client_signers["c0"], t + 1, get("a"), read_only=True)
    for node in c.ids:
        c.send_env("c0", node, read)
    c.deliver_all()
    replies = [r for _, r in c.replies["c0"] if isinstance(r, ReadReply)]
    assert {(r.signer, r.seq, tuple(r.result)) for r in replies} == {
        (n, 1, ("ok", "1")) for n in c.ids
    }
    assert all(c.cores[n].last_executed == 1 for n in c.ids)  # nothing was ordered
    # a command that is not read-only is refused, and without a predicate every read is
    sneaky = sign_request(c.client_signers["c0"], t + 2, put("a", "2"), read_only=True)
    _reject(c, "n1", sneaky, "not-read-only")
    c.cores["n2"].read_only = None
    _reject(c, "n2", read, "not-read-only")
