"""Atomic file writes: a reader (or a crash) never sees a half-written checkpoint, JSON or download.

Every writer goes to a temporary file in the destination's directory, fsyncs it, then
``os.replace``-s it over the destination, which POSIX guarantees to be atomic on one filesystem.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from .errors import UserError, reason


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path of ``path`` to fill in any way (a file object, a memory map);
    on clean exit it is synced and renamed over ``path``. On an exception it is removed and
    ``path`` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # mkstemp makes 0600 files; give results the permissions any new file would get.
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary sibling of ``path`` for writing; on clean exit it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            yield fh


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform allows opening a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def parse_json(text: str) -> Any:
    """``json.loads(text)``, with input nested too deeply for the parser (a hostile file) reported
    as the ``ValueError`` every other malformed JSON raises, instead of a ``RecursionError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to be a hyp2 file") from None


def human_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it at least 1: "512 B", "3.4 MiB", "12 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or abs(n) >= 100 else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def require_free_space(directory: str | os.PathLike, nbytes: int, message: str) -> None:
    """Raise ``UserError(message)`` when ``directory`` has fewer than ``nbytes`` free; the placeholders
    ``{need}`` and ``{free}`` in ``message`` are replaced by the sizes in human units (:func:`human_bytes`;
    plain replacement, so paths with braces in the message are safe). A folder whose free space
    cannot be read is let through: the write itself then reports what is wrong."""
    from .errors import UserError

    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if nbytes > free:
        raise UserError(message.replace("{need}", human_bytes(nbytes)).replace("{free}", human_bytes(free)))


def write_atomic(path: str | os.PathLike, save: Callable[[BinaryIO], None], what: str, need: int = 0) -> None:
    """``save(file object)`` into ``path`` atomically, after checking the folder has ``need`` bytes free.

    Raises:
        UserError: not enough free space, or the write failed (full disk, read-only file system,
            permissions); the previous file at ``path`` is then untouched.
    """
    from .errors import UserError, reason

    path = Path(path)
    require_free_space(path.parent, need, f"not enough space for the {what} {path}: it needs about {{need}}, "
                                          f"{{free}} are free; free some space or write elsewhere (the previous "
                                          f"file is kept)")
    try:
        atomic_save(path, save)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
        raise UserError(f"cannot write the {what} {path} ({reason(e)}); check the free space and permissions "
                        f"of {path.parent} (the previous file is kept)") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save(path: str | os.PathLike, save: Callable[[BinaryIO], None]) -> None:
    """Call ``save(fileobj)`` (e.g. ``lambda f: torch.save(obj, f)``) and publish atomically."""
    with atomic_open(path, "wb") as fh:
        save(fh)


def make_folder(folder: str | os.PathLike, what: str, advice: Callable[[OSError], str]) -> None:
    """Create ``folder`` and its parents unless it is a folder already; a failure is one
    :class:`~hyp2.errors.UserError` line, ``{what} ({why}); {advice(error)}``."""
    folder = Path(folder)
    if folder.is_dir():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what} ({e.strerror or reason(e)}); {advice(e)}") from None
