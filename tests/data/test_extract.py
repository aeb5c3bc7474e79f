"""Tests of hyp2.data._extract: safe extraction of tar and ZIP archives, published atomically."""
from __future__ import annotations

import io
import os
import random
import tarfile
import zipfile
from pathlib import Path

import pytest

from hyp2.data._extract import extract_archive, extract_into_place, extract_tar, extract_zip, safe_members
from hyp2.errors import UserError


def make_tar(entries: list[tuple[str, bytes | str | None, str]]) -> bytes:
    """entries: (name, data, kind) with kind in file / dir / symlink / hardlink / chrdev / fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "chrdev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = data
            tar.addfile(info)
    return buf.getvalue()


# ----------------------------------------------------------------------------------- extraction


def test_extract_tar_writes_files_and_dirs(tmp_path):
    archive = tmp_path / "ok.tar"
    archive.write_bytes(make_tar([("top", None, "dir"), ("top/a.txt", b"alpha", "file"),
                                  ("top/sub/b.txt", b"beta", "file")]))
    extract_tar(archive, tmp_path / "out", progress=False)
    assert (tmp_path / "out/top/a.txt").read_bytes() == b"alpha"
    assert (tmp_path / "out/top/sub/b.txt").read_bytes() == b"beta"


@pytest.mark.parametrize("entry,reason", [
    (("../evil.txt", b"x", "file"), "'..'"),
    (("top/../../evil.txt", b"x", "file"), "'..'"),
    (("/tmp/hyp2-abs-evil.txt", b"x", "file"), "absolute"),
    (("top/link", "/etc/passwd", "symlink"), "symbolic link"),
    (("top/hard", "top/a.txt", "hardlink"), "hard link"),
    (("top/dev", None, "chrdev"), "device"),
    (("top/fifo", None, "fifo"), "device or FIFO"),
])
def test_unsafe_members_refused_before_anything_is_written(tmp_path, entry, reason):
    archive = tmp_path / "bad.tar"
    # The safe member comes first: nothing may be written even for it.
    archive.write_bytes(make_tar([("top/a.txt", b"alpha", "file"), entry]))
    out = tmp_path / "root" / "out"
    with pytest.raises(UserError) as e:
        extract_tar(archive, out, progress=False)
    msg = str(e.value)
    assert "bad.tar" in msg and entry[0] in msg and reason in msg
    assert not (out / "top").exists()
    assert not (tmp_path / "root" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/hyp2-abs-evil.txt").exists()


def test_safe_members_catches_escape_through_existing_symlink(tmp_path):
    # A member whose parent folder is (already, on disk) a link pointing outside is refused too.
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(tmp_path / "elsewhere", dest / "top")
    archive = tmp_path / "a.tar"
    archive.write_bytes(make_tar([("top/a.txt", b"alpha", "file")]))
    with tarfile.open(archive) as tar, pytest.raises(UserError, match="outside"):
        safe_members(tar, archive, dest)


def test_damaged_archive_is_a_user_error(tmp_path):
    archive = tmp_path / "broken.tar"
    archive.write_bytes(make_tar([("top/a.txt", b"alpha" * 1000, "file")])[:700])
    with pytest.raises(UserError, match="broken.tar"):
        extract_tar(archive, tmp_path / "out", progress=False)


def test_extract_into_place_merges_archives_and_publishes_atomically(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    a.write_bytes(make_tar([("Dev/V1/x/1.txt", b"one", "file")]))
    b.write_bytes(make_tar([("Dev/V1/x/2.txt", b"two", "file"), ("Dev/V1/y.txt", b"why", "file")]))
    root = tmp_path / "root"
    # A stale staging folder from an interrupted run is discarded.
    (root / ".extract-V1.tmp" / "Dev" / "V1").mkdir(parents=True)
    (root / ".extract-V1.tmp" / "Dev" / "V1" / "stale.txt").write_text("stale")
    tree = extract_into_place([a, b], root, "Dev/V1", progress=False)
    assert tree == root / "Dev" / "V1"
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*.txt")) == ["x/1.txt", "x/2.txt", "y.txt"]
    assert not (root / ".extract-V1.tmp").exists()


def test_extract_into_place_failure_publishes_nothing(tmp_path, monkeypatch):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    a.write_bytes(make_tar([("Dev/V1/1.txt", b"one", "file")]))
    b.write_bytes(make_tar([("../escape.txt", b"two", "file")]))
    root = tmp_path / "root"
    with pytest.raises(UserError):
        extract_into_place([a, b], root, "Dev/V1", progress=False)
    assert not (root / "Dev").exists() and not (root / ".extract-V1.tmp").exists()


def test_extract_into_place_wrong_archive(tmp_path):
    a = tmp_path / "a.tar"
    a.write_bytes(make_tar([("Other/1.txt", b"one", "file")]))
    with pytest.raises(UserError, match="do not contain the folder Dev/V1"):
        extract_into_place([a], tmp_path / "root", "Dev/V1", progress=False)



# ------------------------------------------------------------------------------------ malformed tars


def test_random_bytes_are_not_a_tar_archive(tmp_path):
    archive = tmp_path / "VOCtrainval_11-May-2012.tar"
    archive.write_bytes(random.Random(0).randbytes(4096))  # seeded: the same bytes every run
    with pytest.raises(UserError) as e:
        extract_tar(archive, tmp_path / "out", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"cannot extract {archive}: it is not a readable tar archive (ReadError: ")
    assert "delete it and download it again" in msg and "\n" not in msg


@pytest.mark.parametrize("entries,member", [
    ([("top/a", b"file", "file"), ("top/a/b.txt", b"x", "file")], "top/a/b.txt"),  # a file, then a folder
    ([("top/a", None, "dir"), ("top/a", b"file", "file")], "top/a"),  # a folder, then a file
    ([("top/" + "n" * 300 + ".txt", b"x", "file")], "top/" + "n" * 75),  # a name too long for the file system
])
def test_member_that_cannot_be_written_is_one_line(tmp_path, entries, member):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(make_tar(entries))
    with pytest.raises(UserError) as e:
        extract_into_place([archive], tmp_path / "root", "top", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"cannot extract {archive}: writing member '{member}") and "failed (" in msg
    assert "\n" not in msg and len(msg) < 400
    assert not (tmp_path / "root" / "top").exists() and not (tmp_path / "root" / ".extract-top.tmp").exists()


# -------------------------------------------------------------------------------------------- ZIP


def make_zip(entries: list[tuple[str, bytes | None]], symlink: str | None = None) -> bytes:
    """entries: (name, data); data None makes a folder. ``symlink`` adds a Unix symbolic link member."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            if data is None:
                zf.writestr(zipfile.ZipInfo(name.rstrip("/") + "/"), b"")
            else:
                zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def test_extract_zip_writes_files_and_folders(tmp_path):
    archive = tmp_path / "ok.zip"
    archive.write_bytes(make_zip([("train2014/", None), ("train2014/a.jpg", b"alpha" * 100),
                                  ("train2014/sub/b.jpg", b"beta")]))
    extract_archive(archive, tmp_path / "out", progress=False)
    assert (tmp_path / "out/train2014/a.jpg").read_bytes() == b"alpha" * 100
    assert (tmp_path / "out/train2014/sub/b.jpg").read_bytes() == b"beta"


