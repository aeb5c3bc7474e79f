"""``--cache``: every image of a split decoded and resized once, kept as uint8 in a memory-mapped file.

Deep hashing papers, HyP² among them (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for
Multi-label Image Retrieval", ACM MM 2022), train for 100+ epochs on the same few thousand JPEGs and
encode the database every few epochs; decoding dominates on a small GPU machine. With ``--cache`` a
one-off pass stores each split as an (N, S, S, 3) uint8 array in
``<root>/.cache/{dataset}_{split}_{S}_{hash}.u8`` next to a small JSON header (``.json``), where
``hash`` covers the split's image ids: edit a list and the cache is rebuilt (the stale file is then
deleted). Later runs map the file read-only; the loader hands out ``PIL.Image.fromarray`` copies,
so the usual transforms (flip, normalisation) apply unchanged and their resize becomes a no-op.

The resize is the one :func:`hyp2.data.base.image_transform` does (PIL bilinear with antialiasing),
so cached and lazily decoded images give identical tensors.

The file is built under a temporary name and renamed when complete; the header is written after
the data, and a cache without a matching header is rebuilt.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..io import atomic_path, atomic_write_json
from ..io import require_free_space
from .base import DataOptions, LabelledImages, RetrievalData

CACHE_VERSION = 1
CACHE_DIR = ".cache"


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
    """

    def __init__(self, path: str | os.PathLike, count: int, size: int):
        self.path, self.count, self.size = os.fspath(path), int(count), int(size)
        self._array: np.ndarray | None = None

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
        return state

    def __repr__(self) -> str:
        return f"MemmapImages({self.path!r}, {self.count} images of {self.size}x{self.size})"


def _header(dataset: str, split: str, size: int, ids: list[str], data_name: str) -> dict:
    return {"version": CACHE_VERSION, "dataset": dataset, "split": split, "size": int(size), "count": len(ids),
            "ids_sha1": ids_hash(ids), "dtype": "uint8", "shape": [len(ids), int(size), int(size), 3],
            "data": data_name}


def cache_paths(root: Path, dataset: str, split: str, size: int, ids: list[str]) -> tuple[Path, Path]:
    """``(data file, header file)`` of a split's cache."""
    stem = f"{dataset}_{split}_{int(size)}_{ids_hash(ids)}"
    directory = Path(root) / CACHE_DIR
    return directory / f"{stem}.u8", directory / f"{stem}.json"


def _is_valid(data: Path, header: Path, expected: dict) -> bool:
    try:
        found = json.loads(header.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    nbytes = int(np.prod(expected["shape"]))
    return found == expected and data.is_file() and data.stat().st_size == nbytes


def _fill(array: np.ndarray, load: Callable[[int], Image.Image], size: int, indices: range) -> int:
    for i in indices:
        array[i] = np.asarray(resize_like_transform(load(i), size))
    return len(indices)


def build_cache(split: LabelledImages, data: Path, size: int, workers: int | None = None,
                desc: str = "cache", progress: bool = True) -> None:
    """Decode, resize and write every image of ``split`` to ``data`` (temp file, then rename).

    Threads do the work: PIL releases the GIL while decoding and resizing.

    Raises:
        UserError: not enough free disk space, or an image that cannot be opened.
    """
    n = len(split)
    nbytes = n * size * size * 3
    data.parent.mkdir(parents=True, exist_ok=True)
    require_free_space(data.parent, nbytes, f"--cache needs {{need}} for {desc} in {data.parent} but only "
                                            "{free} are free; free some space or run without --cache")
    workers = workers or min(8, os.cpu_count() or 1)
    with atomic_path(data) as tmp:
        array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(n, size, size, 3))
        chunk = 64
        chunks = [range(s, min(s + chunk, n)) for s in range(0, n, chunk)]
        with cf.ThreadPoolExecutor(workers) as pool, \
                tqdm(total=n, unit="img", desc=desc, disable=not progress, leave=False) as bar:
            futures = [pool.submit(_fill, array, split.load, size, r) for r in chunks]
            try:
                for fut in cf.as_completed(futures):
                    bar.update(fut.result())
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        array.flush()
        del array


def cached_split(split: LabelledImages, root: Path, dataset: str, split_name: str, size: int,
                 workers: int | None = None, progress: bool = True) -> LabelledImages:
    """``split`` with its loader replaced by a memory-mapped cache, built first if needed."""
    data, header = cache_paths(root, dataset, split_name, size, split.ids)
    expected = _header(dataset, split_name, size, split.ids, data.name)
    if not _is_valid(data, header, expected):
        with contextlib.suppress(FileNotFoundError):
            header.unlink()  # the data is about to change: no header may vouch for it meanwhile
        build_cache(split, data, size, workers, desc=f"cache {dataset} {split_name}", progress=progress)
        atomic_write_json(header, expected)
        _remove_stale(data.parent, f"{dataset}_{split_name}_{int(size)}_", keep=data.stem)
    return split.with_loader(MemmapImages(data, len(split), size))


def _remove_stale(directory: Path, prefix: str, keep: str) -> None:
    # Caches of an earlier version of the same list: each can be gigabytes, and nothing reads them.
    for path in directory.glob(f"{prefix}*"):
        stem = path.name.split(".", 1)[0]
        if stem != keep and path.suffix in (".u8", ".json") and not path.name.startswith("."):
            with contextlib.suppress(OSError):
                path.unlink()


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
