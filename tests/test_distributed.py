"""torchrun with two CPU processes (gloo): one checkpoint, one history, and the sharding helpers."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from hyp2.distributed import Dist, gather_rows, per_rank_batch, shard

ROOT = Path(__file__).resolve().parents[1]


def test_shards_cover_every_row_once_in_order():
    for n in (0, 1, 5, 10, 11):
        for world in (1, 2, 3, 4):
            rows = [i for r in range(world) for i in shard(n, Dist(r, world))]
            assert rows == list(range(n))
    assert gather_rows(torch.ones(3, 2), 3, Dist()).shape == (3, 2)


def test_global_batch_must_split_evenly():
    assert per_rank_batch(100, Dist(0, 4)) == 25
    import pytest
    from hyp2.errors import UserError
    with pytest.raises(UserError, match="divisible by the 3 processes"):
        per_rank_batch(100, Dist(0, 3))


def test_torchrun_two_gloo_processes_train_the_demo(tmp_path):
    out = tmp_path / "result"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "retrieval.py", "--dataset", "demo", "--subset", "90", "--epochs", "2", "--eval_every", "1",
           "--batch_size", "30", "--hash_bit", "16", "--device", "cpu", "--result_dir", str(out)]
    # A new session, so a hang kills torchrun's workers too, not only torchrun.
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"torchrun hung:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.count("map: ") == 1, stdout  # rank 0 alone reports
    assert stdout.count("epoch 2: map") == 1
    assert "x 2 processes" in stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == ["demo_small_16.ckpt", "demo_small_16.json", "demo_small_16.txt", "demo_small_16_last.ckpt"]
    history = json.loads((out / "demo_small_16.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    log = (out / "demo_small_16.txt").read_text()
    assert log.count("epoch 2: map") == 1  # one writer