@pytest.mark.parametrize("entries,symlink,reason", [
    ([("../evil.txt", b"x")], None, "contains '..'"),
    ([("train2014/../../evil.txt", b"x")], None, "contains '..'"),
    ([("/tmp/hyp2-zip-abs-evil.txt", b"x")], None, "absolute path"),
    ([("C:/evil.txt", b"x")], None, "absolute path"),
    ([], "train2014/link.jpg", "symbolic link"),
])
def test_zip_member_escaping_the_root_is_refused_before_anything_is_written(tmp_path, entries, symlink, reason):
    archive = tmp_path / "train2014.zip"
    archive.write_bytes(make_zip([("train2014/a.jpg", b"alpha")] + entries, symlink))
    out = tmp_path / "root" / "out"
    with pytest.raises(UserError) as e:
        extract_zip(archive, out, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"refusing to extract {archive}: member") and reason in msg
    assert not (out / "train2014").exists()
    assert not (tmp_path / "root" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/hyp2-zip-abs-evil.txt").exists()


def test_zip_member_with_a_bad_crc_stops_and_publishes_nothing(tmp_path):
    buf = io.BytesIO()  # a stored (uncompressed) member, so that one byte of it can be flipped
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("train2014/a.jpg", b"A" * 5000)
    stored = bytearray(buf.getvalue())
    stored[stored.index(b"AAAA") + 100] = ord("B")
    archive = tmp_path / "train2014.zip"
    archive.write_bytes(bytes(stored))
    with pytest.raises(UserError, match=r"train2014.zip: the archive is damaged \(BadZipFile: Bad CRC-32"):
        extract_into_place([archive], tmp_path / "root", "train2014", progress=False)
    assert not (tmp_path / "root" / "train2014").exists()
    assert not (tmp_path / "root" / ".extract-train2014.tmp").exists()


def test_random_bytes_are_not_a_zip_archive(tmp_path):
    archive = tmp_path / "val2014.zip"
    archive.write_bytes(random.Random(0).randbytes(4096))  # seeded: the same bytes every run
    with pytest.raises(UserError, match=rf"cannot extract {archive}: it is not a readable ZIP archive \(BadZipFile"):
        extract_archive(archive, tmp_path / "out", progress=False)
