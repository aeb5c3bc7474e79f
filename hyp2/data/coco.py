"""MS-COCO 2014 (``coco``) under the HashNet protocol, and the tools that build or check its lists.

Data: Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014 -- the train2014 (82,783)
and val2014 (40,504) images. Protocol: HashNet (Cao et al., "HashNet: Deep Learning to Hash by
Continuation", ICCV 2017), as DeepHash-pytorch (github.com/swuxyj/DeepHash-pytorch) ships it in
``data/coco`` and the later multi-label hashing papers use it: the 122,218 images that carry at least
one of the 80 object categories; 5,000 queries (``test.txt``), a database of the other 117,218
(``database.txt``), 10,000 training images drawn from the database (``train.txt``); mAP@5000.
HyP² (Xu et al., ACM MM 2022) names COCO in its code but reports no result on it.

Files, under ``<root>/coco/``:

* ``train.txt``, ``test.txt``, ``database.txt`` -- one image a line, a path relative to ``coco/``
  and 80 space-separated 0/1 labels (format: :mod:`hyp2.data._lists`), e.g.
  ``train2014/COCO_train2014_000000072095.jpg 0 0 ... 1 ...``. When the folder has none, those of
  DeepHash-pytorch are fetched at a pinned commit and verified by git blob id
  (:mod:`hyp2.data._pinned`); lists of the user's own are used as they are.
* ``train2014/``, ``val2014/`` -- the images. When the lists refer to a folder that is missing,
  ``train2014.zip`` / ``val2014.zip`` found in ``coco/`` are used, or downloaded from the COCO site
  (about 12.6 and 6.2 GiB; resumable, see :mod:`hyp2.data._download`) -- or from the folder URL in
  ``$HYP2_COCO_URL`` -- then extracted safely (:mod:`hyp2.data._extract`). The COCO site publishes
  no checksums: an archive is checked by its size (``--no_md5`` skips that) and every member by
  its CRC-32 while it is extracted.
* ``classes.txt`` (optional) -- the column names; without it, the 80 category names in ascending
  category id order (the order ``prepare`` writes).

``python -m hyp2.data.coco prepare --annotations DIR [--data_root ROOT] [--seed S]`` builds the three
lists from ``DIR/instances_train2014.json`` and ``DIR/instances_val2014.json``
(``annotations_trainval2014.zip``): columns are the categories in ascending id order, images
without any category are dropped, and the split is drawn from the seed with the protocol's
counts. ``python -m hyp2.data.coco check --annotations DIR`` compares the lists in ``coco/`` with
the annotations: whether every listed image is a labelled one and carries the labels the
annotations give it.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ArgumentParser, UserError, run_command
from ..validate import check_int
from ..io import human_bytes, parse_json
from ._download import fetch
from ._extract import extract_into_place
from ._lists import (LISTS, ImageList, list_split, output_folder, protocol_data, read_class_names, read_image_list,
                     read_text, require_folder, write_list_file)
from ._pinned import DEEPHASH_REPO, ensure_pinned, pinned
from .base import DataOptions, RetrievalData, DATASETS

log = logging.getLogger("hyp2")

FOLDER = "coco"
NUM_LABELS = 80
NUM_QUERY, NUM_TRAIN, TOPK = 5000, 10000, 5000
# The 80 object categories in ascending category id (1..90 with gaps), as instances_*2014.json names them.
CLASSES = ("person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
           "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
           "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
           "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
           "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
           "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
           "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
           "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
           "scissors", "teddy bear", "hair drier", "toothbrush")
#: DeepHash-pytorch's lists (git blob ids, and SHA-256 where known: :mod:`hyp2.data._pinned`).
OFFICIAL = pinned("coco")
#: Image set -> size in bytes of its archive on the COCO site (which publishes no checksums).
ARCHIVE_SIZES = {"train2014": 13_510_573_713, "val2014": 6_645_013_297}
BASE_URL = "http://images.cocodataset.org/zips/"
ENV_URL = "HYP2_COCO_URL"
ANNOTATIONS = {"train2014": "instances_train2014.json", "val2014": "instances_val2014.json"}
PREPARE_HINT = ("; or build them from the annotations with `python -m hyp2.data.coco prepare --annotations DIR "
                "--data_root {root}` (DIR holding instances_train2014.json and instances_val2014.json)")


# ------------------------------------------------------------------------------------------ images


def _image_sets(lists: Iterable[ImageList]) -> list[str]:
    """The COCO image sets (``train2014``, ``val2014``) the lists' paths start with."""
    firsts = {p.split("/", 1)[0] for parsed in lists for p in parsed.paths}
    return sorted(firsts & set(ARCHIVE_SIZES))


