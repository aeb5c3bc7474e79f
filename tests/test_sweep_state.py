"""Run states from the result folder and the journal alone (hyp2.sweep.state)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hyp2.runfiles import RunFiles, RunLock
from hyp2.sweep.plan import Run
from hyp2.sweep.state import Journal, RunState, failure_line, lock_holder, progress, run_state, tail

EPOCHS = 4


@pytest.fixture
def run(tmp_path):
    return Run("demo_small_8", {"dataset": "demo"}, tmp_path, EPOCHS)


@pytest.fixture
def journal(tmp_path):
    return Journal(tmp_path / "sweep-x")


def write_json(run, epochs=(), test_epoch=None, best=None):
    history = [{"epoch": e, "map": 0.5 + e / 100} for e in epochs]
    record = {"history": history, "best": {"epoch": best or (epochs[-1] if epochs else None)}}
    if test_epoch is not None:
        record["test"] = {"map": 0.6, "checkpoint_epoch": test_epoch}
    run.file(".json").write_text(json.dumps(record))


def test_pending_interrupted_trained_done(run, journal):
    assert run_state(run, journal).status == "pending"
    write_json(run, [1, 2])
    run.file("_last.ckpt").write_bytes(b"x")
    state = run_state(run, journal)
    assert (state.status, state.detail) == ("interrupted", "evaluated up to epoch 2 of 4")
    write_json(run, [1, 2, 3, 4])
    assert run_state(run, journal).status == "trained"
    write_json(run, [1, 2, 3, 4], test_epoch=4)
    assert run_state(run, journal) == RunState("done", "test mAP 0.6000")


def test_a_test_of_an_older_best_checkpoint_is_not_current(run, journal):
    write_json(run, [1, 2, 3, 4], test_epoch=2, best=4)  # tested, then trained further to a better one
    assert run_state(run, journal).status == "trained"
    assert progress(run)[2] is None


def test_more_planned_epochs_reopen_a_finished_run(run, journal):
    write_json(run, [1, 2, 3, 4], test_epoch=4)
    run.file("_last.ckpt").write_bytes(b"x")
    longer = Run(run.name, run.flags, run.result_dir, 6)
    assert run_state(longer, journal).status == "interrupted"


def test_failed_wins_over_trained_and_interrupted_but_not_done(run, journal):
    journal.folder.mkdir()
    journal.out(run.name).write_text("=== start\nsome line\nerror: --lr -1.0: must be a finite number ≥ 0\n")
    entry = journal.record(run.name, exit=2, command=["python", "x"])
    assert entry["status"] == "failed" and entry["tail"][-1].startswith("error: --lr")
    state = run_state(run, journal)
    assert state.status == "failed" and state.detail == "exit 2: error: --lr -1.0: must be a finite number ≥ 0"
    write_json(run, [1, 2, 3, 4])
    assert run_state(run, journal).status == "failed"  # its --test failed: not retried without --retry-failed
    write_json(run, [1, 2, 3, 4], test_epoch=4)  # done by hand since
    assert run_state(run, journal).status == "done"


@pytest.mark.parametrize("code, status", [(0, "ok"), (130, "interrupted"), (143, "interrupted"), (-15, "interrupted"),
                                          (1, "failed"), (-9, "failed"), (2, "failed")])
def test_exit_statuses(run, journal, code, status):
    assert journal.record(run.name, exit=code, command=[])["status"] == status


def test_started_attempt_leaves_the_folder_to_decide(run, journal):
    journal.started(run.name, ["python"])
    assert journal.last(run.name)["status"] == "started"
    assert run_state(run, journal).status == "pending"


def test_a_held_lock_is_running_with_its_pid(run, journal):
    with RunLock(RunFiles(run.result_dir, run.name)):
        state = run_state(run, journal)
        assert (state.status, state.detail) == ("running", f"PID {os.getpid()}")
    assert run_state(run, journal).status == "pending"  # the lock file stays, unheld
    assert lock_holder(run.file(".lock")) is None and lock_holder(run.result_dir / "absent.lock") is None


def test_a_lock_held_by_another_process(run, journal, tmp_path):
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code, str(run.file(".lock"))], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        assert lock_holder(run.file(".lock")) == child.pid
    finally:
        child.stdin.close()
        child.wait()
    assert lock_holder(run.file(".lock")) is None


def test_tail_and_failure_line(tmp_path):
    path = Path(tmp_path / "out")
    path.write_text("a\nprogress 10%\rprogress 100%\n\nb\n" + "".join(f"{i}\n" for i in range(30)))
    assert tail(path, 3) == ["27", "28", "29"]
    assert tail(path, 40)[:3] == ["a", "progress 100%", "b"]
    assert tail(tmp_path / "missing") == []
    assert failure_line({"tail": ["x", "error: bad", "y"]}) == "error: bad"
    assert failure_line({"tail": ["Traceback", "ValueError: no", "z"]}) == "ValueError: no"
    assert failure_line({"tail": []}) == "(no output)"


def test_malformed_records_are_ignored(run, journal):
    journal.folder.mkdir()
    journal.status_file(run.name).write_text("{not json")
    run.file(".json").write_text("[1, 2]")
    assert journal.last(run.name) is None and run_state(run, journal).status == "pending"
