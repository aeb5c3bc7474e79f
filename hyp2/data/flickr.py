"""MIRFLICKR-25K (``flickr``) as a multi-label retrieval dataset, and the tool that prepares its labels.

Data: Huiskes & Lew, "The MIR Flickr Retrieval Evaluation", ACM MIR 2008. Protocol as in HyP²
(Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM
2022, Sec. 4.1) and its official code: the 24,581 images with at least one of the 38 labels (24
concepts and 14 "relevant" ``_r1`` variants), a random permutation split into 1,000 queries,
the next 4,000 for training and the remaining 19,581 as the database (training images are not in
the database), mAP@1000.

Files, under ``<root>/flickr25k/``:

* ``mirflickr/im1.jpg`` ... ``im25000.jpg`` -- the images (``mirflickr25k.zip``);
* ``img.txt`` -- one image a line: a bare name (``im1.jpg``, looked up in ``mirflickr/``) or a path
  relative to ``flickr25k/`` (or absolute);
* ``targets.txt`` -- one line per ``img.txt`` line, 38 space-separated 0/1 labels;
* ``classes.txt`` (optional) -- the column names, written by ``prepare``.

``python -m hyp2.data.flickr prepare --annotations mirflickr25k_annotations_v080 [--out DIR]``
builds ``img.txt``, ``targets.txt`` and ``classes.txt`` from the official annotation folder:
label columns are the annotation files in alphabetical order of their names (``animals.txt``,
``baby.txt``, ``baby_r1.txt``, ...), images without any label are dropped.

The split is the official code's: a permutation ``p`` of the ``img.txt`` line indices (0-based), query
= ``p[:1000]``, train = ``p[1000:5000]``, database = ``p[5000:]``. It is drawn from ``--seed`` on
first use and saved as ``split_seed<seed>.json`` beside the data (a JSON list, the format of the
official repository's ``flickr.txt``), then reused. ``--split_file FILE`` takes such a list instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import UserError, run_command
from ..io import atomic_write_json, atomic_write_text
from ._cache import maybe_cache
from ._lists import ImageFiles, read_class_names, require_files
from .base import DataOptions, LabelledImages, RetrievalData, image_transform, register

FOLDER = "flickr25k"
NUM_QUERY, NUM_TRAIN, TOPK = 1000, 4000, 1000
NUM_IMAGES = 25000
# The 38 annotation files of mirflickr25k_annotations_v080 in alphabetical order of their names,
# i.e. the label columns of targets.txt (the official targets.txt has the same order).
CLASSES = ("animals", "baby", "baby_r1", "bird", "bird_r1", "car", "car_r1", "clouds", "clouds_r1", "dog",
           "dog_r1", "female", "female_r1", "flower", "flower_r1", "food", "indoor", "lake", "male", "male_r1",
           "night", "night_r1", "people", "people_r1", "plant_life", "portrait", "portrait_r1", "river",
           "river_r1", "sea", "sea_r1", "sky", "structures", "sunset", "transport", "tree", "tree_r1", "water")


# --------------------------------------------------------------------------------------- prepare


def prepare(annotations: Path, out: Path, num_images: int = NUM_IMAGES) -> dict:
    """Build ``img.txt``, ``targets.txt`` and ``classes.txt`` in ``out`` from an annotation folder.

    Args:
        annotations: folder with one ``<concept>.txt`` per label, each listing image numbers
            (1..``num_images``) one a line; ``README.txt`` is ignored.
        out: destination folder (created); each file is written atomically.
        num_images: the collection size; numbers outside 1..num_images are errors.

    Returns:
        ``{"images": kept, "dropped": images without labels, "classes": C, "out": str(out)}``.

    Raises:
        UserError: missing folder, no annotation files, a line that is not an image number in range.
    """
    annotations, out = Path(annotations), Path(out)
    if not annotations.is_dir():
        raise UserError(f"annotation folder {annotations} does not exist; unpack mirflickr25k_annotations_v080.zip "
                        f"and pass its folder with --annotations")
    # Plain code-point order of the file names: "baby.txt" < "baby_r1.txt" because "." < "_".
    files = sorted((p for p in annotations.iterdir() if p.is_file() and p.suffix == ".txt"
                    and p.name.lower() != "readme.txt"), key=lambda p: p.name)
    if not files:
        raise UserError(f"{annotations} holds no annotation files (<concept>.txt); is it the "
                        f"mirflickr25k_annotations_v080 folder?")
    labels = np.zeros((num_images, len(files)), np.uint8)
    for col, path in enumerate(files):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            token = line.strip()
            if not token:
                continue
            if not token.isdigit() or not 1 <= int(token) <= num_images:
                raise UserError(f"{path} line {lineno}: {token!r} is not an image number between 1 and {num_images}")
            labels[int(token) - 1, col] = 1
    keep = np.flatnonzero(labels.any(axis=1))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classes.txt", "".join(p.stem + "\n" for p in files))
    atomic_write_text(out / "targets.txt", "".join(" ".join(map(str, labels[i])) + "\n" for i in keep))
    atomic_write_text(out / "img.txt", "".join(f"im{i + 1}.jpg\n" for i in keep))
    return {"images": int(len(keep)), "dropped": int(num_images - len(keep)), "classes": len(files), "out": str(out)}


# --------------------------------------------------------------------------------------- reading


def image_path(folder: Path, line: str) -> str:
    """Where an ``img.txt`` entry lives: bare names in ``mirflickr/``, paths relative to ``folder``."""
    if os.path.isabs(line):
        return line
    if "/" in line or "\\" in line:
        return str(folder / line)
    return str(folder / "mirflickr" / line)


def read_annotation_files(folder: Path) -> tuple[list[str], np.ndarray]:
    """``img.txt`` lines and the (N, C) uint8 ``targets.txt`` matrix, checked against each other."""
    img_txt, targets_txt = folder / "img.txt", folder / "targets.txt"
    for path in (img_txt, targets_txt):
        if not path.is_file():
            raise UserError(f"{path} is missing; build img.txt and targets.txt with `python -m hyp2.data.flickr "
                            f"prepare --annotations mirflickr25k_annotations_v080 --out {folder}`, and unpack the "
                            f"images into {folder / 'mirflickr'}")
    names = [line.strip() for line in img_txt.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows: list[list[str]] = []
    width = None
    for lineno, line in enumerate(targets_txt.read_text(encoding="utf-8").splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        width = width or len(tokens)
        if len(tokens) != width:
            raise UserError(f"{targets_txt} line {lineno}: {len(tokens)} labels, earlier lines have {width}")
        for col, value in enumerate(tokens, start=1):
            if value != "0" and value != "1":
                raise UserError(f"{targets_txt} line {lineno}: label {col} is {value!r}, labels must be 0 or 1")
        rows.append(tokens)
    if len(rows) != len(names):
        raise UserError(f"{img_txt} lists {len(names)} images but {targets_txt} has {len(rows)} label lines; "
                        f"they must match line by line (rebuild both with `python -m hyp2.data.flickr prepare`)")
    if not names:
        raise UserError(f"{img_txt} lists no images")
    return names, np.array(rows, dtype=np.uint8)


def validate_permutation(perm: object, n: int, source: str) -> np.ndarray:
    """Check that ``perm`` is a list holding every index 0..n-1 exactly once; return it as int64.

    Raises:
        UserError: not a list of integers, an index out of range, a duplicate, or the wrong length.
    """
    if not isinstance(perm, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in perm):
        raise UserError(f"split file {source} must hold a JSON list of integers (indices of img.txt lines)")
    for pos, v in enumerate(perm):
        if not 0 <= v < n:
            raise UserError(f"split file {source}: index {v} at position {pos} is outside 0..{n - 1} "
                            f"(img.txt has {n} lines)")
    seen: dict[int, int] = {}
    for pos, v in enumerate(perm):
        if v in seen:
            raise UserError(f"split file {source}: index {v} appears twice (positions {seen[v]} and {pos})")
        seen[v] = pos
    if len(perm) != n:
        raise UserError(f"split file {source} has {len(perm)} indices but img.txt has {n} lines; it must list every "
                        f"line index once (first the queries, then the training images, then the database)")
    return np.asarray(perm, dtype=np.int64)


def load_permutation(folder: Path, n: int, seed: int, split_file: Path | None) -> tuple[np.ndarray, Path]:
    """The split permutation: from ``split_file``, else ``folder/split_seed<seed>.json`` (drawn and
    saved on first use). Returns ``(permutation (n,), the file it came from)``."""
    if split_file is None:
        path = folder / f"split_seed{seed}.json"
        if not path.exists():
            perm = np.random.default_rng(seed).permutation(n)
            atomic_write_json(path, [int(v) for v in perm])
            return perm, path
        hint = f"; delete {path} to draw a new split with seed {seed}"
    else:
        path, hint = Path(split_file), ""
        if not path.is_file():
            raise UserError(f"split file {path} does not exist (--split_file)")
    try:
        perm = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read split file {path}: {e}{hint}") from None
    try:
        return validate_permutation(perm, n, str(path)), path
    except UserError as e:
        raise UserError(f"{e}{hint}") from None


def build_flickr(options: DataOptions, num_query: int = NUM_QUERY, num_train: int = NUM_TRAIN,
                 progress: bool = True) -> RetrievalData:
    """MIRFLICKR-25K under the HyP² protocol (see the module docstring)."""
    if num_query < 1 or num_train < 1:
        raise ValueError(f"num_query and num_train must be >= 1, got {num_query}, {num_train}")
    root = Path(options.root)
    folder = root / FOLDER
    names, labels = read_annotation_files(folder)
    n = len(names)
    if n <= num_query + num_train:
        raise UserError(f"{folder / 'img.txt'} lists {n} images; the protocol needs more than "
                        f"{num_query} queries + {num_train} training images")
    perm, _ = load_permutation(folder, n, options.seed, options.split_file)
    classes = read_class_names(folder / "classes.txt", labels.shape[1])
    if classes is None:
        classes = CLASSES if labels.shape[1] == len(CLASSES) else tuple(f"class{i}" for i in range(labels.shape[1]))
    paths = [image_path(folder, name) for name in names]
    require_files(paths, f"Flickr-25k list {folder / 'img.txt'}")
    ids = [os.path.relpath(p, root) for p in paths]
    size = options.image_size

    def split(index: np.ndarray, train: bool) -> LabelledImages:
        return LabelledImages([ids[i] for i in index], labels[index], ImageFiles([paths[i] for i in index]),
                              image_transform(size, train))

    query = split(perm[:num_query], False)
    train = split(perm[num_query:num_query + num_train], True)
    database = split(perm[num_query + num_train:], False)
    data = RetrievalData("flickr", tuple(classes), train, query, database, topk=min(TOPK, len(database)))
    return maybe_cache(data, options, progress=progress)


@register("flickr", "MIRFLICKR-25K: 38 labels, 1,000 queries / 4,000 train / rest database (seeded split), mAP@1000")
def build(options: DataOptions) -> RetrievalData:
    return build_flickr(options)


# ------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyp2.data.flickr",
                                     description="Tools for the MIRFLICKR-25K dataset.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="build img.txt, targets.txt and classes.txt from the annotation folder")
    p.add_argument("--annotations", required=True, type=Path,
                   help="the unpacked mirflickr25k_annotations_v080 folder (38 <concept>.txt files)")
    p.add_argument("--out", type=Path, default=DataOptions().root / FOLDER,
                   help="destination folder, normally <data_root>/flickr25k (default: %(default)s)")
    p.add_argument("--num_images", type=int, default=NUM_IMAGES,
                   help="number of images in the collection (default: %(default)s)")
    args = parser.parse_args(argv)

    def body():
        counts = prepare(args.annotations, args.out, args.num_images)
        print(f"wrote {counts['images']} images x {counts['classes']} labels to {counts['out']} "
              f"(img.txt, targets.txt, classes.txt); {counts['dropped']} of {args.num_images} images "
              f"had no label and were left out")
        if counts["classes"] != len(CLASSES):
            print(f"note: the official annotation folder has {len(CLASSES)} label files, this one has "
                  f"{counts['classes']}", file=sys.stderr)

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
