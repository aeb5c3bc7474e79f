"""Tests of hyp2.data.voc through the real download code, against a loopback HTTP server.

The served archives are generated here: VOC-format trees (tiny JPEGs, annotation XML, ImageSets)
with traps -- a ``difficult`` object (counts), a ``<part>`` named like no class (must be ignored),
repeated objects, an image without objects.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hyp2.data import DataOptions, build_dataset
from hyp2.data import voc
from hyp2.data.voc import CLASSES, build_voc, ensure_voc, parse_annotation
from hyp2.errors import UserError

from .conftest import mounted, write_jpeg

# id -> list of (class, difficult); expected labels are the set of classes, difficult included.
VOC2007 = {
    "trainval": {"000001": [("dog", 0), ("person", 1)], "000002": [("car", 0), ("car", 0)],
                 "000003": [("person", 0)], "000004": [("tvmonitor", 0), ("aeroplane", 1)]},
    "test": {"000005": [("bicycle", 0)], "000006": [("sheep", 0), ("cow", 0)], "000007": []},
}
VOC2012 = {
    "train": {"2008_000001": [("cat", 0)], "2008_000002": [("bus", 0), ("person", 0)],
              "2008_000003": [("sofa", 1)]},
    "val": {"2008_000004": [("boat", 0), ("bird", 0)], "2008_000005": [("pottedplant", 0)]},
}


def annotation_xml(objects: list[tuple[str, int]]) -> bytes:
    parts = ["<annotation><folder>VOC</folder><size><width>40</width><height>30</height><depth>3</depth></size>"]
    for name, difficult in objects:
        # a <part> with its own <name>, as VOC person layouts have: must not become a label
        part = "<part><name>head</name><bndbox><xmin>1</xmin></bndbox></part>" if name == "person" else ""
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><difficult>{difficult}</difficult>"
                     f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox>{part}</object>")
    parts.append("</annotation>")
    return "".join(parts).encode()


def write_tree(base: Path, year: str, splits: dict[str, dict[str, list]]) -> Path:
    """Write the VOC tree for ``splits`` under ``base/VOCdevkit/VOC<year>``; returns the tree."""
    tree = base / "VOCdevkit" / f"VOC{year}"
    (tree / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (tree / "Annotations").mkdir(exist_ok=True)
    for split, items in splits.items():
        (tree / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in items))
        for image_id, objects in items.items():
            (tree / "Annotations" / f"{image_id}.xml").write_bytes(annotation_xml(objects))
            write_jpeg(tree / "JPEGImages" / f"{image_id}.jpg", seed=int(image_id.replace("_", "")) % 100000)
    return tree


def make_archive(tmp: Path, year: str, splits: dict[str, dict[str, list]]) -> bytes:
    """A tar of a VOC tree holding ``splits`` (paths VOCdevkit/VOC<year>/...)."""
    src = tmp / f"src-{year}-{'-'.join(splits)}"
    write_tree(src, year, splits)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src / "VOCdevkit", arcname="VOCdevkit")
    shutil.rmtree(src)
    return buf.getvalue()


def expected_labels(items: dict[str, list]) -> np.ndarray:
    out = np.zeros((len(items), 20), np.uint8)
    for n, objects in enumerate(items.values()):
        for name, _ in objects:
            out[n, CLASSES.index(name)] = 1
    return out


@pytest.fixture
def voc2007_server(server, tmp_path):
    """The server holding both VOC2007 archives under /voc/; returns (server, base_url, md5s)."""
    trainval = make_archive(tmp_path, "2007", {"trainval": VOC2007["trainval"]})
    test = make_archive(tmp_path, "2007", {"test": VOC2007["test"]})
    server.files["/voc/VOCtrainval_06-Nov-2007.tar"] = trainval
    server.files["/voc/VOCtest_06-Nov-2007.tar"] = test
    md5s = {"VOCtrainval_06-Nov-2007.tar": hashlib.md5(trainval).hexdigest(),
            "VOCtest_06-Nov-2007.tar": hashlib.md5(test).hexdigest()}
    return server, server.url + "/voc", md5s


def options(root: Path, url: str | None = None, **kw) -> DataOptions:
    return DataOptions(root=root, image_size=32, voc_url=url, **kw)


def test_download_extract_and_protocol_voc2007(voc2007_server, tmp_path):
    srv, url, md5s = voc2007_server
    root = tmp_path / "data"
    data = build_voc(options(root, url), "2007", md5s=md5s, progress=False)
    assert sorted(srv.requests) == [("/voc/VOCtest_06-Nov-2007.tar", None), ("/voc/VOCtrainval_06-Nov-2007.tar", None)]
    assert data.name == "voc2007" and data.classes == CLASSES and data.num_classes == 20
    # train = database = trainval, query = test; mAP@5011 capped at the database size
    assert data.train.ids == data.database.ids == [f"VOCdevkit/VOC2007/JPEGImages/{i}.jpg" for i in VOC2007["trainval"]]
    assert data.query.ids == [f"VOCdevkit/VOC2007/JPEGImages/{i}.jpg" for i in VOC2007["test"]]
    np.testing.assert_array_equal(data.train.labels, expected_labels(VOC2007["trainval"]))
    np.testing.assert_array_equal(data.query.labels, expected_labels(VOC2007["test"]))
    assert data.query.labels[2].sum() == 0  # the image without objects keeps an all-zero row
    assert data.topk == len(VOC2007["trainval"])
    x, y, i = data.query[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and i == 1
    assert y.tolist() == expected_labels(VOC2007["test"])[1].tolist()
    # archives kept and verified, no temporary leftovers
    leftovers = sorted(p.name for p in root.iterdir())
    assert leftovers == ["VOCdevkit", "VOCtest_06-Nov-2007.tar", "VOCtrainval_06-Nov-2007.tar"]

    # a later run touches neither the network nor the archives
    srv.requests.clear()
    for p in root.glob("*.tar"):
        p.unlink()
    again = build_voc(options(root, url), "2007", md5s=md5s, progress=False)
    assert srv.requests == []
    np.testing.assert_array_equal(again.train.labels, data.train.labels)


def test_download_voc2012_train_val(server, tmp_path):
    archive = make_archive(tmp_path, "2012", VOC2012)
    server.files["/m/VOCtrainval_11-May-2012.tar"] = archive
    md5s = {"VOCtrainval_11-May-2012.tar": hashlib.md5(archive).hexdigest()}
    data = build_voc(options(tmp_path / "d", server.url + "/m/"), "2012", md5s=md5s, progress=False)
    assert data.name == "voc2012" and len(server.requests) == 1
    np.testing.assert_array_equal(data.train.labels, expected_labels(VOC2012["train"]))
    np.testing.assert_array_equal(data.database.labels, expected_labels(VOC2012["train"]))
    np.testing.assert_array_equal(data.query.labels, expected_labels(VOC2012["val"]))
    assert data.train.transform.train and not data.database.transform.train and not data.query.transform.train
    assert data.topk == 3


def test_env_variable_gives_the_base_url(voc2007_server, tmp_path, monkeypatch):
    srv, url, md5s = voc2007_server
    monkeypatch.setenv(voc.ENV_URL, url + "/")
    build_voc(options(tmp_path / "d", None), "2007", md5s=md5s, progress=False)
    assert len(srv.requests) == 2


def test_md5_mismatch_is_clear_and_leaves_no_complete_file(voc2007_server, tmp_path):
    srv, url, md5s = voc2007_server
    wrong = dict(md5s, **{"VOCtest_06-Nov-2007.tar": "f" * 32})
    root = tmp_path / "d"
    with pytest.raises(UserError) as e:
        build_voc(options(root, url), "2007", md5s=wrong, progress=False)
    msg = str(e.value)
    assert "VOCtest_06-Nov-2007.tar" in msg and "f" * 32 in msg and md5s["VOCtest_06-Nov-2007.tar"] in msg
    assert not (root / "VOCtest_06-Nov-2007.tar").exists() and not (root / "VOCtest_06-Nov-2007.tar.part").exists()
    assert not (root / "VOCdevkit").exists()
    # --no_md5 accepts the same bytes
    data = build_voc(options(root, url, check_md5=False), "2007", md5s=wrong, progress=False)
    assert len(data.query) == 3


def test_interrupted_download_is_resumed(voc2007_server, tmp_path):
    srv, url, md5s = voc2007_server
    srv.modes["/voc/VOCtrainval_06-Nov-2007.tar"] = "drop_once"
    root = tmp_path / "d"
    build_voc(options(root, url), "2007", md5s=md5s, progress=False)
    size = len(srv.files["/voc/VOCtrainval_06-Nov-2007.tar"])
    hits = [r for r in srv.requests if r[0].endswith("VOCtrainval_06-Nov-2007.tar")]
    assert hits == [("/voc/VOCtrainval_06-Nov-2007.tar", None),
                    ("/voc/VOCtrainval_06-Nov-2007.tar", f"bytes={size // 2}-")]
    assert hashlib.md5((root / "VOCtrainval_06-Nov-2007.tar").read_bytes()).hexdigest() == md5s[
        "VOCtrainval_06-Nov-2007.tar"]


def test_interrupted_download_resumes_on_the_next_run(voc2007_server, tmp_path):
    srv, url, md5s = voc2007_server
    srv.modes["/voc/VOCtrainval_06-Nov-2007.tar"] = "drop_once"
    root = tmp_path / "d"
    with pytest.raises(UserError, match="interrupted"):
        ensure_voc(root, "2007", base_url=url, md5s=md5s, attempts=1, progress=False)
    assert (root / "VOCtrainval_06-Nov-2007.tar.part").exists() and not (root / "VOCdevkit").exists()
    tree = ensure_voc(root, "2007", base_url=url, md5s=md5s, attempts=1, progress=False)
    assert srv.requests[-2][1] is not None and srv.requests[-2][1].startswith("bytes=")
    assert (tree / "ImageSets" / "Main" / "test.txt").exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/hyp2-voc-abs-evil.txt", "symlink"])
def test_unsafe_archive_is_refused(server, tmp_path, member):
    good = make_archive(tmp_path, "2012", VOC2012)
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(good)) as src, tarfile.open(fileobj=buf, mode="w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        if member == "symlink":
            info = tarfile.TarInfo("VOCdevkit/VOC2012/JPEGImages/link.jpg")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            dst.addfile(info)
        else:
            info = tarfile.TarInfo(member)
            info.size = 4
            dst.addfile(info, io.BytesIO(b"evil"))
    server.files["/v/VOCtrainval_11-May-2012.tar"] = buf.getvalue()
    root = tmp_path / "r" / "data"
    with pytest.raises(UserError, match="refusing to extract"):
        build_voc(options(root, server.url + "/v", check_md5=False), "2012", progress=False)
    assert not (root / "VOCdevkit").exists() and not (tmp_path / "r" / "evil.txt").exists()
    assert not Path("/tmp/hyp2-voc-abs-evil.txt").exists()
    assert [p.name for p in root.iterdir()] == ["VOCtrainval_11-May-2012.tar"]  # no staging left


def test_hand_placed_tree_is_used_without_network(server, tmp_path):
    root = tmp_path / "d"
    write_tree(root, "2007", VOC2007)
    for download in (True, False):
        data = build_voc(options(root, server.url + "/voc", download=download), "2007", progress=False)
        assert len(data.train) == 4 and len(data.query) == 3
    assert server.requests == []


def test_registered_builders_use_the_tree(tmp_path):
    write_tree(tmp_path, "2007", VOC2007)
    write_tree(tmp_path, "2012", VOC2012)
    assert build_dataset("voc2007", options(tmp_path, download=False)).topk == 4
    assert len(build_dataset("voc2012", options(tmp_path, download=False)).query) == 2


def test_archives_placed_by_hand_are_extracted_offline(voc2007_server, tmp_path):
    srv, url, md5s = voc2007_server
    root = tmp_path / "d"
    root.mkdir()
    for name in md5s:
        (root / name).write_bytes(srv.files[f"/voc/{name}"])
    data = build_voc(options(root, url, download=False), "2007", md5s=md5s, progress=False)
    assert len(data.database) == 4 and srv.requests == []


def test_archive_placed_by_hand_with_wrong_md5_is_kept_and_reported(voc2007_server, tmp_path):
    srv, url, md5s = voc2007_server
    root = tmp_path / "d"
    root.mkdir()
    (root / "VOCtrainval_06-Nov-2007.tar").write_bytes(b"not the archive")
    with pytest.raises(UserError, match="--no_md5") as e:
        build_voc(options(root, url), "2007", md5s=md5s, progress=False)
    assert "VOCtrainval_06-Nov-2007.tar" in str(e.value)
    assert (root / "VOCtrainval_06-Nov-2007.tar").exists() and srv.requests == []


def test_download_off_and_nothing_there(server, tmp_path):
    root = tmp_path / "d"
    with pytest.raises(UserError) as e:
        build_voc(options(root, server.url, download=False), "2007", progress=False)
    msg = str(e.value)
    assert str(root / "VOCdevkit" / "VOC2007") in msg and "VOCtest_06-Nov-2007.tar" in msg
    assert server.requests == []


def test_missing_archive_on_server_names_url_and_flag(server, tmp_path):
    with pytest.raises(UserError) as e:
        build_voc(options(tmp_path, server.url + "/nothing"), "2012", progress=False)
    assert f"{server.url}/nothing/VOCtrainval_11-May-2012.tar" in str(e.value) and "--voc_url" in str(e.value)


# ------------------------------------------------------------------------------ annotations / tree


def test_parse_annotation_counts_difficult_and_ignores_parts(tmp_path):
    p = tmp_path / "a.xml"
    p.write_bytes(annotation_xml([("person", 1), ("horse", 0), ("person", 0)]))
    assert parse_annotation(p) == [CLASSES.index("horse"), CLASSES.index("person")]
    p.write_bytes(annotation_xml([]))
    assert parse_annotation(p) == []


@pytest.mark.parametrize("content,match", [
    (b"<annotation><object><name>dog</name>", "cannot parse"),
    (annotation_xml([("unicorn", 0)]), "unicorn"),
])
def test_bad_annotation_names_the_file(tmp_path, content, match):
    root = tmp_path / "d"
    tree = write_tree(root, "2012", VOC2012)
    bad = tree / "Annotations" / "2008_000002.xml"
    bad.write_bytes(content)
    with pytest.raises(UserError, match=match) as e:
        build_voc(options(root), "2012", progress=False)
    assert str(bad) in str(e.value)


def test_missing_image_or_annotation_names_the_file(tmp_path):
    root = tmp_path / "d"
    tree = write_tree(root, "2012", VOC2012)
    (tree / "JPEGImages" / "2008_000005.jpg").unlink()
    with pytest.raises(UserError, match="2008_000005.jpg"):
        build_voc(options(root), "2012", progress=False)
    (tree / "Annotations" / "2008_000003.xml").unlink()
    with pytest.raises(UserError, match="2008_000003.xml"):
        build_voc(options(root), "2012", progress=False)


def test_incomplete_hand_placed_tree(tmp_path):
    root = tmp_path / "d"
    write_tree(root, "2007", {"trainval": VOC2007["trainval"]})  # the test archive was never extracted
    with pytest.raises(UserError, match="test.txt is missing"):
        build_voc(options(root, download=False), "2007", progress=False)


def test_year_is_validated(tmp_path):
    with pytest.raises(ValueError, match="year"):
        ensure_voc(tmp_path, "2010")


def test_archive_url_joins_with_or_without_slash():
    assert voc.archive_url("http://h/a", "f.tar") == voc.archive_url("http://h/a/", "f.tar") == "http://h/a/f.tar"


def test_official_md5s_match_torchvision():
    tv = pytest.importorskip("torchvision.datasets.voc")
    for entry in tv.DATASET_YEAR_DICT.values():
        if entry["filename"] in voc.MD5 and entry["url"].endswith(entry["filename"]):
            assert voc.MD5[entry["filename"]] == entry["md5"]


# ------------------------------------------------------------------- malformed archives with --no_md5


@pytest.mark.parametrize("extra,what", [
    ([("VOCdevkit/VOC2012/JPEGImages", b"a file where a folder is", "file")], "writing member"),
    ([("VOCdevkit/VOC2012/" + "x" * 300, b"long", "file")], "File name too long"),
])
def test_malformed_archive_is_one_line(server, tmp_path, extra, what):
    good = make_archive(tmp_path, "2012", VOC2012)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as dst:
        for name, data, _ in extra:  # first, so that the real members clash with it
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
        with tarfile.open(fileobj=io.BytesIO(good)) as src:
            for m in src.getmembers():
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    server.files["/v/VOCtrainval_11-May-2012.tar"] = buf.getvalue()
    root = tmp_path / "data"
    with pytest.raises(UserError) as e:
        build_voc(options(root, server.url + "/v", check_md5=False), "2012", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"cannot extract {root / 'VOCtrainval_11-May-2012.tar'}: writing member") and what in msg
    assert "\n" not in msg and not (root / "VOCdevkit").exists()


def test_random_bytes_under_the_archive_name(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "VOCtrainval_11-May-2012.tar").write_bytes(bytes(range(256)) * 16)
    with pytest.raises(UserError) as e:
        build_voc(options(root, download=False, check_md5=False), "2012", progress=False)
    msg = str(e.value)
    assert "VOCtrainval_11-May-2012.tar: it is not a readable tar archive" in msg and "method tar" in msg
    assert "delete it and download it again" in msg and "\n" not in msg


# -------------------------------------------------------------- nothing is read outside the data root


def test_an_image_id_that_leaves_the_tree_is_refused(tmp_path):
    root = tmp_path / "data"
    tree = write_tree(root, "2012", VOC2012)
    # an annotation and an image outside the data root, where '../' in an id would reach them
    (tmp_path / "outside.xml").write_bytes(annotation_xml([("dog", 0)]))
    write_jpeg(tmp_path / "outside.jpg", seed=1)
    listing = tree / "ImageSets" / "Main" / "train.txt"
    listing.write_text(listing.read_text() + "\n../../../../outside\n")
    with pytest.raises(UserError) as e:
        build_voc(options(root, download=False), "2012", progress=False)
    assert str(e.value) == (f"{listing} line 5: image id '../../../../outside' is not a plain name (VOC ids look like "
                            f"000005 or 2008_000008); a path there would read files outside {tree}")


def truncated(archive: bytes, where: str) -> bytes:
    """``archive`` cut at the header of its last member, or right after that member's data (before the
    end-of-archive marker), as a partial download leaves it."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return archive[:last.offset if where == "header" else end]


