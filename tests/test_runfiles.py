"""A run's files (hyp2.runfiles): the run lock, owned temporary files, the result folder, failed
writes, several runs in one folder, and --overwrite's retirement of an earlier run."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import mounted

from hyp2.checkpoint import write_torch
from hyp2.errors import UserError
from hyp2.runfiles import RunFiles, RunLock, prepare_result_dir

ROOT = Path(__file__).resolve().parents[1]
def test_stale_temporary_files_of_other_runs_are_never_touched(tmp_path):
    """A run removes only the temporaries of its own file names: demo_small_4 never touches
    demo_small_48's or demo_small_48_dhn's in-flight writes."""
    theirs = [".demo_small_48.ckpt.x1y2.tmp", ".demo_small_48_dhn.ckpt.abc.tmp", ".demo_small_4_dhn.json.q.tmp",
              ".demo_small_40_last.ckpt.z.tmp", ".demo_small_4.ckpt.a.b.tmp", "notes.tmp"]
    ours = [".demo_small_4.ckpt.k3j_x.tmp", ".demo_small_4_last.ckpt.abc.tmp", ".demo_small_4.json.0.tmp"]
    for name in theirs + ours:
        (tmp_path / name).write_bytes(b"x")
    removed = RunFiles(tmp_path, "demo_small_4").remove_stale_temps()
    assert sorted(p.name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_stale_temporary_file_of_another_run_survives_a_cli_run(tmp_path):
    from hyp2.cli import main
    victim = tmp_path / ".demo_small_48.ckpt.x.tmp"
    tmp_path.mkdir(exist_ok=True)
    victim.write_bytes(b"in flight")
    assert main(["--dataset", "demo", "--hash_bit", "4", "--epochs", "1", "--subset", "40",
                 "--result_dir", str(tmp_path)]) == 0
    assert victim.read_bytes() == b"in flight"


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hyp2.runfiles import RunFiles, RunLock
    with RunLock(RunFiles(Path(sys.argv[1]), "demo_small_48")):
        print("holding", flush=True)
        time.sleep(60)
""")


def test_second_run_of_a_name_is_refused_naming_the_holder_and_sigkill_leaves_no_stale_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(UserError, match=f"in use by another process \\(PID {proc.pid}") as err:
            with RunLock(RunFiles(tmp_path, "demo_small_48")):
                pass
        assert "another --result_dir" in str(err.value)
        with RunLock(RunFiles(tmp_path, "demo_small_4")):  # another name in the same folder is free
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(RunFiles(tmp_path, "demo_small_48")):  # the killed holder's lock is gone
        assert (tmp_path / "demo_small_48.lock").read_text().strip() == str(os.getpid())


def test_a_cli_run_of_a_name_in_use_stops_before_touching_its_files(tmp_path, capsys):
    """What two simultaneous runs of one name did: both passed the checks and one lost its checkpoint.
    Now the second (here: a run while another process holds the name) stops in one line."""
    from hyp2.cli import main
    (tmp_path / "demo_small_48.ckpt").write_bytes(b"the first run's checkpoint")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        for extra in (["--overwrite"], ["--test"]):
            assert main(["--dataset", "demo", "--epochs", "1", "--subset", "20", "--result_dir", str(tmp_path)]
                        + extra) == 2
            err = capsys.readouterr().err
            assert f"(PID {proc.pid}" in err and err.count("\n") == 1, err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "demo_small_48.ckpt").read_bytes() == b"the first run's checkpoint"


def test_result_dir_that_is_a_file_or_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        prepare_result_dir(tmp_path / "file")
    with pytest.raises(UserError, match="cannot create it"):
        prepare_result_dir(tmp_path / "file" / "sub")
    with pytest.raises(UserError, match="cannot create it|not writable"):
        prepare_result_dir(Path("/proc/hyp2-results"))




