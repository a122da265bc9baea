"""An in-memory :class:`~ruflo_consensus.storage.base.RaftStorage` for tests and the simulator.

It follows exactly the rules :class:`FileStorage` follows (both use
:class:`~ruflo_consensus.storage.base.LogState`), so a test that passes over memory says
something about files too. Nothing survives the process; nothing is copied or encoded:
``load()`` returns the stored :class:`Entry` objects themselves (in a new list).
"""

from __future__ import annotations

from ..core.base import Persist, Snapshot
from .base import LogState, StorageClosedError, StoredState

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """Hard state, snapshot and log kept in process memory; every save is "durable"."""

    def __init__(self) -> None:
        self._log = LogState()
        self._snapshot: Snapshot | None = None
        self._closed = False
        self.saves = 0
        """How many non-empty :meth:`save` calls were applied."""

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError("storage is closed")

    def load(self) -> StoredState:
        """Return the stored state; ``entries`` is a new list (the entries are shared)."""
        self._check_open()
        entries = self._log.entries
        assert entries is not None
        return StoredState(self._log.hard_state, self._snapshot, list(entries), self._log.state)

    def save(self, persist: Persist) -> None:
        """Apply ``persist`` (rules: :meth:`LogState.plan`); ``ValueError`` if it cannot apply."""
        self._check_open()
        write = self._log.plan(persist)
        if write.is_empty():
            return
        self._log.apply(write)
        if write.snapshot is not None:
            self._snapshot = write.snapshot
        self.saves += 1

    def write(self, persist: Persist) -> None:
        """The same as :meth:`save` (memory has nothing to wait for)."""
        self.save(persist)

    def sync(self) -> None:
        """Nothing to do: every write is already as durable as memory gets."""
        self._check_open()

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` and drop the entries it covers; ``ValueError`` if it is stale."""
        self.save(Persist(snapshot=snapshot))

    def close(self) -> None:
        """Mark the storage closed (the state is dropped with the object)."""
        self._closed = True
