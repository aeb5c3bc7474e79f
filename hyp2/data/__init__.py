"""Datasets and their retrieval protocols, behind one registry.

Adding a dataset is one new module in this package that calls :func:`hyp2.data.base.register`;
every module here not starting with ``_`` is imported on first use of the registry. A builder
returns the full splits; :func:`load_dataset` then applies ``--subset``, refuses empty splits and
applies ``--cache``, the same for every dataset.
"""
from __future__ import annotations

from .._plugins import import_submodules
from ._load import load_dataset, unlabelled_warning
from .base import (DataOptions, DatasetInfo, LabelledImages, ListLines, RetrievalData, _REGISTRY,
                   image_transform)

__all__ = ["DataOptions", "DatasetInfo", "LabelledImages", "ListLines", "RetrievalData", "build_dataset",
           "dataset_info", "dataset_names", "image_transform", "load_dataset", "unlabelled_warning"]


def _load_all() -> None:
    import_submodules(__name__)


def dataset_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; ``ValueError`` naming the known datasets otherwise."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(_REGISTRY))}") from None


def build_dataset(name: str, options: DataOptions) -> RetrievalData:
    """The registered builder's result, as it is (no subset, no cache: see :func:`load_dataset`)."""
    return dataset_info(name).build(options)
