"""Which faults each backend's simulation takes, and how a config says itself again."""

from __future__ import annotations

import shlex
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


# ---------------------------------------------------------------- replay commands say it all

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ruflo_consensus.cli import _config_from, build_parser  # noqa: E402
from ruflo_consensus.sim.config import parse_setting, settable_fields  # noqa: E402


def _parse_replay(command: str) -> SimConfig:
    argv = shlex.split(command)
    assert argv[:2] == ["ruflo-consensus", "simulate"]
    args = build_parser().parse_args(argv[1:])
    return _config_from(args, seed=args.seed)


_floats = st.floats(0.001, 500.0, allow_nan=False, allow_infinity=False)


@st.composite
def _configs(draw: st.DrawFn) -> SimConfig:
    backend = draw(st.sampled_from(["raft", "pbft", "crdt"]))
    lat_min = draw(_floats)
    timeout = draw(_floats)
    lo = draw(st.floats(0.01, 5.0))
    kw: dict[str, object] = {
        "seed": draw(st.integers(0, 2**40)),
        "backend": backend,
        "nodes": draw(st.integers(4, 7)),
        "duration_s": draw(st.floats(0.1, 100.0)),
        "quiet_tail_s": draw(st.floats(0.0, 10.0)),
        "max_drift": draw(st.floats(0.001, 0.9)),
        "nemesis_interval_s": (lo, lo + draw(st.floats(0.0, 5.0))),
        "latency_min_ms": lat_min,
        "latency_mean_ms": lat_min + draw(st.floats(0.0, 50.0)),
        "drop_rate": draw(st.floats(0.0, 0.99)),
        "client_timeout_ms": timeout,
        "client_give_up_ms": timeout + draw(st.floats(0.0, 5000.0)),
        "wal_segment_bytes": draw(st.integers(1, 1 << 30)),
        "think_ms": draw(st.floats(0.0, 100.0)),
    }
    if backend != "raft":
        kw["faults"] = tuple(draw(st.lists(st.sampled_from(ENGINE_FAULTS), unique=True)))
    return SimConfig(**kw)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(_configs())
def test_the_replay_command_parses_back_to_the_same_config(cfg: SimConfig) -> None:
    assert _parse_replay(cfg.replay_command()) == cfg


def test_a_setting_without_its_own_option_is_replayed_with_set() -> None:
    cfg = SimConfig(client_timeout_ms=30.0, client_give_up_ms=100.0, disk_sync_ms=(0.1, 2.5))
    command = cfg.replay_command()
    assert "--set client_timeout_ms=30" in command
    assert "--set disk_sync_ms=0.1:2.5" in command
    assert _parse_replay(command) == cfg
    assert "--set" not in SimConfig().replay_command()


def test_every_settable_field_round_trips_through_the_replay_command() -> None:
    settable = settable_fields()
    assert "client_timeout_ms" in settable and "nodes" not in settable
    for name, default in settable.items():
        if isinstance(default, tuple):
            value: object = (default[0] * 2, default[1] * 2)
        elif isinstance(default, float):
            value = default * 0.5
        else:
            value = default * 2
        cfg = SimConfig(**{name: value})  # type: ignore[arg-type]
        assert f"--set {name}=" in cfg.replay_command()
        assert _parse_replay(cfg.replay_command()) == cfg, name


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus=1", "no such setting"),
        ("nodes=3", "option of its own"),
        ("drop_rate=x", "takes a float"),
        ("drop_rate=nan", "takes a float"),
        ("wal_segment_bytes=1.5", "takes a int"),
        ("disk_sync_ms=3", "LO:HI"),
        ("no-equals-sign", "NAME=VALUE"),
    ],
)
def test_a_bad_setting_is_a_typed_error(text: str, needle: str) -> None:
    with pytest.raises(SimConfigError, match=needle):
        parse_setting(text)


@pytest.mark.parametrize(
    "setting",
    ["drop_rate=1.5", "client_timeout_ms=0", "latency_min_ms=9", "think_ms=-1"],
)
def test_a_setting_out_of_range_is_refused_by_the_config(setting: str) -> None:
    name, value = parse_setting(setting)
    with pytest.raises(SimConfigError, match=name):
        SimConfig(**{name: value})  # type: ignore[arg-type]
