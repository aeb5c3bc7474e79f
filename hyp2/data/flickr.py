"""MIRFLICKR-25K (``flickr``) on the HyP² authors' split, and the tool that prepares labels from the annotations.

Data: Huiskes & Lew, "The MIR Flickr Retrieval Evaluation", ACM MIR 2008. Protocol as in HyP²
(Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM
2022, Sec. 4.1) and its official code: the 24,581 images with at least one of the 38 labels (24
concepts and 14 "relevant" ``_r1`` variants), 1,000 queries, 4,000 training images and the
remaining 19,581 as the database (training images are not in the database), mAP@1000.

Files, under ``<root>/flickr25k/``:

* ``mirflickr/im1.jpg`` ... ``im25000.jpg`` -- the images (``mirflickr25k.zip``, placed by the user);
* ``img.txt`` -- one image a line: a bare name (``im1.jpg``, looked up in ``mirflickr/``) or a path
  relative to ``flickr25k/`` (or absolute), inside the data root;
* ``targets.txt`` -- one line per ``img.txt`` line, 38 space-separated 0/1 labels;
* ``flickr.txt`` -- the official split: a JSON list of the 24,581 ``img.txt`` line indices (0-based);
* ``classes.txt`` (optional) -- the column names, written by ``prepare``.

When ``img.txt`` and ``targets.txt`` are missing, the authors' files are fetched from their
repository at a pinned commit, with ``flickr.txt``, and verified by git blob id
(:mod:`hyp2.data._pinned`). Their ``img.txt`` is not in numeric order (``im18025.jpg``,
``im18678.jpg``, ...): ``flickr.txt`` indexes *that* order.

The split, as the official code applies it: a permutation ``p`` of the ``img.txt`` line indices,
query = ``p[:1000]``, train = ``p[1000:5000]``, database = ``p[5000:]``. ``p`` comes from, in order:

1. ``--split_file FILE``, a JSON list in the format of ``flickr.txt``, indexing the ``img.txt`` present;
2. ``flickr.txt``, when ``img.txt`` is the authors' file (fetched if missing; the official split);
3. otherwise (an ``img.txt`` of the user's own, e.g. from ``prepare``, whose order ``flickr.txt`` does
   not index): drawn from ``--seed`` on first use, saved as ``split_seed<seed>.json`` beside the data,
   then reused.

The run's provenance names the one used.

``python -m hyp2.data.flickr prepare --annotations mirflickr25k_annotations_v080 [--data_root DIR]``
builds ``img.txt``, ``targets.txt`` and ``classes.txt`` (in ``<data_root>/flickr25k``, or ``--out``)
from the official annotation folder: label columns are the annotation files in alphabetical order
of their names (``animals.txt``, ``baby.txt``, ``baby_r1.txt``, ...), images without any label are
dropped, and ``img.txt`` is in numeric order.
"""
from __future__ import annotations

import logging
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import ArgumentParser, UserError, run_command
from ..io import parse_json
from ..validate import check_int, is_int
from ._download import git_blob
from ._lists import (ImageFiles, check_labels, default_class_names, output_folder, read_class_names, read_text,
                     require_files, require_folder, require_inside, write_list_file)
from ._pinned import HYP2_REPO, Found, ensure_pinned, pinned
from .base import DataOptions, LabelledImages, ListLines, RetrievalData, image_transform, DATASETS
from ..logs import notice

log = logging.getLogger("hyp2")

FOLDER = "flickr25k"
NUM_QUERY, NUM_TRAIN, TOPK = 1000, 4000, 1000
NUM_IMAGES = 25000
#: the largest --num_images prepare accepts: its label matrix takes num_images x 38 bytes (380 MB here)
MAX_IMAGES = 10_000_000
# The 38 annotation files of mirflickr25k_annotations_v080 in alphabetical order of their names,
# i.e. the label columns of targets.txt (the official targets.txt has the same order).
CLASSES = ("animals", "baby", "baby_r1", "bird", "bird_r1", "car", "car_r1", "clouds", "clouds_r1", "dog",
           "dog_r1", "female", "female_r1", "flower", "flower_r1", "food", "indoor", "lake", "male", "male_r1",
           "night", "night_r1", "people", "people_r1", "plant_life", "portrait", "portrait_r1", "river",
           "river_r1", "sea", "sea_r1", "sky", "structures", "sunset", "transport", "tree", "tree_r1", "water")