def ensure_images(folder: Path, image_sets: Iterable[str], *, download: bool = True, base_url: str | None = None,
                  check_size: bool = True, sizes: dict[str, int] | None = None, progress: bool = True) -> None:
    """Make sure ``folder/<set>/`` exists for every image set, from ``folder/<set>.zip`` (found or downloaded).

    Args:
        folder: ``<root>/coco``.
        image_sets: names among :data:`ARCHIVE_SIZES`.
        download: allow network access; without it a missing folder and archive stop with a UserError.
        base_url: folder URL holding the archives (default: ``$HYP2_COCO_URL``, else :data:`BASE_URL`).
        check_size: compare archives with ``sizes`` (``--no_md5`` turns it off: a mirror's repacked zip).
        sizes: image set -> archive size, overriding :data:`ARCHIVE_SIZES` (tests serve their own).
        progress: passed to :func:`hyp2.data._download.fetch`.
    """
    base = (base_url or os.environ.get(ENV_URL) or BASE_URL).rstrip("/") + "/"
    sizes = {**ARCHIVE_SIZES, **(sizes or {})}
    for name in image_sets:
        if (folder / name).is_dir():
            continue
        archive, expected = folder / f"{name}.zip", sizes[name] if check_size else None
        if archive.is_file():
            if expected is not None and archive.stat().st_size != expected:
                raise UserError(f"{archive} is {archive.stat().st_size:,} bytes but the COCO archive has "
                                f"{expected:,}; delete it to download it again, or pass --no_md5 to use it as it is")
        elif not download:
            raise UserError(f"COCO images not found: expected the folder {folder / name} or the archive {archive} "
                            f"(downloads are off; get it from {base}{name}.zip, about {human_bytes(sizes[name])})")
        else:
            hint = (f"; to use a mirror set {ENV_URL} to the folder URL that holds {name}.zip, or put {name}.zip "
                    f"in {folder} yourself")
            fetch(base + f"{name}.zip", archive, digests=None if expected is None else {"size": expected},
                  hint=hint, progress=progress)
        extract_into_place([archive], folder, name, progress=progress)


# ------------------------------------------------------------------------------------------ reading


def build_coco(options: DataOptions, base_url: str | None = None, sizes: dict[str, int] | None = None,
               progress: bool = True) -> RetrievalData:
    """MS-COCO under the HashNet protocol (see the module docstring); ``base_url`` and ``sizes`` as in
    :func:`ensure_images`."""
    root = Path(options.root)
    folder = root / FOLDER
    found = ensure_pinned(folder, OFFICIAL, DEEPHASH_REPO, "MS-COCO", download=options.download, progress=progress,
                          alternative=PREPARE_HINT.format(root=root))
    parsed = {role: read_image_list(folder / name, NUM_LABELS, what=f"COCO {role} list")
              for role, name in LISTS.items()}
    ensure_images(folder, _image_sets(parsed.values()), download=options.download, base_url=base_url,
                  check_size=options.check_md5, sizes=sizes, progress=progress)
    hint = "; the lists refer to the train2014 and val2014 images of the COCO site (cocodataset.org)"
    splits = {role: list_split(folder / LISTS[role], lst, folder, role, options.image_size, "COCO", root=root,
                               hint=hint) for role, lst in parsed.items()}
    classes = read_class_names(folder / "classes.txt", NUM_LABELS) or CLASSES
    return protocol_data("coco", classes, splits, TOPK, found.provenance(folder, DEEPHASH_REPO))


