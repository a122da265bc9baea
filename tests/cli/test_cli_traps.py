"""Traps a new user of the ``ruflo-consensus`` command fell into: each test failed before
its fix.

The runtime tests start real nodes (``cluster up``) on 127.0.0.1 and stop them in a
``finally`` (SIGKILL of whatever is left), also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ruflo_consensus.cli import build_parser, main
from ruflo_consensus.runtime import write_local_spec
from ruflo_consensus.runtime.cluster import read_state
from ruflo_consensus.sim.config import SimConfig, SimConfigError
from ruflo_consensus.sim.sweep import parse_seed_range
from tests.helpers.runtime_helpers import FAST_RAFT, cli


def _exit_code(argv: list[str]) -> int | str | None:
    """``main(argv)``'s exit code, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


# --------------------------------------------------------------- 1. Byzantine replicas past f

PBFT_SHORT = ["simulate", "--backend", "pbft", "--nodes", "4", "--duration", "1"]


def test_more_byzantine_replicas_than_f_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*PBFT_SHORT, "--byzantine", "3"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "f = 1" in lines[0] and "--allow-over-f" in lines[0]
    assert captured.out == ""
    with pytest.raises(SimConfigError, match="f = 1"):
        SimConfig(backend="pbft", nodes=4, byzantine=2)
    SimConfig(backend="pbft", nodes=4, byzantine=1)  # f itself is fine
    SimConfig(backend="pbft", nodes=7, byzantine=2)


def test_allow_over_f_runs_and_the_report_says_safety_is_not_guaranteed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [*PBFT_SHORT, "--byzantine", "2", "--behaviours", "silent", "--allow-over-f"]
    main([*args, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert any("not guaranteed" in w and "f = 1" in w for w in data["warnings"])
    assert "--allow-over-f" in data["replay"]
    main(args)
    assert "not guaranteed" in capsys.readouterr().out
    main(["simulate", "--duration", "1", "--json"])
    assert json.loads(capsys.readouterr().out)["warnings"] == []


@pytest.mark.parametrize("value", ["0"])
def test_bench_check_refuses_zero_clients_and_ops(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for option in ("--clients", "--ops"):
        with pytest.raises(SystemExit) as exc:
            main(["bench", "check", option, value])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and option in err


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "check", "--partition", "--clients", "1"],
        ["bench", "cluster", "--nodes", "0"],
        ["simulate", "--nodes", "0"],
        ["simulate", "--seed", "x"],
        ["check", str(Path(__file__).with_name("__init__.py")), "--model", "nope"],
    ],
)
def test_bad_input_is_one_line_on_stderr_or_one_json_error_on_stdout(argv: list[str]) -> None:
    human = _piped(*argv)
    assert human.returncode == 2 and human.stdout == ""
    assert len(human.stderr.strip().splitlines()) == 1 and "error" in human.stderr
    as_json = _piped(*argv, "--json")
    assert as_json.returncode == 2 and as_json.stderr == ""
    assert _json(as_json)["error"] == "bad-input"


# --------------------------------------------------------------- 5. one meaning of --seeds


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0:4", range(0, 4)), ("3:5", range(3, 5)), ("3", range(0, 3)), (" 2 ", range(0, 2))],
)
def test_seeds_is_a_range_or_a_count(text: str, seeds: range) -> None:
    assert parse_seed_range(text) == seeds


