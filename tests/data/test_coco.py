"""Tests of hyp2.data.coco on generated data: instance-annotation JSON, image trees and ZIP archives
served from a loopback server, lists served as stand-ins of DeepHash-pytorch's."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hyp2.data import DataOptions, build_dataset
from hyp2.data import coco
from hyp2.data.coco import build_coco, check_lists, prepare, read_annotations
from hyp2.errors import UserError

from .conftest import serve_pinned, write_jpeg

# 80 categories with ids in 1..90 and gaps, as in the real files; written to the JSON in shuffled order.
CAT_IDS = sorted(np.random.default_rng(0).choice(np.arange(1, 91), 80, replace=False).tolist())
SETS = {"train2014": 12, "val2014": 8}


def annotation_data(seed: int = 1) -> dict[str, dict]:
    """Per image set, a COCO instances dict: images 3 and 7 of each set have no annotation."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, (image_set, n) in enumerate(SETS.items()):
        images = [{"id": 1000 * (k + 1) + i, "file_name": f"COCO_{image_set}_{i:012d}.jpg", "width": 40}
                  for i in range(n)]
        anns = []
        for im in images:
            if im["id"] % 1000 in (3, 7):
                continue
            for cid in rng.choice(CAT_IDS, int(rng.integers(1, 4))):
                anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": int(cid), "bbox": [0, 0, 1, 1]})
        cats = [{"id": c, "name": f"cat{c}", "supercategory": "x"} for c in CAT_IDS]
        rng.shuffle(cats)
        rng.shuffle(images)
        out[image_set] = {"info": {}, "images": images, "annotations": anns, "categories": cats}
    return out


def expected_rows(data: dict[str, dict]) -> dict[str, list[int]]:
    """Naive reference: "set/file" -> 80 labels, columns in ascending category id."""
    rows = {}
    for image_set, d in data.items():
        names = {im["id"]: im["file_name"] for im in d["images"]}
        for im_id, name in names.items():
            cats = {a["category_id"] for a in d["annotations"] if a["image_id"] == im_id}
            rows[f"{image_set}/{name}"] = [1 if c in cats else 0 for c in CAT_IDS]
    return rows


@pytest.fixture
def annotations(tmp_path) -> tuple[Path, dict]:
    folder = tmp_path / "annotations"
    folder.mkdir()
    data = annotation_data()
    for image_set, d in data.items():
        (folder / f"instances_{image_set}.json").write_text(json.dumps(d))
    return folder, data


def write_images(base: Path) -> None:
    for k, (image_set, n) in enumerate(SETS.items()):
        for i in range(n):
            write_jpeg(base / image_set / f"COCO_{image_set}_{i:012d}.jpg", seed=50 * k + i)


def parse(path: Path) -> dict[str, list[int]]:
    return {line.split()[0]: [int(v) for v in line.split()[1:]] for line in path.read_text().splitlines()}


# ------------------------------------------------------------------------------------------ prepare


def test_read_annotations_orders_columns_by_category_id(annotations):
    folder, data = annotations
    paths, labels, names = read_annotations(folder)
    assert names == tuple(f"cat{c}" for c in CAT_IDS)
    assert paths[:2] == ["train2014/COCO_train2014_000000000000.jpg", "train2014/COCO_train2014_000000000001.jpg"]
    assert paths[12] == "val2014/COCO_val2014_000000000000.jpg" and len(paths) == 20
    ref = expected_rows(data)
    assert [labels[k].tolist() for k in range(len(paths))] == [ref[p] for p in paths]


