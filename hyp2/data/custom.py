"""Users' own multi-label data (``custom``), in the image-list format of HashNet / NUS-WIDE.

The format (:mod:`hyp2.data._lists`) is the one HyP² (Xu et al., "HyP² Loss: Beyond Hypersphere
Metric Space for Multi-label Image Retrieval", ACM MM 2022) reads for NUS-WIDE, with any number of
classes. Under ``<root>`` (``--data_root``):

* ``train.txt`` -- training images; ``test.txt`` -- queries; ``database.txt`` -- the images searched;
* each line: an image path relative to ``<root>`` (or absolute, inside ``<root>``: a list never makes a run
  read files elsewhere; no spaces), then C space-separated 0/1 labels,
  C inferred from the first line of ``train.txt`` and the same in all three lists;
* ``classes.txt`` (optional): C class names, one a line, in column order (else ``class0``..).

mAP is computed over the whole database (``topk`` None); ``--retrieve K`` overrides it.
Every listed file must exist when the dataset is built; images are decoded when used, in the
DataLoader workers, and one that cannot be decoded stops the run with its path and the reason.
Truncated JPEGs are accepted (as the official code does).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ._download import git_blob
from ._lists import LISTS, default_class_names, list_split, read_class_names, read_image_list
from .base import DataOptions, RetrievalData, DATASETS



def build_custom(options: DataOptions) -> RetrievalData:
    """The three lists under ``options.root`` (see the module docstring)."""
    root = Path(options.root)
    size = options.image_size
    splits = {}
    num_labels = None
    blobs = []
    for role in ("train", "query", "database"):
        path = root / LISTS[role]
        if not path.is_file():
            raise UserError(f"custom dataset: {path} is missing; put train.txt, test.txt (queries) and database.txt "
                            f"in {root}, each line an image path relative to {root} followed by 0/1 labels, "
                            f"e.g. 'images/cat1.jpg 1 0 1'")
        parsed = read_image_list(path, num_labels, what=f"custom {role} list",
                                 labels_from="" if num_labels is None else "as in train.txt")
        if num_labels is None:
            num_labels = parsed.labels.shape[1]
        splits[role] = list_split(path, parsed, root, role, size, "custom")
        blobs.append(f"{path} (git blob {git_blob(path)[:10]})")
    classes = read_class_names(root / "classes.txt", num_labels) or default_class_names(num_labels)
    provenance = {"lists": ", ".join(blobs) + ": the user's own lists", "split": "as the three lists give it"}
    return RetrievalData("custom", classes, splits["train"], splits["query"], splits["database"], topk=None,
                         provenance=provenance)


@DATASETS.register(
    "custom", "your own images: train.txt, test.txt, database.txt under --data_root (path + 0/1 labels a "
    "line), mAP over the whole database")
def build(options: DataOptions) -> RetrievalData:
    return build_custom(options)
