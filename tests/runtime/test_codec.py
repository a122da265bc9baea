"""Tests of the msgpack wire codec: exact round trips and typed rejection of every bad input."""

from __future__ import annotations

import datetime
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ruflo_consensus.codec import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_FRAME,
    DecodeError,
    FieldError,
    FrameTooLarge,
    MalformedFrame,
    UnknownMessageType,
    decode_message,
    encode_message,
)
from ruflo_consensus.core.base import Entry, Message, Proposal
from ruflo_consensus.core.raft import (
    RAFT_MESSAGES,
    AppendEntries,
    AppendResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)

# A valid frame decodes (this once failed: an unknown unpackb keyword rejected everything).


def test_a_valid_frame_decodes() -> None:
    msg = RequestVote("n1", "n2", 1, 0, 0, False)
    assert decode_message(encode_message(msg)) == msg


# --------------------------------------------------------------------------- helpers

REASONS: dict[type[DecodeError], str] = {
    FrameTooLarge: "too-large",
    MalformedFrame: "malformed",
    UnknownMessageType: "unknown-type",
    FieldError: "bad-field",
}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def assert_rejected(data: Any, cls: type[DecodeError], **limits: int) -> DecodeError:
    """``decode_message(data)`` raises exactly ``cls`` (no other exception, no other subclass)."""
    with pytest.raises(DecodeError) as info:
        decode_message(data, **limits)
    assert type(info.value) is cls, f"expected {cls.__name__}, got {info.value!r}"
    assert info.value.reason == REASONS[cls]
    assert isinstance(info.value, ValueError)
    return info.value


NESTED_COMMAND = {
    "op": "batch",
    "items": [1, -2, 2**63, 1.5, True, False, None, "x", b"\x00\xff", [[], {}]],
    "meta": {"ключ": "значение 🚀", "bytes": b"\x01\x02", "deep": {"a": [{"b": [None]}]}},
    "empty": "",
}

SAMPLE_MESSAGES: list[Message] = [
    RequestVote("n1", "n2", 7, 12, 6, False),
    RequestVote("n1", "n2", 8, 0, 0, True),
    VoteResponse("n2", "n1", 7, True, False),
    VoteResponse("n2", "n1", 7, False, True),
    AppendEntries("leader", "f", 3, 0, 0, (), 0),
    AppendEntries(
        "leader",
        "follower",
        5,
        10,
        4,
        (
            Entry(5, 11, None),
            Entry(5, 12, Proposal("client-1", 1, {"op": "put", "key": "k", "value": "v"})),
            Entry(5, 13, Proposal(None, 0, NESTED_COMMAND)),
            Entry(5, 14, Proposal("ünïcødé-client", 2**64 - 1, ["a", b"b", None, 0.25])),
            Entry(5, 15, Proposal("c", 3, None)),
            Entry(5, 16, Proposal("c", 4, b"")),
        ),
        12,
    ),
    AppendResponse("f", "leader", 5, True, 16, 0, 0),
    AppendResponse("f", "leader", 5, False, 10, 7, 3),
    AppendEntries("leader", "f", 3, 2, 1, (), 2, round=41),
    AppendResponse("f", "leader", 3, True, 2, 0, 0, round=41),
    RequestVote("n1", "n2", 9, 4, 3, False, transfer=True),
    TimeoutNow("leader", "f", 6),
    ReadIndexRequest("f", "leader", 6, 12),
    ReadIndexResponse("leader", "f", 6, 12, 40),
    ReadIndexResponse("leader", "f", 6, 12, -1),
    RequestVote("x" * 256, "ñ" * 256, 2**64 - 1, 2**64 - 1, 2**64 - 1, True),
    InstallSnapshot("leader", "f", 7, 40, 6, ("a", "b", "c"), (), 0, 9, b"\x00\xffsnap", False),
    InstallSnapshot("leader", "f", 7, 40, 6, ("a", "b", "c"), ("d",), 9, 9, b"", True),
    InstallSnapshotResponse("f", "leader", 7, 40, 5, False),
    InstallSnapshotResponse("f", "leader", 7, 40, 9, True),
]


