"""Tests of hyp2.data.flickr: reading img.txt / targets.txt and the split (official, --split_file, seeded)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hyp2.data import DataOptions, build_dataset
from hyp2.data import flickr
from hyp2.data.flickr import build_flickr, validate_permutation
from hyp2.errors import UserError

from .conftest import mounted, serve_pinned, write_jpeg

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


def test_split_file_that_is_a_folder_or_nested_too_deeply(tmp_path):
    make_flickr(tmp_path)
    with pytest.raises(UserError) as e:
        build_flickr(opts(tmp_path, split_file=tmp_path), num_query=2, num_train=3)
    assert str(e.value) == f"--split_file {tmp_path} is a folder, not a file; pass the JSON file holding the split"
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError) as e:
        build_flickr(opts(tmp_path, split_file=tmp_path / "deep.json"), num_query=2, num_train=3)
    assert str(e.value) == f"cannot read split file {tmp_path / 'deep.json'}: JSON nested too deeply to be a hyp2 file"


def test_saved_split_that_no_longer_matches(tmp_path):
    make_flickr(tmp_path)
    (tmp_path / "flickr25k" / "split_seed0.json").write_text(json.dumps(list(range(20))))
    with pytest.raises(UserError, match="delete .*split_seed0.json to draw a new split"):
        build_flickr(opts(tmp_path), num_query=2, num_train=3)


def test_a_split_that_cannot_be_saved_is_one_line(tmp_path):
    make_flickr(tmp_path / "ro-src")
    with mounted("ro", tmp_path / "ro") as ro:
        with pytest.raises(UserError, match=rf"^cannot write the split file {ro / 'flickr25k' / 'split_seed0.json'} "
                                            rf"\(.*Read-only file system.*\); check the free space and permissions"):
            build_flickr(opts(ro), num_query=2, num_train=3)


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


def test_an_img_txt_path_that_leaves_the_data_root_is_refused(tmp_path):
    from .test_custom import inside_message

    root = tmp_path / "data"
    lines = [f"im{k}.jpg" for k in range(1, 9)] + ["../../outside.jpg", "im10.jpg"]
    write_jpeg(tmp_path / "outside.jpg", seed=5)  # where the entry leads: it must not be read
    (root / "flickr25k").mkdir(parents=True)
    make_flickr(root, img_lines=[n for n in lines if "/" not in n], num_labels=3)
    folder = root / "flickr25k"
    (folder / "img.txt").write_text("\n".join(lines[:4]) + "\n\n" + "\n".join(lines[4:]) + "\n")
    (folder / "targets.txt").write_text("1 0 0\n" * len(lines))
    with pytest.raises(UserError) as e:
        build_flickr(opts(root), num_query=1, num_train=1, progress=False)
    assert str(e.value) == inside_message(folder / "img.txt", 10, "../../outside.jpg", root, folder)


def test_generic_class_names_without_classes_txt(tmp_path):
    make_flickr(tmp_path, num_labels=3)
    assert build_flickr(opts(tmp_path), num_query=2, num_train=3).classes == ("class0", "class1", "class2")


def test_errors_in_the_files(tmp_path):
    folder = tmp_path / "flickr25k"
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


# ------------------------------------------------------------------------ the authors' files and split


def official_files(n: int, seed: int = 5) -> tuple[list[str], np.ndarray, list[int], dict[str, bytes]]:
    """Stand-ins of the authors' three files: an img.txt NOT in numeric order, targets.txt lines that
    start with a space (as theirs do), and flickr.txt, a JSON permutation written as json.dumps does."""
    rng = np.random.default_rng(seed)
    names = [f"im{k}.jpg" for k in rng.permutation(np.arange(1, n + 1))]
    labels = (rng.random((n, 38)) < 0.2).astype(np.uint8)
    labels[:, 16] = 1
    perm = [int(v) for v in rng.permutation(n)]
    contents = {"data/flickr25k/img.txt": "".join(f"{x}\n" for x in names).encode(),
                "data/flickr25k/targets.txt": "".join(" " + " ".join(map(str, r)) + "\n" for r in labels).encode(),
                "flickr.txt": json.dumps(perm).encode()}
    return names, labels, perm, contents


@pytest.fixture
def authors(server, monkeypatch, tmp_path):
    """5,012 images on the loopback server (the protocol's 1,000 + 4,000 and a database of 12), the image
    files present but empty (nothing here decodes them)."""
    names, labels, perm, contents = official_files(5012)
    served = serve_pinned(server, contents)
    monkeypatch.setattr(flickr, "OFFICIAL_LISTS", served[:2])
    monkeypatch.setattr(flickr, "OFFICIAL_SPLIT", served[2])
    pics = tmp_path / "flickr25k" / "mirflickr"
    pics.mkdir(parents=True)
    for name in names:
        (pics / name).touch()
    return names, labels, perm


def test_official_split_is_applied_as_the_official_code_does(authors, server, tmp_path, capsys):
    names, labels, perm = authors
    data = build_dataset("flickr", DataOptions(root=tmp_path))  # the registered builder: 1,000 / 4,000 / rest
    fetched = (tmp_path / "flickr25k" / "img.txt").read_text().splitlines()
    assert fetched == names and fetched != sorted(fetched, key=lambda x: int(x[2:-4]))
    # the official code: data = img.txt lines in file order; query = data[p[:1000]], train = data[p[1000:5000]],
    # retrieval = data[p[5000:]], and the same rows of targets.txt
    expect = {"query": [], "train": [], "database": []}
    for pos, index in enumerate(perm):
        role = "query" if pos < 1000 else "train" if pos < 5000 else "database"
        expect[role].append(index)
    for role, rows in expect.items():
        split = getattr(data, role)
        assert split.ids == [f"flickr25k/mirflickr/{names[i]}" for i in rows]
        np.testing.assert_array_equal(split.labels, labels[rows])
        assert split.where(0) == f"{tmp_path / 'flickr25k' / 'targets.txt'} line {rows[0] + 1}"
    assert len(data.database) == 12 and data.topk == 12 and data.classes == flickr.CLASSES
    assert "the official split" in data.provenance["split"] and "flickr.txt" in data.provenance["split"]
    assert "the files of the HyP² authors' repository" in data.provenance["lists"]
    assert not list((tmp_path / "flickr25k").glob("split_seed*.json"))  # nothing drawn
    assert capsys.readouterr().err.count("third-party") == 3
    server.requests.clear()
    again = build_dataset("flickr", DataOptions(root=tmp_path, seed=7))  # the seed does not matter
    assert again.query.ids == data.query.ids and server.requests == []


def test_split_file_wins_over_the_official_split(authors, tmp_path):
    names, _, _ = authors
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(list(range(len(names)))))
    data = build_flickr(DataOptions(root=tmp_path, split_file=mine), progress=False)
    assert data.query.ids[:2] == [f"flickr25k/mirflickr/{names[0]}", f"flickr25k/mirflickr/{names[1]}"]
    assert data.provenance["split"].startswith(f"--split_file {mine} (git blob ")
    assert not (tmp_path / "flickr25k" / "flickr.txt").exists()  # not needed, not fetched


def test_an_edited_official_split_file_is_refused(authors, tmp_path):
    build_flickr(DataOptions(root=tmp_path), progress=False)
    split = tmp_path / "flickr25k" / "flickr.txt"
    perm = json.loads(split.read_text())
    split.write_text(json.dumps(perm[::-1]))
    with pytest.raises(UserError, match=r"flickr.txt is not the official split file .*--split_file"):
        build_flickr(DataOptions(root=tmp_path), progress=False)


def test_prepared_files_get_a_seeded_split(authors, server, tmp_path):
    make_flickr(tmp_path, n=12)  # img.txt / targets.txt of the user's own (e.g. from prepare)
    data = build_flickr(DataOptions(root=tmp_path, seed=2), num_query=2, num_train=3, progress=False)
    assert server.requests == []  # the authors' split indexes another order: not fetched
    assert data.provenance["split"].startswith(f"drawn from --seed 2 and saved in {tmp_path / 'flickr25k'}")
    assert "the user's own files" in data.provenance["lists"]


def test_no_download_names_the_files_and_prepare(authors, server, tmp_path):
    with pytest.raises(UserError) as e:
        build_flickr(DataOptions(root=tmp_path, download=False), progress=False)
    msg = str(e.value)
    assert "img.txt, targets.txt missing in" in msg and "--no_download" in msg and "prepare" in msg
    assert all(f.url in msg for f in flickr.OFFICIAL_LISTS) and server.requests == []


def test_missing_images_say_where_they_come_from(authors, tmp_path):
    names, _, _ = authors
    (tmp_path / "flickr25k" / "mirflickr" / names[3]).unlink()
    with pytest.raises(UserError, match=rf"image .*{names[3]} does not exist; the images come from mirflickr25k.zip"):
        build_flickr(DataOptions(root=tmp_path), progress=False)


def test_real_tables_hold_the_pinned_files():
    commit = "https://raw.githubusercontent.com/JerryXu0129/HyP2-Loss/e9c1c24c74d306d867f5d1d3505f5c791871534e/"
    assert [f.url for f in flickr.OFFICIAL_LISTS] == [commit + "data/flickr25k/img.txt",
                                                      commit + "data/flickr25k/targets.txt"]
    assert flickr.OFFICIAL_SPLIT.url == commit + "flickr.txt"
    pinned = (*flickr.OFFICIAL_LISTS, flickr.OFFICIAL_SPLIT)
    assert [f.git_blob[:7] for f in pinned] == ["e3eb7e7", "96c483f", "7df29b9"]
    assert all(len(f.sha256) == 64 for f in pinned)
