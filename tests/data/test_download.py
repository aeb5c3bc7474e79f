"""Tests of hyp2.data._download: resumable verified downloads and safe tar extraction."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest

from hyp2.data._download import fetch, md5sum
from hyp2.data._extract import extract_into_place, extract_tar, safe_members
from hyp2.errors import UserError

BODY = bytes(range(256)) * 4000  # 1,024,000 bytes: several read chunks
BODY_MD5 = hashlib.md5(BODY).hexdigest()


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


# ------------------------------------------------------------------------------------------ md5


def test_md5sum_matches_hashlib(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(BODY)
    assert md5sum(p) == BODY_MD5
    p.write_bytes(b"")
    assert md5sum(p) == "d41d8cd98f00b204e9800998ecf8427e"  # MD5 of the empty string


# ---------------------------------------------------------------------------------------- fetch


def test_fetch_plain(server, tmp_path):
    server.files["/a.bin"] = BODY
    dest = fetch(server.url + "/a.bin", tmp_path / "a.bin", BODY_MD5, progress=False)
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "a.bin.part").exists()
    assert server.requests == [("/a.bin", None)]


def test_fetch_md5_mismatch_leaves_nothing(server, tmp_path):
    server.files["/a.bin"] = BODY
    wrong = "0" * 32
    with pytest.raises(UserError) as e:
        fetch(server.url + "/a.bin", tmp_path / "a.bin", wrong, progress=False)
    msg = str(e.value)
    assert "a.bin" in msg and wrong in msg and BODY_MD5 in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_fetch_resumes_within_one_call(server, tmp_path):
    server.files["/a.bin"] = BODY
    server.modes["/a.bin"] = "drop_once"
    dest = fetch(server.url + "/a.bin", tmp_path / "a.bin", BODY_MD5, progress=False)
    assert dest.read_bytes() == BODY
    half = len(BODY) // 2
    assert server.requests == [("/a.bin", None), ("/a.bin", f"bytes={half}-")]


def test_fetch_interrupted_then_resumed_by_next_call(server, tmp_path):
    server.files["/a.bin"] = BODY
    server.modes["/a.bin"] = "drop_once"
    with pytest.raises(UserError, match="interrupted"):
        fetch(server.url + "/a.bin", tmp_path / "a.bin", BODY_MD5, attempts=1, progress=False)
    part = tmp_path / "a.bin.part"
    assert part.stat().st_size == len(BODY) // 2 and not (tmp_path / "a.bin").exists()
    fetch(server.url + "/a.bin", tmp_path / "a.bin", BODY_MD5, attempts=1, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == BODY and not part.exists()
    assert server.requests[-1] == ("/a.bin", f"bytes={len(BODY) // 2}-")


def test_fetch_server_without_range_starts_over(server, tmp_path):
    server.files["/a.bin"] = BODY
    server.modes["/a.bin"] = "no_range"
    (tmp_path / "a.bin.part").write_bytes(b"garbage that must not survive")
    fetch(server.url + "/a.bin", tmp_path / "a.bin", BODY_MD5, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == BODY
    assert server.requests == [("/a.bin", "bytes=29-")]  # asked to resume, got a 200, rewrote


def test_fetch_part_longer_than_file_starts_over(server, tmp_path):
    server.files["/a.bin"] = BODY[:1000]
    (tmp_path / "a.bin.part").write_bytes(b"x" * 5000)  # the server answers 416
    fetch(server.url + "/a.bin", tmp_path / "a.bin", hashlib.md5(BODY[:1000]).hexdigest(), progress=False)
    assert (tmp_path / "a.bin").read_bytes() == BODY[:1000]
    assert [r[1] for r in server.requests] == ["bytes=5000-", None]


def test_fetch_http_error_names_url_and_hint(server, tmp_path):
    with pytest.raises(UserError) as e:
        fetch(server.url + "/missing.tar", tmp_path / "m.tar", None, hint="; try --voc_url", progress=False)
    msg = str(e.value)
    assert "/missing.tar" in msg and "404" in msg and "--voc_url" in msg
    assert list(tmp_path.iterdir()) == []


def test_fetch_connection_refused(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.tar"
    with pytest.raises(UserError) as e:
        fetch(url, tmp_path / "x.tar", None, hint="; try --voc_url", progress=False, timeout=5)
    assert url in str(e.value) and "--voc_url" in str(e.value)


def test_fetch_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(BODY)
    dest = fetch(src.as_uri(), tmp_path / "out" / "dst.bin", BODY_MD5, progress=False)
    assert dest.read_bytes() == BODY


def test_fetch_rejects_bad_attempts(tmp_path):
    with pytest.raises(ValueError, match="attempts"):
        fetch("http://127.0.0.1/x", tmp_path / "x", attempts=0)


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

