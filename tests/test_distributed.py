"""torchrun with two CPU processes (gloo): the global batch's gradient, and the sharding helpers."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


# torchrun training the demo end to end (one checkpoint, one history, rank 0 alone writing) is
# tests/test_sweep_local.py::test_a_job_with_several_processes_trains_under_torchrun.


# Two gloo processes each hold half of a fixed batch; with gather_batch and DDP their gradients
# must equal one process's gradient of the loss over the whole batch.
GRADIENT_CHECK = r"""
import os, sys, torch, torch.distributed as dist, torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from hyp2.distributed import Dist, average_gradients, gather_batch
from hyp2.losses import build_loss


def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, generator=g)
    y = (torch.rand(8, 4, generator=g) < 0.5).float()
    y[:, 0] = 1 - y[:, 1]  # every row has a label; some rows more than one
    return x, y

def fresh():
    torch.manual_seed(1)
    return torch.nn.Linear(5, 6), build_loss("hyp2", 4, 6, options={"zeta": 0.0})

def worker(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    d = Dist(rank, world)
    net, loss = fresh()
    ddp = DistributedDataParallel(net)
    x, y = batch()
    part = slice(rank * 4, rank * 4 + 4)
    value = loss(gather_batch(ddp(x[part]), d), gather_batch(y[part], d))
    value.backward()
    average_gradients(loss.parameters(), d)
    if rank == 0:
        torch.save({"value": value.detach(), "w": net.weight.grad, "p": loss.proxies.grad}, out)
    del ddp, value  # a DDP module alive at destroy_process_group can abort the process at exit
    dist.barrier()
    dist.destroy_process_group()

if __name__ == "__main__":
    init, out = sys.argv[1], sys.argv[2]
    mp.spawn(worker, args=(2, init, out), nprocs=2)
    net, loss = fresh()
    x, y = batch()
    value = loss(net(x), y)
    value.backward()
    got = torch.load(out)
    assert torch.allclose(got["value"], value.detach(), atol=1e-6), (got["value"], value)
    assert torch.allclose(got["w"], net.weight.grad, atol=1e-6)
    assert torch.allclose(got["p"], loss.proxies.grad, atol=1e-6)
    print("same gradients")
"""


@pytest.mark.slow
def test_two_processes_get_the_global_batch_gradient(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(GRADIENT_CHECK)
    proc = subprocess.run([sys.executable, str(script), f"file://{tmp_path / 'rdzv'}", str(tmp_path / "g.pt")],
                          cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and "same gradients" in proc.stdout, proc.stderr[-3000:]
