"""PASCAL VOC 2007 and 2012 as multi-label retrieval datasets (``voc2007``, ``voc2012``).

Data: Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010. Protocol as
in HyP² (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval",
ACM MM 2022, Sec. 4.1) and its official code:

* labels: the 20 classes, an image carrying every class that has at least one object in its
  ``Annotations/<id>.xml`` -- objects marked ``difficult`` included, as the official code does;
* VOC2007: train = database = ``trainval`` (5,011 images), query = ``test`` (4,952), mAP@5011;
* VOC2012: train = database = ``train`` (5,717 images), query = ``val`` (5,823), mAP@5717.

Files: ``<root>/VOCdevkit/VOC2007`` (or ``VOC2012``) with ``Annotations``, ``ImageSets/Main`` and
``JPEGImages``, as the official archives extract. A tree placed by hand is used as it is. When it is
missing, the archives found in ``<root>`` are used, or downloaded (MD5-verified, resumable) from
the official host -- or from ``--voc_url BASE`` / ``$HYP2_VOC_URL``, a folder URL under which the
same file names are fetched -- and extracted safely (see :mod:`hyp2.data._download`). Later runs
find the tree and touch neither the network nor the archives.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import UserError
from ._download import check_md5, fetch
from ._extract import extract_into_place
from ._lists import ImageFiles, read_text, require_files
from .base import DataOptions, LabelledImages, ListLines, RetrievalData, image_transform, DATASETS

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
           "tvmonitor")
_CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}

ARCHIVES = {"2007": ("VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"),
            "2012": ("VOCtrainval_11-May-2012.tar",)}
# The official sums (identical in torchvision.datasets.voc.DATASET_YEAR_DICT).
MD5 = {"VOCtrainval_06-Nov-2007.tar": "c52e279531787c972589f7e41ab4ae64",
       "VOCtest_06-Nov-2007.tar": "b6e924de25625d8de591ea690078ad9f",
       "VOCtrainval_11-May-2012.tar": "6cd6e144f989b92b3379bac3b3de84fd"}
# The mirror torchvision uses; the original host http://host.robots.ox.ac.uk/pascal/VOC/vocYYYY/
# serves the same files (pass it with --voc_url when the mirror is down).
BASE_URLS = {"2007": "https://thor.robots.ox.ac.uk/pascal/VOC/voc2007/",
             "2012": "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/"}
ENV_URL = "HYP2_VOC_URL"

# year -> (train = database split, query split, mAP@K)
PROTOCOL = {"2007": ("trainval", "test", 5011), "2012": ("train", "val", 5717)}


def archive_url(base: str, filename: str) -> str:
    """``base`` (a folder URL, with or without the trailing slash) joined with ``filename``."""
    return base.rstrip("/") + "/" + filename


def ensure_voc(root: Path, year: str, *, download: bool = True, base_url: str | None = None,
               check_md5_sums: bool = True, md5s: dict[str, str] | None = None, progress: bool = True,
               timeout: float = 60.0, attempts: int = 3) -> Path:
    """Return ``root/VOCdevkit/VOC<year>``, downloading and extracting the archives if it is missing.

    Args:
        root: the data root.
        year: "2007" or "2012".
        download: allow network access; without it a missing tree and archive stop with a UserError.
        base_url: folder URL holding the archives (default: :data:`BASE_URLS`).
        check_md5_sums: verify archives against ``md5s``.
        md5s: file name -> expected MD5, overriding :data:`MD5` (tests serve their own archives).
        progress, timeout, attempts: passed to :func:`hyp2.data._download.fetch`.
    """
    if year not in ARCHIVES:
        raise ValueError(f"year must be one of {sorted(ARCHIVES)}, got {year!r}")
    root = Path(root)
    tree = root / "VOCdevkit" / f"VOC{year}"
    if tree.is_dir():
        return tree
    sums = {**MD5, **(md5s or {})}
    base = base_url or BASE_URLS[year]
    names = ARCHIVES[year]
    archives = []
    for name in names:
        path = root / name
        expected = sums[name] if check_md5_sums else None
        if path.is_file():
            if expected:
                check_md5(path, expected, "delete it to download it again, or pass --no_md5 to use it as it is")
        elif not download:
            raise UserError(f"VOC{year} not found: expected the folder {tree}, or the archive(s) {', '.join(names)} in "
                            f"{root} (downloads are off; get them from {base})")
        else:
            hint = (f"; to use a mirror pass --voc_url URL (or set {ENV_URL}) naming the folder that holds {name}, "
                    f"or put {name} in {root} yourself")
            fetch(archive_url(base, name), path, expected, hint=hint, progress=progress, timeout=timeout,
                  attempts=attempts)
        archives.append(path)
    return extract_into_place(archives, root, f"VOCdevkit/VOC{year}", progress=progress)


def parse_annotation(path: Path) -> list[int]:
    """Class indices (sorted, unique) of every object in one VOC annotation, difficult ones included.

    Raises:
        UserError: missing or unparsable file, or an object name outside the 20 classes.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise UserError(f"annotation {path} does not exist; the VOC tree is incomplete") from None
    except (ET.ParseError, OSError) as e:
        raise UserError(f"cannot parse annotation {path}: {e}") from None
    found = set()
    for obj in root.findall("object"):  # direct children only: <part> elements also have <name>
        name = (obj.findtext("name") or "").strip()
        if name not in _CLASS_INDEX:
            raise UserError(f"annotation {path}: object class {name!r} is not one of the 20 VOC classes")
        found.add(_CLASS_INDEX[name])
    return sorted(found)


