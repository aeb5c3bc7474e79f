"""``python -m hyp2.data.cache list|prune``: the caches ``--cache`` made under a data root, and their removal.

A run never deletes a cache (:mod:`hyp2.data._cache`): a cache of other image lists may be another
run's, and one of a ``--subset`` smoke test sits beside the full split's. They stay until a user
removes them here::

    python -m hyp2.data.cache list  [--data_root DIR]
    python -m hyp2.data.cache prune NAME [NAME ...] [--data_root DIR]
    python -m hyp2.data.cache prune --unused [--data_root DIR]

``list`` shows each cache of ``DIR/.cache``: its name, size on disk, dataset, split, image size and
count, and its state -- ``in use`` (a live process holds its lock: a run reading it, or building it),
``unused``, ``incomplete`` (no valid header: a run would rebuild it) -- and the temporary files of
builds (``being built``, or ``left by an interrupted build``: the process that wrote it is gone).
``prune`` removes the caches named, or with ``--unused`` every cache no process uses and every
temporary file left behind; never a cache in use, never a file that is not a cache's. Both look at
the locks under the cache folder's own lock, so a run cannot start using a cache while it is removed.
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArgumentParser, UserError, run_command
from ..io import human_bytes
from ._cache import CACHE_DIR, read_header
from ._locks import folder_lock, try_lock
from ._lists import require_folder
from .base import DataOptions
from ..logs import notice

log = logging.getLogger("hyp2")

# {dataset}_{split}_{image size}_{16 hex digits}; a dataset name may hold "_", a split name does not
_STEM = re.compile(r"(?P<dataset>.+)_(?P<split>[^_]+)_(?P<size>\d+)_(?P<hash>[0-9a-f]{16})")
_FILE = re.compile(rf"(?P<stem>{_STEM.pattern})\.(?P<kind>u8|json)")
_TEMP = re.compile(rf"\.(?P<stem>{_STEM.pattern})\.(?P<kind>u8|json)\.[a-z0-9_]+\.tmp")

IN_USE = "in use"


@dataclass
class Entry:
    """One cache (its ``.u8`` data and ``.json`` header) or one temporary file, as ``list`` shows it."""

    name: str
    files: list[Path]
    state: str
    about: str

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.files if p.exists())

    @property
    def removable(self) -> bool:
        return self.state not in (IN_USE, "being built")


def _about(stem: str, header: dict | None) -> str:
    m = _STEM.fullmatch(stem)
    if header and all(k in header for k in ("dataset", "split", "size", "count")):
        return f"{header['dataset']} {header['split']} {header['size']} px, {header['count']:,} images"
    return f"{m['dataset']} {m['split']} {m['size']} px" if m else ""


def _lock_state(path: Path, free: str, held: str) -> str | None:
    """``held`` when a live process holds a lock on ``path``, ``free`` otherwise; None when it vanished."""
    try:
        fd = try_lock(path, exclusive=True)
    except FileNotFoundError:
        return None
    if fd is None:
        return held
    os.close(fd)
    return free


def _cache_entry(directory: Path, stem: str) -> Entry | None:
    data, header_file = directory / f"{stem}.u8", directory / f"{stem}.json"
    header = read_header(header_file)
    files = [p for p in (data, header_file) if p.exists()]
    if not data.exists():
        return Entry(stem, files, "incomplete (a header without its data)", _about(stem, header)) if files else None
    free = "unused" if _complete(data, header) else "incomplete (no valid header; a run would rebuild it)"
    state = _lock_state(data, free, IN_USE)
    return None if state is None else Entry(stem, files, state, _about(stem, header))


def _complete(data: Path, header: dict | None) -> bool:
    """The header describes this data file and its size (what a run checks besides the image list)."""
    shape = (header or {}).get("shape")
    if not (isinstance(shape, list) and all(isinstance(v, int) for v in shape)):
        return False
    return header.get("data") == data.name and data.stat().st_size == math.prod(shape)


def _temp_entry(path: Path, stem: str, kind: str) -> Entry | None:
    if kind == "json":  # headers are written under the folder lock, which we hold: its writer is gone
        state = "left by an interrupted write"
    else:
        state = _lock_state(path, "left by an interrupted build", "being built")
    return None if state is None else Entry(path.name, [path], state, _about(stem, None))


def scan(directory: Path) -> list[Entry]:
    """Every cache and temporary file of a cache folder, by name. Call under :func:`folder_lock`."""
    stems, entries = set(), []
    for path in sorted(directory.iterdir()):
        if m := _FILE.fullmatch(path.name):
            stems.add(m["stem"])
        elif m := _TEMP.fullmatch(path.name):
            entries.append(_temp_entry(path, m["stem"], m["kind"]))
    entries += [_cache_entry(directory, stem) for stem in stems]
    return sorted((e for e in entries if e is not None), key=lambda e: e.name.lstrip("."))


def cache_folder(root: Path) -> Path | None:
    """``root/.cache``, or None when there is none.

    Raises:
        UserError: ``root`` does not exist or is a file.
    """
    directory = require_folder(root, "--data_root", "pass the data root your runs used") / CACHE_DIR
    return directory if directory.is_dir() else None


def list_caches(root: Path) -> list[Entry]:
    """The caches and temporary files under ``root`` (see :func:`scan`); empty without a cache folder."""
    directory = cache_folder(root)
    if directory is None:
        return []
    with folder_lock(directory):
        return scan(directory)


def _select(entries: list[Entry], names: list[str], unused: bool) -> list[Entry]:
    by_name = {e.name: e for e in entries}
    for e in entries:
        for f in e.files:
            by_name.setdefault(f.name, e)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"no cache named {', '.join(unknown)}; `python -m hyp2.data.cache list` shows the names")
    chosen = {by_name[n].name: by_name[n] for n in names}
    if unused:
        chosen.update({e.name: e for e in entries if e.removable})
    return list(chosen.values())


def prune(root: Path, names: list[str], unused: bool = False) -> tuple[list[tuple[str, int]], list[str]]:
    """Remove the caches ``names`` (names or file names as :func:`list_caches` gives them) and, with
    ``unused``, every cache no process uses and every temporary file left behind.

    Returns:
        ``(removed, kept)``: the removed names with the bytes freed, and the names kept because a
        live process holds them.

    Raises:
        UserError: an unknown name, a data root that is missing or a file, a file that cannot be deleted.
    """
    directory = cache_folder(root)
    if directory is None:
        if names:
            raise UserError(f"no cache named {', '.join(names)}: {Path(root) / CACHE_DIR} does not exist")
        return [], []
    removed, kept = [], []
    with folder_lock(directory):
        for entry in _select(scan(directory), names, unused):
            if not entry.removable:
                kept.append(entry.name)
                continue
            removed.append((entry.name, _remove(entry)))
    return removed, kept


def _remove(entry: Entry) -> int:
    """Delete an entry's files while holding their exclusive lock; the bytes freed."""
    nbytes = entry.nbytes
    for path in entry.files:
        try:
            fd = try_lock(path, exclusive=True)
        except FileNotFoundError:
            continue
        try:
            if fd is None:  # taken since the scan: impossible under the folder lock, but never delete then
                raise UserError(f"{path} is in use; run prune again when that process has ended")
            path.unlink()
        except OSError as e:
            raise UserError(f"cannot remove {path} ({e.strerror or e}); check the permissions of {path.parent}") \
                from None
        finally:
            if fd is not None:
                os.close(fd)
    return nbytes


