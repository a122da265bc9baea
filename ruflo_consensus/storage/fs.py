"""The small file-system interface :class:`FileStorage` runs on, and its OS implementation.

``FileStorage`` only ever needs: list a directory, size/exists, read a file from an
offset, append to a file, fsync it, truncate it, remove, rename, and fsync a directory.
:class:`OsFileSystem` does that with ``os`` calls (unbuffered, so a write that returned is
in the kernel and an fsync that returned is on the device);
:class:`~ruflo_consensus.storage.simdisk.SimDisk` does it in memory with an explicit model
of what a crash loses, so the simulator's disk faults go through the same recovery code.

Paths are plain strings; every method may raise ``OSError``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Protocol

from .base import StorageLockedError

try:
    import fcntl

    _HAVE_FLOCK = True
except ImportError:  # pragma: no cover - not POSIX: directories are not locked
    _HAVE_FLOCK = False

__all__ = ["AppendFile", "FileSystem", "OsFileSystem", "ReadFile"]


class ReadFile(Protocol):
    """A file open for reading."""

    def read(self, n: int) -> bytes:
        """Read up to ``n`` bytes from the current position (fewer only at the end)."""
        ...

    def seek(self, offset: int) -> None:
        """Move the position to ``offset`` bytes from the start."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...


class AppendFile(Protocol):
    """A file open for appending."""

    def write(self, data: bytes) -> None:
        """Append all of ``data`` (not durable until :meth:`sync`)."""
        ...

    def sync(self) -> None:
        """Make everything written so far durable (fsync)."""
        ...

    def truncate(self, length: int) -> None:
        """Cut the file to ``length`` bytes; later writes go after it."""
        ...

    def close(self) -> None:
        """Release the file (does not sync)."""
        ...


class FileSystem(Protocol):
    """The operations :class:`~ruflo_consensus.storage.file.FileStorage` uses."""

    def makedirs(self, path: str) -> None:
        """Create directory ``path`` (and parents) if missing."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) of the entries of directory ``path``."""
        ...

    def exists(self, path: str) -> bool:
        """True when ``path`` exists."""
        ...

    def size(self, path: str) -> int:
        """Current length of file ``path`` in bytes."""
        ...

    def open_read(self, path: str) -> ReadFile:
        """Open an existing file for reading."""
        ...

    def open_append(self, path: str) -> AppendFile:
        """Open ``path`` for appending, creating it (empty) if missing."""
        ...

    def remove(self, path: str) -> None:
        """Delete file ``path`` (durable after :meth:`sync_dir` of its directory)."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` with ``src`` (durable after :meth:`sync_dir`)."""
        ...

    def sync_dir(self, path: str) -> None:
        """Make creations, removals and renames in directory ``path`` durable."""
        ...

    def lock(self, path: str) -> DirLock:
        """Take the exclusive lock of directory ``path`` for one writer.

        Raises :class:`~ruflo_consensus.storage.base.StorageLockedError` when another
        holder has it; the lock is released by :meth:`DirLock.release` or when the
        holder's process dies.
        """
        ...


class DirLock(Protocol):
    """A held directory lock (see :meth:`FileSystem.lock`)."""

    def release(self) -> None:
        """Give the lock up; a second call does nothing."""
        ...


class NoLock:
    """The lock of a file system with a single user (a simulated disk): always free."""

    def release(self) -> None:
        """Nothing to release."""


LOCK_NAME = "LOCK"
"""The lock file :class:`OsFileSystem` keeps in a storage directory."""


class _FlockLock:
    """``flock(LOCK_EX | LOCK_NB)`` on ``<directory>/LOCK``, which names the holder's pid.

    flock locks belong to the open file, so a second open in the same process conflicts
    too, and the kernel drops the lock when the process dies (SIGKILL included): a stale
    lock file never keeps a restarted node out.
    """

    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = os.open(
            path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644
        )
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode("utf-8", "replace").strip()
            self.release()
            raise StorageLockedError(directory, holder) from None
        except BaseException:
            self.release()
            raise
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Close the lock file, which drops the lock."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:  # a storage dropped without close() unlocks, as a file closes
        self.release()


