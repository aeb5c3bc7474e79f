"""What a run does with a dataset after its builder: ``--subset``, the empty-split check, ``--cache``,
and the warning about images without any label.

One place for all of it, so every builder (ours, or one registered from a module outside the
package) gets the same treatment, and the cache is applied once, after subsetting: a smoke test
with ``--subset`` never caches a whole dataset. Retrieval is judged as in HyP² (Xu et al., ACM MM
2022) and the hashing literature: a database item is relevant to a query when they share at
least one label, so an item without labels is relevant to nothing.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import UserError
from ._cache import maybe_cache
from ._lists import require_folder
from .base import DATASETS, DataOptions, RetrievalData

SPLITS = ("train", "query", "database")


def take_subset(data: RetrievalData, n: int) -> RetrievalData:
    """The first ``n`` items of every split (``n`` >= 1); the provenance records it."""
    if n < 1:
        raise ValueError(f"subset must be >= 1, got {n}")
    provenance = {**data.provenance, "subset": f"only the first {n} items of each split (--subset {n})"}
    return dataclasses.replace(data, provenance=provenance, **{s: getattr(data, s).head(n) for s in SPLITS})


def load_dataset(name: str, options: DataOptions, subset: int = 0, progress: bool = True) -> RetrievalData:
    """Build the registered dataset ``name``, keep the first ``subset`` items of each split (0: all),
    check that no split is empty, then serve the splits from ``--cache`` when ``options.cache``.

    Raises:
        UserError: an unknown dataset (naming the known ones), a ``--data_root`` that is a file, a
            builder's ``ValueError``, or an empty split (naming it and the data folder); builders
            raise their own ``UserError``.
    """
    if subset < 0:
        raise ValueError(f"subset must be >= 0, got {subset}")
    try:
        info = DATASETS.get(name)
    except ValueError as e:  # an unknown name: the known ones are listed
        raise UserError(f"--dataset {name}: {e}") from None
    require_folder(Path(options.root), "--data_root", "pass the folder that holds (or is to hold) the datasets",
                   may_be_missing=True)
    data = info.build(options)  # builders raise UserError for what a user must fix
    if not isinstance(data, RetrievalData):
        raise UserError(f"--dataset {name}: its builder {getattr(info.build, '__module__', '?')}."
                        f"{getattr(info.build, '__qualname__', info.build)} returned {type(data).__name__}, not a "
                        f"RetrievalData; it must return the dataset's splits")
    if subset:
        data = take_subset(data, subset)
    for split in SPLITS:
        if len(getattr(data, split)) == 0:
            raise UserError(f"--dataset {name}: the {split} split is empty; check its files under {options.root}")
    return maybe_cache(data, options, progress=progress)


_CONSEQUENCE = {"query": "each scores AP 0 and still counts in the mean, lowering mAP",
                "database": "never relevant to any query",
                "train": "trained as images of no class"}
_NOUN = {"query": ("query has", "queries have"), "database": ("database image has", "database images have"),
         "train": ("training image has", "training images have")}


def unlabelled_warning(data: RetrievalData) -> str | None:
    """One line warning about items with no label at all, or ``None`` when every item has one.

    For each split holding such items: how many, where the first one is (its list file and line,
    or its id when no line is known), and what it means -- a query scores AP 0 (no database item
    shares a label with it) and still counts in mAP's mean; a database image is never relevant.
    """
    parts = []
    for split in ("query", "database", "train"):
        images = getattr(data, split)
        empty = np.flatnonzero(~np.asarray(images.labels).any(axis=1))
        if len(empty):
            noun = _NOUN[split][len(empty) > 1]
            parts.append(f"{len(empty)} {noun} no label (first: {images.where(int(empty[0]))}); {_CONSEQUENCE[split]}")
    if not parts:
        return None
    return f"warning: {data.name}: " + "; ".join(parts)