@pytest.mark.parametrize("msg", SAMPLE_MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_of_every_message_type(msg: Message) -> None:
    data = encode_message(msg)
    assert isinstance(data, bytes)
    decoded = decode_message(data)
    assert type(decoded) is type(msg)
    assert decoded == msg
    assert encode_message(decoded) == data


def test_round_trip_keeps_bytes_str_none_and_noop_distinct() -> None:
    msg = SAMPLE_MESSAGES[5]
    assert isinstance(msg, AppendEntries)
    decoded = decode_message(encode_message(msg))
    assert isinstance(decoded, AppendEntries)
    assert isinstance(decoded.entries, tuple)
    assert decoded.entries[0].proposal is None
    third = decoded.entries[2].proposal
    assert third is not None and third.client is None
    assert type(third.command["items"][8]) is bytes
    assert type(third.command["meta"]["bytes"]) is bytes
    assert third.command["meta"]["ключ"] == "значение 🚀"
    assert type(third.command["items"][4]) is bool
    assert decoded.entries[4].proposal == Proposal("c", 3, None)
    assert decoded.entries[5].proposal == Proposal("c", 4, b"")


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_bytes_like_inputs_are_accepted(wrap: Any) -> None:
    msg = SAMPLE_MESSAGES[5]
    assert decode_message(wrap(encode_message(msg))) == msg


def test_encoding_is_a_tagged_versioned_array() -> None:
    raw = msgpack.unpackb(encode_message(VoteResponse("a", "b", 4, True, False)), raw=False)
    assert raw == [1, 2, "a", "b", 4, True, False]


# --------------------------------------------------------------------------- hypothesis round trip

node_ids = st.text(min_size=1, max_size=256)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
positive = st.integers(min_value=1, max_value=2**64 - 1)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
commands = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
proposals = st.builds(Proposal, st.none() | node_ids, u64, commands)
entries = st.builds(Entry, positive, positive, st.none() | proposals)

messages = st.one_of(
    st.builds(RequestVote, node_ids, node_ids, u64, u64, u64, st.booleans()),
    st.builds(VoteResponse, node_ids, node_ids, u64, st.booleans(), st.booleans()),
    st.builds(
        AppendEntries,
        node_ids,
        node_ids,
        u64,
        u64,
        u64,
        st.lists(entries, max_size=5).map(tuple),
        u64,
    ),
    st.builds(AppendResponse, node_ids, node_ids, u64, st.booleans(), u64, u64, u64),
    st.builds(
        InstallSnapshot,
        node_ids,
        node_ids,
        u64,
        u64,
        u64,
        st.lists(node_ids, max_size=4, unique=True).map(tuple),
        st.lists(node_ids, max_size=2, unique=True).map(tuple),
        u64,
        u64,
        st.binary(max_size=64),
        st.booleans(),
    ),
    st.builds(InstallSnapshotResponse, node_ids, node_ids, u64, u64, u64, st.booleans()),
)


def depth(v: Any) -> int:
    """Nesting depth counting every level, scalars included."""
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    return 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_hypothesis_messages_round_trip_exactly(msg: Message) -> None:
    data = encode_message(msg)
    assume(depth(msgpack.unpackb(data, raw=False)) <= DEFAULT_MAX_DEPTH)
    decoded = decode_message(data)
    assert decoded == msg
    assert type(decoded) is type(msg)
    assert encode_message(decoded) == data


# --------------------------------------------------------------------------- encoding errors


@pytest.mark.parametrize(
    "obj",
    [
        None,
        "RequestVote",
        b"\x98\x01",
        [1, 1, "a", "b", 1, 0, 0, False],
        {"term": 1},
        Message("a", "b"),
        Entry(1, 1, None),
        Proposal("c", 1, {}),
    ],
    ids=repr,
)
def test_encode_of_a_non_message_raises_type_error(obj: Any) -> None:
    with pytest.raises(TypeError):
        encode_message(obj)


# --------------------------------------------------------------------------- valid base frames

BASE_FRAMES: dict[str, tuple[list[Any], Message]] = {
    "RequestVote": (
        [1, 1, "a", "b", 3, 2, 1, False],
        RequestVote("a", "b", 3, 2, 1, False),
    ),
    "VoteResponse": (
        [1, 2, "a", "b", 3, True, False],
        VoteResponse("a", "b", 3, True, False),
    ),
    "AppendEntries": (
        [1, 3, "a", "b", 3, 2, 1, [[1, 3, None], [3, 4, ["c", 1, {"op": "x"}]]], 2],
        AppendEntries(
            "a", "b", 3, 2, 1, (Entry(1, 3, None), Entry(3, 4, Proposal("c", 1, {"op": "x"}))), 2
        ),
    ),
    "AppendResponse": (
        [1, 4, "a", "b", 3, True, 5, 0, 0],
        AppendResponse("a", "b", 3, True, 5, 0, 0),
    ),
    "TimeoutNow": ([1, 5, "a", "b", 3], TimeoutNow("a", "b", 3)),
    "ReadIndexRequest": ([1, 6, "a", "b", 3, 7], ReadIndexRequest("a", "b", 3, 7)),
    "ReadIndexResponse": ([1, 7, "a", "b", 3, 7, 9], ReadIndexResponse("a", "b", 3, 7, 9)),
    "InstallSnapshot": (
        [1, 8, "a", "b", 3, 9, 2, ["a", "b", "c"], [], 4, 10, b"chunk!", True],
        InstallSnapshot("a", "b", 3, 9, 2, ("a", "b", "c"), (), 4, 10, b"chunk!", True),
    ),
    "InstallSnapshotResponse": (
        [1, 9, "a", "b", 3, 9, 10, True],
        InstallSnapshotResponse("a", "b", 3, 9, 10, True),
    ),
}

# Positions of integer and boolean fields in each base frame.
INT_FIELDS = {
    "RequestVote": [4, 5, 6],
    "VoteResponse": [4],
    "AppendEntries": [4, 5, 6, 8],
    "AppendResponse": [4, 6, 7, 8],
    "TimeoutNow": [4],
    "ReadIndexRequest": [4, 5],
    "ReadIndexResponse": [4, 5],  # the index may be -1 (refused), so it is checked apart
    "InstallSnapshot": [4, 5, 6, 9, 10],
    "InstallSnapshotResponse": [4, 5, 6],
}
BOOL_FIELDS = {
    "RequestVote": [7],
    "VoteResponse": [5, 6],
    "AppendEntries": [],
    "AppendResponse": [5],
    "TimeoutNow": [],
    "ReadIndexRequest": [],
    "ReadIndexResponse": [],
    "InstallSnapshot": [12],
    "InstallSnapshotResponse": [7],
}


@pytest.mark.parametrize("name", list(BASE_FRAMES))
def test_base_frames_decode(name: str) -> None:
    frame, expected = BASE_FRAMES[name]
    assert decode_message(pack(frame)) == expected


def with_field(name: str, pos: int, value: Any) -> bytes:
    frame = list(BASE_FRAMES[name][0])
    frame[pos] = value
    return pack(frame)


BAD_INTS = ["3", True, False, -1, 1.0, None, [3], b"\x03"]
BAD_BOOLS = [1, 0, "true", None, 1.0, [True]]
BAD_NODE_IDS = ["", "x" * 257, 5, None, b"a", ["a"], True, {"a": "b"}]

FIELD_CASES = (
    [
        pytest.param(name, pos, bad, id=f"{name}-int{pos}-{bad!r}")
        for name, positions in INT_FIELDS.items()
        for pos in positions
        for bad in BAD_INTS
    ]
    + [
        pytest.param(name, pos, bad, id=f"{name}-bool{pos}-{bad!r}")
        for name, positions in BOOL_FIELDS.items()
        for pos in positions
        for bad in BAD_BOOLS
    ]
    + [
        pytest.param(name, pos, bad, id=f"{name}-node{pos}-{bad!r:.12}")
        for name in BASE_FRAMES
        for pos in (2, 3)
        for bad in BAD_NODE_IDS
    ]
)


@pytest.mark.parametrize(("name", "pos", "bad"), FIELD_CASES)
def test_wrong_field_type_raises_field_error(name: str, pos: int, bad: Any) -> None:
    assert_rejected(with_field(name, pos, bad), FieldError)


@pytest.mark.parametrize("name", list(BASE_FRAMES))
def test_node_id_of_exactly_256_characters_is_accepted(name: str) -> None:
    msg = decode_message(with_field(name, 2, "é" * 256))
    assert msg.src == "é" * 256


@pytest.mark.parametrize("name", list(BASE_FRAMES))
@pytest.mark.parametrize("change", ["drop-last", "extra", "no-fields"])
def test_wrong_field_count_raises_field_error(name: str, change: str) -> None:
    frame = list(BASE_FRAMES[name][0])
    if change == "drop-last":
        frame = frame[:-1]
    elif change == "extra":
        # two more than the layout has (one optional trailing field is allowed on some)
        frame = [*frame, 0, 0]
    else:
        frame = frame[:4]
    assert_rejected(pack(frame), FieldError)


ENTRY_CASES: list[Any] = [
    "entries",
    None,
    {"0": [1, 1, None]},
    [[1, 1]],
    [[1, 1, None, None]],
    [None],
    ["x"],
    [[0, 1, None]],
    [[1, 0, None]],
    [[-1, 1, None]],
    [["1", 1, None]],
    [[1, True, None]],
    [[1, 1.0, None]],
    [[1, 1, "proposal"]],
    [[1, 1, ["c", 1]]],
    [[1, 1, ["c", 1, {}, None]]],
    [[1, 1, {"client": "c", "seq": 1, "command": None}]],
    [[1, 1, ["", 1, None]]],
    [[1, 1, ["c" * 257, 1, None]]],
    [[1, 1, [5, 1, None]]],
    [[1, 1, [b"c", 1, None]]],
    [[1, 1, ["c", -1, None]]],
    [[1, 1, ["c", "1", None]]],
    [[1, 1, ["c", True, None]]],
    [[1, 1, ["c", None, None]]],
    [[1, 1, None], [1, 2, ["c", 1, None]], [1, 3, ["c", -5, None]]],
]


@pytest.mark.parametrize("bad_entries", ENTRY_CASES, ids=lambda v: f"{v!r:.40}")
def test_bad_entries_raise_field_error(bad_entries: Any) -> None:
    assert_rejected(with_field("AppendEntries", 7, bad_entries), FieldError)


@pytest.mark.parametrize("version", [0, 2, -1, 255, "1", 1.0, True, None, [1], b"\x01"])
def test_unknown_version_raises_unknown_message_type(version: Any) -> None:
    for frame, _ in BASE_FRAMES.values():
        assert_rejected(pack([version, *frame[1:]]), UnknownMessageType)


@pytest.mark.parametrize("tag", [0, 10, 99, -1, "1", 1.0, 3.0, True, None, [3], b"\x03"])
def test_unknown_tag_raises_unknown_message_type(tag: Any) -> None:
    assert_rejected(pack([1, tag, "a", "b", 3, 2, 1, False]), UnknownMessageType)


@pytest.mark.parametrize(
    "obj",
    [None, 1, "frame", b"frame", 1.5, True, {"0": 1, "1": 1}, [], [1], [1, 1], [1, 1, "a"]],
    ids=repr,
)
def test_non_array_or_short_top_level_is_malformed(obj: Any) -> None:
    assert_rejected(pack(obj), MalformedFrame)


@pytest.mark.parametrize(
    "obj",
    ["frame", None, 12, [1, 1, "a", "b"], bytearray, object()],
    # a stable id for the object(): test ids must be the same in every xdist worker
    ids=lambda obj: "object()" if type(obj) is object else repr(obj),
)
def test_non_bytes_input_is_malformed(obj: Any) -> None:
    assert_rejected(obj, MalformedFrame)


# --------------------------------------------------------------------------- truncation / garbage


@pytest.mark.parametrize("msg", SAMPLE_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_strict_prefix_of_a_frame_is_malformed(msg: Message) -> None:
    data = encode_message(msg)
    for cut in range(len(data)):
        assert_rejected(data[:cut], MalformedFrame)


@pytest.mark.parametrize("msg", SAMPLE_MESSAGES[:6], ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("tail", [b"\x00", b"\xc0", b"\xc1", b"\x91"])
def test_trailing_data_is_malformed(msg: Message, tail: bytes) -> None:
    data = encode_message(msg)
    assert_rejected(data + tail, MalformedFrame)
    assert_rejected(data + data, MalformedFrame)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\xc1" * 8, b"\x98\x01\x01\xc1", b"\xa5ab", b"\xd9", b"\xdd\xff\xff\xff\xff"],
)
def test_invalid_msgpack_is_malformed(data: bytes) -> None:
    assert_rejected(data, MalformedFrame)


def test_invalid_utf8_string_is_malformed() -> None:
    frame = pack([1, 1, "a", "b", 3, 2, 1, False]).replace(b"\xa1a", b"\xa1\xff")
    assert_rejected(frame, MalformedFrame)


def test_non_string_map_key_is_malformed() -> None:
    frame = with_field("AppendEntries", 7, [[1, 1, ["c", 1, {1: "int key"}]]])
    assert_rejected(frame, MalformedFrame)


def _check_random_input(data: bytes) -> None:
    try:
        result = decode_message(data)
    except DecodeError as exc:
        assert exc.reason == REASONS[type(exc)]
    else:
        assert isinstance(result, RAFT_MESSAGES)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_hypothesis_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    _check_random_input(data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SAMPLE_MESSAGES), st.data())
def test_hypothesis_mutated_frames_raise_only_decode_errors(
    msg: Message, data: st.DataObject
) -> None:
    frame = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        kind = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = data.draw(st.integers(0, 255))
        if kind == "flip":
            frame[pos] = byte
        elif kind == "insert":
            frame.insert(pos, byte)
        elif len(frame) > 1:
            del frame[pos]
    _check_random_input(bytes(frame))


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(st.integers(0, 6), st.none(), st.text(max_size=2)),
    st.one_of(st.integers(-1, 6), st.none(), st.text(max_size=2), st.booleans()),
    st.one_of(node_ids, scalars),
    st.one_of(node_ids, scalars),
    st.lists(
        st.one_of(
            u64, st.booleans(), scalars, st.lists(st.lists(commands, max_size=3), max_size=3)
        ),
        max_size=7,
    ),
)
def test_hypothesis_structured_frames_raise_only_decode_errors(
    version: Any, tag: Any, src: Any, dst: Any, fields: list[Any]
) -> None:
    data = pack([version, tag, src, dst, *fields])
    try:
        msg = decode_message(data)
    except DecodeError as exc:
        assert exc.reason == REASONS[type(exc)]
    else:
        # Anything accepted is canonical: re-encoding gives the very same bytes.
        assert encode_message(msg) == data


