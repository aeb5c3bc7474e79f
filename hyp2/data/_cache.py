"""``--cache``: every image of a split decoded and resized once, kept as uint8 in a memory-mapped file.

Deep hashing papers, HyP² among them (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for
Multi-label Image Retrieval", ACM MM 2022), train for 100+ epochs on the same few thousand JPEGs and
encode the database every few epochs; decoding dominates on a small GPU machine. With ``--cache`` a
one-off pass stores each split as an (N, S, S, 3) uint8 array in
``<root>/.cache/{dataset}_{split}_{S}_{hash}.u8`` next to a small JSON header (``.json``), where
``hash`` covers the split's image ids: edit a list (or pass ``--subset``) and another cache is built.
Later runs map the file read-only; the loader hands out ``PIL.Image.fromarray`` copies, so the usual
transforms (flip, normalisation) apply unchanged and their resize becomes a no-op.

The resize is the one :func:`hyp2.data.base.image_transform` does (PIL bilinear with antialiasing),
so cached and lazily decoded images give identical tensors.

What is never lost, and what is never left behind (``fcntl.flock`` locks, :mod:`hyp2.data._locks`,
which the operating system releases when a process ends, however it ends):

* a cache is never deleted by a run: caches of other lists stay until a user removes them with
  ``python -m hyp2.data.cache prune`` (:mod:`hyp2.data.cache`), which never removes one in use;
* a process using a cache holds a shared lock on its data file for as long as it uses it;
* a cache is built under a temporary name (``.{name}.XXXXXXXX.tmp``) that its builder holds an
  exclusive lock on, and is renamed when complete; the header is written after the data, and a
  cache without a matching header is rebuilt. A later build of the same cache removes that
  cache's temporary files whose lock it can take (their builder is gone, e.g. killed), and waits
  for a build still running;
* the bookkeeping (checking, claiming, publishing or pruning a cache) happens under a moment's
  exclusive lock on the ``.cache`` folder, never held while a cache is built.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import UserError
from ..io import atomic_path, human_bytes, make_folder, parse_json, require_free_space, write_atomic
from ._locks import CacheLock, folder_lock, lock_fd, try_lock
from ._pinned import _say
from .base import DataOptions, LabelledImages, RetrievalData
from ..progress import bar

CACHE_VERSION = 1
CACHE_DIR = ".cache"
PRUNE_HINT = "python -m hyp2.data.cache"


def ids_hash(ids: list[str]) -> str:
    """16 hex digits identifying an ordered list of image ids."""
    return hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest()[:16]


def resize_like_transform(img: Image.Image, size: int) -> Image.Image:
    """Exactly the resize :func:`hyp2.data.base.image_transform` applies (so cached == lazy)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return img


class MemmapImages:
    """Picklable loader over a cache file: ``loader(i)`` -> PIL RGB image (S, S).

    The memory map is opened lazily in each process (a pickled ``np.memmap`` would copy its data).
    ``lock`` (the process's :class:`CacheLock` on the file) stays with the process that took it: a
    pickled copy does not carry it, DataLoader workers run while their parent holds it.
    """

    def __init__(self, path: str | os.PathLike, count: int, size: int, lock: CacheLock | None = None):
        self.path, self.count, self.size = os.fspath(path), int(count), int(size)
        self._array: np.ndarray | None = None
        self._lock = lock

    def _open(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.count, self.size, self.size, 3))
        return self._array

    def __len__(self) -> int:
        return self.count

    def __call__(self, i: int) -> Image.Image:
        # A copy (S*S*3 bytes) detaches the image from the map, so nothing pins pages after use.
        return Image.fromarray(np.array(self._open()[i]))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None
        state["_lock"] = None
        return state

    def __repr__(self) -> str:
        return f"MemmapImages({self.path!r}, {self.count} images of {self.size}x{self.size})"


# ----------------------------------------------------------------------------------------- files


def _header(dataset: str, split: str, size: int, ids: list[str], data_name: str) -> dict:
    return {"version": CACHE_VERSION, "dataset": dataset, "split": split, "size": int(size), "count": len(ids),
            "ids_sha1": ids_hash(ids), "dtype": "uint8", "shape": [len(ids), int(size), int(size), 3],
            "data": data_name}


def cache_paths(root: Path, dataset: str, split: str, size: int, ids: list[str]) -> tuple[Path, Path]:
    """``(data file, header file)`` of a split's cache."""
    stem = f"{dataset}_{split}_{int(size)}_{ids_hash(ids)}"
    directory = Path(root) / CACHE_DIR
    return directory / f"{stem}.u8", directory / f"{stem}.json"