#: The authors' label files and split (git blob ids and SHA-256: :mod:`hyp2.data._pinned`).
OFFICIAL_LISTS = pinned("flickr")
OFFICIAL_SPLIT = pinned("flickr split")[0]
LABEL_FILES = ("img.txt", "targets.txt", "classes.txt")
PREPARE_HINT = ("; or build them from the annotations with `python -m hyp2.data.flickr prepare --annotations "
                "mirflickr25k_annotations_v080 --data_root {root}` (a split drawn from --seed then applies)")
IMAGES_HINT = ("; the images come from mirflickr25k.zip (press.liacs.nl/mirflickr): unpack them so that "
               "{folder}/mirflickr/im1.jpg exists")


# --------------------------------------------------------------------------------------- prepare


def _annotation_files(annotations: Path) -> list[Path]:
    require_folder(annotations, "annotation folder", "unpack mirflickr25k_annotations_v080.zip and pass its folder "
                                                     "with --annotations")
    # Plain code-point order of the file names: "baby.txt" < "baby_r1.txt" because "." < "_".
    files = sorted((p for p in annotations.iterdir() if p.is_file() and p.suffix == ".txt"
                    and p.name.lower() != "readme.txt"), key=lambda p: p.name)
    if not files:
        raise UserError(f"{annotations} holds no annotation files (<concept>.txt); is it the "
                        f"mirflickr25k_annotations_v080 folder?")
    return files


def prepare(annotations: Path, out: Path, num_images: int = NUM_IMAGES, overwrite: bool = False) -> dict:
    """Build ``img.txt``, ``targets.txt`` and ``classes.txt`` in ``out`` from an annotation folder.

    Args:
        annotations: folder with one ``<concept>.txt`` per label, each listing image numbers
            (1..``num_images``) one a line; ``README.txt`` is ignored.
        out: destination folder (created); each file is written atomically.
        num_images: the collection size (1..:data:`MAX_IMAGES`); numbers outside 1..num_images are errors.
        overwrite: replace those files when ``out`` already holds them (otherwise a UserError).

    Returns:
        ``{"images": kept, "dropped": images without labels, "classes": C, "out": str(out)}``.

    Raises:
        UserError: missing folder, no annotation files, a file that is not UTF-8 text, a line that
            is not an image number in range, ``out`` a file or already holding the files.
    """
    num_images = check_int("flickr prepare", "num_images", num_images, minimum=1)
    check_int("flickr prepare", "num_images", num_images, maximum=MAX_IMAGES)
    annotations, out = Path(annotations), Path(out)
    files = _annotation_files(annotations)
    labels = np.zeros((num_images, len(files)), np.uint8)
    for col, path in enumerate(files):
        for lineno, line in enumerate(read_text(path, "annotation file").splitlines(), start=1):
            token = line.strip()
            if not token:
                continue
            if not token.isdigit() or not 1 <= int(token) <= num_images:
                raise UserError(f"{path} line {lineno}: {token!r} is not an image number between 1 and {num_images}")
            labels[int(token) - 1, col] = 1
    keep = np.flatnonzero(labels.any(axis=1))
    output_folder(out, LABEL_FILES, overwrite)
    write_list_file(out / "classes.txt", "".join(p.stem + "\n" for p in files), "class-name file")
    write_list_file(out / "targets.txt", "".join(" ".join(map(str, labels[i])) + "\n" for i in keep), "label file")
    write_list_file(out / "img.txt", "".join(f"im{i + 1}.jpg\n" for i in keep), "image list")
    return {"images": int(len(keep)), "dropped": int(num_images - len(keep)), "classes": len(files), "out": str(out)}


# --------------------------------------------------------------------------------------- reading


def image_path(folder: Path, line: str) -> str:
    """Where an ``img.txt`` entry lives: bare names in ``mirflickr/``, paths relative to ``folder``."""
    if os.path.isabs(line):
        return line
    if "/" in line or "\\" in line:
        return str(folder / line)
    return str(folder / "mirflickr" / line)