class _OsReadFile:
    def __init__(self, path: str) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()

    def read(self, n: int) -> bytes:
        out = self._f.read(n)
        if out is None:  # pragma: no cover - only for non-blocking files
            return b""
        if len(out) < n:  # a raw read may return short; loop until n or EOF
            parts = [out]
            got = len(out)
            while got < n:
                more = self._f.read(n - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            out = b"".join(parts)
        return out

    def seek(self, offset: int) -> None:
        self._f.seek(offset)

    def close(self) -> None:
        self._f.close()


class _OsAppendFile:
    def __init__(self, owner: OsFileSystem, path: str) -> None:
        self._owner = owner
        self._path = path
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        existed = os.path.exists(path)
        self._fd: int | None = os.open(path, flags, 0o644)
        self._size = os.fstat(self._fd).st_size
        if not existed or path not in owner.synced:
            owner.synced[path] = 0 if not existed else self._size

    def _fileno(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self._path} is closed")
        return self._fd

    def write(self, data: bytes) -> None:
        fd = self._fileno()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        self._size += len(data)

    def sync(self) -> None:
        os.fsync(self._fileno())
        self._owner.synced[self._path] = self._size

    def truncate(self, length: int) -> None:
        os.ftruncate(self._fileno(), length)
        self._size = length
        synced = self._owner.synced.get(self._path, length)
        self._owner.synced[self._path] = min(synced, length)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class OsFileSystem:
    """The real file system through ``os`` calls.

    For crash tests it remembers, for each file it appended to, how many bytes were
    durable at the last fsync (``synced``); :meth:`drop_unsynced` cuts the files back to
    that, which is what a power loss may do to bytes the page cache still held.
    """

    def __init__(self) -> None:
        self.synced: dict[str, int] = {}

    def makedirs(self, path: str) -> None:
        """``os.makedirs(path, exist_ok=True)``."""
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        """``os.listdir``."""
        return os.listdir(path)

    def exists(self, path: str) -> bool:
        """``os.path.exists``."""
        return os.path.exists(path)

    def size(self, path: str) -> int:
        """``os.stat(path).st_size``."""
        return os.stat(path).st_size

    def open_read(self, path: str) -> ReadFile:
        """Open unbuffered for reading."""
        return _OsReadFile(path)

    def open_append(self, path: str) -> AppendFile:
        """Open with ``O_APPEND | O_CREAT``; writes are unbuffered ``os.write`` calls."""
        return _OsAppendFile(self, path)

    def remove(self, path: str) -> None:
        """``os.remove``."""
        os.remove(path)
        self.synced.pop(path, None)

    def rename(self, src: str, dst: str) -> None:
        """``os.replace`` (atomic on POSIX)."""
        os.replace(src, dst)
        if src in self.synced:
            self.synced[dst] = self.synced.pop(src)

    def sync_dir(self, path: str) -> None:
        """fsync the directory itself so its entries are durable."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> DirLock:
        """flock ``<path>/LOCK`` (see :class:`FileSystem.lock`); no lock without fcntl."""
        if not _HAVE_FLOCK:  # pragma: no cover - not POSIX
            return NoLock()
        return _FlockLock(path)

    def drop_unsynced(self) -> dict[str, int]:
        """Test helper: truncate every tracked file to its last fsynced length.

        Returns ``{path: bytes dropped}`` for the files that lost something.
        """
        dropped: dict[str, int] = {}
        for path, length in sorted(self.synced.items()):
            if os.path.exists(path):
                size = os.stat(path).st_size
                if size > length:
                    os.truncate(path, length)
                    dropped[path] = size - length
        return dropped
