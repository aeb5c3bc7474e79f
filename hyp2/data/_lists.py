"""Image-list files and the image loader shared by every dataset read from disk.

The list format is the one HashNet (Cao et al., "HashNet: Deep Learning to Hash by Continuation",
ICCV 2017) and DeepHash-pytorch ship for NUS-WIDE, and the one HyP² (Xu et al., ACM MM 2022) reads:
one image a line, a path relative to the dataset folder followed by C space-separated 0/1 labels::

    images/0001.jpg 0 1 0 0 1
    images/0002.jpg 1 0 0 0 0

Paths may not contain whitespace (the format has no quoting). Blank lines are ignored.
Every parsing problem stops with the file, the line number and the reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFile

from ..errors import UserError

# As the official code does: accept JPEGs whose last bytes are missing (NUS-WIDE and MIRFLICKR hold a
# few) instead of stopping a long run; PIL fills the missing rows with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = True


def read_list(path: Path, num_labels: int | None = None, what: str = "image list",
              labels_from: str = "") -> tuple[list[str], np.ndarray]:
    """Parse one list file.

    Args:
        path: the list file.
        num_labels: the number of label columns every line must have; ``None`` infers it from the
            first line (then every other line must agree).
        what: how error messages name the file's role (e.g. "NUS-WIDE train list").
        labels_from: where ``num_labels`` comes from, for error messages (e.g. "as in train.txt").

    Returns:
        ``(paths, labels)``: N relative paths as written, and an (N, C) uint8 0/1 matrix.

    Raises:
        UserError: unreadable file, a line with the wrong number of labels or a label not 0/1, no lines.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} {path}: {e}") from None
    paths: list[str] = []
    rows: list[list[str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if num_labels is None:
            num_labels = len(tokens) - 1
            if num_labels < 1:
                raise UserError(f"{path} line {lineno}: expected an image path followed by 0/1 labels, "
                                f"found only {tokens[0]!r}")
        if len(tokens) != num_labels + 1:
            source = f" ({labels_from})" if labels_from else ""
            raise UserError(f"{path} line {lineno}: expected an image path followed by {num_labels} labels{source}, "
                            f"found {len(tokens) - 1} (paths may not contain spaces)")
        labels = tokens[1:]
        for col, value in enumerate(labels, start=1):
            if value != "0" and value != "1":
                raise UserError(f"{path} line {lineno}: label {col} is {value!r}, labels must be 0 or 1")
        paths.append(tokens[0])
        rows.append(labels)
    if not paths:
        raise UserError(f"{what} {path} has no image lines; expected lines like 'images/0001.jpg 0 1 0 ...'")
    labels = np.array(rows, dtype=np.uint8)  # "0"/"1" strings convert exactly
    return paths, labels


def read_class_names(path: Path, num_classes: int) -> tuple[str, ...] | None:
    """Class names, one a line, from an optional ``classes.txt``; ``None`` when it does not exist.

    Raises:
        UserError: the file does not hold exactly ``num_classes`` non-empty names.
    """
    path = Path(path)
    if not path.exists():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != num_classes:
        raise UserError(f"{path} lists {len(names)} class names but the image lists have {num_classes} label "
                        f"columns; write one name a line, in label-column order")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"{path}: class name {dup!r} appears more than once")
    return tuple(names)


def default_class_names(num_classes: int) -> tuple[str, ...]:
    return tuple(f"class{i}" for i in range(num_classes))


class ImageFiles:
    """Picklable loader: ``loader(i)`` opens image ``i`` from disk as a PIL RGB image.

    Holds only the path strings, so sending it to DataLoader workers is cheap.

    Raises (at load time, in the worker):
        UserError: the file is missing or cannot be decoded, naming the path and the reason.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [os.fspath(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(f"cannot open image {path}: {e}") from None

    def __repr__(self) -> str:
        return f"ImageFiles({len(self.paths)} files)"


def require_files(paths: Sequence[str], what: str) -> None:
    """Stop with the first path that does not exist (a cheap check before a long run starts)."""
    for p in paths:
        if not os.path.isfile(p):
            raise UserError(f"{what}: image {p} does not exist")
