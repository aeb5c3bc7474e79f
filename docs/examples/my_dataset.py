"""A dataset of your own, as a --plugin: ``--plugin docs/examples/my_dataset.py --dataset csv_folder``.

Images in ``<data_root>/images/`` and one ``<data_root>/labels.csv`` with a header ``path,labels``
and a line per image: its path relative to ``<data_root>`` and its labels separated by ``;``
(``images/0001.jpg,cat;dog``). A seeded permutation of ``--seed`` gives 20 % queries; the rest is
both the training set and the database (the VOC protocol); mAP over the whole database.
"""
import csv
from pathlib import Path

import numpy as np

from hyp2.data.base import DATASETS, DataOptions, LabelledImages, RetrievalData, image_transform
from hyp2.data._lists import ImageFiles
from hyp2.errors import UserError


@DATASETS.register("csv_folder", "example plugin: images/ and labels.csv (path,label;label) under --data_root")
def build(options: DataOptions) -> RetrievalData:
    root = Path(options.root)
    table = root / "labels.csv"
    if not table.is_file():  # user errors are one line: what, where, how to fix
        raise UserError(f"csv_folder: {table} is missing; write 'path,labels' then one 'images/x.jpg,cat;dog' a line")
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({name for row in rows for name in row["labels"].split(";") if name})
    labels = np.array([[name in row["labels"].split(";") for name in classes] for row in rows], np.uint8)
    ids = [row["path"] for row in rows]
    order = np.random.default_rng(options.seed).permutation(len(rows))
    cut = max(1, len(rows) // 5)
    query, rest = order[:cut], order[cut:]
    paths = [str(root / p) for p in ids]

    def split(index, train):  # ImageFiles decodes each image lazily, in the DataLoader workers
        return LabelledImages([ids[i] for i in index], labels[index], ImageFiles([paths[i] for i in index]),
                              image_transform(options.image_size, train))

    train = split(rest, True)
    return RetrievalData("csv_folder", tuple(classes), train, split(query, False),
                         train.with_transform(image_transform(options.image_size, False)), topk=None)