def test_prepare_writes_the_protocol_split(annotations, tmp_path):
    folder, data = annotations
    out = tmp_path / "data" / "coco"
    counts = prepare(folder, out, seed=3, num_query=3, num_train=4)
    assert counts == {"images": 16, "dropped": 4, "classes": 80, "query": 3, "train": 4, "database": 13}
    ref = {p: r for p, r in expected_rows(data).items() if any(r)}  # the unlabelled images are dropped
    test, database, train = (parse(out / n) for n in ("test.txt", "database.txt", "train.txt"))
    assert len(test) == 3 and len(database) == 13 and len(train) == 4
    assert not set(test) & set(database) and set(train) <= set(database)  # HashNet: train drawn from the database
    assert set(test) | set(database) == set(ref)
    assert all(labels == ref[p] for lst in (test, database, train) for p, labels in lst.items())
    assert list(database) == sorted(database)  # each list in the images' order
    assert (out / "classes.txt").read_text().splitlines() == [f"cat{c}" for c in CAT_IDS]
    again = tmp_path / "again"
    prepare(folder, again, seed=3, num_query=3, num_train=4)
    assert (again / "test.txt").read_text() == (out / "test.txt").read_text()
    prepare(folder, tmp_path / "other", seed=4, num_query=3, num_train=4)
    assert (tmp_path / "other" / "train.txt").read_text() != (out / "train.txt").read_text()


def test_prepare_command_line(annotations, tmp_path, capsys):
    folder, _ = annotations
    argv = ["prepare", "--annotations", str(folder), "--data_root", str(tmp_path / "d"), "--num_query", "3",
            "--num_train", "4"]
    assert coco.main(argv) == 0
    out = capsys.readouterr().out
    assert "(3 queries), database.txt (13), train.txt (4, drawn from the database with seed 0)" in out
    assert (tmp_path / "d" / "coco" / "train.txt").exists()
    assert coco.main(argv) == 2  # the lists exist: not replaced without --overwrite
    assert "already holds test.txt, database.txt, train.txt, classes.txt" in capsys.readouterr().err
    assert coco.main(argv + ["--seed", "-1", "--overwrite"]) == 2
    assert "--seed -1: must be at least 0" in capsys.readouterr().err
    assert coco.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "required: command" in err


