"""``python -m hyp2.sweep`` with the local launcher, end to end on the CPU: real runs in child
processes, a sweep SIGKILLed with a run in the middle of its training (stopped there by the
tests/sweep_gate.py dataset, so no timing luck is involved) then run again, a failing run reported
with its output while the others complete, Ctrl-C, and --dry-run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import sweep_in_process
from hyp2.sweep.state import lock_holder

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
GATE = str(ROOT / "tests" / "sweep_gate.py")
TINY = ["--set", "subset=100", "--set", "epochs=2", "--set", "batch_size=25"]
DEMO_RUNS = ["demo_small_16", "demo_small_16_csq", "demo_small_48", "demo_small_48_csq"]
TIMEOUT = 600  # generous: the machine may be loaded; nothing below waits on a fixed time


def env(**extra):
    out = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    out.pop("HYP2_PLUGINS", None)
    return out


def sweep(cwd, *args, **kw):
    return subprocess.run([sys.executable, "-m", "hyp2.sweep", *args], cwd=cwd, env=kw.pop("env", env()),
                          capture_output=True, text=True, timeout=TIMEOUT, **kw)


def wait_for(condition, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def record(folder, run):
    path = Path(folder) / f"{run}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def metrics(folder, run):
    """What must not depend on how the sweep went: every evaluation's mAP and the test results."""
    rec = record(folder, run)
    test = {k: v for k, v in rec["test"].items() if k not in ("codes_sample",)}
    # the best checkpoint's file digest covers its config (the dataset's name, the folders): not compared
    best = {k: v for k, v in rec["best"].items() if k != "digest"}
    return [h["map"] for h in rec["history"]], best, test


def checkpoints(folder, runs):
    return {name: (Path(folder) / name).read_bytes() for run in runs for name in (f"{run}.ckpt", f"{run}_last.ckpt")}


