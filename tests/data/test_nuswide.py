"""Tests of hyp2.data.nuswide: HashNet/DeepHash-format lists under <root>/nus_wide."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hyp2.data import DataOptions, build_dataset
from hyp2.data.nuswide import build_nuswide
from hyp2.errors import UserError

from .conftest import write_jpeg


def write_lists(root: Path, sizes=(("train", 4), ("test", 2), ("database", 6))) -> dict[str, np.ndarray]:
    folder = root / "nus_wide"
    rng = np.random.default_rng(0)
    out = {}
    for k, (name, n) in enumerate(sizes):
        labels = (rng.random((n, 21)) < 0.2).astype(np.uint8)
        lines = []
        for i in range(n):
            rel = f"images/{name}_{i}.jpg"
            write_jpeg(folder / rel, seed=100 * k + i)
            lines.append(rel + " " + " ".join(map(str, labels[i])))
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
        out[name] = labels
    return out


def test_build_reads_the_three_lists(tmp_path):
    labels = write_lists(tmp_path)
    data = build_dataset("nuswide", DataOptions(root=tmp_path, image_size=20))
    assert data.name == "nuswide" and data.num_classes == 21 and data.classes[0] == "class0"
    assert data.train.ids == [f"nus_wide/images/train_{i}.jpg" for i in range(4)]
    assert data.query.ids == ["nus_wide/images/test_0.jpg", "nus_wide/images/test_1.jpg"]
    np.testing.assert_array_equal(data.database.labels, labels["database"])
    np.testing.assert_array_equal(data.query.labels, labels["test"])
    assert data.topk == 6  # mAP@5000 capped at the database size
    assert data.train.transform.train and not data.database.transform.train
    x, y, _ = data.database[5]
    assert x.shape == (3, 20, 20) and y.tolist() == labels["database"][5].tolist()


def test_classes_txt_names_the_concepts(tmp_path):
    write_lists(tmp_path)
    (tmp_path / "nus_wide" / "classes.txt").write_text("".join(f"concept{i}\n" for i in range(21)))
    assert build_nuswide(DataOptions(root=tmp_path)).classes[20] == "concept20"


@pytest.mark.parametrize("missing", ["train", "test", "database"])
def test_missing_list_says_which_and_where_to_get_it(tmp_path, missing):
    write_lists(tmp_path)
    (tmp_path / "nus_wide" / f"{missing}.txt").unlink()
    with pytest.raises(UserError) as e:
        build_nuswide(DataOptions(root=tmp_path))
    msg = str(e.value)
    assert f"{missing}.txt is missing" in msg and "21 labels" in msg and "DeepHash-pytorch" in msg
    assert "images/" in msg  # shows what a line looks like


def test_wrong_label_count_names_file_and_line(tmp_path):
    write_lists(tmp_path)
    path = tmp_path / "nus_wide" / "database.txt"
    lines = path.read_text().splitlines()
    lines[3] = lines[3] + " 0"
    path.write_text("\n".join(lines))
    with pytest.raises(UserError, match=r"database.txt line 4: expected an image path followed by 21 labels, found 22"):
        build_nuswide(DataOptions(root=tmp_path))


def test_missing_image(tmp_path):
    write_lists(tmp_path)
    (tmp_path / "nus_wide" / "images" / "test_1.jpg").unlink()
    with pytest.raises(UserError, match=r"test.txt: image .*test_1.jpg does not exist"):
        build_nuswide(DataOptions(root=tmp_path))
    assert len(build_nuswide(DataOptions(root=tmp_path), check_files=False).query) == 2