# --------------------------------------------------------------------------- size and depth limits


def test_oversized_frame_raises_frame_too_large_before_parsing() -> None:
    # Garbage that would be MalformedFrame if parsed: the size check must come first.
    assert_rejected(b"\xc1" * 101, FrameTooLarge, max_size=100)
    assert_rejected(b"\xc1" * 100, MalformedFrame, max_size=100)
    assert_rejected(b"\x00" * (DEFAULT_MAX_FRAME + 1), FrameTooLarge)


@pytest.mark.parametrize("msg", SAMPLE_MESSAGES, ids=lambda m: type(m).__name__)
def test_valid_frame_one_byte_over_the_limit_is_too_large(msg: Message) -> None:
    data = encode_message(msg)
    assert_rejected(data, FrameTooLarge, max_size=len(data) - 1)
    assert_rejected(bytearray(data), FrameTooLarge, max_size=len(data) - 1)


def test_valid_frame_at_exactly_the_limit_decodes() -> None:
    msg = RequestVote("s" * 60, "d" * 60, 1, 0, 0, False)
    data = encode_message(msg)
    assert decode_message(data, max_size=len(data)) == msg


def test_frames_within_max_size_are_not_rejected_by_array_limits() -> None:
    small = RequestVote("n1", "n2", 1, 0, 0, False)
    data = encode_message(small)  # 13 bytes, an 8-element array
    assert decode_message(data, max_size=len(data)) == small
    # Same thing at the default 1 MiB limit: a ~600 KB command of 600 000 small ints.
    big = AppendEntries("a", "b", 1, 0, 0, (Entry(1, 1, Proposal("c", 1, [0] * 600_000)),), 0)
    data = encode_message(big)
    assert len(data) < DEFAULT_MAX_FRAME
    assert decode_message(data) == big