def read_annotation_files(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
    """``img.txt`` lines, the (N, C) uint8 ``targets.txt`` matrix, checked against each other, the
    ``targets.txt`` line number of each row, and the ``img.txt`` line number of each name."""
    img_txt, targets_txt = folder / "img.txt", folder / "targets.txt"
    numbered = [(n, line.strip()) for n, line in enumerate(read_text(img_txt, "Flickr-25k image list").splitlines(), 1)
                if line.strip()]
    names = [name for _, name in numbered]
    rows: list[list[str]] = []
    numbers: list[int] = []
    width = None
    for lineno, line in enumerate(read_text(targets_txt, "Flickr-25k label file").splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        width = width or len(tokens)
        if len(tokens) != width:
            raise UserError(f"{targets_txt} line {lineno}: {len(tokens)} labels, earlier lines have {width}")
        check_labels(targets_txt, lineno, tokens)
        rows.append(tokens)
        numbers.append(lineno)
    if len(rows) != len(names):
        raise UserError(f"{img_txt} lists {len(names)} images but {targets_txt} has {len(rows)} label lines; "
                        f"they must match line by line (rebuild both with `python -m hyp2.data.flickr prepare`)")
    if not names:
        raise UserError(f"{img_txt} lists no images")
    return names, np.array(rows, dtype=np.uint8), np.array(numbers, dtype=np.int64), [n for n, _ in numbered]


def validate_permutation(perm: object, n: int, source: str) -> np.ndarray:
    """Check that ``perm`` is a list holding every index 0..n-1 exactly once; return it as int64.

    Raises:
        UserError: not a list of integers, an index out of range, a duplicate, or the wrong length.
    """
    if not isinstance(perm, list) or not all(is_int(v) for v in perm):
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


def read_permutation(path: Path, n: int, hint: str = "") -> np.ndarray:
    """The permutation held by the split file ``path`` (see :func:`validate_permutation`); ``hint`` is
    appended to error messages."""
    try:
        perm = parse_json(read_text(path, "split file"))
    except ValueError as e:
        raise UserError(f"cannot read split file {path}: {e}{hint}") from None
    except UserError as e:
        raise UserError(f"{e}{hint}") from None
    try:
        return validate_permutation(perm, n, str(path))
    except UserError as e:
        raise UserError(f"{e}{hint}") from None


def seeded_permutation(folder: Path, n: int, seed: int) -> tuple[np.ndarray, Path]:
    """``folder/split_seed<seed>.json``, drawn from ``seed`` and saved on first use; ``(permutation, path)``."""
    path = folder / f"split_seed{seed}.json"
    if not path.exists():
        perm = np.random.default_rng(seed).permutation(n)
        write_list_file(path, json.dumps([int(v) for v in perm], indent=2) + "\n", "split file")
        return perm, path
    return read_permutation(path, n, f"; delete {path} to draw a new split with seed {seed}"), path


def choose_split(folder: Path, n: int, options: DataOptions, lists: Found, progress: bool) -> tuple[np.ndarray, str]:
    """The split permutation and a line saying where it comes from (see the module docstring)."""
    img_txt = folder / "img.txt"
    if options.split_file is not None:
        path = Path(options.split_file)
        if path.is_dir():
            raise UserError(f"--split_file {path} is a folder, not a file; pass the JSON file holding the split")
        if not path.is_file():
            raise UserError(f"split file {path} does not exist (--split_file)")
        note = f"--split_file {path} (git blob {git_blob(path)[:10]}), indices into {img_txt}"
        return read_permutation(path, n), note
    if lists.official:
        found = ensure_pinned(folder, (OFFICIAL_SPLIT,), HYP2_REPO, "Flickr-25k", download=options.download,
                              progress=progress)
        path = folder / OFFICIAL_SPLIT.name
        if not found.official:
            raise UserError(f"{path} is not the official split file of {HYP2_REPO.describe()} (git blob "
                            f"{found.blobs[OFFICIAL_SPLIT.name][:10]}, expected {OFFICIAL_SPLIT.git_blob[:10]}); "
                            f"delete it to fetch the official one, or pass your own with --split_file")
        note = f"the official split {path} of {HYP2_REPO.describe()}, indices into {img_txt}"
        return read_permutation(path, n), note
    perm, path = seeded_permutation(folder, n, options.seed)
    return perm, (f"drawn from --seed {options.seed} and saved in {path} ({img_txt} is not the authors' file, so "
                  f"their split does not apply)")


def build_flickr(options: DataOptions, num_query: int = NUM_QUERY, num_train: int = NUM_TRAIN,
                 progress: bool = True) -> RetrievalData:
    """MIRFLICKR-25K under the HyP² protocol (see the module docstring)."""
    if num_query < 1 or num_train < 1:
        raise ValueError(f"num_query and num_train must be >= 1, got {num_query}, {num_train}")
    root = Path(options.root)
    folder = root / FOLDER
    lists = ensure_pinned(folder, OFFICIAL_LISTS, HYP2_REPO, "Flickr-25k", download=options.download,
                          progress=progress, alternative=PREPARE_HINT.format(root=root))
    names, labels, lines, name_lines = read_annotation_files(folder)
    n = len(names)
    if n <= num_query + num_train:
        raise UserError(f"{folder / 'img.txt'} lists {n} images; the protocol needs more than "
                        f"{num_query} queries + {num_train} training images")
    perm, split_note = choose_split(folder, n, options, lists, progress)
    classes = read_class_names(folder / "classes.txt", labels.shape[1])
    if classes is None:
        classes = CLASSES if labels.shape[1] == len(CLASSES) else default_class_names(labels.shape[1])
    require_inside(names, folder, root, folder / "img.txt", name_lines)
    paths = [image_path(folder, name) for name in names]
    require_files(paths, f"Flickr-25k list {folder / 'img.txt'}", IMAGES_HINT.format(folder=folder))
    ids = [os.path.relpath(p, root) for p in paths]
    size = options.image_size

    def split(index: np.ndarray, train: bool) -> LabelledImages:
        return LabelledImages([ids[i] for i in index], labels[index], ImageFiles([paths[i] for i in index]),
                              image_transform(size, train), ListLines(folder / "targets.txt", lines[index]))

    query = split(perm[:num_query], False)
    train = split(perm[num_query:num_query + num_train], True)
    database = split(perm[num_query + num_train:], False)
    split_note += (f"; query = the first {num_query}, train = the next {num_train}, database = the other "
                   f"{len(database)}")
    provenance = {"lists": lists.provenance(folder, HYP2_REPO), "split": split_note}
    return RetrievalData("flickr", tuple(classes), train, query, database, topk=min(TOPK, len(database)),
                         provenance=provenance)


@DATASETS.register(
    "flickr", "MIRFLICKR-25K: 38 labels, the HyP² authors' split (fetched): 1,000 queries / 4,000 train / "
    "19,581 database, mAP@1000", flags=("split_file",))
def build(options: DataOptions) -> RetrievalData:
    return build_flickr(options)


# ------------------------------------------------------------------------------------------- CLI


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m hyp2.data.flickr", description="Tools for the MIRFLICKR-25K dataset.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="build img.txt, targets.txt and classes.txt from the annotation folder")
    p.add_argument("--annotations", required=True, type=Path,
                   help="the unpacked mirflickr25k_annotations_v080 folder (38 <concept>.txt files)")
    p.add_argument("--data_root", type=Path, default=DataOptions().root,
                   help="the data root; the files go to <data_root>/flickr25k (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="write them to this folder instead")
    p.add_argument("--num_images", type=int, default=NUM_IMAGES,
                   help="number of images in the collection (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace img.txt, targets.txt, classes.txt if present")
    return parser


def _prepare_command(args) -> None:
    if args.num_images < 1:
        raise UserError(f"--num_images {args.num_images}: must be at least 1 (MIRFLICKR-25K has {NUM_IMAGES})")
    if args.num_images > MAX_IMAGES:
        raise UserError(f"--num_images {args.num_images}: must be at most {MAX_IMAGES:,} (MIRFLICKR-25K has "
                        f"{NUM_IMAGES:,}); give the number of images of the collection the annotations describe")
    if args.out is None:
        require_folder(args.data_root, "--data_root", "pass the folder that holds (or is to hold) flickr25k",
                       may_be_missing=True)
    out = args.out if args.out is not None else args.data_root / FOLDER
    was_official = (out / "img.txt").is_file() and git_blob(out / "img.txt") == OFFICIAL_LISTS[0].git_blob
    counts = prepare(args.annotations, out, args.num_images, overwrite=args.overwrite)
    log.info(f"wrote {counts['images']} images x {counts['classes']} labels to {counts['out']} "
          f"(img.txt, targets.txt, classes.txt); {counts['dropped']} of {args.num_images} images "
          f"had no label and were left out")
    if was_official:
        notice(f"note: this replaced the HyP² authors' img.txt; their split (flickr.txt) indexes their order, so "
               f"runs on {out} now draw their split from --seed")
    if counts["classes"] != len(CLASSES):
        notice(f"note: the official annotation folder has {len(CLASSES)} label files, this one has "
               f"{counts['classes']}")


def main(argv: list[str] | None = None) -> int:
    def body():
        args = build_parser().parse_args(argv)
        if args.command == "prepare":
            _prepare_command(args)

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