def done(folder, run):
    rec = record(folder, run)
    return bool(rec.get("test")) and rec["history"][-1]["epoch"] == 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The demo plan, uninterrupted, two runs at a time."""
    cwd = tmp_path_factory.mktemp("reference")
    result = sweep_in_process(cwd, "demo", "--jobs", "2", *TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    return cwd, result


def test_demo_plan_end_to_end(reference):
    cwd, result = reference
    assert "sweep demo: all 4 runs done" in result.stdout
    for run in DEMO_RUNS:
        assert done(cwd / "result", run)
        status = json.loads((cwd / "result" / "sweep-demo" / f"{run}.status.json").read_text())
        assert status["status"] == "ok" and status["exit"] == 0
        assert f"{run}: done, test mAP" in result.stdout
    table = (cwd / "report" / "demo" / "results.md").read_text(encoding="utf-8")
    assert all(f"| {run} | demo |" in table for run in DEMO_RUNS)
    assert (cwd / "report" / "demo" / "index.html").is_file()
    again = sweep_in_process(cwd, "demo", "--jobs", "2", *TINY)  # nothing left: nothing runs
    assert again.returncode == 0 and "started" not in again.stdout
    assert ": done, " not in again.stdout and "4 done" in again.stdout.splitlines()[0]
    assert "(up to date: 4 of 4 runs done)" in again.stdout  # nothing changed: the report is not redrawn


def test_killed_sweep_resumes_without_redoing_work(reference, tmp_path):
    gate = tmp_path / "gate"
    gated = env(HYP2_TEST_GATE=str(gate), HYP2_TEST_GATE_AFTER="100")
    # two of the demo plan's runs, on the gated demo dataset: one stops at the gate, one finishes
    plan = tmp_path / "killed.yaml"
    plan.write_text(f"name: killed\ndefaults: {{dataset: demo_gate, plugin: {GATE}}}\ngrid: {{hash_bit: [16, 48]}}\n",
                    encoding="utf-8")
    args = [str(plan), "--jobs", "2", *TINY]
    plain_runs = ["demo_small_16", "demo_small_48"]
    names = [r.replace("demo_", "demo_gate_", 1) for r in plain_runs]
    folder = tmp_path / "result"
    first = subprocess.Popen([sys.executable, "-m", "hyp2.sweep", *args], cwd=tmp_path, env=gated,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # one run stops in its second epoch (the gate); the other finishes
        wait_for(lambda: gate.is_file() and gate.read_text().endswith("\n"), "a run to reach the gate")
        pid = int(gate.read_text())
        blocked = next(n for n in names if (folder / f"{n}.lock").read_text().strip() == str(pid))
        others = [n for n in names if n != blocked]
        wait_for(lambda: all(done(folder, n) for n in others), "the other runs to finish")
        assert (folder / f"{blocked}_last.ckpt").is_file() and not done(folder, blocked)
        before = checkpoints(folder, others)
        first.send_signal(signal.SIGKILL)
        first.wait(TIMEOUT)
    finally:
        if first.poll() is None:
            first.kill()
    # the kernel stops the orphaned run (SIGTERM, as its parent died), which releases its lock
    wait_for(lambda: lock_holder(folder / f"{blocked}.lock") is None, "the orphaned run to stop")
    dry = sweep(tmp_path, *args, "--dry-run", env=gated)
    assert re.search(rf"{blocked} +interrupted +evaluated up to epoch 1 of 2\n", dry.stdout), dry.stdout

    second = sweep(tmp_path, *args, env=gated)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{blocked}: started" in second.stdout and all(f"{n}: started" not in second.stdout for n in others)
    after = checkpoints(folder, others)
    assert after == before and len(before) == 2  # the finished run was not trained again
    log = (folder / f"{blocked}.txt").read_text()
    assert f"resumed {blocked} from" in log and "after epoch 1" in log and "epoch 1/2" in log.split("resumed")[0]
    assert "epoch 1/2" not in log.split("resumed")[1]  # it did not start over
    for gated_name, plain in zip(names, plain_runs):
        assert metrics(folder, gated_name) == metrics(reference[0] / "result", plain), gated_name
    assert (tmp_path / "report" / "killed" / "results.md").is_file()


def test_a_failing_run_is_reported_while_the_others_complete(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("name: mixed\ndefaults: {dataset: demo, subset: 100, epochs: 1, batch_size: 25}\n"
                    "runs:\n  - {hash_bit: 8}\n  - {hash_bit: 12, lr: -1.0}\n", encoding="utf-8")
    first = sweep_in_process(tmp_path, str(plan), "--jobs", "2")
    assert first.returncode == 2
    assert "demo_small_12: failed (exit 2)" in first.stdout and "error: --lr -1.0: must be a finite number ≥ 0" \
        in first.stdout
    assert first.stderr.strip().splitlines()[-1].startswith("error: 1 of 2 runs failed (demo_small_12); demo_small_12: "
                                                           "exit 2: error: --lr -1.0")
    assert done_1(tmp_path / "result", "demo_small_8")
    out = (tmp_path / "result" / "sweep-mixed" / "demo_small_12.out").read_text()
    assert "error: --lr -1.0" in out
    assert (tmp_path / "report" / "mixed" / "results.md").is_file()  # the runs that are done get their report

    again = sweep_in_process(tmp_path, str(plan))  # a failed run stays failed until asked
    assert again.returncode == 2 and "started" not in again.stdout
    assert re.search(r"demo_small_12 +failed +exit 2: error: --lr -1.0", again.stdout), again.stdout
    plan.write_text(plan.read_text().replace("lr: -1.0", "lr: 0.01"), encoding="utf-8")
    retried = sweep_in_process(tmp_path, str(plan), "--retry-failed")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "demo_small_12: started" in retried.stdout and "demo_small_8: started" not in retried.stdout
    assert done_1(tmp_path / "result", "demo_small_12")


def done_1(folder, run):
    rec = record(folder, run)
    return bool(rec.get("test")) and rec["history"][-1]["epoch"] == 1


def test_ctrl_c_stops_the_runs_cleanly(tmp_path):
    gate = tmp_path / "gate"
    gated = env(HYP2_TEST_GATE=str(gate), HYP2_TEST_GATE_AFTER="60")
    plan = tmp_path / "one.yaml"
    plan.write_text(f"defaults: {{dataset: demo_gate, plugin: {GATE}, subset: 60, epochs: 2, batch_size: 20, "
                    f"hash_bit: 8}}\n", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "hyp2.sweep", str(plan)], cwd=tmp_path, env=gated,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(gate.is_file, "the run to reach the gate")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "stopped; its runs keep their last epoch" in err
    status = json.loads((tmp_path / "result" / "sweep-one" / "demo_gate_small_8.status.json").read_text())
    assert status["status"] == "interrupted" and status["exit"] == 130
    assert lock_holder(tmp_path / "result" / "demo_gate_small_8.lock") is None
    assert (tmp_path / "result" / "demo_gate_small_8_last.ckpt").is_file()


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    result = sweep_in_process(tmp_path, "paper", "--dry-run", "--set", "epochs=3")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("plan paper (") and "16 runs; 16 pending" in lines[0]
    assert "python retrieval.py --dataset voc2012 --backbone googlenet --hash_bit 64 --epochs 3" in result.stdout
    assert not (tmp_path / "result").exists()


@pytest.mark.parametrize("args, message", [
    (["demo", "--jobs", "0"], "--jobs 0: must be at least 1"),
    (["demo", "--wait"], "--wait applies to --launcher slurm"),
    (["demo", "--slurm_time", "10"], "--slurm_time applies to --launcher slurm"),
    (["demo", "--launcher", "slurm", "--slurm_extra", "account"], "--slurm_extra account: expected KEY=VALUE"),
    (["nothing"], "PLAN nothing: no such file, and not a shipped plan"),
    (["demo", "--set", "hash_bits=3"], "--set hash_bits=3: unknown key 'hash_bits'"),
])
def test_bad_arguments_are_one_line(tmp_path, args, message):
    result = sweep_in_process(tmp_path, *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_run_held_by_another_process_is_waited_for(tmp_path):
    plan = tmp_path / "held.yaml"
    plan.write_text("defaults: {dataset: demo, subset: 60, epochs: 1, batch_size: 20, hash_bit: 8}\n", encoding="utf-8")
    lock = tmp_path / "result" / "demo_small_8.lock"
    lock.parent.mkdir()
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline() == "held\n"
    out = tmp_path / "sweep.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "hyp2.sweep", str(plan)], cwd=tmp_path, env=env(),
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: f"in use by another process (PID {holder.pid})" in out.read_text(), "the sweep to wait")
        assert proc.poll() is None and not (tmp_path / "result" / "demo_small_8.json").exists()
        holder.stdin.close()  # the other process ends: its lock is released
        holder.wait(TIMEOUT)
        assert proc.wait(TIMEOUT) == 0, out.read_text()
    finally:
        for p in (proc, holder):
            if p.poll() is None:
                p.kill()
    assert done_1(tmp_path / "result", "demo_small_8") and "demo_small_8: started" in out.read_text()


def test_a_job_with_several_processes_trains_under_torchrun(tmp_path):
    """What --slurm_gpus_per_job N > 1 runs: training under torchrun (here two gloo processes on the
    CPU; DDP itself: tests/test_distributed.py), then --test in the job's own process. One
    checkpoint, one history, one log writer."""
    command = [sys.executable, "-m", "hyp2.sweep.job", "--torchrun=2", "--", "--dataset", "demo", "--subset", "90",
               "--epochs", "1", "--batch_size", "30", "--hash_bit", "16", "--device", "cpu", "--result_dir", "out"]
    # a new session, so that a hang is ended with torchrun's workers
    proc = subprocess.Popen(command, cwd=tmp_path, env=env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert "x 2 processes" in out and "test: map@" in out
    assert out.count("map: ") == 2, out  # training's and --test's: rank 0 alone reports
    folder = tmp_path / "out"
    assert done_1(folder, "demo_small_16")
    assert sorted(p.name for p in folder.iterdir()) == [
        "demo_small_16.ckpt", "demo_small_16.json", "demo_small_16.lock", "demo_small_16.txt", "demo_small_16.yaml",
        "demo_small_16_last.ckpt", "demo_small_16_sample.npz"]  # the last: --test's sample of codes
    assert (folder / "demo_small_16.txt").read_text().count("epoch 1: map") == 1  # one writer
