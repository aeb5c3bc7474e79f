"""Tests of hyp2.data._pinned: third-party list files found, or fetched from a loopback server and verified.

The served files are generated here, with their own git blob ids; the real tables keep the real ids.
"""
from __future__ import annotations

import hashlib
import socket
import subprocess

import pytest

from hyp2.data._download import git_blob
from hyp2.data._pinned import DEEPHASH_REPO, HYP2_REPO, PinnedFile, Source, ensure_pinned, raw_url
from hyp2.errors import UserError

from .conftest import git_blob_of, serve_pinned

SOURCE = Source("a test repository", "someone/lists", "0123456789abcdef0123456789abcdef01234567")
A = b"images/a.jpg 1 0\nimages/b.jpg 0 1\n" * 2000  # 68,000 bytes
B = b"[2, 0, 1]"


def files(server):
    return serve_pinned(server, {"data/x/a.txt": A, "b.json": B})


def folder_files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_git_blob_id_is_what_git_computes(tmp_path):
    (tmp_path / "f").write_bytes(A)
    git = subprocess.run(["git", "hash-object", str(tmp_path / "f")], capture_output=True, text=True)
    if git.returncode != 0:
        pytest.skip("git is not available")
    assert git.stdout.strip() == git_blob_of(A) == git_blob(tmp_path / "f")  # the test's and hyp2's own


def test_fetch_verify_and_say_what_was_fetched(server, tmp_path, capsys):
    pinned = files(server)
    found = ensure_pinned(tmp_path / "d", pinned, SOURCE, "Toy", progress=False)
    assert found.official and found.blobs == {"a.txt": git_blob_of(A), "b.json": git_blob_of(B)}
    assert (tmp_path / "d" / "a.txt").read_bytes() == A and (tmp_path / "d" / "b.json").read_bytes() == B
    assert folder_files(tmp_path / "d") == ["a.txt", "b.json"]  # nothing else: no .part, no temp file
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith(f"fetched {tmp_path / 'd' / 'a.txt'} (66.4 KiB) from a test repository")
    assert "github.com/someone/lists at commit 0123456 (a third-party source)" in err[0]
    assert "verified by its git blob id and SHA-256" in err[0]
    # found again by content: no request, the same answer
    server.requests.clear()
    assert ensure_pinned(tmp_path / "d", pinned, SOURCE, "Toy", progress=False) == found
    assert server.requests == []


@pytest.mark.parametrize("sha256", [True, False])
def test_corrupted_file_is_refused_and_removed(server, tmp_path, sha256):
    pinned = serve_pinned(server, {"data/x/a.txt": A}, sha256=sha256)
    server.files["/repo/data/x/a.txt"] = A[:-2] + b"X\n"  # the same size, one byte changed
    with pytest.raises(UserError) as e:
        ensure_pinned(tmp_path / "d", pinned, SOURCE, "Toy", progress=False)
    msg = str(e.value)
    kind = "SHA-256" if sha256 else "git blob id"  # SHA-256, when known, is checked first
    assert f"{kind} mismatch for a.txt downloaded from {pinned[0].url}" in msg and "deleted" in msg
    if not sha256:
        assert pinned[0].git_blob in msg and git_blob_of(A[:-2] + b"X\n") in msg
    assert folder_files(tmp_path / "d") == []  # nothing half-written, nothing unverified


def test_interrupted_fetch_resumes(server, tmp_path):
    pinned = files(server)
    server.modes["/repo/data/x/a.txt"] = "drop_once"
    ensure_pinned(tmp_path / "d", pinned, SOURCE, "Toy", progress=False)
    assert (tmp_path / "d" / "a.txt").read_bytes() == A
    hits = [r for r in server.requests if r[0] == "/repo/data/x/a.txt"]
    assert hits == [("/repo/data/x/a.txt", None), ("/repo/data/x/a.txt", f"bytes={len(A) // 2}-")]


