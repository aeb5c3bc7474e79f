"""Tests of hyp2.data._lists: the image-list format, class names and the image loader."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from hyp2.data import LabelledImages, image_transform
from hyp2.data._lists import (ImageFiles, default_class_names, output_folder, read_class_names, read_image_list,
                              read_list, require_files)
from hyp2.errors import UserError
from hyp2.train import batches_of

from .conftest import write_jpeg


def test_read_list_parses_paths_and_labels(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("images/a.jpg 0 1 1\n\n  images/b.jpg   1 0 0  \r\nc.png 0 0 0")
    paths, labels = read_list(p)
    assert paths == ["images/a.jpg", "images/b.jpg", "c.png"]
    assert labels.dtype == np.uint8 and labels.tolist() == [[0, 1, 1], [1, 0, 0], [0, 0, 0]]
    paths, labels = read_list(p, num_labels=3)
    assert labels.shape == (3, 3)


@pytest.mark.parametrize("text,num,match", [
    ("a.jpg 0 1\nb.jpg 0 1 1\n", None, r"line 2: expected an image path followed by 2 labels, found 3"),
    ("a.jpg 0 1\n\nb.jpg 0\n", 2, r"line 3: expected .* 2 labels, found 1"),
    ("a.jpg 0 1 0\n", 21, r"line 1: expected .* 21 labels, found 3"),
    ("a.jpg 0 1\nb.jpg 0 2\n", None, r"line 2: label 2 is '2', labels must be 0 or 1"),
    ("a.jpg 0 -1\n", None, r"line 1: label 2 is '-1'"),
    ("a.jpg 1.0 0\n", None, r"line 1: label 1 is '1.0'"),
    ("a.jpg\n", None, r"line 1: expected an image path followed by 0/1 labels, found only 'a.jpg'"),
    ("\n\n", None, r"has no image lines"),
])
def test_read_list_errors_name_file_and_line(tmp_path, text, num, match):
    p = tmp_path / "list.txt"
    p.write_text(text)
    with pytest.raises(UserError, match=match) as e:
        read_list(p, num)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_read_list_mentions_where_the_label_count_comes_from(tmp_path):
    p = tmp_path / "test.txt"
    p.write_text("a.jpg 0 1\n")
    with pytest.raises(UserError, match=r"3 labels \(as in train.txt\), found 2"):
        read_list(p, 3, labels_from="as in train.txt")


def test_read_list_unreadable(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_list(tmp_path / "missing.txt")


def test_class_names(tmp_path):
    assert read_class_names(tmp_path / "classes.txt", 3) is None
    (tmp_path / "classes.txt").write_text("cat\n dog \n\nbird\n")
    assert read_class_names(tmp_path / "classes.txt", 3) == ("cat", "dog", "bird")
    with pytest.raises(UserError, match="lists 3 class names but the image lists have 4"):
        read_class_names(tmp_path / "classes.txt", 4)
    (tmp_path / "classes.txt").write_text("cat\ncat\n")
    with pytest.raises(UserError, match="'cat' appears more than once"):
        read_class_names(tmp_path / "classes.txt", 2)
    assert default_class_names(3) == ("class0", "class1", "class2")


def test_image_files_convert_to_rgb(tmp_path):
    write_jpeg(tmp_path / "a.jpg", seed=1)
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    Image.new("RGBA", (3, 3), (10, 20, 30, 0)).save(tmp_path / "t.png")
    load = ImageFiles([tmp_path / "a.jpg", tmp_path / "g.png", tmp_path / "t.png"])
    imgs = [load(i) for i in range(3)]
    assert [im.mode for im in imgs] == ["RGB"] * 3
    assert imgs[0].size == (40, 30) and imgs[1].getpixel((0, 0)) == (77, 77, 77)
    assert imgs[2].getpixel((1, 1)) == (10, 20, 30)
    clone = pickle.loads(pickle.dumps(load))
    assert clone.paths == load.paths and len(clone) == 3


def test_truncated_jpeg_is_accepted(tmp_path):
    full = write_jpeg(tmp_path / "full.jpg", seed=2, size=(64, 48)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(full[: len(full) * 2 // 3])
    img = ImageFiles([tmp_path / "cut.jpg"])(0)
    assert img.size == (64, 48) and img.mode == "RGB"


def test_undecodable_image_names_path_and_reason(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"this is not an image")
    load = ImageFiles([tmp_path / "bad.jpg", tmp_path / "gone.jpg"])
    with pytest.raises(UserError, match=r"cannot open image .*bad.jpg: cannot identify image file"):
        load(0)
    with pytest.raises(UserError, match=r"cannot open image .*gone.jpg: .*No such file"):
        load(1)


def test_undecodable_image_in_a_dataloader_worker(tmp_path):
    write_jpeg(tmp_path / "ok.jpg", seed=3)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    ds = LabelledImages(["ok.jpg", "bad.jpg"], np.eye(2, dtype=np.uint8),
                        ImageFiles([tmp_path / "ok.jpg", tmp_path / "bad.jpg"]), image_transform(16, False))
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1)
    with pytest.raises(UserError, match=r"cannot open image .*bad.jpg"):
        with batches_of(loader) as batches:  # as training reads it: the worker stops with the error
            list(batches)


def test_require_files(tmp_path):
    write_jpeg(tmp_path / "a.jpg", seed=0)
    require_files([str(tmp_path / "a.jpg")], "list x")
    with pytest.raises(UserError, match=r"list x: image .*b.jpg does not exist"):
        require_files([str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")], "list x")


@pytest.mark.parametrize("line,name", [
    ("images/my photo.jpg 1 0 1", "images/my photo.jpg"),
    ("my holiday/im.jpg 0 1 1", "my holiday/im.jpg"),
    ("a b c.png 1 1 0", "a b c.png"),
])
def test_path_with_a_space_is_named_as_such(tmp_path, line, name):
    p = tmp_path / "train.txt"
    p.write_text(f"ok.jpg 1 0 0\n{line}\n")
    for num in (None, 3):  # inferred from the first line, or known from train.txt
        with pytest.raises(UserError) as e:
            read_list(p, num)
        assert f"line 2: the image path {name!r} contains a space; paths may not contain spaces" in str(e.value)
    p.write_text(f"{line}\n")  # on the first line, where the label count is still unknown
    with pytest.raises(UserError, match="contains a space"):
        read_list(p)


def test_byte_order_mark_is_ignored(tmp_path):
    p = tmp_path / "l.txt"
    p.write_bytes("\ufeffimages/a.jpg 0 1\nimages/b.jpg 1 0\n".encode("utf-8"))
    paths, labels = read_list(p)
    assert paths == ["images/a.jpg", "images/b.jpg"] and labels.tolist() == [[0, 1], [1, 0]]
    (tmp_path / "classes.txt").write_bytes("\ufeffcat\ndog\n".encode("utf-8"))
    assert read_class_names(tmp_path / "classes.txt", 2) == ("cat", "dog")


def test_line_numbers_are_kept(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("\na.jpg 0 1\n\n\nb.jpg 1 1\n")
    parsed = read_image_list(p)
    assert parsed.paths == ["a.jpg", "b.jpg"] and parsed.lines.tolist() == [2, 5]


def test_classes_txt_that_is_a_folder_or_not_utf8(tmp_path):
    (tmp_path / "classes.txt").mkdir()
    with pytest.raises(UserError, match=r"class-name file .*classes.txt is a folder, not a file"):
        read_class_names(tmp_path / "classes.txt", 2)
    (tmp_path / "classes.txt").rmdir()
    (tmp_path / "classes.txt").write_bytes("chat\nb\xe9b\xe9\n".encode("latin-1"))
    with pytest.raises(UserError) as e:
        read_class_names(tmp_path / "classes.txt", 2)
    assert str(tmp_path / "classes.txt") in str(e.value) and "not UTF-8" in str(e.value)


def test_list_that_is_not_utf8(tmp_path):
    p = tmp_path / "l.txt"
    p.write_bytes(b"a.jpg 0 1\n\xff.jpg 1 0\n")
    with pytest.raises(UserError, match=r"cannot read image list .*l.txt: it is not UTF-8 text \(byte 10 is"):
        read_list(p)


def test_output_folder_checks(tmp_path):
    out = output_folder(tmp_path / "new" / "o", ["a.txt"], overwrite=False)
    assert out.is_dir()
    (out / "a.txt").write_text("mine")
    with pytest.raises(UserError, match="already holds a.txt; pass --overwrite"):
        output_folder(out, ["a.txt", "b.txt"], overwrite=False)
    assert output_folder(out, ["a.txt"], overwrite=True) == out
    (out / "b.txt").mkdir()
    with pytest.raises(UserError, match="b.txt is a folder"):
        output_folder(out, ["b.txt"], overwrite=True)
    with pytest.raises(UserError, match="is a file"):
        output_folder(out / "a.txt", ["x"], overwrite=True)