@pytest.mark.parametrize("where", ["header", "marker"])
def test_a_truncated_archive_is_never_published(server, tmp_path, where):
    good = make_archive(tmp_path, "2012", VOC2012)
    server.files["/v/VOCtrainval_11-May-2012.tar"] = truncated(good, where)
    root = tmp_path / "data"
    with pytest.raises(UserError) as e:
        build_voc(options(root, server.url + "/v", check_md5=False), "2012", progress=False)
    assert str(e.value).startswith(f"cannot extract {root / 'VOCtrainval_11-May-2012.tar'}: the archive is truncated "
                                   f"(it stops after ")
    assert "without the end-of-archive marker); nothing was extracted" in str(e.value)
    assert [p.name for p in root.iterdir()] == ["VOCtrainval_11-May-2012.tar"]  # no tree, no staging folder


# ------------------------------------------------------------------------- full disk, read-only root


def test_a_read_only_data_root_is_one_line(voc2007_server, tmp_path):
    srv, url, md5s = voc2007_server
    src = tmp_path / "ro-src"
    src.mkdir()
    with mounted("ro", tmp_path / "ro") as ro:
        with pytest.raises(UserError) as e:  # the download
            build_voc(options(ro, url), "2007", md5s=md5s, progress=False)
        part = ro / "VOCtrainval_06-Nov-2007.tar.part"
        assert str(e.value) == (f"cannot write the download {part} (Read-only file system); {ro} is not writable: "
                                f"make it writable, or pass another --data_root")
    for name in md5s:  # the archives placed by hand, the root read-only: the extraction
        (src / name).write_bytes(srv.files[f"/voc/{name}"])
    with mounted("ro", tmp_path / "ro2") as ro:
        with pytest.raises(UserError) as e:
            build_voc(options(ro, url), "2007", md5s=md5s, progress=False)
        staging = ro / ".extract-VOC2007.tmp"
        assert str(e.value) == (f"cannot extract {ro / 'VOCtrainval_06-Nov-2007.tar'}: cannot create {staging} "
                                f"(Read-only file system); {ro} is not writable: make it writable, or pass another "
                                f"--data_root")


def test_a_full_disk_during_extraction_is_not_blamed_on_the_archive(voc2007_server, tmp_path, monkeypatch):
    srv, url, md5s = voc2007_server
    with mounted("full", tmp_path / "full", size="96k") as disk:
        for name in md5s:  # two archives of about 30 KiB; the extracted files need more than is left
            (disk / name).write_bytes(srv.files[f"/voc/{name}"])
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 0, 10**12))
        with pytest.raises(UserError) as e:
            build_voc(options(disk, url), "2007", md5s=md5s, progress=False)
        msg = str(e.value)
        assert "writing member" in msg and "(No space left on device); free some space in" in msg
        assert "damaged" not in msg and sorted(p.name for p in disk.iterdir()) == sorted(md5s)