def nested_list(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


def nested_dict(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


def nested_empty(levels: int) -> Any:
    """``levels`` containers with nothing at the bottom: depth is exactly the container count."""
    value: Any = []
    for i in range(levels - 1):
        value = [value] if i % 2 else {"k": value}
    return value


def ae_with_command(command: Any) -> bytes:
    return pack([1, 3, "a", "b", 1, 0, 0, [[1, 1, ["c", 1, command]]], 1])


# In an AppendEntries frame the command sits inside 4 containers (frame, entries, entry,
# proposal), so a command of ``n`` nested containers makes the frame n + 4 containers deep.


@pytest.mark.parametrize("nest", [nested_list, nested_dict, nested_empty])
def test_nesting_within_max_depth_is_accepted(nest: Any) -> None:
    levels = DEFAULT_MAX_DEPTH - 4 - 1  # leaves room for counting the scalar leaf as a level
    msg = decode_message(ae_with_command(nest(levels)))
    assert isinstance(msg, AppendEntries)
    assert msg.entries[0].proposal == Proposal("c", 1, nest(levels))
    # A deeper command is fine under a custom, larger limit.
    deeper = nest(60)
    assert isinstance(decode_message(ae_with_command(deeper), max_depth=70), AppendEntries)


@pytest.mark.parametrize("levels", [1, 5, 20, DEFAULT_MAX_DEPTH - 4])
def test_max_depth_boundary_for_empty_containers(levels: int) -> None:
    # No scalars at the bottom, so the frame is exactly levels + 4 deep under any definition.
    frame = ae_with_command(nested_empty(levels))
    assert isinstance(decode_message(frame, max_depth=levels + 4), AppendEntries)
    assert_rejected(frame, MalformedFrame, max_depth=levels + 3)


@pytest.mark.parametrize("nest", [nested_list, nested_dict, nested_empty])
@pytest.mark.parametrize("levels", [DEFAULT_MAX_DEPTH - 3, DEFAULT_MAX_DEPTH, 100, 400])
def test_nesting_beyond_max_depth_is_malformed(nest: Any, levels: int) -> None:
    assert_rejected(ae_with_command(nest(levels)), MalformedFrame)


def test_custom_small_max_depth_is_enforced() -> None:
    assert_rejected(ae_with_command(nested_list(3)), MalformedFrame, max_depth=6)
    assert_rejected(pack([1, 1, "a", "b", 3, 2, 1, False]), MalformedFrame, max_depth=0)


@pytest.mark.parametrize("levels", [1_000, 100_000])
def test_nesting_beyond_msgpack_stack_is_malformed(levels: int) -> None:
    assert_rejected(b"\x91" * levels + b"\xc0", MalformedFrame)
    assert_rejected(b"\x81\xa1k" * levels + b"\xc0", MalformedFrame)


EXT_PAYLOADS = [
    pack(msgpack.ExtType(5, b"x")),
    pack(msgpack.ExtType(0, b"\x00" * 16)),
    pack(msgpack.ExtType(127, b"\x00" * 300)),
    msgpack.packb(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), datetime=True),
    pack(msgpack.Timestamp(1, 5)),
    b"\xd4\xfe\x00",  # fixext 1 with a negative (reserved) type code
]


@pytest.mark.parametrize("ext", EXT_PAYLOADS, ids=lambda b: b.hex()[:12])
def test_ext_types_are_malformed(ext: bytes) -> None:
    assert_rejected(ae_with_command(None).replace(b"\xc0", ext), MalformedFrame)
    assert_rejected(pack([1, 1, "a", "b", 3, 2, 1, False]).replace(b"\xa1a", ext), MalformedFrame)


def test_zero_length_ext_type_is_malformed() -> None:
    plain = ae_with_command(None)
    assert isinstance(decode_message(plain), AppendEntries)  # control: the frame is valid
    assert_rejected(plain.replace(b"\xc0", b"\xc7\x00\x05"), MalformedFrame)


def test_error_hierarchy_and_reasons() -> None:
    for cls, reason in REASONS.items():
        assert issubclass(cls, DecodeError) and issubclass(cls, ValueError)
        assert cls.reason == reason
        assert cls("x").reason == reason
    assert len(set(REASONS.values())) == 4
    assert DecodeError("x").reason == "malformed"


def test_read_index_response_index_below_minus_one_is_refused() -> None:
    assert_rejected(pack([1, 7, "a", "b", 3, 7, -2]), FieldError)


def test_frames_from_peers_without_the_optional_fields_still_decode() -> None:
    # RequestVote without `transfer`, AppendEntries/AppendResponse without `round`
    assert decode_message(pack([1, 1, "a", "b", 3, 2, 1, True])) == RequestVote(
        "a", "b", 3, 2, 1, True, False
    )
    assert decode_message(pack([1, 4, "a", "b", 3, True, 5, 0, 0])).round == 0  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- InstallSnapshot


@pytest.mark.parametrize(
    "pos,bad",
    [
        (7, "a"),
        (7, None),
        (7, ["a", ""]),
        (7, ["a", 5]),
        (7, ["a", "a"]),  # a voter twice
        (7, {"a": 1}),
        (8, ["x" * 257]),
        (8, "d"),
        (11, "chunk"),  # data must be bytes, not str
        (11, None),
        (11, [1, 2]),
        (11, 7),
    ],
    ids=lambda v: f"{v!r:.20}",
)
def test_bad_install_snapshot_fields_raise_field_error(pos: int, bad: Any) -> None:
    assert_rejected(with_field("InstallSnapshot", pos, bad), FieldError)


def test_a_full_64k_snapshot_chunk_fits_in_a_default_frame() -> None:
    chunk = bytes(range(256)) * 256
    msg = InstallSnapshot("a", "b", 1, 5, 1, ("a", "b", "c"), (), 0, len(chunk), chunk, True)
    data = encode_message(msg)
    assert len(data) < DEFAULT_MAX_FRAME
    assert decode_message(data) == msg
