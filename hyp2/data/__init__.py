"""Datasets and their retrieval protocols, behind one registry, :data:`DATASETS`.

Adding a dataset is one new module in this package whose builder is decorated with
``@DATASETS.register(name, description)``; every module here not starting with ``_`` is imported
on first use of the registry. A builder returns the full splits; :func:`load_dataset` then applies
``--subset``, refuses empty splits and applies ``--cache``, the same for every dataset.
"""
from __future__ import annotations

from ._load import load_dataset, unlabelled_warning
from .base import DATASETS, DataOptions, DatasetInfo, LabelledImages, ListLines, RetrievalData, image_transform
# the paper's datasets first: the registry lists them in the order their modules register
from . import voc, flickr, nuswide, coco, custom, demo  # noqa: E402,F401  isort: skip

__all__ = ["DATASETS", "DataOptions", "DatasetInfo", "LabelledImages", "ListLines", "RetrievalData", "build_dataset",
           "image_transform", "load_dataset", "unlabelled_warning"]


def build_dataset(name: str, options: DataOptions) -> RetrievalData:
    """The registered builder's result, as it is (no subset, no cache: see :func:`load_dataset`)."""
    return DATASETS.get(name).build(options)