# ------------------------------------------------------------------------------------------- CLI


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m hyp2.data.cache",
                            description="List or remove the image caches --cache made (runs never delete them).")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="show every cache, its size and whether a running process uses it")
    pr = sub.add_parser("prune", help="remove the caches named, or with --unused all that no process uses")
    pr.add_argument("names", nargs="*", metavar="NAME", help="caches to remove, as `list` names them")
    pr.add_argument("--unused", action="store_true",
                    help="remove every cache no running process uses, and temporary files left by killed builds")
    for p in (ls, pr):
        p.add_argument("--data_root", type=Path, default=DataOptions().root,
                       help="the data root whose .cache folder to look at (default: %(default)s)")
    return parser


def _list_command(root: Path) -> None:
    entries = list_caches(root)
    if not entries:
        print(f"no caches in {Path(root) / CACHE_DIR}")
        return
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {human_bytes(e.nbytes):>9}  {e.about:<40}  {e.state}")
    free = [e for e in entries if e.removable]
    print(f"{len(entries)} entries, {human_bytes(sum(e.nbytes for e in entries))} in {Path(root) / CACHE_DIR}; "
          f"{len(free)} not in use ({human_bytes(sum(e.nbytes for e in free))}): remove them with "
          f"`python -m hyp2.data.cache prune NAME ...` or `... prune --unused --data_root {root}`")


def _prune_command(root: Path, names: list[str], unused: bool) -> None:
    if not names and not unused:
        raise UserError("prune: name the caches to remove (`python -m hyp2.data.cache list` shows them), or pass "
                        "--unused to remove every cache no running process uses")
    removed, kept = prune(root, names, unused)
    for name, nbytes in removed:
        log.info(f"removed {name} ({human_bytes(nbytes)})")
    log.info(f"removed {len(removed)}, freed {human_bytes(sum(n for _, n in removed))}")
    if kept:
        message = f"kept {', '.join(kept)}: in use by a running process; prune it when that process has ended"
        if set(kept) & set(names):
            raise UserError(message)
        notice(message)


def main(argv: list[str] | None = None) -> int:
    def body():
        args = build_parser().parse_args(argv)
        if args.command == "list":
            _list_command(args.data_root)
        else:
            _prune_command(args.data_root, args.names, args.unused)

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
