"""Reopening a large WAL: 20,000 entries by default, 1,000,000 with ``-m slow``.

No assertion on wall-clock speed (numbers belong in docs/storage.md with their command);
the tests check that everything comes back and that the scan's own memory — beyond the
entries it returns — stays within a buffer's worth.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ruflo_consensus.core.base import Entry, HardState, Persist, Proposal
from ruflo_consensus.storage import FileStorage, bench_reopen


def test_reopen_20000_entries(tmp_path: Path) -> None:
    d = tmp_path / "n"
    s = FileStorage(d, segment_bytes=256 << 10)  # several segments
    for first in range(1, 20_001, 500):
        batch = [
            Entry(1, i, Proposal("c1", i, {"op": "put", "key": f"k{i}", "value": "v"}))
            for i in range(first, first + 500)
        ]
        s.save(Persist(hard_state=HardState(1, "n1", first - 1), entries=batch))
    s.close()
    reopened = FileStorage(d, segment_bytes=256 << 10)
    assert reopened.recovery.segments > 1
    state = reopened.load()
    assert len(state.entries) == 20_000
    assert [e.index for e in state.entries] == list(range(1, 20_001))
    assert state.entries[12_344].proposal == Proposal(
        "c1", 12_345, {"op": "put", "key": "k12345", "value": "v"}
    )
    assert state.hard_state == HardState(1, "n1", 19_500)


def test_bench_reopen_reports_its_numbers(tmp_path: Path) -> None:
    result = bench_reopen(tmp_path / "b", entries=20_000, batch=1000, fsync=False)
    for key in ("write_seconds", "reopen_seconds", "reopen_peak_rss_bytes", "file_bytes"):
        assert result[key] > 0, key
    assert result["entries_loaded"] == 20_000
    # streaming scan: what tracemalloc sees beyond the returned entries is about one buffer
    assert result["tracemalloc_scan_overhead_bytes"] < 8 << 20
    with pytest.raises(ValueError, match="not empty"):
        bench_reopen(tmp_path / "b", entries=10)


@pytest.mark.slow
def test_reopen_1m_entries(tmp_path: Path) -> None:
    result = bench_reopen(tmp_path / "big", entries=1_000_000, batch=1000)
    assert result["entries_loaded"] == 1_000_000
    assert result["tracemalloc_scan_overhead_bytes"] < 16 << 20
    print(result)


def test_bench_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ruflo_consensus.storage.bench import main

    assert main([str(tmp_path / "c"), "--entries", "3000", "--no-fsync", "--no-trace"]) == 0
    out = capsys.readouterr().out
    assert '"entries_loaded": 3000' in out


@pytest.mark.slow
def test_reopen_1m_entries_after_a_snapshot_loads_only_the_tail(tmp_path: Path) -> None:
    result = bench_reopen(tmp_path / "big", entries=1_000_000, batch=1000, snapshot_every=300_000)
    assert result["snapshot_index"] == 900_000
    assert result["entries_loaded"] == 100_000
    # the scan and the 100,000 entries, not the 1,000,000 in the WAL
    assert result["tracemalloc_peak_bytes"] < 120 << 20
    print(result)
