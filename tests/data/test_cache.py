"""Tests of hyp2.data._cache (--cache): the memory-mapped uint8 cache gives the lazy path's tensors."""
from __future__ import annotations

import concurrent.futures as cf
import gc
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hyp2.data import DataOptions, LabelledImages, RetrievalData, image_transform, load_dataset
from hyp2.data import _cache
from hyp2.data._cache import MemmapImages, cache_paths, ids_hash, maybe_cache
from hyp2.data._lists import ImageFiles
from hyp2.data._locks import try_lock
from hyp2.data.custom import build_custom
from hyp2.errors import UserError

from .conftest import mounted
from .test_custom import write_custom

SIZE = 16


def _root(tmp_path: Path) -> Path:
    write_custom(tmp_path)
    # odd sizes and modes: a grayscale PNG and a tall JPEG replace two images
    Image.new("L", (23, 51), 140).save(tmp_path / "pics" / "odd.png")
    lines = (tmp_path / "database.txt").read_text().splitlines()
    lines[1] = "pics/odd.png " + lines[1].split(" ", 1)[1]
    (tmp_path / "database.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def _items(split: LabelledImages, seed: int):
    out = []
    for i in range(len(split)):
        torch.manual_seed(seed + i)  # the same random flips on both paths
        out.append(split[i])
    return out


def test_cache_equals_lazy_path(tmp_path):
    root = _root(tmp_path)
    lazy = build_custom(DataOptions(root=root, image_size=SIZE))
    cached = load_dataset("custom", DataOptions(root=root, image_size=SIZE, cache=True), progress=False)
    assert isinstance(cached.train.load, MemmapImages) and isinstance(lazy.train.load, ImageFiles)
    for name in ("train", "query", "database"):
        a, b = getattr(lazy, name), getattr(cached, name)
        assert a.ids == b.ids and np.array_equal(a.labels, b.labels) and a.transform.train == b.transform.train
        for (xa, ya, ia), (xb, yb, ib) in zip(_items(a, 7), _items(b, 7)):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and ia == ib
    # one data file and one header per split, named by dataset, split, size and the ids' hash
    files = sorted(p.name for p in (root / ".cache").iterdir())
    expected = []
    for name in ("train", "query", "database"):
        stem = f"custom_{name}_{SIZE}_{ids_hash(getattr(lazy, name).ids)}"
        expected += [stem + ".json", stem + ".u8"]
    assert files == sorted(expected)
    header = json.loads((root / ".cache" / f"custom_query_{SIZE}_{ids_hash(lazy.query.ids)}.json").read_text())
    assert header["shape"] == [2, SIZE, SIZE, 3] and header["count"] == 2 and header["dtype"] == "uint8"
    # the stored pixels are the resized RGB images
    raw = np.fromfile(root / ".cache" / f"custom_database_{SIZE}_{ids_hash(lazy.database.ids)}.u8", np.uint8)
    expect = np.asarray(Image.open(root / "pics" / "odd.png").convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    np.testing.assert_array_equal(raw.reshape(3, SIZE, SIZE, 3)[1], expect)


def test_cache_is_reused_and_rebuilt_when_lists_change(tmp_path, monkeypatch, capsys):
    root = _root(tmp_path)
    opts = DataOptions(root=root, image_size=SIZE, cache=True)
    first = load_dataset("custom", opts, progress=False)

    def boom(*a, **k):
        raise AssertionError("cache rebuilt although nothing changed")

    real_build = _cache.build_cache
    monkeypatch.setattr(_cache, "build_cache", boom)
    again = load_dataset("custom", opts, progress=False)
    assert again.query.load.path == first.query.load.path

    # drop one training image from the list: another train cache is built; the earlier one is kept
    # (it may be another run's) and a line says how to remove it
    monkeypatch.setattr(_cache, "build_cache", real_build)
    lines = (root / "train.txt").read_text().splitlines()
    (root / "train.txt").write_text("\n".join(lines[:-1]) + "\n")
    capsys.readouterr()
    changed = load_dataset("custom", opts, progress=False)
    assert changed.train.load.path != first.train.load.path and len(changed.train) == 3
    assert Path(first.train.load.path).exists() and Path(first.query.load.path).exists()
    assert len(list((root / ".cache").glob(f"custom_train_{SIZE}_*"))) == 4  # two caches: .u8 + .json each
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 other cache(s)" in err and "python -m hyp2.data.cache list" in err


def test_damaged_cache_is_rebuilt(tmp_path):
    root = _root(tmp_path)
    opts = DataOptions(root=root, image_size=SIZE, cache=True)
    data = load_dataset("custom", opts, progress=False)
    path = Path(data.query.load.path)
    path.write_bytes(b"short")  # wrong size: e.g. a disk that filled up
    rebuilt = load_dataset("custom", opts, progress=False)
    assert path.stat().st_size == 2 * SIZE * SIZE * 3
    lazy = build_custom(DataOptions(root=root, image_size=SIZE))
    assert torch.equal(rebuilt.query[1][0], lazy.query[1][0])


def test_a_header_nested_too_deeply_is_a_damaged_cache(tmp_path):
    root = _root(tmp_path)
    opts = DataOptions(root=root, image_size=SIZE, cache=True)
    data = load_dataset("custom", opts, progress=False)
    header = Path(data.query.load.path).with_suffix(".json")
    good = header.read_text()
    header.write_text("[" * 100_000 + "]" * 100_000)
    load_dataset("custom", opts, progress=False)  # rebuilt, not a RecursionError
    assert header.read_text() == good


def test_splits_with_the_same_images_share_one_file(tmp_path):
    root = _root(tmp_path)
    lazy = build_custom(DataOptions(root=root, image_size=SIZE))
    voc_like = RetrievalData("vocish", lazy.classes, lazy.train, lazy.query,
                             lazy.train.with_transform(image_transform(SIZE, False)), topk=None)
    data = maybe_cache(voc_like, DataOptions(root=root, image_size=SIZE, cache=True), progress=False)
    assert data.train.load is data.database.load
    assert not data.database.transform.train and data.train.transform.train
    assert sorted(p.name.split("_")[1] for p in (root / ".cache").glob("vocish_*.u8")) == ["query", "train"]


def test_without_cache_option_nothing_changes(tmp_path):
    root = _root(tmp_path)
    lazy = build_custom(DataOptions(root=root, image_size=SIZE))
    assert maybe_cache(lazy, DataOptions(root=root, cache=False)) is lazy
    assert not (root / ".cache").exists()


def test_memmap_loader_pickles_without_its_data(tmp_path):
    root = _root(tmp_path)
    data = load_dataset("custom", DataOptions(root=root, image_size=SIZE, cache=True), progress=False)
    load = data.database.load
    load(0)  # opens the map
    blob = pickle.dumps(load)
    assert len(blob) < 1000
    clone = pickle.loads(blob)
    assert np.array_equal(np.asarray(clone(2)), np.asarray(load(2)))
    loader = torch.utils.data.DataLoader(data.database, batch_size=2, num_workers=1)
    xs = torch.cat([b[0] for b in loader])
    assert torch.equal(xs, torch.stack([data.database[i][0] for i in range(3)]))


def test_not_enough_disk_space(tmp_path, monkeypatch):
    root = _root(tmp_path)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda p: Usage(10, 9, 1))
    # sizes in human units: 3 KiB here, not "0.0 GiB"
    with pytest.raises(UserError, match=r"--cache needs 3\.0 KiB for .* but only 1 B are free"):
        load_dataset("custom", DataOptions(root=root, image_size=SIZE, cache=True), progress=False)
    assert list((root / ".cache").iterdir()) == []


def test_unreadable_image_during_build_leaves_no_cache(tmp_path):
    root = _root(tmp_path)
    (root / "pics" / "test1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="cannot open image .*test1.jpg"):
        load_dataset("custom", DataOptions(root=root, image_size=SIZE, cache=True), progress=False)
    assert not any(p.name.startswith("custom_query") for p in (root / ".cache").iterdir())
    assert not any(p.name.endswith(".tmp") for p in (root / ".cache").iterdir())


def test_cache_paths_depend_on_ids_and_size(tmp_path):
    a = cache_paths(tmp_path, "d", "train", 32, ["x", "y"])
    assert a[0].name.startswith("d_train_32_") and a[0].suffix == ".u8" and a[1].suffix == ".json"
    assert cache_paths(tmp_path, "d", "train", 32, ["y", "x"])[0] != a[0]
    assert cache_paths(tmp_path, "d", "train", 64, ["x", "y"])[0] != a[0]


# ------------------------------------------------------------------ other runs' caches and killed builds

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}

# A build of the database cache that stops at its second image, then waits to be killed.
STALLED_BUILD = """
import sys, time
from pathlib import Path
from hyp2.data import DataOptions
from hyp2.data._cache import cached_split
from hyp2.data.custom import build_custom
root = Path(sys.argv[1])
split = build_custom(DataOptions(root=root, image_size=16)).database
real = split.load
def stall(i):
    if i == 1:
        print("building", flush=True)
        time.sleep(600)
    return real(i)
cached_split(split.with_loader(stall), root, "custom", "database", 16, workers=1, progress=False)
"""

# Holds an exclusive lock on a file, as a build holds its temporary file.
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""


def child(script: str, *args) -> subprocess.Popen:
    """A Python process running ``script``, once it has printed its first line (it is then ready)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"the child process ended early: {proc.communicate()[1][-2000:]}")
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()


def test_a_subset_run_never_deletes_the_full_splits_cache(tmp_path, monkeypatch, capsys):
    root = _root(tmp_path)
    opts = DataOptions(root=root, image_size=SIZE, cache=True)
    full = load_dataset("custom", opts, progress=False)
    capsys.readouterr()
    small = load_dataset("custom", opts, subset=1, progress=False)
    err = capsys.readouterr().err
    for name in ("train", "query", "database"):
        assert Path(getattr(full, name).load.path).exists() and Path(getattr(small, name).load.path).exists()
    assert err.count("\n") == 3 and f"python -m hyp2.data.cache list --data_root {root}" in err
    # the full split's caches are still valid: a second full run reads them, nothing is rebuilt
    monkeypatch.setattr(_cache, "build_cache", lambda *a, **k: pytest.fail("rebuilt a cache"))
    again = load_dataset("custom", opts, progress=False)
    assert again.database.load.path == full.database.load.path
    assert torch.equal(again.database[2][0], full.database[2][0])


@pytest.mark.slow
def test_a_killed_build_leaves_a_temporary_file_the_next_build_removes(tmp_path):
    root = _root(tmp_path)
    proc = child(STALLED_BUILD, root)
    kill(proc)
    lazy = build_custom(DataOptions(root=root, image_size=SIZE))
    data, header = cache_paths(root, "custom", "database", SIZE, lazy.database.ids)
    left = list((root / ".cache").glob(f".{data.name}.*.tmp"))
    assert len(left) == 1 and not data.exists()
    # temporary files of another cache, or of a name that only looks alike, are not this build's to remove
    other = root / ".cache" / f".custom_query_{SIZE}_{'0' * 16}.u8.abcd1234.tmp"
    alike = root / ".cache" / f".{data.name}x.abcd1234.tmp"
    for path in (other, alike):
        path.write_bytes(b"x")
    split = _cache.cached_split(lazy.database, root, "custom", "database", SIZE, progress=False)
    assert not left[0].exists() and other.exists() and alike.exists()
    assert torch.equal(split[1][0], lazy.database[1][0])


def test_a_running_build_is_waited_for_and_its_file_kept(tmp_path, capsys):
    root = _root(tmp_path)
    lazy = build_custom(DataOptions(root=root, image_size=SIZE))
    data, _ = cache_paths(root, "custom", "database", SIZE, lazy.database.ids)
    data.parent.mkdir()
    running = data.parent / f".{data.name}.live1234.tmp"
    proc = child(HOLD_LOCK, running)
    try:
        with cf.ThreadPoolExecutor(1) as pool:
            future = pool.submit(_cache.cached_split, lazy.database, root, "custom", "database", SIZE,
                                 progress=False)
            err = ""
            deadline = time.monotonic() + 60
            while "waiting for another process" not in err and time.monotonic() < deadline and not future.done():
                time.sleep(0.05)
                err += capsys.readouterr().err
            assert "waiting for another process that is building" in err and running.name in err
            assert running.exists() and not future.done()
            kill(proc)  # the other build dies: its file is then an orphan, removed, and the cache built here
            split = future.result(timeout=60)
    finally:
        if proc.poll() is None:
            kill(proc)
    assert not running.exists() and torch.equal(split[2][0], lazy.database[2][0])


def test_a_process_using_a_cache_holds_its_lock(tmp_path):
    root = _root(tmp_path)
    data = load_dataset("custom", DataOptions(root=root, image_size=SIZE, cache=True), progress=False)
    path = Path(data.train.load.path)
    assert try_lock(path, exclusive=True) is None  # what prune sees: in use
    clone = pickle.loads(pickle.dumps(data.train.load))  # a worker's copy does not carry the lock
    assert clone._lock is None and np.array_equal(np.asarray(clone(0)), np.asarray(data.train.load(0)))
    del data, clone
    gc.collect()
    fd = try_lock(path, exclusive=True)
    assert fd is not None
    os.close(fd)


# ------------------------------------------------------------------------- full disk, read-only root


def test_full_disk_during_the_build_is_one_line(tmp_path, monkeypatch):
    write_custom(tmp_path)
    with mounted("full", tmp_path / ".cache", size="8k") as disk:  # the train cache needs 12 KiB at 32 px
        # the free-space check is fooled (another writer fills the disk meanwhile): the write itself fails,
        # before any pixel is written into the map (which would end the process with SIGBUS)
        monkeypatch.setattr("shutil.disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 0, 10**12))
        with pytest.raises(UserError, match=r"--cache: cannot write .*custom_train_32_.*\.u8 \(No space left on "
                                            r"device\); check the free space") as err:
            load_dataset("custom", DataOptions(root=tmp_path, image_size=32, cache=True), progress=False)
        assert "\n" not in str(err.value)
        assert list(disk.iterdir()) == []


def test_read_only_data_root(tmp_path):
    src = tmp_path / "ro-src"
    src.mkdir()
    write_custom(src)
    with mounted("ro", tmp_path / "ro") as ro:
        with pytest.raises(UserError, match=r"--cache: cannot create the folder .*\.cache \(Read-only file "
                                            r"system\); make --data_root writable, or run without --cache"):
            load_dataset("custom", DataOptions(root=ro, image_size=SIZE, cache=True), progress=False)
    # caches built beforehand are read from a read-only root
    built = load_dataset("custom", DataOptions(root=src, image_size=SIZE, cache=True), progress=False)
    with mounted("ro", tmp_path / "ro2") as ro:
        data = load_dataset("custom", DataOptions(root=ro, image_size=SIZE, cache=True), progress=False)
        assert isinstance(data.query.load, MemmapImages) and torch.equal(data.query[1][0], built.query[1][0])
        del data
        gc.collect()