@pytest.mark.parametrize("damage,match", [
    (lambda d: d.pop("categories"), "not a COCO instances file"),
    (lambda d: d["annotations"].append({"image_id": 5, "category_id": 1}), "names image 5 / category 1"),
    (lambda d: d["images"][0].pop("file_name"), "lacks a field"),
])
def test_bad_annotation_file_is_one_line(annotations, tmp_path, damage, match):
    folder, data = annotations
    d = data["val2014"]
    damage(d)
    (folder / "instances_val2014.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match=match) as e:
        prepare(folder, tmp_path / "o", num_query=3, num_train=4)
    assert "instances_val2014.json" in str(e.value) and not (tmp_path / "o").exists()


def test_missing_annotation_file(tmp_path):
    with pytest.raises(UserError, match="instances_train2014.json does not exist; unpack annotations_trainval2014.zip"):
        prepare(tmp_path, tmp_path / "o", num_query=3, num_train=4)


def test_json_nested_too_deeply_is_one_line(annotations, tmp_path):
    folder, _ = annotations
    (folder / "instances_val2014.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError) as e:
        prepare(folder, tmp_path / "o", num_query=3, num_train=4)
    assert str(e.value) == (f"cannot read COCO annotation file {folder / 'instances_val2014.json'}: JSON nested too "
                            f"deeply to be a hyp2 file")


def test_flags_naming_a_file_for_a_folder_or_the_other_way(annotations, tmp_path, capsys):
    folder, _ = annotations
    (tmp_path / "file").write_text("x")
    for command in ("prepare", "check"):
        assert coco.main([command, "--annotations", str(folder / "instances_val2014.json"), "--out",
                          str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err == (f"error: annotation folder {folder / 'instances_val2014.json'} is a file, not a folder; unpack "
                       f"annotations_trainval2014.zip (cocodataset.org) and pass its annotations folder with "
                       f"--annotations\n")
        assert coco.main([command, "--annotations", str(folder), "--data_root", str(tmp_path / "file")]) == 2
        assert f"error: --data_root {tmp_path / 'file'} is a file, not a folder" in capsys.readouterr().err
    assert coco.main(["check", "--annotations", str(folder), "--data_root", str(tmp_path / "nope")]) == 2
    assert f"error: --data_root {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert coco.main(["check", "--annotations", str(folder), "--out", str(tmp_path / "file")]) == 2
    assert f"error: --out {tmp_path / 'file'} is a file, not a folder" in capsys.readouterr().err


def test_check_compares_lists_with_the_annotations(annotations, tmp_path):
    folder, _ = annotations
    out = tmp_path / "coco"
    prepare(folder, out, num_query=3, num_train=4)
    report = check_lists(folder, out)
    assert len(report) == 3 and all("0 not in the annotations, 0 with other labels" in line for line in report)
    lines = (out / "test.txt").read_text().splitlines()
    first = lines[1].split()
    first[5] = "1" if first[5] == "0" else "0"
    lines[1] = " ".join(first)
    (out / "test.txt").write_text("\n".join(lines) + "\n")
    report = check_lists(folder, out)
    assert report[1].endswith(f"3 images, 0 not in the annotations, 1 with other labels than the annotations give; "
                              f"first at line 2 ({first[0]})")


# ------------------------------------------------------------------------------------------- loading


@pytest.fixture
def prepared(annotations, tmp_path) -> Path:
    root = tmp_path / "data"
    prepare(annotations[0], root / "coco", num_query=3, num_train=4)
    return root


def test_build_reads_the_lists_and_images(prepared):
    write_images(prepared / "coco")
    data = build_dataset("coco", DataOptions(root=prepared, image_size=16))
    test = parse(prepared / "coco" / "test.txt")
    assert data.query.ids == [f"coco/{p}" for p in test] and data.query.labels.tolist() == list(test.values())
    assert len(data.train) == 4 and len(data.database) == 13 and data.topk == 13  # mAP@5000, capped
    assert data.classes == tuple(f"cat{c}" for c in CAT_IDS)  # from prepare's classes.txt
    assert data.query.where(2) == f"{prepared / 'coco' / 'test.txt'} line 3"
    assert "the user's own files" in data.provenance["lists"] and "DeepHash-pytorch" in data.provenance["lists"]
    x, y, _ = data.database[0]
    assert x.shape == (3, 16, 16) and y.shape == (80,)
    (prepared / "coco" / "classes.txt").unlink()
    assert build_coco(DataOptions(root=prepared)).classes == coco.CLASSES


def zip_of(base: Path, image_set: str, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{image_set}/", b"")
        for p in sorted((base / image_set).iterdir()):
            zf.write(p, f"{image_set}/{p.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def site(server, prepared, tmp_path, monkeypatch):
    """The loopback server as the COCO site (the two archives) and as DeepHash-pytorch (the lists, moved
    out of the data folder); returns (root, base URL, archive sizes)."""
    write_images(tmp_path / "src")
    sizes = {}
    for image_set in SETS:
        server.files[f"/zips/{image_set}.zip"] = zip_of(tmp_path / "src", image_set)
        sizes[image_set] = len(server.files[f"/zips/{image_set}.zip"])
    contents = {f"data/coco/{n}": (prepared / "coco" / n).read_bytes()
                for n in ("train.txt", "test.txt", "database.txt")}
    monkeypatch.setattr(coco, "OFFICIAL", serve_pinned(server, contents, sha256=False))
    for n in ("train.txt", "test.txt", "database.txt", "classes.txt"):
        (prepared / "coco" / n).unlink()
    return prepared, server.url + "/zips", sizes


def test_lists_and_images_are_fetched_verified_and_extracted(site, server, capsys):
    root, url, sizes = site
    server.modes["/zips/val2014.zip"] = "drop_once"  # and resumed
    data = build_coco(DataOptions(root=root, image_size=16), base_url=url, sizes=sizes, progress=False)
    assert len(data.query) == 3 and len(data.database) == 13 and data.classes == coco.CLASSES
    assert "the files of DeepHash-pytorch github.com/swuxyj/DeepHash-pytorch at commit ab14068" in \
        data.provenance["lists"]
    assert capsys.readouterr().err.count("(a third-party source); verified by its git blob id") == 3
    folder = root / "coco"
    assert sorted(p.name for p in folder.iterdir()) == ["database.txt", "test.txt", "train.txt", "train2014",
                                                        "train2014.zip", "val2014", "val2014.zip"]
    assert len(list((folder / "val2014").iterdir())) == SETS["val2014"]
    assert ("/zips/val2014.zip", f"bytes={sizes['val2014'] // 2}-") in server.requests
    server.requests.clear()
    build_coco(DataOptions(root=root), base_url=url, sizes=sizes, progress=False)  # a later run: no network
    assert server.requests == []


def test_wrong_size_is_refused_unless_no_md5(site, server):
    root, url, sizes = site
    wrong = dict(sizes, train2014=sizes["train2014"] + 1)
    with pytest.raises(UserError, match=r"size mismatch for train2014.zip .*the file was deleted"):
        build_coco(DataOptions(root=root), base_url=url, sizes=wrong, progress=False)
    assert not (root / "coco" / "train2014.zip").exists() and not (root / "coco" / "train2014.zip.part").exists()
    (root / "coco" / "train2014.zip").write_bytes(server.files["/zips/train2014.zip"])  # placed by hand
    with pytest.raises(UserError, match=r"train2014.zip is .* bytes but the COCO archive has .*--no_md5"):
        build_coco(DataOptions(root=root, download=False), base_url=url, sizes=wrong, progress=False)
    data = build_coco(DataOptions(root=root, check_md5=False), base_url=url, sizes=wrong, progress=False)
    assert len(data.train) == 4


def test_archive_with_an_escaping_member_is_refused(site, server, tmp_path):
    root, url, sizes = site
    bad = zip_of(tmp_path / "src", "val2014", {"val2014/../../evil.jpg": b"x"})
    server.files["/zips/val2014.zip"] = bad
    sizes = dict(sizes, val2014=len(bad))
    with pytest.raises(UserError, match=r"refusing to extract .*val2014.zip: member 'val2014/../../evil.jpg' contains"):
        build_coco(DataOptions(root=root), base_url=url, sizes=sizes, progress=False)
    assert not (root / "coco" / "val2014").exists() and not (root / "evil.jpg").exists()
    assert not (tmp_path / "evil.jpg").exists()


def test_offline_names_files_and_where_they_come_from(site, server, monkeypatch):
    root, url, sizes = site
    with pytest.raises(UserError) as e:
        build_coco(DataOptions(root=root, download=False), base_url=url, sizes=sizes, progress=False)
    msg = str(e.value)
    assert "MS-COCO: train.txt, test.txt, database.txt missing in" in msg and "DeepHash-pytorch" in msg
    assert "third-party" in msg and "python -m hyp2.data.coco prepare" in msg
    build_coco(DataOptions(root=root), base_url=url, sizes=sizes, progress=False)  # lists and images now present
    for image_set in SETS:
        (root / "coco" / f"{image_set}.zip").unlink()
    shutil.rmtree(root / "coco" / "val2014")
    monkeypatch.setenv(coco.ENV_URL, "http://mirror.example/coco/")
    with pytest.raises(UserError, match=r"expected the folder .*val2014 or the archive .*val2014.zip \(downloads are "
                                        r"off; get it from http://mirror.example/coco/val2014.zip"):
        build_coco(DataOptions(root=root, download=False), sizes=sizes, progress=False)


def test_real_tables():
    commit = "https://raw.githubusercontent.com/swuxyj/DeepHash-pytorch/ab14068ea9b33e8fe12de49d976d0c2e3f0dc129/"
    assert [f.url for f in coco.OFFICIAL] == [commit + f"data/coco/{n}" for n in ("train.txt", "test.txt",
                                                                                  "database.txt")]
    assert [f.git_blob[:7] for f in coco.OFFICIAL] == ["2b78ffd", "e326d20", "aaabcac"]
    assert coco.ARCHIVE_SIZES == {"train2014": 13510573713, "val2014": 6645013297}
    assert len(coco.CLASSES) == 80 == len(set(coco.CLASSES)) and coco.CLASSES[0] == "person"


def test_a_path_that_leaves_the_data_root_is_refused(prepared, tmp_path):
    from .test_custom import inside_message

    write_images(prepared / "coco")
    write_jpeg(tmp_path / "outside.jpg", seed=5)
    listing = prepared / "coco" / "database.txt"
    lines = listing.read_text().splitlines()
    lines[3] = "../../outside.jpg " + lines[3].split(" ", 1)[1]
    listing.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as e:
        build_dataset("coco", DataOptions(root=prepared, image_size=16))
    assert str(e.value) == inside_message(listing, 4, "../../outside.jpg", prepared, prepared / "coco")
