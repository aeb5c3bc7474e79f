"""Tests of hyp2.data.load_dataset (--subset, empty splits, --cache in one place) and unlabelled_warning."""
from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest

from hyp2.data import (DataOptions, LabelledImages, ListLines, RetrievalData, image_transform, load_dataset,
                       unlabelled_warning)
from hyp2.data import _cache, base
from hyp2.data._cache import MemmapImages
from hyp2.data._lists import ImageFiles
from hyp2.errors import UserError

from .test_custom import LABELS, write_custom

TOY = '''
import numpy as np
from PIL import Image
from hyp2.data.base import DATASETS, LabelledImages, RetrievalData, image_transform

class Grey:
    def __call__(self, i):
        return Image.new("RGB", (8, 8), (10 * i, 0, 0))

@DATASETS.register("toy_outside", "a dataset registered from a module outside the package")
def build(options):
    labels = np.eye(3, dtype=np.uint8)[[0, 1, 2, 0, 1, 2]]
    split = LabelledImages([f"toy/{i}" for i in range(6)], labels, Grey(), image_transform(options.image_size, False))
    return RetrievalData("toy_outside", ("a", "b", "c"), split, split.head(2), split, topk=None,
                         provenance={"lists": "generated"})
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_plugin_module.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("toy_plugin_module")
    yield "toy_outside"
    base.DATASETS.unregister("toy_outside")
    sys.modules.pop("toy_plugin_module", None)


def test_a_dataset_registered_outside_the_package(toy, tmp_path):
    data = load_dataset(toy, DataOptions(root=tmp_path, image_size=8), subset=4)
    assert (len(data.train), len(data.query), len(data.database)) == (4, 2, 4)
    assert data.provenance == {"lists": "generated", "subset": "only the first 4 items of each split (--subset 4)"}
    cached = load_dataset(toy, DataOptions(root=tmp_path, image_size=8, cache=True), subset=3, progress=False)
    assert isinstance(cached.train.load, MemmapImages) and len(cached.database) == 3
    assert np.array_equal(np.asarray(cached.train.load(2)), np.asarray(data.train.load(2)))


def test_cache_applied_once_after_the_subset(tmp_path, monkeypatch):
    write_custom(tmp_path)
    built = []
    real = _cache.build_cache
    monkeypatch.setattr(_cache, "build_cache", lambda split, *a, **k: (built.append(len(split)), real(split, *a, **k)))
    data = load_dataset("custom", DataOptions(root=tmp_path, image_size=8, cache=True), subset=2, progress=False)
    assert sorted(built) == [2, 2, 2]  # three splits of two images each, never a whole list
    assert all(isinstance(getattr(data, s).load, MemmapImages) for s in ("train", "query", "database"))
    assert len(list((tmp_path / ".cache").iterdir())) == 6  # a data file and a header per split
    lazy = load_dataset("custom", DataOptions(root=tmp_path, image_size=8))
    assert isinstance(lazy.train.load, ImageFiles) and len(lazy.train) == len(LABELS["train"])


def test_empty_split_names_the_split_and_the_folder(toy, tmp_path, monkeypatch):
    def empty_query(options):
        labels = np.eye(2, dtype=np.uint8)
        split = LabelledImages(["x", "y"], labels, lambda i: None, image_transform(8, False))
        return RetrievalData("toy_outside", ("a", "b"), split, split.head(0), split, topk=None)

    base.DATASETS.unregister("toy_outside")  # the fixture's entry, replaced by one with an empty query split
    base.DATASETS.register("toy_outside", "empty", empty_query)
    with pytest.raises(UserError, match=rf"--dataset toy_outside: the query split is empty; check its files under "
                                        rf"{tmp_path}"):
        load_dataset("toy_outside", DataOptions(root=tmp_path))


def test_a_builder_that_returns_nothing_is_one_line(tmp_path):
    base.DATASETS.register("toy_none", "returns None", lambda options: None)
    try:
        with pytest.raises(UserError, match=r"--dataset toy_none: its builder .* returned NoneType, not a "
                                            r"RetrievalData"):
            load_dataset("toy_none", DataOptions(root=tmp_path))
    finally:
        base.DATASETS.unregister("toy_none")


def test_a_plugin_taking_a_built_in_name_is_told_so(tmp_path):
    with pytest.raises(ValueError, match="dataset 'demo' is already registered; choose another name"):
        base.DATASETS.register("demo", "again", lambda options: None)


def test_unknown_dataset_and_bad_subset(tmp_path):
    with pytest.raises(UserError, match=r"--dataset nope: unknown dataset 'nope'; known datasets: .*voc2007"):
        load_dataset("nope", DataOptions(root=tmp_path))
    with pytest.raises(ValueError, match="subset"):
        load_dataset("demo", DataOptions(root=tmp_path), subset=-1)


# ----------------------------------------------------------------------------------- unlabelled items


def split_of(labels, origin=None) -> LabelledImages:
    labels = np.asarray(labels, np.uint8)
    return LabelledImages([f"img{i}" for i in range(len(labels))], labels, lambda i: None,
                          image_transform(8, False), origin)


def test_no_warning_when_every_item_has_a_label():
    s = split_of([[1, 0], [0, 1]])
    assert unlabelled_warning(RetrievalData("d", ("a", "b"), s, s, s, topk=None)) is None


def test_warning_counts_and_points_at_the_first_line():
    query = split_of([[1, 0], [0, 0], [1, 1], [0, 0], [0, 0]], ListLines("nus_wide/test.txt", [1, 17, 18, 20, 22]))
    database = split_of([[1, 0], [0, 0]])  # no lines known: the id
    train = split_of([[1, 1]])
    line = unlabelled_warning(RetrievalData("nuswide", ("a", "b"), train, query, database, topk=None))
    assert line == ("warning: nuswide: 3 queries have no label (first: nus_wide/test.txt line 17); each scores AP 0 "
                    "and still counts in the mean, lowering mAP; 1 database image has no label (first: img1); "
                    "never relevant to any query")
    assert "\n" not in line


def test_warning_on_a_real_list(tmp_path):
    labels = {"train": [[1, 0, 1]], "test": [[0, 1, 1], [0, 0, 0]], "database": [[1, 0, 0]]}
    write_custom(tmp_path, labels)
    data = load_dataset("custom", DataOptions(root=tmp_path, image_size=8))
    assert f"1 query has no label (first: {tmp_path / 'test.txt'} line 2)" in unlabelled_warning(data)


def test_head_and_transform_keep_where_items_come_from():
    s = split_of([[1], [0], [1]], ListLines("l.txt", [3, 5, 9]))
    assert s.head(2).where(1) == "l.txt line 5" and len(s.head(2).origin) == 2
    assert s.with_transform(image_transform(4, True)).where(2) == "l.txt line 9"
    assert s.with_loader(lambda i: None).where(0) == "l.txt line 3"
    with pytest.raises(ValueError, match="one line per item"):
        split_of([[1], [0]], ListLines("l.txt", [1]))


def test_a_data_root_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError) as e:
        load_dataset("custom", DataOptions(root=tmp_path / "file"))
    assert str(e.value) == (f"--data_root {tmp_path / 'file'} is a file, not a folder; pass the folder that holds (or "
                            f"is to hold) the datasets")
