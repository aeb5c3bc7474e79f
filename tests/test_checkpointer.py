"""The order a training run writes its files in (hyp2.checkpointer): a kill at any moment leaves the
earlier committed state or the new one, --overwrite never loses the earlier run before the fresh
one commits, and --resume / --test refuse files that come from different runs."""
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import DEMO_RUN_ARGS, KILLER, finished_demo_run

from hyp2.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
ARGS = DEMO_RUN_ARGS
RUN = "demo_small_12"

def killed(kill_at: int, *argv: str) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLER, str(kill_at), *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.suffix != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run (seed 0), shared with tests/test_resume.py: its folder and its files' bytes."""
    return finished_demo_run(tmp_path_factory)


def test_overwrite_killed_before_its_first_commit_leaves_the_earlier_run_whole(finished, tmp_path, capsys):
    """What lost data: `--overwrite --seed 3` killed while writing its first resumable state. Its
    first best checkpoint had replaced the earlier one, and --resume took the earlier state for
    it. Now the earlier run comes back whole, and flags are compared with the right run."""
    out = tmp_path / "r"
    shutil.copytree(finished[0], out)
    before = files_of(out)
    killed(2, *ARGS, "--seed", "3", "--overwrite", "--result_dir", str(out))  # 1: the new best, 2: its commit
    capsys.readouterr()
    assert main(ARGS + ["--result_dir", str(out), "--resume", "--seed", "3"]) == 2
    assert "was trained with --seed 0 but this run has --seed 3" in capsys.readouterr().err
    assert {k: v for k, v in files_of(out).items() if k != f"{RUN}.txt"} == \
        {k: v for k, v in before.items() if k != f"{RUN}.txt"}
    assert not (out / f"{RUN}.retired").exists() and not (out / f"{RUN}.next.ckpt").exists()
    record = json.loads(before[f"{RUN}.json"])
    assert main(ARGS + ["--result_dir", str(out), "--test"]) == 0
    assert f"map: {record['best']['map']}" in capsys.readouterr().out


def test_overwrite_that_commits_replaces_the_earlier_run(finished, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(finished[0], out)
    killed(4, *ARGS, "--seed", "3", "--overwrite", "--result_dir", str(out))  # after epoch 1 committed
    assert main(ARGS + ["--result_dir", str(out), "--resume", "--seed", "3"]) == 0
    record = json.loads((out / f"{RUN}.json").read_text())
    assert record["config"]["seed"] == 3 and [h["epoch"] for h in record["history"]] == [1, 2, 3, 4]
    assert not (out / f"{RUN}.retired").exists()
    assert torch.load(out / f"{RUN}.ckpt", weights_only=True)["digest"] == record["best"]["digest"]


def test_resume_and_test_refuse_a_best_checkpoint_of_another_run(finished, tmp_path, capsys):
    out, other = tmp_path / "r", tmp_path / "other"
    shutil.copytree(finished[0], out)
    assert main(ARGS + ["--result_dir", str(other), "--seed", "5", "--epochs", "1"]) == 0
    shutil.copy(other / f"{RUN}.ckpt", out / f"{RUN}.ckpt")
    capsys.readouterr()
    for extra in (["--resume", "--epochs", "5"], ["--test"]):
        assert main(ARGS[:-6] + ["--hash_bit", "12", "--result_dir", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert "is not the best checkpoint" in err and "come from different runs" in err and err.count("\n") == 1


def test_a_new_best_killed_before_its_commit_is_discarded_and_redone(finished, tmp_path):
    """Killed inside epoch 2's resumable state, after its new best went to {run}.next.ckpt: the
    best checkpoint in place stays epoch 1's until the redone epoch 2 commits."""
    out = tmp_path / "r"
    killed(4, *ARGS, "--result_dir", str(out))  # 1, 2: epoch 1; 3: epoch 2's best; 4: its commit
    assert (out / f"{RUN}.next.ckpt").exists()
    committed = json.loads((out / f"{RUN}.json").read_text())["best"]
    assert torch.load(out / f"{RUN}.ckpt", weights_only=True)["digest"] == committed["digest"]
    assert main(ARGS + ["--result_dir", str(out), "--resume"]) == 0
    assert not (out / f"{RUN}.next.ckpt").exists()
    got, want = json.loads((out / f"{RUN}.json").read_text()), json.loads(finished[1][f"{RUN}.json"])
    assert [h["map"] for h in got["history"]] == [h["map"] for h in want["history"]]
    assert (got["best"]["epoch"], got["best"]["map"]) == (want["best"]["epoch"], want["best"]["map"])
    model = torch.load(out / f"{RUN}.ckpt", weights_only=True)["meta"]["model_digest"]
    assert model == torch.load(finished[0] / f"{RUN}.ckpt", weights_only=True)["meta"]["model_digest"]