def read_header(header: Path) -> dict | None:
    """A cache's JSON header, or ``None`` when it is missing or not a JSON object."""
    try:
        found = parse_json(header.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _is_valid(data: Path, header: Path, expected: dict) -> bool:
    nbytes = int(np.prod(expected["shape"]))
    return read_header(header) == expected and data.is_file() and data.stat().st_size == nbytes


def temp_files(data: Path) -> list[Path]:
    """The temporary files of exactly the cache ``data``, never those of another cache: of its data
    (``.{stem}.u8.XXXXXXXX.tmp``, the names :func:`hyp2.io.atomic_path` gives) and of its header
    (``.{stem}.json.XXXXXXXX.tmp``)."""
    pattern = re.compile(re.escape(f".{data.stem}.") + r"(u8|json)\.[a-z0-9_]+\.tmp")
    return sorted(p for p in data.parent.iterdir() if pattern.fullmatch(p.name))


def remove_orphans(data: Path) -> list[Path]:
    """Delete the temporary files of ``data`` whose writer is gone (their lock can be taken; a header
    is written under the folder lock, so a header's temporary file seen here is always an orphan);
    return those of builds still running. Call under :func:`folder_lock`."""
    busy = []
    for tmp in temp_files(data):
        try:
            fd = try_lock(tmp, exclusive=True)
        except FileNotFoundError:
            continue
        if fd is None:
            busy.append(tmp)
            continue
        try:
            tmp.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return busy


def _write_error(path: Path, e: OSError) -> UserError:
    return UserError(f"--cache: cannot write {path} ({e.strerror or e}); check the free space and permissions of "
                     f"{path.parent}, or run without --cache")


# ----------------------------------------------------------------------------------------- build


def _fill(array: np.ndarray, load: Callable[[int], Image.Image], size: int, indices: range) -> int:
    for i in indices:
        array[i] = np.asarray(resize_like_transform(load(i), size))
    return len(indices)


def _allocate(path: Path, nbytes: int) -> None:
    with open(path, "rb+") as fh:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fh.fileno(), 0, nbytes)
                return
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems without fallocate: truncate
                    raise
        fh.truncate(nbytes)


