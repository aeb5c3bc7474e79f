"""Tests of hyp2.data._cache (--cache): the memory-mapped uint8 cache gives the lazy path's tensors."""
from __future__ import annotations

import json
import pickle
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
from hyp2.data.custom import build_custom
from hyp2.errors import UserError

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


def test_cache_is_reused_and_rebuilt_when_lists_change(tmp_path, monkeypatch):
    root = _root(tmp_path)
    opts = DataOptions(root=root, image_size=SIZE, cache=True)
    first = load_dataset("custom", opts, progress=False)

    def boom(*a, **k):
        raise AssertionError("cache rebuilt although nothing changed")

    real_build = _cache.build_cache
    monkeypatch.setattr(_cache, "build_cache", boom)
    again = load_dataset("custom", opts, progress=False)
    assert again.query.load.path == first.query.load.path

    # drop one training image from the list: the train cache is rebuilt, the stale one deleted
    monkeypatch.setattr(_cache, "build_cache", real_build)
    lines = (root / "train.txt").read_text().splitlines()
    (root / "train.txt").write_text("\n".join(lines[:-1]) + "\n")
    changed = load_dataset("custom", opts, progress=False)
    assert changed.train.load.path != first.train.load.path and len(changed.train) == 3
    assert not Path(first.train.load.path).exists()
    assert Path(first.query.load.path).exists()
    assert len(list((root / ".cache").glob(f"custom_train_{SIZE}_*"))) == 2  # .u8 + .json


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
