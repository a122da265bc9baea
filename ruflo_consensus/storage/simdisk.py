"""``SimDisk``: an in-memory file system with an explicit model of what a crash loses.

It implements :class:`~ruflo_consensus.storage.fs.FileSystem`, so a
:class:`~ruflo_consensus.storage.file.FileStorage` runs on it unchanged and the simulator's
disk faults exercise the real recovery code.

The model (deliberately pessimistic, and simple enough to reason about):

* A file is an inode: its bytes and how many of them are *synced* (fsynced).
  ``write`` appends unsynced bytes; ``sync`` makes them all synced.
* The directory is a map name → inode. Creating, removing and renaming change the live
  map at once, but only :meth:`SimDisk.sync_dir` makes the map of that directory durable.
* :meth:`SimDisk.crash` brings back the durable map of every directory, and in every file
  keeps the synced bytes plus, per file, none, all, or a random prefix of the unsynced
  bytes (a torn write). Without an ``rng`` it drops every unsynced byte.
* Truncation is durable at once (the synced length shrinks with the file).

Faults on demand: :meth:`SimDisk.fail_next_open`, :meth:`SimDisk.fail_next_write`,
:meth:`SimDisk.fail_next_sync` make the next such call raise ``OSError(EIO)``.
Nothing is random except through the ``random.Random`` passed to :meth:`crash`.
"""

from __future__ import annotations

import errno
import posixpath
import random
from dataclasses import dataclass, field

from .fs import AppendFile, DirLock, NoLock, ReadFile

__all__ = ["CrashReport", "SimDisk"]


@dataclass(slots=True)
class _Inode:
    data: bytearray = field(default_factory=bytearray)
    synced: int = 0


@dataclass(frozen=True, slots=True)
class CrashReport:
    """What one :meth:`SimDisk.crash` did.

    ``kept``/``lost`` map each file that had unsynced bytes to how many of them survived or
    were lost; ``vanished`` lists names that existed but were not durable in their directory.
    """

    kept: dict[str, int]
    lost: dict[str, int]
    vanished: list[str]


class _SimReadFile:
    def __init__(self, disk: SimDisk, path: str, inode: _Inode) -> None:
        self._disk = disk
        self._path = path
        self._inode = inode
        self._pos = 0
        self._closed = False

    def read(self, n: int) -> bytes:
        if self._closed:
            raise ValueError("read from a closed file")
        self._disk._maybe_fail("read", self._path)
        out = bytes(self._inode.data[self._pos : self._pos + n])
        self._pos += len(out)
        return out

    def seek(self, offset: int) -> None:
        self._pos = offset

    def close(self) -> None:
        self._closed = True


class _SimAppendFile:
    def __init__(self, disk: SimDisk, path: str, inode: _Inode) -> None:
        self._disk = disk
        self._path = path
        self._inode = inode
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise ValueError(f"{self._path} is closed")

    def write(self, data: bytes) -> None:
        self._check()
        self._disk._maybe_fail("write", self._path)
        self._inode.data += data
        self._disk.writes += 1

    def sync(self) -> None:
        self._check()
        self._disk._maybe_fail("sync", self._path)
        self._inode.synced = len(self._inode.data)
        self._disk.syncs += 1

    def truncate(self, length: int) -> None:
        self._check()
        del self._inode.data[length:]
        self._inode.synced = min(self._inode.synced, length)

    def close(self) -> None:
        self._closed = True