@DATASETS.register(
    "coco", "MS-COCO 2014, 80 categories, HashNet protocol (DeepHash-pytorch lists, fetched): 10,000 train / "
    "5,000 queries / 117,218 database, mAP@5000", flags=("no_md5",))
def build(options: DataOptions) -> RetrievalData:
    return build_coco(options)


# ------------------------------------------------------------------------------------- annotations


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} does not exist; unpack annotations_trainval2014.zip (cocodataset.org) and pass "
                        f"its annotations folder with --annotations")
    try:
        data = parse_json(read_text(path, "COCO annotation file"))
    except ValueError as e:
        raise UserError(f"cannot read COCO annotation file {path}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                       "categories")):
        raise UserError(f"{path} is not a COCO instances file: it needs the lists 'images', 'annotations' and "
                        f"'categories'")
    return data


def read_annotations(annotations: Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Every image of both instance files, in order (train2014 then val2014, by file name), with its
    (N, C) uint8 labels -- columns in ascending category id -- and the C category names.

    Raises:
        UserError: a missing or malformed file, the two files disagreeing on the categories, or an
            annotation naming an unknown image or category.
    """
    require_folder(annotations, "annotation folder", "unpack annotations_trainval2014.zip (cocodataset.org) and pass "
                                                     "its annotations folder with --annotations")
    paths: list[str] = []
    blocks: list[np.ndarray] = []
    categories = None
    for image_set, name in ANNOTATIONS.items():
        path = Path(annotations) / name
        data = _load_json(path)
        try:
            cats = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
            images = sorted((str(im["file_name"]), int(im["id"])) for im in data["images"])
            pairs = [(int(a["image_id"]), int(a["category_id"])) for a in data["annotations"]]
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: an entry lacks a field COCO instance files have ({type(e).__name__}: {e})") \
                from None
        if categories is not None and cats != categories:
            raise UserError(f"{path} lists other categories than {ANNOTATIONS['train2014']}; are they from the same "
                            f"release?")
        categories = cats
        column = {cid: k for k, (cid, _) in enumerate(cats)}
        row = {iid: k for k, (_, iid) in enumerate(images)}
        labels = np.zeros((len(images), len(cats)), np.uint8)
        for iid, cid in pairs:
            if iid not in row or cid not in column:
                raise UserError(f"{path}: an annotation names image {iid} / category {cid}, which the file does not "
                                f"list")
            labels[row[iid], column[cid]] = 1
        paths += [f"{image_set}/{file}" for file, _ in images]
        blocks.append(labels)
    return paths, np.concatenate(blocks), tuple(n for _, n in categories)


def _list_text(paths: list[str], labels: np.ndarray, index: np.ndarray) -> str:
    return "".join(f"{paths[i]} {' '.join(map(str, labels[i]))}\n" for i in index)


def prepare(annotations: Path, out: Path, seed: int = 0, num_query: int = NUM_QUERY, num_train: int = NUM_TRAIN,
            overwrite: bool = False) -> dict:
    """Write ``test.txt``, ``database.txt``, ``train.txt`` and ``classes.txt`` in ``out`` (atomically).

    The labelled images are permuted with ``numpy.random.default_rng(seed)``: the first ``num_query``
    are the queries, the others the database, and the first ``num_train`` of those (in permuted
    order) the training images. Each list is written in the images' order (train2014, val2014, by
    file name).

    Returns:
        ``{"images": labelled, "dropped": unlabelled, "classes": C, "query": .., "train": .., "database": ..}``.
    """
    seed = check_int("coco prepare", "seed", seed, minimum=0)
    num_query = check_int("coco prepare", "num_query", num_query, minimum=1)
    num_train = check_int("coco prepare", "num_train", num_train, minimum=1)
    paths, labels, classes = read_annotations(annotations)
    keep = np.flatnonzero(labels.any(axis=1))
    if len(keep) < num_query + num_train:
        raise UserError(f"{annotations}: {len(keep)} labelled images, fewer than {num_query} queries + {num_train} "
                        f"training images")
    perm = keep[np.random.default_rng(seed).permutation(len(keep))]
    query, database = np.sort(perm[:num_query]), np.sort(perm[num_query:])
    train = np.sort(perm[num_query:num_query + num_train])
    output_folder(out, ("test.txt", "database.txt", "train.txt", "classes.txt"), overwrite)
    write_list_file(Path(out) / "classes.txt", "".join(f"{c}\n" for c in classes), "class-name file")
    for name, index in (("test.txt", query), ("database.txt", database), ("train.txt", train)):
        write_list_file(Path(out) / name, _list_text(paths, labels, index), "image list")
    return {"images": int(len(keep)), "dropped": int(len(paths) - len(keep)), "classes": len(classes),
            "query": int(len(query)), "train": int(len(train)), "database": int(len(database))}


def check_lists(annotations: Path, folder: Path) -> list[str]:
    """Compare the lists in ``folder`` with the annotations; one line per list (what agrees, and the first
    line that does not)."""
    paths, labels, _ = read_annotations(annotations)
    row = {p: k for k, p in enumerate(paths)}
    report = []
    for name in LISTS.values():
        lst = read_image_list(Path(folder) / name, labels.shape[1], what="COCO list")
        unknown = [k for k, p in enumerate(lst.paths) if p not in row]
        differ = [k for k, p in enumerate(lst.paths) if p in row and not np.array_equal(lst.labels[k], labels[row[p]])]
        first = min(unknown + differ, default=None)
        where = "" if first is None else f"; first at line {int(lst.lines[first])} ({lst.paths[first]})"
        report.append(f"{folder / name}: {len(lst.paths):,} images, {len(unknown):,} not in the annotations, "
                      f"{len(differ):,} with other labels than the annotations give{where}")
    return report


# ------------------------------------------------------------------------------------------- CLI


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m hyp2.data.coco", description="Tools for the MS-COCO 2014 dataset.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="build train.txt, test.txt, database.txt and classes.txt from the annotations")
    c = sub.add_parser("check", help="compare the lists in <data_root>/coco with the annotations")
    for q in (p, c):
        q.add_argument("--annotations", required=True, type=Path,
                       help="the folder holding instances_train2014.json and instances_val2014.json")
        q.add_argument("--data_root", type=Path, default=DataOptions().root,
                       help="the data root; the lists are in <data_root>/coco (default: %(default)s)")
        q.add_argument("--out", type=Path, default=None, help="the lists' folder instead of <data_root>/coco")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default: %(default)s)")
    p.add_argument("--num_query", type=int, default=NUM_QUERY, help="queries (default: %(default)s)")
    p.add_argument("--num_train", type=int, default=NUM_TRAIN, help="training images (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace the lists if the folder holds them")
    return parser


def _prepare_command(args, out: Path) -> None:
    for flag, value, low in (("--seed", args.seed, 0), ("--num_query", args.num_query, 1),
                             ("--num_train", args.num_train, 1)):
        if value < low:
            raise UserError(f"{flag} {value}: must be at least {low}")
    counts = prepare(args.annotations, out, args.seed, args.num_query, args.num_train, args.overwrite)
    log.info(f"wrote {out}/test.txt ({counts['query']:,} queries), database.txt ({counts['database']:,}), train.txt "
          f"({counts['train']:,}, drawn from the database with seed {args.seed}) and classes.txt ({counts['classes']} "
          f"categories); {counts['dropped']:,} of {counts['images'] + counts['dropped']:,} images had no label and "
          f"were left out")


def main(argv: list[str] | None = None) -> int:
    def body():
        args = build_parser().parse_args(argv)
        if args.out is None:
            require_folder(args.data_root, "--data_root", "pass the folder that holds (or is to hold) coco",
                           may_be_missing=args.command == "prepare")
        else:
            require_folder(args.out, "--out", "pass the folder of the lists", may_be_missing=args.command == "prepare")
        out = args.out if args.out is not None else args.data_root / FOLDER
        if args.command == "prepare":
            _prepare_command(args, out)
        else:
            print("\n".join(check_lists(args.annotations, out)))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
