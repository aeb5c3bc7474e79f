"""NUS-WIDE (``nuswide``): the 21 most frequent concepts, on the lists HyP²'s authors ship with their code.

Data: Chua et al., "NUS-WIDE: A Real-World Web Image Database from National University of
Singapore", CIVR 2009. Protocol as in HyP² (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space
for Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1) and its official code, which reads
``data/nus_wide/{train,test,database}.txt`` from its repository: 10,500 training images, 2,100
queries and a database of 193,734 images (the training images are in the database), mAP@5000.

Those lists are the "TC-21" lists of DSDH (Li et al., NeurIPS 2017) as DeepHash-pytorch ships them
in ``data/nuswide_21`` (train and test byte-identical): the 195,834 images of NUS-WIDE that carry
one of the 21 most frequent concepts, named ``images/<nn>_<flickr id>.jpg``, e.g.
``images/0484_1544502940.jpg 1 0 0 ... 0``. They are not HashNet's NUS-WIDE-m lists (another image
set of 223,496 images, names like ``images/83796_799247112_276c55a843_m.jpg``).

Files, under ``<root>/nus_wide/``: ``train.txt``, ``test.txt`` (the queries) and ``database.txt``,
each line an image path relative to ``<root>/nus_wide/`` and 21 space-separated 0/1 labels
(format: :mod:`hyp2.data._lists`), plus the images. When the folder has no lists, the official
ones are fetched from the authors' repository at a pinned commit and verified by git blob id
(:mod:`hyp2.data._pinned`); lists of the user's own are used as they are, and a run's provenance
says which. The images are not downloadable from a stable host: put them in
``<root>/nus_wide/images/``. The lists do not name the concepts; an optional
``<root>/nus_wide/classes.txt`` (21 lines) does, otherwise they are ``class0``..``class20``.
"""
from __future__ import annotations

from pathlib import Path

from ._lists import LISTS, default_class_names, list_split, protocol_data, read_class_names, read_image_list
from ._pinned import HYP2_REPO, ensure_pinned, pinned
from .base import DataOptions, RetrievalData, DATASETS

FOLDER = "nus_wide"
NUM_LABELS = 21
TOPK = 5000
#: The authors' lists (git blob ids and SHA-256: :mod:`hyp2.data._pinned`).
OFFICIAL = pinned("nuswide")
IMAGES_HINT = ("; the lists refer to the NUS-WIDE images as DSDH and DeepHash-pytorch distribute them "
               "(images/<nn>_<flickr id>.jpg): put them in {folder}/images")


def build_nuswide(options: DataOptions, check_files: bool = True, progress: bool = True) -> RetrievalData:
    """NUS-WIDE-21 under the HyP² protocol (see the module docstring).

    ``check_files`` stats every image up front (about 200,000 on the real data, a second or two) so
    a missing file stops the run before training rather than during the first database encoding.
    """
    root = Path(options.root)
    folder = root / FOLDER
    found = ensure_pinned(folder, OFFICIAL, HYP2_REPO, "NUS-WIDE", download=options.download, progress=progress)
    splits = {role: list_split(folder / name, read_image_list(folder / name, NUM_LABELS, what=f"NUS-WIDE {role} list"),
                               folder, role, options.image_size, "NUS-WIDE", root=root,
                               hint=IMAGES_HINT.format(folder=folder), check_files=check_files)
              for role, name in LISTS.items()}
    classes = read_class_names(folder / "classes.txt", NUM_LABELS) or default_class_names(NUM_LABELS)
    return protocol_data("nuswide", classes, splits, TOPK, found.provenance(folder, HYP2_REPO))


@DATASETS.register(
    "nuswide", "NUS-WIDE, 21 concepts, the HyP² authors' lists (fetched into <root>/nus_wide): 10,500 train / "
    "2,100 queries / 193,734 database, mAP@5000")
def build(options: DataOptions) -> RetrievalData:
    return build_nuswide(options)
