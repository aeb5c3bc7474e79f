"""Tests of hyp2.data.custom: users' own lists under --data_root."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hyp2.data import DataOptions, build_dataset
from hyp2.data.custom import build_custom
from hyp2.errors import UserError

from .conftest import write_jpeg

LABELS = {"train": [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]],
          "test": [[0, 1, 1], [1, 0, 0]],
          "database": [[1, 0, 0], [0, 1, 1], [0, 0, 1]]}


def write_custom(root: Path, labels=LABELS) -> None:
    for k, (name, rows) in enumerate(labels.items()):
        lines = []
        for i, row in enumerate(rows):
            rel = f"pics/{name}{i}.jpg"
            write_jpeg(root / rel, seed=10 * k + i)
            lines.append(f"{rel} " + " ".join(map(str, row)))
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")


def test_build(tmp_path):
    write_custom(tmp_path)
    data = build_dataset("custom", DataOptions(root=tmp_path, image_size=16))
    assert data.name == "custom" and data.classes == ("class0", "class1", "class2") and data.topk is None
    assert data.train.ids == [f"pics/train{i}.jpg" for i in range(4)]
    for split, name in (("train", "train"), ("query", "test"), ("database", "database")):
        np.testing.assert_array_equal(getattr(data, split).labels, np.array(LABELS[name], np.uint8))
    x, y, i = data.train[2]
    assert x.shape == (3, 16, 16) and y.tolist() == [1.0, 1.0, 0.0] and i == 2
    batch = next(iter(torch.utils.data.DataLoader(data.database, batch_size=3)))
    assert batch[0].shape == (3, 3, 16, 16)


def test_classes_txt(tmp_path):
    write_custom(tmp_path)
    (tmp_path / "classes.txt").write_text("sun\nsea\nsand\n")
    assert build_custom(DataOptions(root=tmp_path)).classes == ("sun", "sea", "sand")
    (tmp_path / "classes.txt").write_text("sun\nsea\n")
    with pytest.raises(UserError, match="lists 2 class names but the image lists have 3"):
        build_custom(DataOptions(root=tmp_path))


def test_any_number_of_classes(tmp_path):
    write_custom(tmp_path, {"train": [[1]], "test": [[0]], "database": [[1], [0]]})
    assert build_custom(DataOptions(root=tmp_path)).num_classes == 1


def test_label_count_must_agree_across_lists(tmp_path):
    write_custom(tmp_path)
    (tmp_path / "test.txt").write_text("pics/test0.jpg 0 1 1\npics/test1.jpg 0 1 1 0\n")
    with pytest.raises(UserError, match=r"test.txt line 2: expected .* 3 labels \(as in train.txt\), found 4"):
        build_custom(DataOptions(root=tmp_path))


def test_bad_label_value(tmp_path):
    write_custom(tmp_path)
    (tmp_path / "database.txt").write_text("pics/database0.jpg 1 0 0\n\npics/database1.jpg 0 yes 1\n")
    with pytest.raises(UserError, match=r"database.txt line 3: label 2 is 'yes', labels must be 0 or 1"):
        build_custom(DataOptions(root=tmp_path))


@pytest.mark.parametrize("missing", ["train.txt", "test.txt", "database.txt"])
def test_missing_list(tmp_path, missing):
    write_custom(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(UserError, match=f"{missing} is missing.*relative to"):
        build_custom(DataOptions(root=tmp_path))


def test_missing_and_undecodable_images(tmp_path):
    write_custom(tmp_path)
    (tmp_path / "pics" / "train3.jpg").unlink()
    with pytest.raises(UserError, match=r"train.txt: image .*train3.jpg does not exist"):
        build_custom(DataOptions(root=tmp_path))
    (tmp_path / "pics" / "train3.jpg").write_bytes(b"garbage")  # exists, cannot be decoded: found at load time
    data = build_custom(DataOptions(root=tmp_path, image_size=16))
    with pytest.raises(UserError, match=r"cannot open image .*train3.jpg"):
        data.train[3]


# ---------------------------------------------------------------- paths stay inside the data root


def inside_message(list_file: Path, line: int, entry: str, root: Path, base: Path) -> str:
    return (f"{list_file} line {line}: the image path {entry!r} leads outside the data root {root}; list paths must "
            f"stay inside it (relative to {base}, no '..' that climbs out)")


@pytest.mark.parametrize("entry", ["../outside.jpg", "pics/../../outside.jpg", "{outside}"])
def test_a_path_that_leaves_the_data_root_is_refused(tmp_path, entry):
    root = tmp_path / "data"
    write_custom(root)
    write_jpeg(tmp_path / "outside.jpg", seed=5)  # there to be read, were the path followed
    entry = entry.format(outside=tmp_path / "outside.jpg")
    lines = (root / "test.txt").read_text().splitlines()
    lines[1] = f"{entry} 1 0 0"
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as e:
        build_custom(DataOptions(root=root))
    assert str(e.value) == inside_message(root / "test.txt", 2, entry, root, root)


def test_paths_inside_the_data_root_are_accepted_however_written(tmp_path):
    root = tmp_path / "data"
    write_custom(root)
    write_jpeg(tmp_path / "elsewhere" / "far.jpg", seed=6)
    (root / "linked").symlink_to(tmp_path / "elsewhere")  # a folder the user links in is theirs
    entries = ["pics/../pics/test0.jpg", str(root / "pics" / "test1.jpg"), "linked/far.jpg"]
    (root / "test.txt").write_text("".join(f"{e} 0 1 0\n" for e in entries))
    data = build_custom(DataOptions(root=root, image_size=8))
    assert data.query.ids == entries and data.query[2][0].shape == (3, 8, 8)