def test_interrupted_run_resumes_on_the_next_one(server, tmp_path):
    """A run that fetched one file and lost the connection on the next keeps what it verified and its .part;
    the next run fetches only what is missing, resuming the .part."""
    pinned = files(server)
    server.modes["/repo/b.json"] = "drop_once"
    with pytest.raises(UserError, match="interrupted"):
        ensure_pinned(tmp_path / "d", pinned, SOURCE, "Toy", progress=False, attempts=1)
    assert folder_files(tmp_path / "d") == ["a.txt", "b.json.part"]
    server.requests.clear()
    found = ensure_pinned(tmp_path / "d", pinned, SOURCE, "Toy", progress=False, attempts=1)
    assert found.official and folder_files(tmp_path / "d") == ["a.txt", "b.json"]
    assert server.requests == [("/repo/b.json", f"bytes={len(B) // 2}-")]


def test_no_download_is_one_line_with_files_folder_and_urls(server, tmp_path):
    pinned = files(server)
    with pytest.raises(UserError) as e:
        ensure_pinned(tmp_path / "d", pinned, SOURCE, "Toy", download=False, alternative="; or build them")
    msg = str(e.value)
    assert msg.startswith(f"Toy: a.txt, b.json missing in {tmp_path / 'd'} and downloads are off (--no_download)")
    assert pinned[0].url in msg and pinned[1].url in msg and "third-party" in msg and msg.endswith("; or build them")
    assert server.requests == [] and "\n" not in msg


def test_offline_machine_names_the_url_and_the_folder(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pinned = (PinnedFile("a.txt", f"http://127.0.0.1:{port}/a.txt", git_blob_of(A)),)
    with pytest.raises(UserError) as e:
        ensure_pinned(tmp_path / "d", pinned, SOURCE, "Toy", progress=False, timeout=5)
    msg = str(e.value)
    assert f"cannot download http://127.0.0.1:{port}/a.txt" in msg
    assert f"put a.txt into {tmp_path / 'd'} yourself (from http://127.0.0.1:{port}/a.txt)" in msg
    assert folder_files(tmp_path / "d") == []


def test_own_files_are_used_and_never_mixed_with_fetched_ones(server, tmp_path):
    pinned = files(server)
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_bytes(b"images/mine.jpg 1 1\n")
    (d / "b.json").write_bytes(B)  # the pinned content
    found = ensure_pinned(d, pinned, SOURCE, "Toy", progress=False)
    assert not found.official and found.blobs["a.txt"] == git_blob_of(b"images/mine.jpg 1 1\n")
    line = found.provenance(d, SOURCE)
    assert "the user's own files" in line and found.blobs["a.txt"][:10] in line
    (d / "b.json").unlink()
    with pytest.raises(UserError, match=r"b.json missing in .* beside a.txt that are not the files of"):
        ensure_pinned(d, pinned, SOURCE, "Toy", progress=False)
    assert server.requests == [] and folder_files(d) == ["a.txt"]


def test_a_folder_under_a_list_name(server, tmp_path):
    (tmp_path / "d" / "a.txt").mkdir(parents=True)
    with pytest.raises(UserError, match=r"a.txt is a folder; Toy expects the list file a.txt there"):
        ensure_pinned(tmp_path / "d", files(server), SOURCE, "Toy")


def test_sources_are_pinned_to_the_commits():
    assert raw_url(HYP2_REPO.repo, HYP2_REPO.commit, "flickr.txt") == (
        "https://raw.githubusercontent.com/JerryXu0129/HyP2-Loss/e9c1c24c74d306d867f5d1d3505f5c791871534e/flickr.txt")
    assert DEEPHASH_REPO.commit == "ab14068ea9b33e8fe12de49d976d0c2e3f0dc129"
    assert "third-party" in HYP2_REPO.describe() and "third-party" in DEEPHASH_REPO.describe()
    f = HYP2_REPO.file("data/a/b.txt", "f" * 40, hashlib.sha256(b"").hexdigest())
    assert f.name == "b.txt" and f.digests() == {"git_blob": "f" * 40, "sha256": hashlib.sha256(b"").hexdigest()}
