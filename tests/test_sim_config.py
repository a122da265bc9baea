"""Which faults each backend's simulation takes, and how a config says itself again."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ruflo_consensus.sim.config import (
    ALL_FAULTS,
    ENGINE_FAULTS,
    SimConfig,
    SimConfigError,
    backend_faults,
    parse_faults,
)


@pytest.mark.parametrize("backend", ["pbft", "crdt"])
def test_all_means_the_engine_faults_for_backends_without_raft_faults(backend: str) -> None:
    cfg = SimConfig(backend=backend, faults=parse_faults("all"))
    assert cfg.faults == ENGINE_FAULTS == backend_faults(backend)
    assert "--faults" not in cfg.replay_command()
    # a Raft config turned into another backend narrows "all" the same way
    assert replace(SimConfig(), backend=backend).faults == ENGINE_FAULTS


def test_raft_takes_every_fault() -> None:
    assert SimConfig().faults == ALL_FAULTS == backend_faults("raft")
    assert set(ENGINE_FAULTS) < set(ALL_FAULTS)


@pytest.mark.parametrize("fault", sorted(set(ALL_FAULTS) - set(ENGINE_FAULTS)))
def test_a_raft_only_fault_is_refused_for_pbft_with_a_typed_error(fault: str) -> None:
    with pytest.raises(SimConfigError, match=fault):
        SimConfig(backend="pbft", faults=("crash", fault))


def test_a_subset_for_pbft_is_kept_and_replayed() -> None:
    cfg = SimConfig(backend="pbft", nodes=4, faults=("crash", "partition"))
    assert cfg.faults == ("crash", "partition")
    assert "--faults crash,partition" in cfg.replay_command()