def build_cache(split: LabelledImages, path: Path, size: int, workers: int | None = None,
                desc: str = "cache", progress: bool = True) -> None:
    """Decode, resize and write every image of ``split`` into the file ``path`` (made ``N*S*S*3`` bytes
    long and allocated first, so a full disk stops here rather than as a SIGBUS inside the map).

    Threads do the work: PIL releases the GIL while decoding and resizing.

    Raises:
        UserError: an image that cannot be opened.
        OSError: the file cannot be allocated or written.
    """
    n = len(split)
    _allocate(path, n * size * size * 3)
    array = np.memmap(path, dtype=np.uint8, mode="r+", shape=(n, size, size, 3))
    chunk = 64
    chunks = [range(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    workers = workers or min(8, os.cpu_count() or 1)
    with cf.ThreadPoolExecutor(workers) as pool, \
            bar(total=n, unit="img", desc=desc, enabled=progress) as shown:
        futures = [pool.submit(_fill, array, split.load, size, r) for r in chunks]
        try:
            for fut in cf.as_completed(futures):
                shown.update(fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    array.flush()
    del array


class _Build:
    """A claim on building one cache: its temporary file, exclusively locked from the moment it
    exists (made under :func:`folder_lock`, so no other build takes it for an orphan)."""

    def __init__(self, data: Path, header: Path):
        self.data, self.header = data, header
        header.unlink(missing_ok=True)  # the data is about to change: no header may vouch for it meanwhile
        self._stack = contextlib.ExitStack()
        try:
            self.tmp = self._stack.enter_context(atomic_path(data))
            self.fd = os.open(self.tmp, os.O_RDWR)
        except BaseException:
            self.abandon()
            raise
        self._stack.callback(os.close, self.fd)
        lock_fd(self.fd, exclusive=True, wait=True)  # a new file: nobody else holds it

    def abandon(self) -> None:
        """Remove the temporary file (the build failed or was interrupted)."""
        self._stack.__exit__(*sys.exc_info())

    def publish(self, expected: dict) -> CacheLock:
        """Rename the complete file into place, write its header, and keep a shared lock on it."""
        fd = os.dup(self.fd)
        try:
            with folder_lock(self.data.parent):
                self._stack.close()  # fsync, rename (hyp2.io.atomic_path), then close our first descriptor
                write_atomic(self.header, lambda f: f.write(_json_bytes(expected)), "cache header")
                lock_fd(fd, exclusive=False, wait=True)
        except BaseException:
            os.close(fd)
            raise
        return CacheLock(fd)


def _json_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def _wait_for(paths: list[Path], data: Path) -> None:
    """Block until the processes holding ``paths`` (builds of ``data``) release them."""
    _say(f"--cache: waiting for another process that is building {data} ({paths[0].name})")
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # published or abandoned meanwhile
            continue
        try:
            if lock_fd(fd, exclusive=False, wait=True) is None:
                raise UserError(f"--cache: cannot tell whether another process is still building {data}: the file "
                                f"system of {data.parent} has no file locks; if no other run is building it, delete "
                                f"{path}")
        finally:
            os.close(fd)


def _claim(data: Path, header: Path, expected: dict, nbytes: int, desc: str) -> CacheLock | _Build | list[Path]:
    """Under the folder lock: a shared lock on a valid cache, or a claim to build it, or the
    temporary files of the builds of it still running (to wait for)."""
    with folder_lock(data.parent):
        if _is_valid(data, header, expected):
            fd = try_lock(data, exclusive=False)
            return [data] if fd is None else CacheLock(fd)
        busy = remove_orphans(data)
        if busy:
            return busy
        require_free_space(data.parent, nbytes, f"--cache needs {{need}} for {desc} in {data.parent} but only "
                                                "{free} are free; free some space or run without --cache")
        return _Build(data, header)


def _other_versions(data: Path) -> list[Path]:
    """The data files of the other caches of the same dataset, split and size (other lists)."""
    prefix = data.name.rsplit("_", 1)[0] + "_"
    pattern = re.compile(re.escape(prefix) + r"[0-9a-f]{16}\.u8")
    return sorted(p for p in data.parent.iterdir() if pattern.fullmatch(p.name) and p.name != data.name)


def cached_split(split: LabelledImages, root: Path, dataset: str, split_name: str, size: int,
                 workers: int | None = None, progress: bool = True) -> LabelledImages:
    """``split`` with its loader replaced by a memory-mapped cache, built first if needed; the process
    holds a shared lock on the cache while the returned split (its loader) lives.

    Raises:
        UserError: not enough free space, a folder that cannot be written, an image that cannot be opened.
    """
    data, header = cache_paths(root, dataset, split_name, size, split.ids)
    expected = _header(dataset, split_name, size, split.ids, data.name)
    desc = f"cache {dataset} {split_name}"
    make_folder(data.parent, f"--cache: cannot create the folder {data.parent}",
                lambda e: "make --data_root writable, or run without --cache")
    while True:
        try:
            claim = _claim(data, header, expected, len(split) * size * size * 3, desc)
        except OSError as e:
            raise _write_error(data, e) from None
        if not isinstance(claim, list):
            break
        _wait_for(claim, data)
    if isinstance(claim, _Build):
        try:
            build_cache(split, claim.tmp, size, workers, desc=desc, progress=progress)
            claim = claim.publish(expected)
        except OSError as e:
            claim.abandon()
            raise _write_error(data, e) from None
        except BaseException:
            claim.abandon()
            raise
        _note_others(data, root)
    return split.with_loader(MemmapImages(data, len(split), size, claim))


def _note_others(data: Path, root: Path) -> None:
    others = _other_versions(data)
    if others:
        total = sum(p.stat().st_size for p in others if p.exists())
        _say(f"--cache: built {data}; {len(others)} other cache(s) of the same dataset, split and size (other image "
             f"lists, e.g. --subset) remain beside it ({human_bytes(total)}) and are never deleted by a run: see them "
             f"with `{PRUNE_HINT} list --data_root {root}`, remove unused ones with `{PRUNE_HINT} prune NAME ...`")


def maybe_cache(data: RetrievalData, options: DataOptions, progress: bool = True) -> RetrievalData:
    """``data`` unchanged without ``options.cache``; otherwise every split served from its cache.

    Splits with the same images (VOC's train and database) share one cache file.
    """
    if not options.cache:
        return data
    size = int(options.image_size)
    done: dict[str, LabelledImages] = {}
    out = {}
    for name in ("train", "query", "database"):
        split: LabelledImages = getattr(data, name)
        key = ids_hash(split.ids)
        if key not in done:
            done[key] = cached_split(split, Path(options.root), data.name, name, size, progress=progress)
        out[name] = split.with_loader(done[key].load)
    return dataclasses.replace(data, **out)