class SimDisk:
    """An in-memory, crash-modelling :class:`~ruflo_consensus.storage.fs.FileSystem`."""

    def __init__(self) -> None:
        self._live: dict[str, _Inode] = {}
        self._durable: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/", "."}
        self._fail: dict[str, int] = {}
        self.writes = 0
        """Number of write calls so far (all files)."""
        self.syncs = 0
        """Number of file fsyncs so far."""
        self.dir_syncs = 0
        """Number of directory fsyncs so far."""

    # ------------------------------------------------------------------ faults

    def fail_next_open(self, times: int = 1) -> None:
        """Make the next ``times`` opens (read or append) raise ``OSError(EIO)``."""
        self._fail["open"] = self._fail.get("open", 0) + times

    def fail_next_read(self, times: int = 1) -> None:
        """Make the next ``times`` reads raise ``OSError(EIO)``."""
        self._fail["read"] = self._fail.get("read", 0) + times

    def fail_next_write(self, times: int = 1) -> None:
        """Make the next ``times`` writes raise ``OSError(EIO)`` (nothing is written)."""
        self._fail["write"] = self._fail.get("write", 0) + times

    def fail_next_sync(self, times: int = 1) -> None:
        """Make the next ``times`` file fsyncs raise ``OSError(EIO)``."""
        self._fail["sync"] = self._fail.get("sync", 0) + times

    def clear_faults(self) -> None:
        """Forget every ``fail_next_*`` that has not fired yet."""
        self._fail.clear()

    def _maybe_fail(self, op: str, path: str) -> None:
        left = self._fail.get(op, 0)
        if left > 0:
            self._fail[op] = left - 1
            raise OSError(errno.EIO, f"simulated {op} error", path)

    def crash(self, rng: random.Random | None = None) -> CrashReport:
        """Lose what a power cut may lose; see the module docstring for the model.

        With ``rng`` each file with unsynced bytes keeps none of them, all of them, or a
        random prefix (chosen with equal odds, files visited in name order); without it
        every unsynced byte is lost.
        """
        vanished = sorted(set(self._live) - set(self._durable))
        self._live = dict(self._durable)
        kept: dict[str, int] = {}
        lost: dict[str, int] = {}
        seen: set[int] = set()
        for name in sorted(self._live):
            inode = self._live[name]
            if id(inode) in seen:
                continue
            seen.add(id(inode))
            unsynced = len(inode.data) - inode.synced
            if unsynced <= 0:
                continue
            keep = 0
            if rng is not None:
                choice = rng.randrange(3)
                keep = 0 if choice == 0 else unsynced if choice == 1 else rng.randrange(unsynced)
            del inode.data[inode.synced + keep :]
            inode.synced = len(inode.data)
            kept[name] = keep
            lost[name] = unsynced - keep
        return CrashReport(kept, lost, vanished)

    # ------------------------------------------------------------------ inspection

    def read_bytes(self, path: str) -> bytes:
        """The current content of ``path`` (for tests)."""
        return bytes(self._inode(path).data)

    def synced_length(self, path: str) -> int:
        """How many bytes of ``path`` are durable."""
        return self._inode(path).synced

    def corrupt(self, path: str, offset: int, xor: int = 0xFF) -> None:
        """Flip bits of one byte in place (synced data stays synced): bit rot for tests."""
        inode = self._inode(path)
        inode.data[offset] ^= xor

    def write_bytes(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """Create or replace ``path`` with ``data`` (for tests), durable by default."""
        path = self._norm(path)
        inode = _Inode(bytearray(data), len(data) if durable else 0)
        self._live[path] = inode
        if durable:
            self._durable[path] = inode

    # ------------------------------------------------------------------ FileSystem

    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath(path)

    def _inode(self, path: str) -> _Inode:
        try:
            return self._live[self._norm(path)]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "no such file", path) from None

    def makedirs(self, path: str) -> None:
        """Record the directory (directories themselves are always durable here)."""
        path = self._norm(path)
        while path not in self._dirs:
            self._dirs.add(path)
            path = posixpath.dirname(path) or "."

    def listdir(self, path: str) -> list[str]:
        """Names of the live files directly in ``path``, sorted."""
        path = self._norm(path)
        if path not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)
        return sorted(
            posixpath.basename(p) for p in self._live if (posixpath.dirname(p) or ".") == path
        )

    def exists(self, path: str) -> bool:
        """True for a live file or a known directory."""
        path = self._norm(path)
        return path in self._live or path in self._dirs

    def size(self, path: str) -> int:
        """Current length of ``path``."""
        return len(self._inode(path).data)

    def open_read(self, path: str) -> ReadFile:
        """Open ``path`` for reading (reads see later appends)."""
        self._maybe_fail("open", path)
        return _SimReadFile(self, path, self._inode(path))

    def open_append(self, path: str) -> AppendFile:
        """Open ``path`` for appending, creating it (not yet durable in its directory)."""
        self._maybe_fail("open", path)
        path = self._norm(path)
        parent = posixpath.dirname(path) or "."
        if parent not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", parent)
        inode = self._live.get(path)
        if inode is None:
            inode = self._live[path] = _Inode()
        return _SimAppendFile(self, path, inode)

    def remove(self, path: str) -> None:
        """Remove ``path`` from the live directory."""
        self._inode(path)
        del self._live[self._norm(path)]

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` over ``dst`` in the live directory."""
        inode = self._inode(src)
        del self._live[self._norm(src)]
        self._live[self._norm(dst)] = inode

    def sync_dir(self, path: str) -> None:
        """Make the live entries of directory ``path`` its durable entries."""
        path = self._norm(path)
        self.dir_syncs += 1

        def in_dir(p: str) -> bool:
            return (posixpath.dirname(p) or ".") == path

        for p in [p for p in self._durable if in_dir(p)]:
            del self._durable[p]
        for p, inode in self._live.items():
            if in_dir(p):
                self._durable[p] = inode

    def lock(self, path: str) -> DirLock:
        """No lock: a simulated disk belongs to one simulated node, and a node's restart
        after a crash reopens its storage without closing the old one."""
        return NoLock()
