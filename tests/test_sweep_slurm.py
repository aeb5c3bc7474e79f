"""``python -m hyp2.sweep --launcher slurm`` on a real single-node Slurm cluster (tests/_slurm.py:
munged, mariadbd, slurmdbd, slurmctld and slurmd started by the test): the demo plan submitted as
a job array, every job completing and the report written; a job requeued with ``scontrol
requeue`` in the middle of its training (held there by tests/sweep_gate.py) resumes from its last
checkpoint instead of starting over. Skipped, with the reason, where Slurm cannot be installed."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _slurm import SlurmCluster, missing
from conftest import sweep_in_process

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
GATE = str(ROOT / "tests" / "sweep_gate.py")
TINY = ["--set", "subset=60", "--set", "epochs=2", "--set", "batch_size=20"]
SLURM = ["--launcher", "slurm", "--slurm_gpus_per_job", "0", "--poll", "1"]
TIMEOUT = 600


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing()
    if reason is None:
        try:
            import submitit  # noqa: F401
        except ImportError:
            reason = "submitit is not installed (pip install submitit; .ci/run does)"
    if reason is not None:
        print(f"skipped: {reason}")
        pytest.skip(reason)
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def sweep(cluster, cwd, *args, extra_env=None):
    env = dict(cluster.env, PYTHONPATH=str(ROOT), **(extra_env or {}))
    env.pop("HYP2_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "hyp2.sweep", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


def explain(cluster, *results):
    """What a failed assertion shows: the commands' output and the daemons' logs."""
    return "\n".join(r.stdout + r.stderr for r in results) + "\n" + cluster.tails()


def wait_for(condition, what, cluster):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{cluster.tails()}"
        time.sleep(0.2)


def test_demo_plan_on_slurm(cluster, tmp_path):
    slurm_env = {"SLURM_CONF": cluster.env["SLURM_CONF"]}
    first = sweep_in_process(tmp_path, "demo", *SLURM, "--jobs", "2", *TINY, "--wait", env=slurm_env)
    assert first.returncode == 0, explain(cluster, first)
    ids = re.search(r"submitted 4 Slurm jobs: (.*)", first.stdout).group(1)
    assert re.fullmatch(r"demo_small_16 (\d+)_0, demo_small_16_csq \1_1, demo_small_48 \1_2, "
                        r"demo_small_48_csq \1_3", ids), ids  # one job array
    assert "sweep demo: all 4 runs done" in first.stdout
    results = tmp_path / "result"
    for run in ("demo_small_16", "demo_small_16_csq", "demo_small_48", "demo_small_48_csq"):
        record = json.loads((results / f"{run}.json").read_text())
        assert [h["epoch"] for h in record["history"]] == [1, 2] and record["test"]["map"] > 0
        status = json.loads((results / "sweep-demo" / f"{run}.status.json").read_text())
        assert status["status"] == "ok" and re.fullmatch(r"\d+_\d", status["job"])
    assert (tmp_path / "report" / "demo" / "results.md").is_file()
    assert (tmp_path / "report" / "demo" / "index.html").is_file()
    jobs = json.loads((results / "sweep-demo" / "slurm_jobs.json").read_text())
    base = jobs["demo_small_16"]["job"].split("_")[0]
    accounted = cluster.run("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", base).stdout
    assert accounted.count("COMPLETED") == 4, accounted

    again = sweep_in_process(tmp_path, "demo", *SLURM, *TINY, env=slurm_env)  # states, and nothing to submit
    assert again.returncode == 0, explain(cluster, again)
    assert "submitted" not in again.stdout and "4 runs; 4 done" in again.stdout


def test_requeued_job_resumes_from_its_last_checkpoint(cluster, tmp_path):
    gate = tmp_path / "gate"
    gated = {"HYP2_TEST_GATE": str(gate), "HYP2_TEST_GATE_AFTER": "60"}
    plan = tmp_path / "one.yaml"
    plan.write_text(f"name: one\ndefaults: {{dataset: demo_gate, plugin: {GATE}, hash_bit: 8}}\n", encoding="utf-8")
    submitted = sweep(cluster, tmp_path, str(plan), *SLURM, *TINY, extra_env=gated)
    assert submitted.returncode == 0, explain(cluster, submitted)
    job = re.search(r"submitted 1 Slurm jobs: demo_gate_small_8 (\S+)", submitted.stdout).group(1)
    assert "1 of 1 runs queued or running" in submitted.stdout

    wait_for(gate.is_file, "the job to reach its second epoch", cluster)  # epoch 1's _last.ckpt is written
    results = tmp_path / "result"
    assert (results / "demo_gate_small_8_last.ckpt").is_file()
    requeue = cluster.run("scontrol", "requeue", job)
    assert requeue.returncode == 0, requeue.stderr + cluster.tails()

    waited = sweep(cluster, tmp_path, str(plan), *SLURM, *TINY, "--wait", extra_env=gated)
    assert waited.returncode == 0, explain(cluster, submitted, waited)
    assert "submitted" not in waited.stdout  # the requeued job was waited for, not submitted again
    log = (results / "demo_gate_small_8.txt").read_text()
    before, _, after = log.partition("resumed demo_gate_small_8 from")
    assert after and "after epoch 1" in after, log
    assert "epoch 1/2" in before and "epoch 1/2" not in after and "epoch 2/2" in after  # not started over
    record = json.loads((results / "demo_gate_small_8.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2] and record["test"]["map"] > 0
    out = (results / "sweep-one" / "demo_gate_small_8.out").read_text()
    assert out.count(f"Slurm job {job}:") == 2 and "terminated (SIGTERM)" in out  # the same job ran twice
    accounted = cluster.run("sacct", "-n", "-X", "-P", "--duplicates", "-o", "JobID,State", "-j", job).stdout
    assert "REQUEUED" in accounted and "COMPLETED" in accounted, accounted
