"""The ``ruflo-consensus`` command: reports, JSON, replay, exit codes, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from ruflo_consensus.cli import main


def test_simulate_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--seed", "5", "--duration", "3", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["seed"] == 5 and data["status"] == "pass" and data["linearizable"] is True
    assert data["replay"] == "ruflo-consensus simulate --seed 5 --duration 3"


def test_simulate_report_shows_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--seed", "1", "--duration", "3", "--nodes", "3"])
    out = capsys.readouterr().out
    assert code == 0
    for needle in (
        "operations",
        "leader changes",
        "faults injected",
        "invariants checked",
        "linearizab",
        "trace hash",
        "replay",
        "--nodes 3",
    ):
        assert needle in out


def test_replay_command_reproduces_the_hash(capsys: pytest.CaptureFixture[str]) -> None:
    main(["simulate", "--seed", "9", "--duration", "2", "--faults", "crash,drop", "--json"])
    first = json.loads(capsys.readouterr().out)
    argv = [*first["replay"].split()[1:], "--json"]
    main(argv)
    second = json.loads(capsys.readouterr().out)
    assert second["trace_hash"] == first["trace_hash"]


def test_sweep_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--seeds", "0:4", "--duration", "2", "--processes", "2", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["passed"] == 4 and data["failed"] == [] and len(data["trace_hashes"]) == 4


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--nodes", "0"],
        ["simulate", "--faults", "meteor"],
        ["simulate", "--seeds", "5:1"],
        ["simulate", "--seeds", "a:b"],
        ["simulate", "--duration", "-3"],
        ["simulate", "--seed", "x"],
        ["bench", "sim", "--seeds", "0"],
        ["frobnicate"],
    ],
)
def test_bad_input_exits_2_without_a_traceback(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        sys.exit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_check_command_bad_file_exits_2(tmp_path, capsys) -> None:
    bad = tmp_path / "h.jsonl"
    bad.write_text('{"process": 0, "type": "invoke", "f": "put"\n')
    assert main(["check", str(bad), "--model", "kv"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_bench_sim_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "sim", "--seeds", "1", "--duration", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["messages"] > 0 and data["messages_per_second"] > 0
    assert data["rows"][0]["messages"] == data["messages"]


def test_console_script_is_installed_and_runs() -> None:
    exe = shutil.which("ruflo-consensus")
    if exe is None:
        pytest.skip("console script not on PATH (package not installed)")
    out = subprocess.run(
        [exe, "simulate", "--duration", "1", "--json"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "pass"


def test_bench_storage_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "storage", "--entries", "3000", "--batch", "500", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reopen_seconds"] > 0 and data["file_bytes"] > 3000


def test_bench_storage_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "storage", "--entries", "0"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_simulate_writes_a_history_that_check_accepts(tmp_path, capsys) -> None:
    history = tmp_path / "run.jsonl"
    assert main(["simulate", "--seed", "2", "--duration", "3", "--history", str(history)]) == 0
    lines = history.read_text().splitlines()
    assert len(lines) > 100 and json.loads(lines[0])["type"] == "invoke"
    capsys.readouterr()
    assert main(["check", str(history), "--model", "kv", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["linearizable"] is True


def test_history_with_a_sweep_or_an_unwritable_path_exits_2(tmp_path, capsys) -> None:
    assert main(["simulate", "--seeds", "0:2", "--history", str(tmp_path / "h")]) == 2
    assert main(["simulate", "--duration", "1", "--history", str(tmp_path / "no" / "h")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_command_hands_the_federation_workload_to_a_run_a_sweep_and_a_bench(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the simulator does not know the federation: the command picks its workload and
    # hands it over, to one run, to the sweep's worker processes and to bench sim
    args = ["--workload", "federation", "--duration", "2", "--faults", "none", "--json"]
    assert main(["simulate", "--seed", "2", *args]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["properties"]["commands accepted"] > 0
    assert single["replay"].startswith("ruflo-consensus simulate --seed 2 --duration 2")
    assert "--workload federation" in single["replay"]
    assert main(["simulate", "--seeds", "1:3", "--processes", "2", *args]) == 0
    sweep = json.loads(capsys.readouterr().out)
    assert sweep["passed"] == 2
    assert sweep["trace_hashes"]["2"] == single["trace_hash"]
    assert main(["bench", "sim", "--seeds", "1", *args]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["ops_completed"] > 0
