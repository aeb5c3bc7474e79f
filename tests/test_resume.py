"""Resumable training: a run SIGKILLed at any moment (also inside a checkpoint write) resumes from
the last complete epoch and ends exactly like an uninterrupted run."""
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import DEMO_RUN_ARGS, KILLER, finished_demo_run

from hyp2.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
ARGS = DEMO_RUN_ARGS
RUN = "demo_small_12"


def args(**changes):
    """ARGS with some flags' values replaced."""
    out = list(ARGS)
    for flag, value in changes.items():
        out[out.index(f"--{flag}") + 1] = str(value)
    return out

# Runs the CLI in a child process that sends itself SIGTERM (what Slurm sends on preemption or
# scancel) as its `stop_at`-th atomic checkpoint save begins.
TERMINATOR = textwrap.dedent("""
    import os, signal, sys
    import hyp2.io as io
    kill_at, calls, original = int(sys.argv[1]), [0], io.atomic_save
    def terminated_save(path, save):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGTERM)
        original(path, save)
    io.atomic_save = terminated_save
    from hyp2.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out, _ = finished_demo_run(tmp_path_factory)
    return json.loads((out / f"{RUN}.json").read_text())


# Saves per epoch: epoch 1 best + last (1, 2); epoch 2 best? + last ... A kill at save 2 dies inside
# the first resumable checkpoint; at 3 inside the second epoch's first save; at 5 later on.
@pytest.mark.parametrize("kill_at", [2, 3, 5])
def test_sigkill_then_resume_matches_an_uninterrupted_run(kill_at, reference, tmp_path, capsys):
    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(kill_at), *ARGS, "--result_dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert main(ARGS + ["--result_dir", str(out), "--resume"]) == 0
    got = json.loads((out / f"{RUN}.json").read_text())
    assert [h["epoch"] for h in got["history"]] == [1, 2, 3, 4]  # none missing, none twice
    assert [h["map"] for h in got["history"]] == [h["map"] for h in reference["history"]]
    assert {k: got["best"][k] for k in ("epoch", "map")} == {k: reference["best"][k] for k in ("epoch", "map")}
    ckpt = torch.load(out / f"{RUN}.ckpt", weights_only=True)
    assert ckpt["meta"]["epoch"] == reference["best"]["epoch"] and ckpt["meta"]["map"] == reference["best"]["map"]
    assert not list(out.glob(".*.tmp")), "stale temporary files are cleaned up"
    assert "resumed" in capsys.readouterr().out or kill_at == 2


def test_sigterm_stops_with_one_line_and_resumes_like_an_uninterrupted_run(reference, tmp_path, capsys):
    """SIGTERM (Slurm's preemption) used to end the process with status 143 and no word; now it
    unwinds like Ctrl-C: one line, status 143, no temporary file left, and --resume continues."""
    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-c", TERMINATOR, "3", *ARGS, "--result_dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("terminated (SIGTERM)")
    assert "Traceback" not in proc.stderr
    assert not list(out.glob(".*.tmp"))
    assert main(ARGS + ["--result_dir", str(out), "--resume"]) == 0
    got = json.loads((out / f"{RUN}.json").read_text())
    assert [h["map"] for h in got["history"]] == [h["map"] for h in reference["history"]]
    assert "resumed" in capsys.readouterr().out


def test_fresh_run_refuses_to_replace_earlier_checkpoints(reference, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(args(epochs=1) + ["--result_dir", str(out)]) == 0
    capsys.readouterr()
    assert main(args(epochs=1) + ["--result_dir", str(out)]) == 2
    assert "exists from an earlier run; pass --resume" in capsys.readouterr().err
    assert main(args(epochs=1) + ["--result_dir", str(out), "--overwrite"]) == 0


def test_resume_with_other_flags_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(args(epochs=1) + ["--result_dir", str(out)]) == 0
    capsys.readouterr()
    assert main(args(epochs=2, batch_size=50) + ["--result_dir", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was trained with --batch_size 25 but this run has --batch_size 50" in err


def test_resume_of_a_finished_run_only_reports(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(args(epochs=1) + ["--result_dir", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[-1]
    assert main(args(epochs=1) + ["--result_dir", str(out), "--resume"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == first
    assert len(json.loads((out / f"{RUN}.json").read_text())["history"]) == 1


def test_resume_without_its_state_never_replaces_an_earlier_history(tmp_path, capsys):
    """--resume with {run}_last.ckpt gone used to start from epoch 1 and replace the earlier best
    checkpoint and history by epoch 1's; now it stops and names both ways out."""
    out = tmp_path / "r"
    assert main(args(epochs=2) + ["--result_dir", str(out)]) == 0
    capsys.readouterr()
    (out / f"{RUN}_last.ckpt").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".ckpt", ".json")}
    assert main(args(epochs=3) + ["--result_dir", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{RUN}_last.ckpt is missing but" in err and "--overwrite" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".ckpt", ".json")} == before


def test_resume_with_nothing_earlier_starts_fresh(tmp_path, capsys):
    assert main(args(epochs=1) + ["--result_dir", str(tmp_path), "--resume"]) == 0
    assert "no earlier state" in capsys.readouterr().out
