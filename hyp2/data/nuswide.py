"""NUS-WIDE (``nuswide``): the 21 most frequent concepts, read from HashNet-format image lists.

Data: Chua et al., "NUS-WIDE: A Real-World Web Image Database from National University of
Singapore", CIVR 2009. Protocol as in HyP² (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space
for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1), which uses the lists HashNet (Cao et al.,
ICCV 2017) and DeepHash-pytorch distribute: 10,500 training images, 2,100 queries and a database
of 193,734 images (the training images are in the database), mAP@5000.

Files, under ``<root>/nus_wide/``: ``train.txt``, ``test.txt`` (the queries) and ``database.txt``,
each line an image path relative to ``<root>/nus_wide/`` and 21 space-separated 0/1 labels
(format: :mod:`hyp2.data._lists`), plus the images themselves. The lists do not name the concepts;
an optional ``<root>/nus_wide/classes.txt`` (21 lines) does, otherwise they are ``class0``..``class20``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ._cache import maybe_cache
from ._lists import ImageFiles, default_class_names, read_class_names, read_list, require_files
from .base import DataOptions, LabelledImages, RetrievalData, image_transform, register

FOLDER = "nus_wide"
NUM_LABELS = 21
TOPK = 5000
LISTS = {"train": "train.txt", "query": "test.txt", "database": "database.txt"}


def _read(folder: Path, role: str, root: Path, check_files: bool) -> tuple[list[str], list[str], np.ndarray]:
    path = folder / LISTS[role]
    if not path.is_file():
        raise UserError(f"NUS-WIDE {role} list {path} is missing: expected lines like 'images/0001_2124494179.jpg "
                        f"0 1 0 ... 0' (a path relative to {folder} and {NUM_LABELS} labels 0/1); the usual lists are "
                        f"data/nuswide_21/{{train,test,database}}.txt of DeepHash-pytorch or HashNet")
    rel, labels = read_list(path, NUM_LABELS, what=f"NUS-WIDE {role} list")
    paths = [str(folder / p) for p in rel]
    if check_files:
        require_files(paths, f"NUS-WIDE {role} list {path}")
    ids = [os.path.relpath(p, root) for p in paths]
    return ids, paths, labels


def build_nuswide(options: DataOptions, check_files: bool = True, progress: bool = True) -> RetrievalData:
    """NUS-WIDE-21 under the HyP² protocol (see the module docstring).

    ``check_files`` stats every image up front (about 200,000 on the real data, a second or two) so
    a missing file stops the run before training rather than during the first database encoding.
    """
    root = Path(options.root)
    folder = root / FOLDER
    size = options.image_size
    splits = {}
    for role in ("train", "query", "database"):
        ids, paths, labels = _read(folder, role, root, check_files)
        splits[role] = LabelledImages(ids, labels, ImageFiles(paths), image_transform(size, role == "train"))
    classes = read_class_names(folder / "classes.txt", NUM_LABELS) or default_class_names(NUM_LABELS)
    data = RetrievalData("nuswide", classes, splits["train"], splits["query"], splits["database"],
                         topk=min(TOPK, len(splits["database"])))
    return maybe_cache(data, options, progress=progress)


@register("nuswide", "NUS-WIDE, 21 concepts, HashNet/DeepHash lists in <root>/nus_wide: 10,500 train / 2,100 "
                     "queries / 193,734 database, mAP@5000")
def build(options: DataOptions) -> RetrievalData:
    return build_nuswide(options)
