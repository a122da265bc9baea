"""Membership changes on the wire and on disk: exact round trips, typed rejections."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruflo_consensus.codec import FieldError, decode_message, encode_message
from ruflo_consensus.core.base import ConfChange, ConfChangeKind, Entry, Persist, Proposal
from ruflo_consensus.core.raft import AppendEntries
from ruflo_consensus.storage import FileStorage, MemoryStorage, SimDisk
from ruflo_consensus.storage.wal import Malformed, decode_entries, encode_entries

CONF = ConfChange(ConfChangeKind.ADD_LEARNER, "n4", ("n1", "n2", "n3"), ("n4",))


def _ae(*entries: Entry) -> AppendEntries:
    return AppendEntries("n1", "n2", 3, 0, 0, entries, 0)


def test_a_configuration_entry_round_trips_next_to_other_entries() -> None:
    msg = _ae(
        Entry(3, 1, None),
        Entry(3, 2, None, CONF),
        Entry(3, 3, Proposal("c", 1, {"op": "put"})),
        Entry(3, 4, None, ConfChange(ConfChangeKind.REMOVE_VOTER, "n1", ("n2", "n3"), ())),
    )
    decoded = decode_message(encode_message(msg))
    assert decoded == msg
    assert isinstance(decoded, AppendEntries)
    conf = decoded.entries[1].conf
    assert conf is not None and type(conf.kind) is ConfChangeKind
    assert decoded.entries[0].conf is None  # a no-op stays a no-op


def test_frames_without_configurations_are_unchanged() -> None:
    """Additive: an entry without a configuration still encodes as [term, index, proposal]."""
    raw = msgpack.unpackb(encode_message(_ae(Entry(3, 1, None))), raw=False)
    assert raw[7] == [[3, 1, None]]


def _frame_with(entry: list[Any]) -> bytes:
    return msgpack.packb([1, 3, "n1", "n2", 3, 0, 0, [entry], 0], use_bin_type=True)


@pytest.mark.parametrize(
    "conf,message",
    [
        ("add-learner", "must be"),
        (["explode", "n4", ["n1"], []], "kind"),
        ([7, "n4", ["n1"], []], "kind"),
        (["add-learner", "", ["n1"], []], "non-empty"),
        (["add-learner", "n4", [], []], "at least one voter"),
        (["add-learner", "n4", ["n1", "n1"], []], "twice"),
        (["add-learner", "n4", ["n1"], ["n1"]], "both"),
        (["add-learner", "n4", "n1", []], "list"),
        (["add-learner", "n4", ["n1"], [3]], "string"),
        (["add-learner", "n4", ["n1"]], "must be"),
    ],
)
def test_malformed_configurations_raise_field_errors(conf: Any, message: str) -> None:
    with pytest.raises(FieldError, match=message) as exc:
        decode_message(_frame_with([3, 1, None, conf]))
    assert exc.value.reason == "bad-field"


def test_an_entry_with_both_a_proposal_and_a_configuration_is_refused() -> None:
    conf = ["add-learner", "n4", ["n1"], []]
    with pytest.raises(FieldError, match="not both"):
        decode_message(_frame_with([3, 1, ["c", 1, "x"], conf]))
    with pytest.raises(FieldError):
        decode_message(_frame_with([3, 1, None, conf, "extra"]))


node = st.sampled_from(["n1", "n2", "n3", "n4", "n5", "ñ6"])


@st.composite
def changes(draw: st.DrawFn) -> ConfChange:
    nodes = draw(st.lists(node, min_size=1, max_size=6, unique=True))
    split = draw(st.integers(1, len(nodes)))
    return ConfChange(
        draw(st.sampled_from(list(ConfChangeKind))),
        draw(node),
        tuple(nodes[:split]),
        tuple(nodes[split:]),
    )


@settings(max_examples=100, deadline=None)
@given(st.lists(changes(), min_size=1, max_size=4))
def test_hypothesis_configuration_entries_round_trip_on_the_wire_and_in_the_wal(
    confs: list[ConfChange],
) -> None:
    entries = [Entry(2, i, None, c) for i, c in enumerate(confs, start=1)]
    assert decode_message(encode_message(_ae(*entries))) == _ae(*entries)
    payload = msgpack.unpackb(msgpack.packb(encode_entries(None, entries)), raw=False)
    assert decode_entries(payload) == (None, 1, entries)


def test_a_malformed_configuration_in_a_wal_record_is_reported() -> None:
    with pytest.raises(Malformed, match="entry 1"):
        decode_entries([None, 1, [[2, ["explode", "n4", ["n1"], []]]]])
    with pytest.raises(Malformed, match="entry 1"):
        decode_entries([None, 1, [[2, ["add-learner", "n4", "n1"]]]])


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_storage_keeps_configuration_entries_across_a_restart(kind: str) -> None:
    disk = SimDisk()

    def open_storage() -> FileStorage | MemoryStorage:
        return MemoryStorage() if kind == "memory" else FileStorage("/n1", fs=disk)

    storage = open_storage()
    entries = [Entry(1, 1, None), Entry(1, 2, None, CONF), Entry(1, 3, Proposal("c", 1, "x"))]
    storage.save(Persist(entries=entries))
    if kind == "file":
        assert isinstance(storage, FileStorage)
        storage.sync()
        storage.close()
        storage = open_storage()
    assert storage.load().entries == entries
