"""What the Raft simulation asks of a client workload, and the KV workload it has built in.

A workload decides what the replicated state machine is and what the clients do with it:

- :meth:`SimWorkload.new_machine` builds a fresh replica (every node on start and on every
  restart, and the reference replica of the snapshot check);
- :meth:`SimWorkload.next_command` gives a client's next command and its ``invoke`` for the
  history;
- :meth:`SimWorkload.outcome` turns the result the cluster answered with into the op that
  completes that invoke;
- :meth:`SimWorkload.check_replicas` judges the live replicas at the end of a clean run
  (cross-replica properties the per-entry invariants cannot see).

The simulator knows one workload itself (:class:`KVWorkload`, ``--workload kv``). Others
live with the state machines they exercise and are handed in as a :class:`WorkloadFactory`
— the federation's is ``ruflo_consensus.federation.workload.federation_sim_workload``, which
the CLI passes for ``--workload federation``. The simulator never imports them. A sweep
sends the factory to its worker processes, so it must pickle: a module-level function or
class, not a lambda or a closure.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..check.history import Op
from ..core.base import NodeId
from ..statemachine import KVStateMachine, StateMachine
from .config import SimConfig, SimConfigError
from .kv_workload import KVClient, kv_command, kv_outcome

__all__ = [
    "KVWorkload",
    "ReplicaState",
    "SimWorkload",
    "WorkloadFactory",
    "build_workload",
    "kv_workload",
]


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """A live replica at the end of a run: its node, how many entries it applied, its machine."""

    node: NodeId
    applied: int
    machine: StateMachine


class SimWorkload(Protocol):
    """A client workload for the Raft simulation (one instance per run; it may keep counts).

    ``name`` is what ``SimConfig.workload`` (and so the replay command) calls it.
    """

    name: str

    def new_machine(self) -> StateMachine:
        """A fresh replica state machine."""
        ...

    def next_command(self, client: KVClient[Any], rng: random.Random) -> tuple[dict[str, Any], Op]:
        """The client's next command and its invoke; ``rng`` is the simulation's generator."""
        ...

    def outcome(self, op: Op, result: Any, client: KVClient[Any]) -> Op:
        """The history op that completes ``op`` (``client``'s pending invoke) with ``result``."""
        ...

    def check_replicas(self, replicas: Sequence[ReplicaState]) -> tuple[dict[str, Any], list[str]]:
        """Properties of the live replicas after a clean run, and the violations found."""
        ...


class WorkloadFactory(Protocol):
    """Builds a run's workload; called once, before the nodes are built.

    ``rng`` is the simulation's master generator: what the factory draws from it is part of
    the run (and its trace hash), so a factory draws the same amount on every run.
    """

    def __call__(
        self, config: SimConfig, rng: random.Random, node_ids: Sequence[NodeId]
    ) -> SimWorkload:
        """The workload for a run of ``config`` on nodes ``node_ids``."""
        ...


class KVWorkload:
    """The KV mix of :func:`~.kv_workload.kv_command` on a :class:`KVStateMachine`.

    Its histories are checked for linearizability after the run, so it has no
    cross-replica checks of its own.
    """

    name = "kv"

    def __init__(self, keys: int) -> None:
        self.keys = keys

    def new_machine(self) -> StateMachine:
        """A fresh :class:`KVStateMachine`."""
        return KVStateMachine()

    def next_command(self, client: KVClient[Any], rng: random.Random) -> tuple[dict[str, Any], Op]:
        """35 % get, 25 % put, 25 % append, 15 % cas, drawn from the simulation's ``rng``."""
        return kv_command(rng, self.keys, client)

    def outcome(self, op: Op, result: Any, client: KVClient[Any]) -> Op:
        """As :func:`~.kv_workload.kv_outcome` (a cas expects what the client last saw)."""
        return kv_outcome(op, result, client.last_seen)

    def check_replicas(self, replicas: Sequence[ReplicaState]) -> tuple[dict[str, Any], list[str]]:
        """Nothing beyond the invariants and the linearizability check."""
        return {}, []


def kv_workload(config: SimConfig, rng: random.Random, node_ids: Sequence[NodeId]) -> SimWorkload:
    """The :class:`WorkloadFactory` of the KV workload (it draws nothing from ``rng``)."""
    return KVWorkload(config.keys)


def build_workload(
    factory: WorkloadFactory | None,
    config: SimConfig,
    rng: random.Random,
    node_ids: Sequence[NodeId],
) -> SimWorkload:
    """The run's workload: ``factory``'s, or the KV one when none is given.

    A config that names another workload needs its factory (the simulator has only the KV
    workload built in); the workload built must carry the config's name, or the run's
    replay command would name a different workload than the one that ran.
    """
    if factory is None:
        if config.workload != KVWorkload.name:
            raise SimConfigError(
                f"the {config.workload!r} workload is not built into the simulator: pass its "
                "factory (workload=...), as the ruflo-consensus command does"
            )
        factory = kv_workload
    workload = factory(config, rng, node_ids)
    if workload.name != config.workload:
        raise SimConfigError(
            f"the workload factory built the {workload.name!r} workload, but the config "
            f"names {config.workload!r}"
        )
    return workload