def read_split(tree: Path, split: str, root: Path) -> tuple[list[str], np.ndarray, list[str], ListLines]:
    """One ``ImageSets/Main/<split>.txt`` of a VOC tree.

    Returns:
        ``(ids, labels, paths, origin)``: ids relative to ``root``, (N, 20) uint8 labels, absolute
        image paths, and the list file's line of each image.
    """
    list_file = tree / "ImageSets" / "Main" / f"{split}.txt"
    if not list_file.is_file():
        raise UserError(f"{list_file} is missing: the tree {tree} is incomplete (VOC2007 needs both the trainval "
                        f"and the test archive extracted into {root}); complete it, or delete {tree} to download again")
    numbered = [(n, line.split()[0]) for n, line in enumerate(read_text(list_file, "VOC image set").splitlines(), 1)
                if line.strip()]
    if not numbered:
        raise UserError(f"{list_file} lists no images")
    for n, name in numbered:
        if any(c in name for c in "/\\\0"):
            raise UserError(f"{list_file} line {n}: image id {name!r} is not a plain name (VOC ids look like 000005 "
                            f"or 2008_000008); a path there would read files outside {tree}")
    names = [name for _, name in numbered]
    labels = np.zeros((len(names), len(CLASSES)), np.uint8)
    for n, name in enumerate(names):
        labels[n, parse_annotation(tree / "Annotations" / f"{name}.xml")] = 1
    paths = [str(tree / "JPEGImages" / f"{name}.jpg") for name in names]
    require_files(paths, f"VOC list {list_file}")
    ids = [os.path.relpath(p, root) for p in paths]
    return ids, labels, paths, ListLines(list_file, [n for n, _ in numbered])


def build_voc(options: DataOptions, year: str, md5s: dict[str, str] | None = None,
              progress: bool = True) -> RetrievalData:
    """VOC``year`` under the HyP² protocol (see the module docstring)."""
    root = Path(options.root)
    base_url = options.voc_url or os.environ.get(ENV_URL) or None
    tree = ensure_voc(root, year, download=options.download, base_url=base_url, check_md5_sums=options.check_md5,
                      md5s=md5s, progress=progress)
    train_split, query_split, topk = PROTOCOL[year]
    size = options.image_size
    db_ids, db_labels, db_paths, db_origin = read_split(tree, train_split, root)
    q_ids, q_labels, q_paths, q_origin = read_split(tree, query_split, root)
    train = LabelledImages(db_ids, db_labels, ImageFiles(db_paths), image_transform(size, True), db_origin)
    database = train.with_transform(image_transform(size, False))
    query = LabelledImages(q_ids, q_labels, ImageFiles(q_paths), image_transform(size, False), q_origin)
    provenance = {"lists": f"{db_origin.file} and {q_origin.file}, labels from {tree / 'Annotations'}",
                  "split": f"the official VOC{year} image sets: train = database = {train_split}, "
                           f"query = {query_split}"}
    return RetrievalData(f"voc{year}", CLASSES, train, query, database, topk=min(topk, len(database)),
                         provenance=provenance)


@DATASETS.register(
    "voc2007", "PASCAL VOC 2007: 20 classes, trainval 5,011 = train = database, test 4,952 queries, mAP@5011",
    flags=("voc_url", "no_md5"))
def build_voc2007(options: DataOptions) -> RetrievalData:
    return build_voc(options, "2007")


@DATASETS.register(
    "voc2012", "PASCAL VOC 2012: 20 classes, train 5,717 = database, val 5,823 queries, mAP@5717",
    flags=("voc_url", "no_md5"))
def build_voc2012(options: DataOptions) -> RetrievalData:
    return build_voc(options, "2012")
