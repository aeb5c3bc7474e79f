"""Image-list files and the image loader shared by every dataset read from disk.

The list format is the one HashNet (Cao et al., "HashNet: Deep Learning to Hash by Continuation",
ICCV 2017) and DeepHash-pytorch ship for NUS-WIDE, and the one HyP² (Xu et al., ACM MM 2022) reads:
one image a line, a path relative to the dataset folder followed by C space-separated 0/1 labels::

    images/0001.jpg 0 1 0 0 1
    images/0002.jpg 1 0 0 0 0

Paths may not contain whitespace (the format has no quoting); a line whose path seems to hold a
space says so. Blank lines are ignored, and so is a UTF-8 byte-order mark at the start of a file
(editors on Windows write one). A path must stay inside the data root (:func:`require_inside`): a
list never makes a run read files elsewhere. Every parsing problem stops with the file, the line
number and the reason.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageFile

from ..errors import UserError
from ..io import write_atomic
from .base import LabelledImages, ListLines, RetrievalData, image_transform

# As the official code does: accept JPEGs whose last bytes are missing (NUS-WIDE and MIRFLICKR hold a
# few) instead of stopping a long run; PIL fills the missing rows with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = True


class ImageList(NamedTuple):
    """A parsed list file: N relative paths as written, an (N, C) uint8 0/1 matrix, and the 1-based
    line number of each image in the file (blank lines are skipped, so they need not be 1..N)."""

    paths: list[str]
    labels: np.ndarray
    lines: np.ndarray


def read_text(path: Path, what: str) -> str:
    """A text file's content (UTF-8, a leading byte-order mark dropped).

    Raises:
        UserError: naming the file and its role when it is missing, a folder, unreadable or not UTF-8.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file; it must be a text file")
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"cannot read {what} {path}: it does not exist") from None
    except UnicodeDecodeError as e:
        raise UserError(f"cannot read {what} {path}: it is not UTF-8 text (byte {e.start} is "
                        f"{e.object[e.start:e.start + 1]!r}); save it as UTF-8") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None


# A token that can only be part of a file name: it has a dot, a slash or a backslash, and is not a number.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _looks_like_path(token: str) -> bool:
    return any(c in token for c in "./\\") and not _NUMBER.fullmatch(token)


def _split_line(path: Path, lineno: int, tokens: list[str], num_labels: int | None, labels_from: str):
    """``(image path, label tokens)`` of one non-blank line, or a UserError saying what is wrong."""
    labels = tokens[1:]
    if (num_labels is None or len(labels) == num_labels) and labels and all(v in ("0", "1") for v in labels):
        return tokens[0], labels  # the common, well-formed line: no further checks (lists have 200,000 lines)
    last_path = max((k for k, t in enumerate(tokens) if _looks_like_path(t)), default=0)
    if last_path > 0:
        name = " ".join(tokens[:last_path + 1])
        raise UserError(f"{path} line {lineno}: the image path {name!r} contains a space; paths may not contain "
                        f"spaces (the format separates fields by spaces): rename the file or folder")
    if num_labels is None and len(tokens) < 2:
        raise UserError(f"{path} line {lineno}: expected an image path followed by 0/1 labels, "
                        f"found only {tokens[0]!r}")
    if num_labels is not None and len(tokens) != num_labels + 1:
        source = f" ({labels_from})" if labels_from else ""
        raise UserError(f"{path} line {lineno}: expected an image path followed by {num_labels} labels{source}, "
                        f"found {len(tokens) - 1} (paths may not contain spaces)")
    check_labels(path, lineno, tokens[1:])
    return tokens[0], tokens[1:]


def check_labels(path: Path, lineno: int, labels: Sequence[str]) -> None:
    """Every label token of a line is "0" or "1"; a UserError naming the file, line and column."""
    for col, value in enumerate(labels, start=1):
        if value != "0" and value != "1":
            raise UserError(f"{path} line {lineno}: label {col} is {value!r}, labels must be 0 or 1")


def read_image_list(path: Path, num_labels: int | None = None, what: str = "image list",
                    labels_from: str = "") -> ImageList:
    """Parse one list file, keeping each image's line number.

    Args:
        path: the list file.
        num_labels: the number of label columns every line must have; ``None`` infers it from the
            first line (then every other line must agree).
        what: how error messages name the file's role (e.g. "NUS-WIDE train list").
        labels_from: where ``num_labels`` comes from, for error messages (e.g. "as in train.txt").

    Raises:
        UserError: unreadable file, a path with a space, a line with the wrong number of labels or a
            label not 0/1, no lines.
    """
    path = Path(path)
    text = read_text(path, what)
    paths: list[str] = []
    rows: list[list[str]] = []
    numbers: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        image, labels = _split_line(path, lineno, tokens, num_labels, labels_from)
        if num_labels is None:
            num_labels = len(labels)
        paths.append(image)
        rows.append(labels)
        numbers.append(lineno)
    if not paths:
        raise UserError(f"{what} {path} has no image lines; expected lines like 'images/0001.jpg 0 1 0 ...'")
    labels = np.array(rows, dtype=np.uint8)  # "0"/"1" strings convert exactly
    return ImageList(paths, labels, np.array(numbers, dtype=np.int64))


def read_list(path: Path, num_labels: int | None = None, what: str = "image list",
              labels_from: str = "") -> tuple[list[str], np.ndarray]:
    """``(paths, labels)`` of :func:`read_image_list` (same arguments and errors)."""
    parsed = read_image_list(path, num_labels, what, labels_from)
    return parsed.paths, parsed.labels


