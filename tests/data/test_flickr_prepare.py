"""Tests of ``python -m hyp2.data.flickr prepare``: label files from a generated annotation folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyp2.data import flickr
from hyp2.data._pinned import PinnedFile
from hyp2.data.flickr import prepare
from hyp2.errors import UserError

from .conftest import git_blob_of

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


@pytest.mark.slow
def test_prepare_command_line(annotation_dir, tmp_path):
    out = tmp_path / "data" / "flickr25k"  # <data_root>/flickr25k
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "hyp2.data.flickr", "prepare", "--annotations", str(annotation_dir),
                          "--data_root", str(tmp_path / "data"), "--num_images", "8"],
                         capture_output=True, text=True, env=env, timeout=120)
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


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_without_arguments_one_line_not_a_usage_block(capsys):
    assert flickr.main([]) == 2
    assert "the following arguments are required: command" in one_error_line(capsys)
    assert flickr.main(["prepare"]) == 2
    assert "--annotations" in one_error_line(capsys)


@pytest.mark.parametrize("value", ["-5", "0"])
def test_num_images_must_be_positive(annotation_dir, tmp_path, capsys, value):
    assert flickr.main(["prepare", "--annotations", str(annotation_dir), "--out", str(tmp_path / "o"),
                        "--num_images", value]) == 2
    assert f"--num_images {value}: must be at least 1" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="num_images must be an integer >= 1"):
        prepare(annotation_dir, tmp_path / "o", num_images=int(value))


def test_num_images_is_bounded(annotation_dir, tmp_path, capsys):
    for value in ("10000001", "1000000000000"):  # 10**12 would be a 38 TB label matrix
        assert flickr.main(["prepare", "--annotations", str(annotation_dir), "--out", str(tmp_path / "o"),
                            "--num_images", value]) == 2
        assert f"--num_images {value}: must be at most 10,000,000 (MIRFLICKR-25K has 25,000)" in one_error_line(capsys)
    with pytest.raises(ValueError, match="num_images must be an integer <= 10000000"):
        prepare(annotation_dir, tmp_path / "o", num_images=10**12)
    assert not (tmp_path / "o").exists()


def test_flags_naming_a_file_for_a_folder(annotation_dir, tmp_path, capsys):
    readme = annotation_dir / "README.txt"
    assert flickr.main(["prepare", "--annotations", str(readme), "--out", str(tmp_path / "o")]) == 2
    assert one_error_line(capsys) == (f"error: annotation folder {readme} is a file, not a folder; unpack "
                                      f"mirflickr25k_annotations_v080.zip and pass its folder with --annotations\n")
    assert flickr.main(["prepare", "--annotations", str(annotation_dir), "--data_root", str(readme)]) == 2
    assert f"error: --data_root {readme} is a file, not a folder" in one_error_line(capsys)


def test_out_that_is_a_file(annotation_dir, tmp_path, capsys):
    (tmp_path / "o").write_text("a file")
    assert flickr.main(["prepare", "--annotations", str(annotation_dir), "--out", str(tmp_path / "o"),
                        "--num_images", "8"]) == 2
    assert f"--out {tmp_path / 'o'} is a file" in one_error_line(capsys)
    assert (tmp_path / "o").read_text() == "a file"


def test_annotation_file_that_is_not_utf8(annotation_dir, tmp_path, capsys):
    (annotation_dir / "sky.txt").write_bytes(b"1\n\xff\xfe2\n")
    assert flickr.main(["prepare", "--annotations", str(annotation_dir), "--out", str(tmp_path / "o"),
                        "--num_images", "8"]) == 2
    err = one_error_line(capsys)
    assert f"{annotation_dir / 'sky.txt'}: it is not UTF-8 text" in err and not (tmp_path / "o").exists()


def test_existing_files_are_replaced_only_with_overwrite(annotation_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    out.mkdir()
    (out / "img.txt").write_text("im9.jpg\n")
    argv = ["prepare", "--annotations", str(annotation_dir), "--out", str(out), "--num_images", "8"]
    assert flickr.main(argv) == 2
    assert "already holds img.txt; pass --overwrite" in one_error_line(capsys)
    assert (out / "img.txt").read_text() == "im9.jpg\n"
    # replacing the authors' img.txt (recognised by its git blob id) says that their split no longer applies
    stand_in = PinnedFile("img.txt", "http://127.0.0.1/img.txt", git_blob_of(b"im9.jpg\n"))
    monkeypatch.setattr(flickr, "OFFICIAL_LISTS", (stand_in,) + flickr.OFFICIAL_LISTS[1:])
    assert flickr.main(argv + ["--overwrite"]) == 0
    captured = capsys.readouterr()
    assert "wrote 6 images" in captured.out and "draw their split from --seed" in captured.err
    assert (out / "img.txt").read_text().splitlines() == EXPECTED_IMG
