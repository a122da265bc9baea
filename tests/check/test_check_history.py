"""Tests for history loading, validation and serialisation (ruflo_consensus.check.history)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ruflo_consensus.check import (
    HistoryError,
    Op,
    dump_history_jsonl,
    generate_history,
    load_history,
    ops_to_jsonl,
)
from ruflo_consensus.check.history import parse_edn, validate_pairing

JSONL = """\
{"process": 0, "type": "invoke", "f": "write", "value": 1, "time": 10}
{"process": 1, "type": "invoke", "f": "cas", "value": [1, 2]}

{"process": 0, "type": "ok", "f": "write", "value": 1, "time": 12}
{"process": 1, "type": "ok", "f": "cas", "value": [1, 2]}
{"process": "c", "type": "invoke", "f": "read", "key": "k1", "value": null}
{"process": "c", "type": "ok", "f": "read", "key": "k1", "value": "x\\"y"}
{"process": 0, "type": "invoke", "f": "put", "key": 3, "value": true}
{"process": 0, "type": "info", "f": "put", "key": 3, "value": false}
"""

EDN = """\
{:process 0, :type :invoke, :f :write, :value 1, :time 10, :index 0}
{:process 1 :type :invoke :f :cas :value [1 2]}

{:type :ok, :process 0, :f :write, :value 1, :time 12, :extra {:a [1 2]}}
{:process 1, :type :ok, :f :cas, :value [1, 2]}
{:process "c", :type :invoke, :f :read, :key "k1", :value nil}
{:process "c", :type :ok, :f "read", :key "k1", :value "x\\"y"}  ; a comment
{:process 0, :type :invoke, :f :put, :key 3, :value true}
{:process 0, :type :info, :f :put, :key 3, :value false}
"""

EXPECTED = [
    Op(0, "invoke", "write", None, 1, 10.0),
    Op(1, "invoke", "cas", None, (1, 2)),
    Op(0, "ok", "write", None, 1, 12.0),
    Op(1, "ok", "cas", None, (1, 2)),
    Op("c", "invoke", "read", "k1", None),
    Op("c", "ok", "read", "k1", 'x"y'),
    Op(0, "invoke", "put", 3, True),
    Op(0, "info", "put", 3, False),
]


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_and_edn_parse_to_the_same_ops(tmp_path: Path) -> None:
    from_json = load_history(write(tmp_path, "h.jsonl", JSONL))
    from_edn = load_history(write(tmp_path, "h.edn", EDN))
    assert from_json == EXPECTED
    assert from_edn == EXPECTED


def test_dump_and_reload_round_trip(tmp_path: Path) -> None:
    ops = generate_history("kv", 200, 4, seed=5, info_rate=0.1)
    path = tmp_path / "out.jsonl"
    dump_history_jsonl(ops, path)
    assert load_history(path) == ops
    # ops_to_jsonl emits one JSON object per line
    lines = ops_to_jsonl(EXPECTED).splitlines()
    assert len(lines) == len(EXPECTED)
    assert json.loads(lines[1]) == {"process": 1, "type": "invoke", "f": "cas", "value": [1, 2]}
    assert json.loads(lines[0])["time"] == 10.0


def test_edn_reader_subset() -> None:
    assert parse_edn('{:a -3, :b 2.5, :c "t\\n\\u0041", :d #{1}, :e (1 2), :f nil}') == {
        "a": -3,
        "b": 2.5,
        "c": "t\nA",
        "d": frozenset({1}),
        "e": (1, 2),
        "f": None,
    }
    assert parse_edn("[:x/y 42N 1.5M 1e3 true false]") == ("x/y", 42, 1.5, 1000.0, True, False)
    assert parse_edn("[1 #_ 2 3]") == (1, 3)
    assert parse_edn('"a\\\\b\\"c"') == 'a\\b"c'
    bad_inputs = ["{:a 1", "[1 2", '"abc', "{:a}", "foo", "#inst 1", "1/2", "[1] 2", ":"]
    bad_inputs += ["{:a [1}", "[#_]", "", "  ", ")", "[1 2]]", '"\\q"', "[" * 300 + "]" * 300]
    for bad in bad_inputs:
        with pytest.raises(ValueError):
            parse_edn(bad)


def test_blank_lines_and_bom_are_ignored(tmp_path: Path) -> None:
    text = "\ufeff\n\n" + JSONL + "\n   \n"
    assert load_history(write(tmp_path, "h.jsonl", text)) == EXPECTED


BAD_INPUTS = [
    # (name, content, expected line, fragment of the reason)
    (
        "truncated.jsonl",
        '{"process": 0, "type": "invoke", "f": "read"}\n{"process": 0, "ty',
        2,
        "JSON",
    ),
    ("truncated.edn", "{:process 0, :type :invoke, :f :read}\n{:process 0, :type :ok", 2, "end"),
    ("process_float.jsonl", '{"process": 1.5, "type": "invoke", "f": "read"}\n', 1, "process"),
    ("process_bool.jsonl", '{"process": true, "type": "invoke", "f": "read"}\n', 1, "process"),
    ("process_list.edn", "{:process [1], :type :invoke, :f :read}\n", 1, "process"),
    ("type_unknown.jsonl", '{"process": 0, "type": "done", "f": "read"}\n', 1, "type"),
    ("type_int.jsonl", '{"process": 0, "type": 3, "f": "read"}\n', 1, "type"),
    ("f_int.jsonl", '{"process": 0, "type": "invoke", "f": 7}\n', 1, "'f'"),
    ("no_f.edn", "{:process 0, :type :invoke}\n", 1, "'f'"),
    ("not_a_map.jsonl", '{"process": 0, "type": "invoke", "f": "read"}\n[1, 2]\n', 2, "op map"),
    ("array_first.jsonl", "[1, 2]\n", 1, "not a history"),
    ("edn_vector.edn", "{:process 0, :type :invoke, :f :read}\n[1 2]\n", 2, "op map"),
    (
        "orphan_completion.jsonl",
        '{"process": 0, "type": "invoke", "f": "read"}\n'
        '{"process": 0, "type": "ok", "f": "read", "value": 1}\n'
        '{"process": 1, "type": "ok", "f": "write", "value": 1}\n',
        3,
        "no outstanding invoke",
    ),
    (
        "double_invoke.edn",
        "{:process 0, :type :invoke, :f :read}\n\n{:process 0, :type :invoke, :f :write}\n",
        3,
        "still outstanding",
    ),
    (
        "f_mismatch.jsonl",
        '{"process": 0, "type": "invoke", "f": "read"}\n'
        '{"process": 0, "type": "ok", "f": "write"}\n',
        2,
        "does not match",
    ),
    ("empty.jsonl", "", 1, "empty"),
    ("blank.jsonl", "\n  \n\n", 1, "empty"),
    ("junk.bin", b'{"process": 0}\n\x89PNG\r\n\x1a\n\x00\xff\xfe', 2, "UTF-8"),
    ("text_junk.txt", "hello world\n", 1, "not a history"),
    ("mixed.jsonl", '{"process": 0, "type": "invoke", "f": "read"}\n{:process 0}\n', 2, "JSON"),
]


@pytest.mark.parametrize(
    ("name", "content", "line", "reason"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input_raises_history_error_with_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, line: int, reason: str
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(HistoryError) as info:
        load_history(path)
    err = info.value
    assert err.path == str(path)
    assert err.line == line
    assert reason in err.reason
    assert f"{path}:{line}:" in str(err)


def test_missing_file_is_a_history_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError) as info:
        load_history(tmp_path / "nope.jsonl")
    assert info.value.line is None
    assert "nope.jsonl" in str(info.value)
    with pytest.raises(HistoryError):
        load_history(tmp_path)  # a directory


def test_op_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        Op(0, "done", "read")
    with pytest.raises(ValueError):
        Op(1.5, "invoke", "read")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Op(True, "invoke", "read")
    with pytest.raises(ValueError):
        Op(0, "invoke", 3)  # type: ignore[arg-type]


def test_validate_pairing_in_memory_reports_event_position() -> None:
    ops = [Op(0, "invoke", "read"), Op(1, "ok", "read")]
    with pytest.raises(HistoryError) as info:
        validate_pairing(ops)
    assert info.value.line == 2
    assert info.value.path is None
    assert "history event 2" in str(info.value)
    # an invoke left outstanding at the end is fine
    validate_pairing([Op(0, "invoke", "read")])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_arbitrary_bytes_never_leak_other_exceptions(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    try:
        ops = load_history(path)
    except HistoryError:
        return
    assert ops and all(isinstance(op, Op) for op in ops)


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.text('ab:{}[]"\\, ;#', max_size=5),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    maps=st.lists(
        st.dictionaries(
            st.sampled_from(["process", "type", "f", "key", "value", "time"]),
            _scalar | st.lists(_scalar, max_size=3),
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_arbitrary_maps_never_leak_other_exceptions(
    tmp_path: Path, maps: list[dict[str, object]]
) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in maps), encoding="utf-8")
    try:
        load_history(path)
    except HistoryError as err:
        assert err.line is not None and 1 <= err.line <= len(maps)


def test_deeply_nested_value_is_a_history_error(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    path = write(
        tmp_path, "deep.edn", "{:process 0, :type :invoke, :f :read, :value " + deep + "}\n"
    )
    with pytest.raises(HistoryError):
        load_history(path)
    path = write(
        tmp_path,
        "deep.jsonl",
        '{"process": 0, "type": "invoke", "f": "read", "value": ' + deep + "}\n",
    )
    with pytest.raises(HistoryError):
        load_history(path)
