"""Multi-process training with ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N retrieval.py ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; this module
turns them into a :class:`Dist` handle. One process per GPU (NCCL), or per CPU process (gloo) for
tests. The global batch stays ``--batch_size``: each rank takes ``batch_size / world_size``.
The loss is computed on the gathered global batch (:func:`gather_batch`), so it equals the
single-process loss except for BatchNorm statistics, which stay per rank. Evaluation encodes a
contiguous shard of the query and database splits on every rank and gathers them; logging and
saving happen on rank 0 only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; ``world_size == 1`` means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str) -> tuple[Dist, str]:
    """Join the process group when launched by torchrun; returns the handle and this rank's device
    (``cuda:<LOCAL_RANK>`` when ``device`` is CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank, world, local), device


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, d: Dist) -> int:
    if batch_size % d.world_size:
        raise UserError(f"--batch_size {batch_size} is the global batch and must be divisible by the "
                        f"{d.world_size} processes; pass a multiple of {d.world_size}")
    return batch_size // d.world_size


def shard(n: int, d: Dist) -> range:
    """The contiguous slice of ``range(n)`` this rank encodes."""
    per = -(-n // d.world_size)
    return range(min(n, d.rank * per), min(n, (d.rank + 1) * per))


def gather_rows(x: torch.Tensor, n: int, d: Dist) -> torch.Tensor:
    """Concatenate every rank's (n_r, ...) shard (ranks in order) into (n, ...) on every rank."""
    if not d.enabled:
        return x
    per = -(-n // d.world_size)
    padded = x.new_zeros((per, *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(d.world_size)]
    dist.all_gather(parts, padded.contiguous())
    out = [p[: len(shard(n, Dist(r, d.world_size)))] for r, p in enumerate(parts)]
    return torch.cat(out)


def gather_batch(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Concatenate every rank's (b, ...) batch into the global (W·b, ...) batch, differentiably.

    Every rank then computes the loss of the *global* batch, as one process would: HyP²'s means
    and pairs span all ranks' samples. Gradients flow back to each rank's own slice; with DDP's
    averaging over ranks the network gets exactly the global loss's gradient (each of the W
    identical losses sends W·∂L/∂h_r to rank r, and DDP divides by W). Ranks' batches must have
    equal sizes, which a DistributedSampler guarantees.
    """
    return _GatherBatch.apply(x, d) if d.enabled else x


class _GatherBatch(torch.autograd.Function):
    # all_gather forward; backward sums the global gradient over ranks (all_reduce, which every
    # backend has) and keeps this rank's slice.

    @staticmethod
    def forward(ctx, x: torch.Tensor, d: Dist) -> torch.Tensor:
        ctx.rank, ctx.rows = d.rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(d.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None


def average_gradients(params, d: Dist) -> None:
    """All-reduce (mean) the gradients of parameters DDP does not manage (the loss's proxies)."""
    if not d.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= d.world_size


def broadcast_float(value: float, d: Dist, device) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_agree(flag: bool, d: Dist) -> bool:
    """True when ``flag`` has the same value on every rank."""
    if not d.enabled:
        return True
    t = torch.tensor([int(flag)], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    lo, hi = t.clone(), t.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return int(lo.item()) == int(hi.item())
