"""The ``fcntl.flock`` locks that keep ``--cache`` files (:mod:`hyp2.data._cache`) from being deleted while used.

``flock`` locks belong to an open file description: the operating system releases them when the
last descriptor closes, which a process's end does however it ends (SIGKILL included), so a lock
never outlives its holder. Where there are no file locks (Windows, some network file systems) a
shared lock is let through and an exclusive one never given: nothing whose use cannot be checked
is deleted.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks
    fcntl = None


def lock_fd(fd: int, exclusive: bool, wait: bool) -> bool | None:
    """Lock ``fd``: True when locked, False when ``wait`` is off and another process holds a
    conflicting lock, None when there are no file locks here (Windows, some network file systems)."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, op)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def try_lock(path: Path, exclusive: bool) -> int | None:
    """A descriptor of ``path`` holding a lock taken without waiting -- shared (a process using the
    file) or exclusive (to delete it) --, or ``None`` when another process holds a conflicting one.
    Where there are no file locks, a shared lock is let through and an exclusive one never given
    (nothing whose use cannot be checked is deleted).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    fd = os.open(path, os.O_RDONLY)
    got = lock_fd(fd, exclusive, wait=False)
    if got or (got is None and not exclusive):
        return fd
    os.close(fd)
    return None


@contextlib.contextmanager
def folder_lock(directory: Path) -> Iterator[None]:
    """The cache folder's own lock, exclusive, held for a moment's bookkeeping only (a lock on the
    folder itself, so it adds no file)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        lock_fd(fd, exclusive=True, wait=True)
        yield
    finally:
        os.close(fd)


class CacheLock:
    """A lock on a cache's data file, held while this object lives (or until :meth:`release`): the
    shared lock of a process using the cache, which ``prune`` respects."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        self.release()
