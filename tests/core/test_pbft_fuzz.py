"""Hostile input never crashes a PBFT replica: only typed ProtocolErrors come out."""

from __future__ import annotations

import contextlib

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ruflo_consensus.core.base import ProtocolError
from ruflo_consensus.core.pbft import (
    PbftConfig,
    PbftFrame,
    Signed,
    unsafe_skip_signature_checks_for_tests,
)
from ruflo_consensus.core.pbft.messages import KIND_NAMES
from tests.helpers.pbft_harness import Cluster

_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=40),
    st.sampled_from(["n0", "n1", "n2", "n3", "c0", "x"]),
    st.binary(max_size=40),
    st.just(bytes(32)),
    st.just(bytes(64)),
)
_value = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


def _cluster() -> Cluster:
    c = Cluster(4, PbftConfig(checkpoint_interval=4, window=8))
    for i in range(5):
        c.request("c0", {"op": "put", "key": "k", "value": str(i)})
        c.deliver_all()
    return c


CLUSTER = _cluster()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(KIND_NAMES)),
    signer=st.sampled_from(["n0", "n1", "n2", "c0", "nobody"]),
    fields=st.lists(_value, max_size=7),
    node=st.sampled_from(["n1", "n3"]),
)
def test_arbitrary_bodies_only_ever_raise_protocol_errors(
    kind: int, signer: str, fields: list[object], node: str
) -> None:
    body = msgpack.packb([kind, signer, *fields], use_bin_type=True)
    env = Signed(body, bytes(64))
    core = CLUSTER.cores[node]
    with unsafe_skip_signature_checks_for_tests():
        with contextlib.suppress(ProtocolError):
            core.step(PbftFrame("x", node, (env,)))
        core.tick()
    if core.has_ready():
        core.ready()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_are_malformed_envelopes(data: bytes) -> None:
    core = CLUSTER.cores["n2"]
    try:
        core.step(PbftFrame("x", "n2", (Signed(data, bytes(64)),)))
    except ProtocolError as exc:
        assert exc.reason in {
            "malformed",
            "non-canonical",
            "unknown-kind",
            "bad-field",
            "unknown-sender",
            "unknown-client",
            "bad-signature",
        }
