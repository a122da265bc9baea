"""Tests for the CLI back ends run_check and run_bench_check."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from ruflo_consensus.check import Op, dump_history_jsonl, generate_history, mutate_history
from ruflo_consensus.check.command import run_bench_check, run_check


def make_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=200, color_system=None, force_terminal=False), buffer


def good_file(tmp_path: Path, name: str = "good.jsonl") -> str:
    path = tmp_path / name
    dump_history_jsonl(generate_history("kv", 300, 4, seed=1, n_keys=3), path)
    return str(path)


def bad_history_file(tmp_path: Path, name: str = "bad.jsonl") -> str:
    path = tmp_path / name
    dump_history_jsonl(mutate_history(generate_history("kv", 300, 4, seed=1, n_keys=3), 2), path)
    return str(path)


def hard_file(tmp_path: Path, name: str = "hard.jsonl") -> str:
    """Concurrent writes then an impossible read: far too slow to decide in 0.2 s."""
    n = 24
    ops = [Op(p, "invoke", "put", "k", f"v{p}") for p in range(n)]
    ops += [Op(p, "ok", "put", "k", f"v{p}") for p in range(n)]
    ops += [Op(n, "invoke", "get", "k"), Op(n, "ok", "get", "k", "nope")]
    path = tmp_path / name
    dump_history_jsonl(ops, path)
    return str(path)


def malformed_file(tmp_path: Path, name: str = "malformed.jsonl") -> str:
    path = tmp_path / name
    path.write_text('{"process": 0, "type": "invoke", "f": "get", "key": 1}\n{"process": 0, "ty\n')
    return str(path)


def no_traceback(err: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line]
    assert lines, "expected an error line on stderr"
    assert all(line.startswith("ruflo-consensus check: error:") for line in lines)


def test_linearizable_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    console, buffer = make_console()
    assert run_check([good_file(tmp_path)], "kv", None, False, console) == 0
    text = buffer.getvalue()
    assert "linearizable" in text and "NOT" not in text
    assert "300" in text
    assert capsys.readouterr().err == ""


def test_non_linearizable_file_exits_1_and_shows_window(tmp_path: Path) -> None:
    console, buffer = make_console()
    bad = bad_history_file(tmp_path)
    assert run_check([good_file(tmp_path), bad], "kv", None, False, console) == 1
    text = buffer.getvalue()
    assert "NOT linearizable" in text
    assert "could not be linearized" in text
    assert "Window" in text
    assert "never-written-" in text


def test_bad_input_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    console, buffer = make_console()
    malformed = malformed_file(tmp_path)
    assert run_check([malformed], "kv", None, False, console) == 2
    err = capsys.readouterr().err
    no_traceback(err)
    assert f"{malformed}:2:" in err
    assert "error" in buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01\x02\xff\xfe garbage", b'{"process": 0, "type": "ok", "f": "get"}\n'],
)
def test_other_bad_inputs_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    console, _ = make_console()
    assert run_check([str(path)], "kv", None, True, console) == 2
    no_traceback(capsys.readouterr().err)


def test_missing_file_and_model_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    console, _ = make_console()
    assert run_check([str(tmp_path / "missing.jsonl")], "kv", None, False, console) == 2
    no_traceback(capsys.readouterr().err)
    assert run_check([good_file(tmp_path)], "no-such-model", None, False, console) == 2
    err = capsys.readouterr().err
    no_traceback(err)
    assert "no-such-model" in err
    # a cas whose value is not [old, new] cannot be interpreted by the model
    path = tmp_path / "badcas.jsonl"
    dump_history_jsonl([Op(0, "invoke", "cas", None, 3), Op(0, "ok", "cas", None, 3)], path)
    assert run_check([str(path)], "register", None, False, console) == 2
    err = capsys.readouterr().err
    no_traceback(err)
    assert "cas value must be [old, new]" in err


def test_timeout_exits_3(tmp_path: Path) -> None:
    console, buffer = make_console()
    assert run_check([hard_file(tmp_path)], "kv", 0.2, False, console) == 3
    assert "unknown" in buffer.getvalue()


def test_exit_code_precedence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    console, _ = make_console()
    good = good_file(tmp_path)
    bad = bad_history_file(tmp_path)
    hard = hard_file(tmp_path)
    malformed = malformed_file(tmp_path)
    assert run_check([good, hard], "kv", 0.2, True, console) == 3
    assert run_check([hard, bad, good], "kv", 0.2, True, console) == 1
    assert run_check([bad, malformed, good], "kv", 0.2, True, console) == 2
    assert run_check([good, good], "kv", 0.2, True, console) == 0
    capsys.readouterr()


def test_json_output_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    console, buffer = make_console()
    good = good_file(tmp_path)
    bad = bad_history_file(tmp_path)
    malformed = malformed_file(tmp_path)
    hard = hard_file(tmp_path)
    code = run_check([good, bad, malformed, hard], "kv", 0.2, True, console)
    assert code == 2
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]
    assert [r["file"] for r in records] == [good, bad, malformed, hard]
    assert [r["linearizable"] for r in records] == [True, False, None, None]
    for record in records:
        assert {"file", "linearizable", "operations", "seconds"} <= set(record)
        assert isinstance(record["operations"], int)
        assert isinstance(record["seconds"], float)
    assert records[0]["operations"] == 300
    assert "error" in records[2] and malformed in records[2]["error"]
    assert "error" not in records[0] and "error" not in records[3]
    no_traceback(capsys.readouterr().err)


def test_run_check_default_console_writes_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_check([good_file(tmp_path)], "kv", None, True) == 0
    out = capsys.readouterr().out
    assert json.loads(out.strip())["linearizable"] is True


def test_bench_check_reports_figures() -> None:
    console, buffer = make_console()
    report = run_bench_check(n_ops=500, n_clients=5, n_keys=4, seed=3, rounds=2, console=console)
    assert report["linearizable"] is True
    assert report["n_ops"] == 500
    assert len(report["seconds"]) == 2
    assert report["best_seconds"] <= report["median_seconds"]
    assert report["ops_per_second_best"] > 0
    assert report["partitions"] == 4
    assert "ops / second" in buffer.getvalue()


def test_bench_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    console, buffer = make_console()
    report = run_bench_check(n_ops=200, rounds=1, as_json=True, console=console)
    printed = json.loads(buffer.getvalue())
    assert printed == report
    with pytest.raises(ValueError):
        run_bench_check(rounds=0, console=console)