def test_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    with mounted("full", tmp_path / "full") as disk:
        (disk / "m.ckpt").write_bytes(b"previous")
        big = {"w": torch.zeros(64 * 1024)}  # 256 KiB: more than the disk holds
        with pytest.raises(UserError, match="not enough space for the checkpoint .* free") as err:
            write_torch(disk / "m.ckpt", big, "checkpoint")
        assert "\n" not in str(err.value)
        # When the space check is fooled (another writer fills the disk meanwhile), the failed write
        # itself (torch's "unexpected pos ...") is one line too, and nothing half-written remains.
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 0, 10**12))
        with pytest.raises(UserError, match="cannot write the checkpoint .*free space"):
            write_torch(disk / "m.ckpt", big, "checkpoint")
        assert (disk / "m.ckpt").read_bytes() == b"previous"
        assert sorted(p.name for p in disk.iterdir()) == ["m.ckpt"]


def test_read_only_result_dir_stops_the_cli_in_one_line(tmp_path, capsys):
    from hyp2.cli import main
    with mounted("ro", tmp_path / "ro") as ro:
        assert main(["--dataset", "demo", "--epochs", "1", "--subset", "20", "--result_dir", str(ro)]) == 2
        err = capsys.readouterr().err
        assert "is not writable" in err and err.count("\n") == 1


@pytest.mark.slow
def test_several_runs_share_one_result_folder_at_once(tmp_path, capsys):
    """Runs of other names in one folder at the same time (a sweep): each holds only its own name,
    cleans only its own files, and --test of each reads back its own model."""
    import json

    from hyp2.cli import main
    common = [sys.executable, "retrieval.py", "--dataset", "demo", "--subset", "60", "--epochs", "2",
              "--result_dir", str(tmp_path)]
    runs = {"demo_small_8": ["--hash_bit", "8"], "demo_small_48": ["--hash_bit", "48"],
            "demo_small_8_dhn": ["--hash_bit", "8", "--loss", "dhn"]}
    one_thread = dict(os.environ, OMP_NUM_THREADS="1")  # three runs on a small machine: no oversubscription
    procs = [subprocess.Popen(common + flags, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=one_thread)
             for flags in runs.values()]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outputs]
    for (run, flags), (out, _) in zip(runs.items(), outputs):
        record = json.loads((tmp_path / f"{run}.json").read_text())
        assert record["run"] == run and [h["epoch"] for h in record["history"]] == [1, 2]
        assert f"map: {record['best']['map']}" in out
        assert main(["--dataset", "demo", "--subset", "60", "--result_dir", str(tmp_path), "--test", *flags]) == 0
        assert f"map: {record['best']['map']}" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))


def _a_run(folder: Path, run: str, tag: str) -> dict[str, bytes]:
    """Every file a run can own, each holding ``tag``; returns name -> bytes."""
    files = RunFiles(folder, run)
    made = {}
    for path in (files.checkpoint, files.last, files.json, files.log, files.yaml, files.path("_codes.npz"),
                 files.path("_topn.png")):
        path.write_bytes(f"{tag} {path.name}".encode())
        made[path.name] = path.read_bytes()
    files.tensorboard.mkdir()
    (files.tensorboard / "events").write_bytes(tag.encode())
    return made


def test_retire_moves_exactly_the_runs_files_and_restore_puts_them_back(tmp_path):
    mine = _a_run(tmp_path, "demo_small_4", "old")
    theirs = _a_run(tmp_path, "demo_small_48", "other")  # a name that starts like ours
    files = RunFiles(tmp_path, "demo_small_4")
    files.lock.write_text("123\n")
    moved = files.retire()
    assert moved[0] == "demo_small_4_last.ckpt"  # first: a state in place is then always the fresh run's
    assert sorted(moved) == sorted([*mine, "demo_small_4.tb"])
    assert files.lock.exists() and not files.checkpoint.exists()
    assert {p.name: p.read_bytes() for p in files.retired.iterdir() if p.is_file()} == mine
    # the fresh run wrote its log before being killed: restoring puts the earlier run's back over it
    files.log.write_text("fresh")
    assert sorted(files.restore_retired()) == sorted(moved)
    assert not files.retired.exists()
    assert {name: (tmp_path / name).read_bytes() for name in mine} == mine
    assert {name: (tmp_path / name).read_bytes() for name in theirs} == theirs
    assert (files.tensorboard / "events").read_bytes() == b"old"


def test_a_run_without_files_retires_nothing(tmp_path):
    files = RunFiles(tmp_path, "demo_small_4")
    assert files.retire() == [] and not files.retired.exists()
    assert files.restore_retired() == []
