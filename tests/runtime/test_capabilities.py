"""Capabilities: a node resolves what its core offers once, and a missing one is a typed
refusal through the node's API and the client protocol, never a crash or a probe."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from ruflo_consensus.core.base import (
    Capabilities,
    ConsensusCore,
    Entry,
    HardState,
    Message,
    NodeId,
    Proposal,
    Ready,
    Role,
    Snapshot,
)
from ruflo_consensus.core.raft import RaftCore
from ruflo_consensus.runtime import CapabilityMissing, ClientError, ClusterClient, NodeError
from ruflo_consensus.runtime.node import default_core_factory
from tests.helpers.runtime_helpers import (
    PATIENCE,
    get,
    local_spec,
    put,
    start_nodes,
    wait_leader,
)


class _ContractOnlyCore:
    """A Raft core seen through the bare contract: nothing beyond ``ConsensusCore``."""

    def __init__(self, inner: ConsensusCore) -> None:
        self._inner = inner
        self.node_id = inner.node_id

    @property
    def role(self) -> Role:
        return self._inner.role

    @property
    def term(self) -> int:
        return self._inner.term

    @property
    def leader(self) -> NodeId | None:
        return self._inner.leader

    def propose(self, proposal: Proposal) -> None:
        self._inner.propose(proposal)

    def step(self, message: Message) -> None:
        self._inner.step(message)

    def tick(self) -> None:
        self._inner.tick()

    def has_ready(self) -> bool:
        return self._inner.has_ready()

    def ready(self) -> Ready:
        return self._inner.ready()


def _contract_only(
    node_id: NodeId,
    voters: Sequence[NodeId],
    rng: random.Random,
    config: Any,
    hard_state: HardState | None,
    entries: Sequence[Entry],
    *,
    snapshot: Snapshot | None = None,
    join: bool = False,
) -> ConsensusCore:
    inner = default_core_factory(
        node_id, voters, rng, config, hard_state, entries, snapshot=snapshot, join=join
    )
    return _ContractOnlyCore(inner)


def test_raft_has_every_capability_and_the_bare_contract_none() -> None:
    raft = RaftCore("n1", ["n1", "n2", "n3"], random.Random(1))
    caps = Capabilities.of(raft)
    assert caps.reads is raft and caps.compaction is raft and caps.transfer is raft
    assert caps.membership is raft and caps.log is raft and caps.progress is raft
    assert caps.counters is raft
    assert Capabilities.of(_ContractOnlyCore(raft)) == Capabilities()


async def test_a_core_without_capabilities_is_refused_with_a_typed_error(tmp_path: Path) -> None:
    spec = local_spec(tmp_path, "mesh", 3, runtime={"data_dir": None})
    options = {n: {"core_factory": _contract_only} for n in spec.ids}
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, spec, options=options)
        leader = await wait_leader(nodes)
        follower = next(n for n in nodes.values() if n is not leader)
        assert leader.capabilities == Capabilities()

        # the contract is enough to replicate: submits work, through a follower too
        assert await follower.submit(put("a", "1"), timeout=PATIENCE) is None
        assert await leader.submit(put("b", "2"), timeout=PATIENCE) is None
        # without ReadIndex a read is served by the local machine (which has applied "b")
        assert await leader.read(get("b")) == "2"

        # what the core lacks is refused, typed, and says what is missing
        for node in (leader, follower):
            with pytest.raises(CapabilityMissing, match="no leadership transfer") as exc:
                node.transfer_leadership(follower.node_id)
            assert isinstance(exc.value, NodeError)
            assert exc.value.backend == "_ContractOnlyCore"
            with pytest.raises(CapabilityMissing, match="no membership changes"):
                await node.change_membership("remove-voter", follower.node_id, timeout=PATIENCE)
        assert leader.role is Role.LEADER  # nothing changed

        # status leaves out what the core cannot say
        status = leader.status()
        assert status["commit"] is None and status["last_index"] is None
        assert status["snapshot_index"] is None and "progress" not in status
        assert "voters" not in status and status["member"] == "voter"
        assert status["applied"] >= 2

        # and a client is told REFUSED / unsupported, on the node it asked
        client = ClusterClient(spec, leader.node_id, only=True)
        with pytest.raises(ClientError) as refused:
            await client.call("transfer", target=follower.node_id)
        assert refused.value.code == "REFUSED" and refused.value.reason == "unsupported"
        with pytest.raises(ClientError) as refused:
            await client.change_membership("remove-voter", follower.node_id)
        assert refused.value.code == "REFUSED" and refused.value.reason == "unsupported"
        assert not any(n.rejected for n in nodes.values())
        nursery.cancel_scope.cancel()
