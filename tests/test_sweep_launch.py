"""What the launchers ask for, without running anything: a local job's command and environment (GPU
pinning, threads), and the sbatch script and job command of the Slurm launcher."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hyp2.errors import UserError
from hyp2.sweep import local, slurm
from hyp2.sweep.job import torchrun_command
from hyp2.sweep.plan import Run

RUN = Run("demo_small_8", {"dataset": "demo", "hash_bit": 8}, Path("result"), 15)


def test_a_local_job_is_pinned_to_its_gpu_unless_the_run_names_a_device(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = local.child_env(RUN, "3", None)
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["PYTHONPATH"].split(":")[0] == str(Path(local.__file__)
                                                                                          .parents[2])
    own = Run(RUN.name, {**RUN.flags, "device": "cuda:1"}, RUN.result_dir, 15)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert local.child_env(own, "3", None)["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert local.child_env(RUN, None, 2)["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert local.child_env(RUN, None, 2)["OMP_NUM_THREADS"] == "7"  # the user's setting wins


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert local.visible_gpus() == ["5", "7"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local.visible_gpus() == ["0", "1"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local.visible_gpus() == []


def test_job_commands():
    assert local.job_command(RUN, parent=42) == [sys.executable, "-m", "hyp2.sweep.job", "--parent=42", "--",
                                                  "--dataset", "demo", "--hash_bit", "8"]
    assert torchrun_command(4, ["--dataset", "demo", "--resume"]) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "hyp2.cli",
        "--dataset", "demo", "--resume"]
    one, two = (slurm.SweepJob(RUN, Path("j"), gpus, "/here") for gpus in (1, 2))
    assert one.command() == [sys.executable, "-m", "hyp2.sweep.job", "--", "--dataset", "demo", "--hash_bit", "8"]
    assert two.command()[3] == "--torchrun=2" and one.cwd == "/here" and one.journal_dir == Path("j").resolve()


@pytest.mark.parametrize("text, minutes", [("90", 90), ("30:00", 30), ("30:30", 31), ("01:30:00", 90),
                                           ("2-12", 3600), ("1-00:00:01", 1441), ("0-0:1", 1)])
def test_slurm_time_limits(text, minutes):
    assert slurm.minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "0", "1:2:3:4"])
def test_bad_slurm_time_limits(text):
    with pytest.raises(UserError, match="--slurm_time"):
        slurm.minutes(text)


def test_the_sbatch_script(tmp_path):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    options = slurm.SlurmOptions("gpu", 2, "1-00:00:00", "32G", {"account": "proj", "qos": "high"}, 3)
    text = slurm.make_executor(tmp_path, options)._make_submission_file_text("CMD", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--time=1440", "--mem=32G", "--account=proj", "--qos=high",
                 "--ntasks-per-node=1", "--signal=USR2@90"):
        assert f"#SBATCH {line}\n" in text
    assert "export PYTHONPATH=" in text
    plain = slurm.make_executor(tmp_path, slurm.SlurmOptions(gpus_per_job=0))._make_submission_file_text("C", "u")
    assert "--time" not in plain and "--gpus" not in plain and "--partition" not in plain  # the cluster's defaults


def test_a_slurm_jobs_threads_follow_its_cpus():
    env = slurm.job_env({"SLURM_CPUS_ON_NODE": "3", "PYTHONPATH": "/mine"})
    assert env["OMP_NUM_THREADS"] == "3" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"].split(":")[-1] == "/mine" and Path(env["PYTHONPATH"].split(":")[0], "hyp2").is_dir()
    assert slurm.job_env({"SLURM_CPUS_ON_NODE": "3", "OMP_NUM_THREADS": "8"})["OMP_NUM_THREADS"] == "8"  # the user's
    assert "OMP_NUM_THREADS" not in slurm.job_env({}) and "OMP_NUM_THREADS" not in slurm.job_env(
        {"SLURM_CPUS_ON_NODE": "x"})


def test_a_run_is_running_until_its_slurm_job_ends():
    from hyp2.sweep.state import DONE, FAILED, PENDING, QUEUED, RUNNING, RunState

    def merged(status, job_state):
        states = {"r": RunState(status, "")}
        slurm.merge_job_states(states, {"r": "7_0"}, None if job_state is None else {"7_0": job_state})
        return states["r"].status

    # its files say done, but the job may still be recording its exit: --wait waits for it
    assert merged(DONE, "RUNNING") == RUNNING and merged(DONE, "COMPLETING") == RUNNING
    assert merged(DONE, "COMPLETED") == DONE and merged(FAILED, "FAILED") == FAILED
    assert merged(FAILED, "RUNNING") == RUNNING and merged(PENDING, "PENDING") == QUEUED
    assert merged(PENDING, None) == QUEUED and merged(DONE, None) == DONE  # Slurm silent: never submitted twice
    states = {"r": RunState(PENDING, "")}
    slurm.merge_job_states(states, {"r": "7_0"}, {"7_0": "CANCELLED"})
    assert states["r"] == RunState(PENDING, "job 7_0 ended CANCELLED")