def read_class_names(path: Path, num_classes: int) -> tuple[str, ...] | None:
    """Class names, one a line, from an optional ``classes.txt``; ``None`` when it does not exist.

    Raises:
        UserError: the file is a folder, is not UTF-8, or does not hold exactly ``num_classes``
            distinct non-empty names.
    """
    path = Path(path)
    if not path.exists():
        return None
    names = [line.strip() for line in read_text(path, "class-name file").splitlines() if line.strip()]
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


def require_files(paths: Sequence[str], what: str, hint: str = "") -> None:
    """Stop with the first path that does not exist (a cheap check before a long run starts);
    ``hint`` (e.g. where the images come from) is appended to the message."""
    for p in paths:
        if not os.path.isfile(p):
            raise UserError(f"{what}: image {p} does not exist{hint}")


def outside(path: str, base: Path, root: Path) -> bool:
    """Whether the list entry ``path`` (relative to ``base``, or absolute) names a file outside ``root``.

    Judged on the names (``..`` climbing out, an absolute path elsewhere), not on where links lead: a
    link a user placed inside the root (an image folder on another disk) is theirs to place.
    """
    top = os.path.abspath(root)
    return os.path.commonpath([os.path.abspath(os.path.join(base, path)), top]) != top


def require_inside(paths: Sequence[str], base: Path, root: Path, list_file: Path, lines: Sequence[int]) -> None:
    """Stop at the first list entry that leads outside the data root (see :func:`outside`), naming the
    list file and its line: a list never makes a run read files elsewhere."""
    base_inside = not outside(".", base, root)
    for path, line in zip(paths, lines):
        if base_inside and ".." not in path and not os.path.isabs(path):
            continue  # the common case, decided without touching the path (lists have 200,000 lines)
        if outside(path, base, root):
            raise UserError(f"{list_file} line {int(line)}: the image path {path!r} leads outside the data root "
                            f"{root}; list paths must stay inside it (relative to {base}, no '..' that climbs out)")


def require_folder(path: Path, flag: str, hint: str, *, may_be_missing: bool = False) -> Path:
    """``path`` when it is a folder (or, with ``may_be_missing``, does not exist yet); otherwise one
    :class:`UserError` line saying it does not exist or is a file, with ``hint`` (what to pass instead)."""
    path = Path(path)
    if path.is_dir() or (may_be_missing and not path.exists()):
        return path
    what = "does not exist" if not path.exists() else "is a file, not a folder"
    raise UserError(f"{flag} {path} {what}; {hint}")


def write_list_file(path: Path, text: str, what: str) -> None:
    """``text`` (UTF-8) into ``path`` atomically, after a free-space check; a failed write (a full disk,
    a read-only folder) is one :class:`UserError` line naming the file, and the previous file is kept."""
    data = text.encode("utf-8")
    write_atomic(path, lambda f: f.write(data), what, need=len(data))


def output_folder(out: Path, names: Sequence[str], overwrite: bool) -> Path:
    """Check that ``out`` can receive the files ``names`` of a ``prepare`` command, and create it.

    Raises:
        UserError: ``out`` is a file, cannot be created, or already holds one of ``names`` while
            ``overwrite`` is off (nothing a user made is replaced silently).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give the folder to write {', '.join(names)} into")
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise UserError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them, or choose "
                        f"another --out")
    for n in existing:
        if (out / n).is_dir():
            raise UserError(f"{out / n} is a folder; move it away before writing {n} there")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder --out {out}: {e.strerror or e}") from None
    return out


#: the three files of a dataset in list format, by the split each holds
LISTS = {"train": "train.txt", "query": "test.txt", "database": "database.txt"}


def list_split(list_file: Path, parsed: ImageList, base: Path, role: str, image_size: int, what: str, *,
               root: Path | None = None, hint: str = "", check_files: bool = True) -> LabelledImages:
    """One split from a parsed list file: images at ``base / path`` (checked to stay inside ``root``,
    or ``base`` when ``root`` is None, and to exist unless ``check_files``; ``hint`` says where they
    come from), ids relative to ``root`` (the paths as written when ``root`` is None), the training
    transform for ``role == "train"``, and each item's list line kept for messages."""
    require_inside(parsed.paths, base, base if root is None else root, list_file, parsed.lines)
    paths = [str(base / p) for p in parsed.paths]
    if check_files:
        require_files(paths, f"{what} {role} list {list_file}", hint)
    ids = parsed.paths if root is None else [os.path.relpath(p, root) for p in paths]
    return LabelledImages(ids, parsed.labels, ImageFiles(paths), image_transform(image_size, role == "train"),
                          ListLines(list_file, parsed.lines))


def protocol_data(name: str, classes: Sequence[str], splits: dict[str, LabelledImages], topk: int | None,
                  lists: str) -> RetrievalData:
    """A dataset whose split the list files fix: mAP@``topk`` (capped at the database size), and the
    provenance naming the lists and the split sizes."""
    counts = ", ".join(f"{role} {len(split):,}" for role, split in splits.items())
    return RetrievalData(name, tuple(classes), splits["train"], splits["query"], splits["database"],
                         topk=None if topk is None else min(topk, len(splits["database"])),
                         provenance={"lists": lists, "split": f"as the lists give it ({counts})"})