@pytest.mark.parametrize("text", ["0", "5:1", "a:b", "-1:3", "1:2:3", "", "x", "2:2"])
def test_bad_seeds_are_one_line_exit_2_in_simulate_and_bench(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SimConfigError):
        parse_seed_range(text)
    for argv in (["simulate", f"--seeds={text}"], ["bench", "sim", f"--seeds={text}"]):
        assert _exit_code(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--seeds" in err, err


def test_bench_sim_seeds_takes_the_same_range_as_simulate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--duration", "1", "--faults", "none", "--json"]
    assert main(["bench", "sim", "--seeds", "2:4", *common]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in data["rows"]] == [2, 3] and data["seed_range"] == [2, 4]
    assert main(["bench", "sim", "--seeds", "2", *common]) == 0
    assert [r["seed"] for r in json.loads(capsys.readouterr().out)["rows"]] == [0, 1]
    assert main(["simulate", "--seeds", "2", "--processes", "1", *common]) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == [0, 2]


# --------------------------------------------------------------- 6. what a "fail" op is


def test_federation_report_says_fail_ops_are_refusals_by_design(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["simulate", "--workload", "federation", "--duration", "2", "--faults", "none"]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["operations"]["fail"] > 0
    meaning = data["operation_types"]
    assert "refused by design" in meaning["fail"] and "unknown" in meaning["info"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "refused by design" in out and "unknown outcome" in out


# --------------------------------------------------------------- 4. help with examples

COMMANDS = ("simulate", "check", "bench", "keygen", "node", "cluster", "kv")


def _help(*argv: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ruflo_consensus.cli", *argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_top_level_help_lists_every_command_and_examples() -> None:
    text = _help()
    for command in COMMANDS:
        assert any(line.split()[:1] == [command] for line in text.splitlines()), command
    assert "examples:" in text and "exit codes:" in text
    assert "ruflo-consensus simulate" in text.split("examples:")[1]


@pytest.mark.parametrize(
    "argv",
    [
        ("simulate",),
        ("check",),
        ("bench",),
        ("bench", "sim"),
        ("bench", "check"),
        ("bench", "storage"),
        ("bench", "cluster"),
        ("keygen",),
        ("node",),
        ("cluster",),
        ("cluster", "up"),
        ("cluster", "status"),
        ("cluster", "down"),
        ("cluster", "add"),
        ("cluster", "remove"),
        ("kv",),
        ("kv", "put"),
        ("kv", "get"),
        ("kv", "cas"),
    ],
)
def test_every_help_has_examples_and_exit_codes(argv: tuple[str, ...]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--help"])
    text = _help(*argv)
    assert "examples:" in text and "exit codes:" in text, text
    examples = text.split("examples:")[1].split("exit codes:")[0]
    assert f"ruflo-consensus {' '.join(argv)}" in examples, examples


# --------------------------------------------------------------- 2, 3. real nodes


def _kill_run(run: Path) -> None:
    with contextlib.suppress(Exception):
        for pid in read_state(run)["pids"].values():
            with contextlib.suppress(OSError):
                os.killpg(int(pid), signal.SIGKILL)


def _piped(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``ruflo-consensus ARGS`` with stdout a pipe and no COLUMNS: what a script sees."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "ruflo_consensus.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    return json.loads(lines[0])


@pytest.fixture
def spare_cluster(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Three voters and a spare n4 (not running yet), ports on 127.0.0.1."""
    spec = write_local_spec(tmp_path, "mesh", 4, raft=FAST_RAFT, node_extra={"n4": {"join": True}})
    run = tmp_path / "run"
    try:
        yield spec, run
    finally:
        _piped("cluster", "down", str(spec), "--dir", str(run))
        _kill_run(run)


def test_cluster_status_piped_is_one_aligned_line_per_node(
    spare_cluster: tuple[Path, Path],
) -> None:
    spec, run = spare_cluster
    assert cli("cluster", "up", str(spec), "--dir", str(run)).returncode == 0
    st = _piped("cluster", "status", str(spec))
    assert st.returncode == 0, st.stderr
    lines = st.stdout.rstrip("\n").splitlines()
    assert lines[0].split()[:3] == ["node", "backend", "role"], st.stdout
    assert [ln.split()[0] for ln in lines[1:]] == ["n1", "n2", "n3", "n4"], st.stdout
    for line in lines[1:]:
        assert " raft " in line and "\x1b" not in line
    # columns line up: every row has the header's "role" column at the same offset
    at = lines[0].index("role")
    assert all(ln[at - 1] == " " and ln[at] != " " for ln in lines[1:]), st.stdout
    assert json.loads(_piped("cluster", "status", str(spec), "--json").stdout)[0]["id"] == "n1"


def test_json_everywhere_with_one_error_shape(
    tmp_path: Path, spare_cluster: tuple[Path, Path]
) -> None:
    spec, run = spare_cluster
    key = tmp_path / "eve.key"
    kg = _json(_piped("keygen", "--id", "eve", "--out", str(key), "--json"))
    assert kg["id"] == "eve" and kg["key_file"] == str(key.resolve())
    assert len(bytes.fromhex(kg["public_key"])) == 32 and kg["manifest"].endswith(".json")
    again = _piped("keygen", "--id", "eve", "--out", str(key), "--json")
    assert again.returncode == 2 and set(_json(again)) == {"error", "message"}
    assert _json(again)["error"] == "bad-input"

    none = _piped("kv", "get", "a", "--spec", str(spec), "--timeout", "1", "--json")
    assert none.returncode == 3 and _json(none)["error"] == "unavailable"

    up = _piped("cluster", "up", str(spec), "--dir", str(run), "--json")
    assert up.returncode == 0, up.stderr
    nodes = _json(up)["nodes"]
    assert sorted(nodes) == ["n1", "n2", "n3", "n4"] and all(n["pid"] > 0 for n in nodes.values())

    put = _piped("kv", "put", "a", "x", "--spec", str(spec), "--json")
    assert put.returncode == 0 and _json(put) == {"op": "put", "key": "a", "result": None}
    got = _json(_piped("kv", "get", "a", "--spec", str(spec), "--json"))
    assert got == {"op": "get", "key": "a", "result": "x"}
    kept = _piped("kv", "cas", "a", "q", "z", "--spec", str(spec), "--json")
    assert kept.returncode == 1 and _json(kept) == {"op": "cas", "key": "a", "result": False}

    add = _piped("cluster", "add", str(spec), "n4", "--timeout", "60", "--json")
    assert add.returncode == 0, add.stderr
    assert _json(add)["voters"] == ["n1", "n2", "n3", "n4"] and _json(add)["node"] == "n4"
    twice = _piped("cluster", "add", str(spec), "n2", "--json")
    assert twice.returncode == 1 and _json(twice)["error"] == "already-member"
    rm = _piped("cluster", "remove", str(spec), "n4", "--json")
    assert rm.returncode == 0, rm.stderr
    assert "n4" not in _json(rm)["voters"] and _json(rm)["action"] == "removed"
    bad = _piped("cluster", "remove", str(spec), "n9", "--json")
    assert bad.returncode == 2 and _json(bad)["error"] == "bad-input"

    down = _piped("cluster", "down", str(spec), "--dir", str(run), "--json")
    assert down.returncode == 0, down.stderr
    assert set(_json(down)["nodes"].values()) == {"stopped"}
    nothing = _piped("cluster", "down", str(spec), "--dir", str(run), "--json")
    assert nothing.returncode == 1 and _json(nothing)["error"] == "nothing-to-stop"


def test_node_json_prints_one_line_when_it_listens(tmp_path: Path) -> None:
    spec = write_local_spec(tmp_path, "mesh", 1, raft=FAST_RAFT)
    cmd = [sys.executable, "-m", "ruflo_consensus.cli", "node", "--spec", str(spec)]
    proc = subprocess.Popen(
        [*cmd, "--id", "n1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["event"] == "ready" and line["id"] == "n1"
        assert line["url"].startswith("ws://127.0.0.1:") and line["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    bad = subprocess.run([*cmd, "--id", "n9", "--json"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and _json(bad)["error"] == "bad-input"
