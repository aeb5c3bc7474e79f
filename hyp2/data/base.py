"""What every dataset provides: labelled image splits, transforms, and the dataset registry.

A dataset module (one file in ``hyp2/data/``) registers a builder with :func:`register`; the
builder takes :class:`DataOptions` and returns :class:`RetrievalData` (train / query / database
splits plus the protocol's mAP@K). Images are decoded lazily, one item at a time, inside
DataLoader workers; nothing holds a whole dataset decoded in memory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataOptions:
    """Everything a dataset builder may need; builders ignore what does not concern them.

    Attributes:
        root: the data root (``--data_root``); each dataset lives in its own folder below it.
        image_size: side of the square the images are resized to (per backbone, or ``--image_size``).
        seed: seed for splits drawn at random (Flickr-25k) and generated data (demo uses its own).
        cache: keep resized uint8 images in a memory-mapped file (``--cache``).
        voc_url: base URL replacing the official VOC host (``--voc_url`` / ``HYP2_VOC_URL``).
        check_md5: verify archives against their published checksum -- VOC's MD5, COCO's size
            (``--no_md5`` turns it off, for a mirror's repacked archives). List files fetched from
            the authors' repositories are always verified.
        split_file: a JSON list of indices fixing a split (Flickr-25k, ``--split_file``; it wins over
            the authors' ``flickr.txt``).
        download: allow network downloads (archives, the authors' list files) when files are missing.
    """

    root: Path = Path("data")
    image_size: int = 224
    seed: int = 0
    cache: bool = False
    voc_url: str | None = None
    check_md5: bool = True
    split_file: Path | None = None
    download: bool = True


def image_transform(size: int, train: bool) -> Callable[[Image.Image], torch.Tensor]:
    """The official pipeline: resize to ``size``×``size`` (no crop), random horizontal flip when
    training, ImageNet normalisation. Returns a callable PIL RGB image -> (3, size, size) float32."""
    return _Transform(size, train)


class _Transform:
    # A picklable class (not a lambda) so DataLoader workers can receive it.
    def __init__(self, size: int, train: bool):
        self.size, self.train = int(size), bool(train)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if img.size != (self.size, self.size):
            # BILINEAR with antialias is what torchvision's Resize does on PIL images.
            img = img.resize((self.size, self.size), Image.BILINEAR)
        from torchvision.transforms.functional import pil_to_tensor  # here: importing hyp2.data stays light

        x = pil_to_tensor(img)
        return normalize_uint8(x, flip=self.train and bool(torch.rand(()) < 0.5))

    def __repr__(self) -> str:
        return f"image_transform(size={self.size}, train={self.train})"


def normalize_uint8(x: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """uint8 image(s) (..., 3, H, W) -> float32 ImageNet-normalised, optionally flipped left-right."""
    if flip:
        x = x.flip(-1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return (x.to(torch.float32) / 255.0 - mean) / std


class ListLines:
    """Where a split's items come from: item ``i`` is line ``lines[i]`` (1-based) of ``file``.

    Kept beside the labels so a message can point at the line to fix ("nus_wide/test.txt line 17");
    one int64 per item, so it costs nothing next to the images.
    """

    def __init__(self, file: str | os.PathLike, lines: Sequence[int] | np.ndarray):
        self.file = os.fspath(file)
        self.lines = np.asarray(lines, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.lines)

    def head(self, n: int) -> "ListLines":
        return ListLines(self.file, self.lines[:n])

    def where(self, i: int) -> str:
        return f"{self.file} line {int(self.lines[i])}"

    def __repr__(self) -> str:
        return f"ListLines({self.file!r}, {len(self.lines)} lines)"


class LabelledImages(Dataset):
    """One split: image identifiers, a (N, C) 0/1 label matrix, and a way to load image ``i``.

    ``__getitem__(i)`` returns ``(image (3, S, S) float32, labels (C,) float32, i)``.

    Args:
        ids: N identifiers (relative paths or names) users see in search results.
        labels: (N, C) array of 0/1.
        load: ``load(i) -> PIL.Image`` in RGB; must be picklable (a bound method or a class).
        transform: PIL image -> tensor, e.g. :func:`image_transform`.
        origin: where each item's labels were read (a list file and N line numbers), or ``None``
            when they come from no line (generated data); messages then name the item's id.
    """

    def __init__(self, ids: Sequence[str], labels: np.ndarray, load: Callable[[int], Image.Image],
                 transform: Callable[[Image.Image], torch.Tensor], origin: ListLines | None = None):
        labels = np.asarray(labels)
        if labels.ndim != 2 or len(ids) != labels.shape[0]:
            raise ValueError(f"labels must be (N, C) with N = len(ids) = {len(ids)}, got {labels.shape}")
        if origin is not None and len(origin) != len(ids):
            raise ValueError(f"origin must give one line per item: {len(origin)} lines for {len(ids)} items")
        self.ids = list(ids)
        self.labels = labels.astype(np.uint8, copy=False)
        self.load = load
        self.transform = transform
        self.origin = origin

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        img = self.load(i)
        return self.transform(img), torch.from_numpy(self.labels[i].astype(np.float32)), i

    def with_transform(self, transform) -> "LabelledImages":
        return LabelledImages(self.ids, self.labels, self.load, transform, self.origin)

    def with_loader(self, load: Callable[[int], Image.Image]) -> "LabelledImages":
        """The same items served by another loader (``--cache``'s memory map)."""
        return LabelledImages(self.ids, self.labels, load, self.transform, self.origin)

    def head(self, n: int) -> "LabelledImages":
        """The first ``n`` items (same loader: item ``i`` stays item ``i``)."""
        origin = None if self.origin is None else self.origin.head(n)
        return LabelledImages(self.ids[:n], self.labels[:n], self.load, self.transform, origin)

    def where(self, i: int) -> str:
        """Where item ``i`` comes from: ``"<list file> line <n>"``, or its id when no line is known."""
        return self.origin.where(i) if self.origin is not None else self.ids[i]


@dataclass(frozen=True)
class RetrievalData:
    """A dataset under its retrieval protocol.

    Attributes:
        name: registry name.
        classes: C class names, in label-column order.
        train, query, database: the splits (train uses the training transform).
        topk: the protocol's K for mAP@K; ``None`` means the whole database.
        provenance: which data and which split a run used, for its log and JSON header: short
            keys mapping to one-line values, strings only (JSON as it is). The keys in use:
            ``"lists"`` -- where the image lists or labels came from (e.g. the official files of a
            third-party repository at a pinned commit, verified; or the user's own files);
            ``"split"`` -- how train / query / database were formed (an official split file,
            ``--split_file``, or drawn from a seed and saved where); ``"subset"`` -- set by
            :func:`hyp2.data.load_dataset` when ``--subset`` kept only the first N of each split.
            Two runs whose provenance differs did not see the same data. Empty when unknown.
    """

    name: str
    classes: tuple[str, ...]
    train: LabelledImages
    query: LabelledImages
    database: LabelledImages
    topk: int | None
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry. ``defaults`` overrides the CLI's defaults for this dataset (the demo
    sets a small backbone and image size, for instance); explicit flags still win. ``flags``
    names the dataset-specific command-line flags it reads (``split_file``, ``voc_url``,
    ``no_md5``); the CLI refuses them for datasets that would ignore them."""

    name: str
    build: Callable[[DataOptions], RetrievalData]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    flags: tuple[str, ...] = ()


def _entry(name: str, build: Callable[[DataOptions], RetrievalData], description: str,
           defaults: dict[str, Any] | None = None, flags: tuple[str, ...] = ()) -> DatasetInfo:
    if not callable(build):
        raise TypeError(f"dataset {name!r}: expected a builder function, got {build!r}")
    return DatasetInfo(name, build, description, dict(defaults or {}), tuple(flags))


#: every dataset, by its ``--dataset`` name: ``@DATASETS.register(name, description, defaults=...,
#: flags=...)`` on a builder ``build(options: DataOptions) -> RetrievalData``
DATASETS: Registry[DatasetInfo] = Registry("dataset", _entry, package="hyp2.data")
