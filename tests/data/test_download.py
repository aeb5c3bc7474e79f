"""Tests of hyp2.data._download: resumable verified downloads, digests, disk-space messages."""
from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess

import pytest

from hyp2.data._download import digest_mismatch, fetch, file_digests, md5sum
from hyp2.errors import UserError

from .conftest import mounted

BODY = bytes(range(256)) * 4000  # 1,024,000 bytes: several read chunks
BODY_MD5 = hashlib.md5(BODY).hexdigest()


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


# -------------------------------------------------------------------------------------- digests


def test_file_digests_match_hashlib_and_git(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"hello\nworld\n")
    d = file_digests(p)
    assert d == {"md5": hashlib.md5(b"hello\nworld\n").hexdigest(),
                 "sha256": hashlib.sha256(b"hello\nworld\n").hexdigest(),
                 "git_blob": "94954abda49de8615a048f8d2e64b5de848e27a1",  # `git hash-object` of this content
                 "size": 12}
    p.write_bytes(b"")
    assert file_digests(p, ("git_blob",)) == {"git_blob": "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"}
    with pytest.raises(ValueError, match="unknown digest"):
        file_digests(p, ("crc",))


def test_digest_mismatch_names_the_first_difference(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(BODY)
    assert digest_mismatch(p, {}) is None
    assert digest_mismatch(p, {"size": len(BODY), "md5": BODY_MD5}) is None
    assert digest_mismatch(p, {"size": 5, "md5": BODY_MD5}) == f"size: expected 5 bytes, found {len(BODY)}"
    assert digest_mismatch(p, {"sha256": "0" * 64}).startswith("sha256: expected " + "0" * 64)


@pytest.mark.parametrize("digests,name", [({"sha256": "ab" * 32}, "SHA-256"), ({"git_blob": "cd" * 20}, "git blob id"),
                                          ({"size": 7}, "size")])
def test_fetch_checks_every_digest_and_deletes_a_mismatch(server, tmp_path, digests, name):
    server.files["/a.bin"] = BODY
    with pytest.raises(UserError, match=f"{name} mismatch for a.bin downloaded from"):
        fetch(server.url + "/a.bin", tmp_path / "a.bin", digests=digests, progress=False)
    assert list(tmp_path.iterdir()) == []
    ok = {"sha256": hashlib.sha256(BODY).hexdigest(), "size": len(BODY), "md5": BODY_MD5}
    assert fetch(server.url + "/a.bin", tmp_path / "a.bin", digests=ok, progress=False).read_bytes() == BODY



# ------------------------------------------------------------------------- full disk, read-only root


def test_a_download_larger_than_the_free_space_is_refused_before_writing(server, tmp_path):
    server.files["/a.bin"] = BODY  # 1,000 KiB onto a 64 KiB disk
    with mounted("full", tmp_path / "full") as disk:
        with pytest.raises(UserError) as e:
            fetch(server.url + "/a.bin", disk / "a.bin", BODY_MD5, progress=False)
        assert str(e.value) == (f"not enough space to download {server.url}/a.bin: it needs 1000 KiB more in {disk}, "
                                f"64.0 KiB are free; free some space there, or pass another --data_root")
        assert list(disk.iterdir()) == []
        # an expected size is checked before the server is even asked
        with pytest.raises(UserError, match="not enough space to download"):
            fetch(server.url + "/a.bin", disk / "a.bin", digests={"size": len(BODY)}, progress=False)
        assert len(server.requests) == 1 and list(disk.iterdir()) == []


def test_a_write_that_fails_anyway_keeps_the_part_and_the_next_run_resumes(server, tmp_path, monkeypatch):
    server.files["/a.bin"] = BODY
    with mounted("full", tmp_path / "full") as disk:
        # the free-space check is fooled (another writer fills the disk meanwhile)
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 0, 10**12))
        part = disk / "a.bin.part"
        with pytest.raises(UserError) as e:
            fetch(server.url + "/a.bin", disk / "a.bin", BODY_MD5, progress=False)
        kept = part.stat().st_size
        assert 0 < kept < len(BODY) and str(e.value) == (
            f"cannot write the download {part} (No space left on device); free some space in {disk}, or pass another "
            f"--data_root; the {kept:,} bytes downloaded are kept in {part} and the next run resumes from there")
        assert subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], capture_output=True).returncode == 0
        assert fetch(server.url + "/a.bin", disk / "a.bin", BODY_MD5, progress=False).read_bytes() == BODY
        assert server.requests[-1] == ("/a.bin", f"bytes={kept}-") and not part.exists()


def test_a_read_only_data_root_is_one_line(server, tmp_path):
    server.files["/a.bin"] = BODY
    with mounted("ro", tmp_path / "ro") as ro:
        with pytest.raises(UserError) as e:
            fetch(server.url + "/a.bin", ro / "a.bin", BODY_MD5, progress=False)
        assert str(e.value) == (f"cannot write the download {ro / 'a.bin.part'} (Read-only file system); {ro} is not "
                                f"writable: make it writable, or pass another --data_root")
        with pytest.raises(UserError) as e:
            fetch(server.url + "/a.bin", ro / "coco" / "a.bin", BODY_MD5, progress=False)
        assert str(e.value) == (f"cannot create the folder {ro / 'coco'} for a download (Read-only file system); "
                                f"{ro} is not writable: make it writable, or pass another --data_root")
