"""Tests of hyp2.data.flickr: the ``prepare`` tool on a generated annotation folder, and the split."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hyp2.data import DataOptions
from hyp2.data import flickr
from hyp2.data.flickr import build_flickr, prepare, validate_permutation
from hyp2.errors import UserError

from .conftest import write_jpeg

REPO = Path(__file__).resolve().parents[2]

# Written in this (non-alphabetical) order; "baby.txt" < "baby_r1.txt" ("." < "_"), "people_r1" < "plant_life".
ANNOTATIONS = {
    "sea_r1.txt": "3\n",
    "people.txt": "1\n8\n7\n",
    "baby_r1.txt": "2\n",
    "animals.txt": "3\r\n1\r\n",          # CRLF line ends
    "plant_life.txt": "6\n\n",           # a blank line
    "baby.txt": "  2  \n",               # surrounding spaces
    "people_r1.txt": "8",                # no final newline
    "sea.txt": "3\n6\n",
}
COLUMNS = ["animals", "baby", "baby_r1", "people", "people_r1", "plant_life", "sea", "sea_r1"]
# Images 4 and 5 carry no label and are dropped; rows written by hand from ANNOTATIONS.
EXPECTED_IMG = ["im1.jpg", "im2.jpg", "im3.jpg", "im6.jpg", "im7.jpg", "im8.jpg"]
EXPECTED_TARGETS = ["1 0 0 1 0 0 0 0", "0 1 1 0 0 0 0 0", "1 0 0 0 0 0 1 1",
                    "0 0 0 0 0 1 1 0", "0 0 0 1 0 0 0 0", "0 0 0 1 1 0 0 0"]


@pytest.fixture
def annotation_dir(tmp_path):
    d = tmp_path / "mirflickr25k_annotations_v080"
    d.mkdir()
    for name, text in ANNOTATIONS.items():
        (d / name).write_text(text, newline="")
    (d / "README.txt").write_text("1\n2\n3\n4\n5\n")  # must be ignored
    (d / "notes.md").write_text("ignored")
    return d


def test_prepare_function(annotation_dir, tmp_path):
    out = tmp_path / "flickr25k"
    counts = prepare(annotation_dir, out, num_images=8)
    assert counts == {"images": 6, "dropped": 2, "classes": 8, "out": str(out)}
    assert (out / "img.txt").read_text().splitlines() == EXPECTED_IMG
    assert (out / "targets.txt").read_text().splitlines() == EXPECTED_TARGETS
    assert (out / "classes.txt").read_text().splitlines() == COLUMNS
    assert sorted(p.name for p in out.iterdir()) == ["classes.txt", "img.txt", "targets.txt"]  # no temp files


def test_prepare_command_line(annotation_dir, tmp_path):
    out = tmp_path / "data" / "flickr25k"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "hyp2.data.flickr", "prepare", "--annotations", str(annotation_dir),
                          "--out", str(out), "--num_images", "8"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "wrote 6 images x 8 labels" in res.stdout and "2 of 8 images had no label" in res.stdout
    assert (out / "img.txt").read_text().splitlines() == EXPECTED_IMG
    assert (out / "targets.txt").read_text().splitlines() == EXPECTED_TARGETS


def test_prepare_command_line_errors(tmp_path, capsys, annotation_dir):
    assert flickr.main(["prepare", "--annotations", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (annotation_dir / "sky.txt").write_text("1\n9\n")
    assert flickr.main(["prepare", "--annotations", str(annotation_dir), "--out", str(tmp_path / "o"),
                        "--num_images", "8"]) == 2
    err = capsys.readouterr().err
    assert "sky.txt line 2" in err and "'9'" in err and not (tmp_path / "o" / "img.txt").exists()


def test_prepare_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no annotation files"):
        prepare(tmp_path / "empty", tmp_path / "out")


# ------------------------------------------------------------------------------------- the split


def make_flickr(root: Path, n: int = 12, num_labels: int = 38, img_lines=None) -> tuple[list[str], np.ndarray]:
    folder = root / "flickr25k"
    names = img_lines or [f"im{k + 1}.jpg" for k in range(n)]
    for k, line in enumerate(names):
        write_jpeg(Path(flickr.image_path(folder, line)), seed=k)
    rng = np.random.default_rng(1)
    labels = (rng.random((len(names), num_labels)) < 0.3).astype(np.uint8)
    labels[:, 0] = 1
    (folder / "img.txt").write_text("".join(f"{x}\n" for x in names))
    # the official targets.txt starts each line with a space
    (folder / "targets.txt").write_text("".join(" " + " ".join(map(str, r)) + "\n" for r in labels))
    return names, labels


def opts(root, **kw):
    return DataOptions(root=root, image_size=24, **kw)


def test_split_follows_saved_permutation(tmp_path):
    names, labels = make_flickr(tmp_path)
    data = build_flickr(opts(tmp_path, seed=3), num_query=2, num_train=3, progress=False)
    perm = json.loads((tmp_path / "flickr25k" / "split_seed3.json").read_text())
    assert sorted(perm) == list(range(12))
    ids = [f"flickr25k/mirflickr/{x}" for x in names]
    assert data.query.ids == [ids[i] for i in perm[:2]]
    assert data.train.ids == [ids[i] for i in perm[2:5]]
    assert data.database.ids == [ids[i] for i in perm[5:]]  # the training images are not in the database
    np.testing.assert_array_equal(data.database.labels, labels[perm[5:]])
    assert data.classes == flickr.CLASSES and data.topk == 7  # mAP@1000 capped at the database size
    assert data.train.transform.train and not data.query.transform.train
    # reused, not redrawn (even when the seed would give another order)
    again = build_flickr(opts(tmp_path, seed=3), num_query=2, num_train=3, progress=False)
    assert again.query.ids == data.query.ids
    other = build_flickr(opts(tmp_path, seed=4), num_query=2, num_train=3, progress=False)
    assert (tmp_path / "flickr25k" / "split_seed4.json").exists()
    assert other.query.ids + other.train.ids != data.query.ids + data.train.ids


def test_split_file_option(tmp_path):
    names, _ = make_flickr(tmp_path)
    perm = list(range(11, -1, -1))
    split = tmp_path / "official.json"
    split.write_text(json.dumps(perm))
    data = build_flickr(opts(tmp_path, split_file=split), num_query=2, num_train=3, progress=False)
    assert data.query.ids == ["flickr25k/mirflickr/im12.jpg", "flickr25k/mirflickr/im11.jpg"]
    assert not (tmp_path / "flickr25k" / "split_seed0.json").exists()


@pytest.mark.parametrize("perm,match", [
    (list(range(11)) + [12], "index 12 at position 11 is outside 0..11"),
    (list(range(11)) + [-1], "index -1"),
    (list(range(11)) + [3], "index 3 appears twice .positions 3 and 11."),
    (list(range(10)), "has 10 indices but img.txt has 12 lines"),
    ({"query": [1]}, "JSON list of integers"),
    ([0.5] * 12, "JSON list of integers"),
])
def test_split_file_validation(tmp_path, perm, match):
    make_flickr(tmp_path)
    split = tmp_path / "s.json"
    split.write_text(json.dumps(perm))
    with pytest.raises(UserError, match=match):
        build_flickr(opts(tmp_path, split_file=split), num_query=2, num_train=3, progress=False)


def test_split_file_missing_or_not_json(tmp_path):
    make_flickr(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        build_flickr(opts(tmp_path, split_file=tmp_path / "nope.json"), num_query=2, num_train=3)
    (tmp_path / "bad.json").write_text("[1, 2,")
    with pytest.raises(UserError, match="cannot read split file"):
        build_flickr(opts(tmp_path, split_file=tmp_path / "bad.json"), num_query=2, num_train=3)


def test_saved_split_that_no_longer_matches(tmp_path):
    make_flickr(tmp_path)
    (tmp_path / "flickr25k" / "split_seed0.json").write_text(json.dumps(list(range(20))))
    with pytest.raises(UserError, match="delete .*split_seed0.json to draw a new split"):
        build_flickr(opts(tmp_path), num_query=2, num_train=3)


def test_validate_permutation_accepts_a_permutation():
    assert validate_permutation([2, 0, 1], 3, "x").tolist() == [2, 0, 1]


def test_img_txt_paths_and_classes_txt(tmp_path):
    lines = ["mirflickr/im1.jpg", "im2.jpg", "other/im3.jpg"] + [f"im{k}.jpg" for k in range(4, 10)]
    make_flickr(tmp_path, img_lines=lines, num_labels=3)
    (tmp_path / "flickr25k" / "classes.txt").write_text("a\nb\nc\n")
    data = build_flickr(opts(tmp_path, split_file=None), num_query=1, num_train=1, progress=False)
    all_ids = set(data.query.ids + data.train.ids + data.database.ids)
    assert {"flickr25k/mirflickr/im1.jpg", "flickr25k/mirflickr/im2.jpg", "flickr25k/other/im3.jpg"} <= all_ids
    assert data.classes == ("a", "b", "c")
    assert data.query[0][0].shape == (3, 24, 24)


def test_generic_class_names_without_classes_txt(tmp_path):
    make_flickr(tmp_path, num_labels=3)
    assert build_flickr(opts(tmp_path), num_query=2, num_train=3).classes == ("class0", "class1", "class2")


def test_errors_in_the_files(tmp_path):
    folder = tmp_path / "flickr25k"
    with pytest.raises(UserError, match="img.txt is missing.*prepare"):
        build_flickr(opts(tmp_path), num_query=2, num_train=3)
    make_flickr(tmp_path)
    targets = (folder / "targets.txt").read_text().splitlines()
    (folder / "targets.txt").write_text("\n".join(targets[:-1]) + "\n")
    with pytest.raises(UserError, match="lists 12 images but .* has 11 label lines"):
        build_flickr(opts(tmp_path), num_query=2, num_train=3)
    (folder / "targets.txt").write_text("\n".join(targets[:4] + [targets[4].replace("0", "2", 1)] + targets[5:]))
    with pytest.raises(UserError, match="targets.txt line 5: label .* is '2'"):
        build_flickr(opts(tmp_path), num_query=2, num_train=3)
    (folder / "targets.txt").write_text("\n".join(targets[:2] + [targets[2] + " 1"] + targets[3:]))
    with pytest.raises(UserError, match="targets.txt line 3: 39 labels, earlier lines have 38"):
        build_flickr(opts(tmp_path), num_query=2, num_train=3)
    (folder / "targets.txt").write_text("\n".join(targets))
    (folder / "mirflickr" / "im7.jpg").unlink()
    with pytest.raises(UserError, match="im7.jpg does not exist"):
        build_flickr(opts(tmp_path), num_query=2, num_train=3)


def test_too_few_images(tmp_path):
    make_flickr(tmp_path, n=5)
    with pytest.raises(UserError, match="needs more than 2 queries . 3 training images"):
        build_flickr(opts(tmp_path), num_query=2, num_train=3)
