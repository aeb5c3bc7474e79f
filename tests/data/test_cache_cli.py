"""Tests of ``python -m hyp2.data.cache list|prune``: caches are listed with their state, and only those no
live process holds are removed."""
from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from hyp2.data import DataOptions, load_dataset
from hyp2.data import cache
from hyp2.data._cache import ids_hash

from .test_cache import ENV, HOLD_LOCK, REPO, SIZE, _root, child, kill

# Holds shared locks on the files named, as a run using those caches does (hyp2.data._cache.CacheLock).
USING = """
import fcntl, os, sys, time
fds = [os.open(p, os.O_RDONLY) for p in sys.argv[1:]]
for fd in fds:
    fcntl.flock(fd, fcntl.LOCK_SH)
print("ready", flush=True)
time.sleep(600)
"""


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def caches(tmp_path):
    """A data root with the caches of the full lists (held by a live process) and of ``--subset 1`` (unused)."""
    root = _root(tmp_path)
    load_dataset("custom", DataOptions(root=root, image_size=SIZE, cache=True), subset=1, progress=False)
    full = load_dataset("custom", DataOptions(root=root, image_size=SIZE, cache=True), progress=False)
    names = {split: Path(getattr(full, split).load.path).stem for split in ("train", "query", "database")}
    subset = {split: f"custom_{split}_{SIZE}_{ids_hash(getattr(full, split).ids[:1])}" for split in names}
    proc = child(USING, *(root / ".cache" / f"{n}.u8" for n in names.values()))
    del full  # this process lets go of its locks: the child's are what keeps the caches in use
    gc.collect()
    yield root, names, subset, proc
    if proc.poll() is None:
        kill(proc)


def test_list_shows_each_cache_and_whether_it_is_in_use(caches, capsys):
    root, names, subset, _ = caches
    (root / ".cache" / f".{subset['train']}.u8.dead1234.tmp").write_bytes(b"x" * 10)
    (root / ".cache" / "notes.txt").write_text("not a cache")
    assert cache.main(["list", "--data_root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in out[:-1]}
    assert len(rows) == 7 and "notes.txt" not in rows
    for split, name in names.items():
        assert rows[name].endswith("  in use") and f"custom {split} {SIZE} px" in rows[name]
    for name in subset.values():
        assert rows[name].endswith("  unused") and "1 images" in rows[name]
    assert rows[f".{subset['train']}.u8.dead1234.tmp"].endswith("left by an interrupted build")
    assert out[-1].startswith("7 entries") and "4 not in use" in out[-1]


def test_prune_never_removes_a_cache_in_use(caches, capsys):
    root, names, subset, proc = caches
    assert cache.main(["prune", names["train"], "--data_root", str(root)]) == 2
    assert "kept " + names["train"] + ": in use by a running process" in one_error_line(capsys)
    assert (root / ".cache" / f"{names['train']}.u8").exists()
    # --unused removes every cache no process holds, data and header, and nothing else
    (root / ".cache" / "notes.txt").write_text("not a cache")
    assert cache.main(["prune", "--unused", "--data_root", str(root)]) == 0
    out = capsys.readouterr().out
    assert all(f"removed {name} " in out for name in subset.values()) and "removed 3," in out
    left = sorted(p.name for p in (root / ".cache").iterdir())
    assert left == sorted(["notes.txt"] + [f"{n}{ext}" for n in names.values() for ext in (".u8", ".json")])
    # once the process has ended, a named cache is removed (by its name or a file's name)
    kill(proc)
    assert cache.main(["prune", names["train"], f"{names['query']}.json", "--data_root", str(root)]) == 0
    assert "removed 2," in capsys.readouterr().out
    assert sorted(p.name for p in (root / ".cache").iterdir()) == sorted(
        ["notes.txt", f"{names['database']}.u8", f"{names['database']}.json"])


def test_prune_removes_a_killed_builds_file_but_not_a_running_one(tmp_path, capsys):
    (tmp_path / ".cache").mkdir()
    dead = tmp_path / ".cache" / f".custom_train_{SIZE}_{'a' * 16}.u8.dead1234.tmp"
    live = tmp_path / ".cache" / f".custom_train_{SIZE}_{'b' * 16}.u8.live1234.tmp"
    dead.write_bytes(b"x")
    proc = child(HOLD_LOCK, live)
    try:
        assert cache.main(["list", "--data_root", str(tmp_path)]) == 0
        assert "being built" in capsys.readouterr().out
        assert cache.main(["prune", "--unused", "--data_root", str(tmp_path)]) == 0
        assert not dead.exists() and live.exists()
    finally:
        kill(proc)


@pytest.mark.parametrize("argv,match", [
    (["prune"], "name the caches to remove"),
    (["prune", "custom_train_16_0000000000000000"], "no cache named custom_train_16_0000000000000000"),
    (["frobnicate"], "invalid choice"),
])
def test_mistakes_are_one_line(tmp_path, capsys, argv, match):
    (tmp_path / ".cache").mkdir()
    assert cache.main([*argv, "--data_root", str(tmp_path)]) == 2
    assert match in one_error_line(capsys)


def test_data_root_that_is_missing_a_file_or_without_caches(tmp_path, capsys):
    assert cache.main(["list", "--data_root", str(tmp_path / "nope")]) == 2
    assert "does not exist" in one_error_line(capsys)
    (tmp_path / "file").write_text("x")
    assert cache.main(["list", "--data_root", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in one_error_line(capsys)
    assert cache.main(["list", "--data_root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"no caches in {tmp_path / '.cache'}\n"
    assert not (tmp_path / ".cache").exists()


@pytest.mark.slow
def test_it_is_a_python_m_entry_point(tmp_path):
    res = subprocess.run([sys.executable, "-m", "hyp2.data.cache", "list", "--data_root", str(tmp_path)], cwd=REPO,
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "no caches" in res.stdout, res.stderr
    assert Path(REPO / "hyp2" / "data" / "cache.py").is_file()
