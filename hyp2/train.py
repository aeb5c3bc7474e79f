"""The official HyP² training recipe (Xu et al., ACM MM 2022, Sec. 4.1, and the authors' code), and
the epoch loop.

SGD with momentum 0.9 and weight decay 5e-4 over two parameter groups (the network at its
backbone's lr, the loss's proxies at ``--rate``), StepLR(step 10, γ 0.5) stepped per epoch,
evaluation every ``eval_every`` epochs and after the last, best checkpoint kept. :func:`fit` is the
loop, top to bottom; what it writes, and in which order, is :class:`hyp2.checkpointer.Checkpointer`'s.
"""
from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import UserError
from .losses import HashLoss
from .losses._batch import labels_checked
from .progress import bar

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
STEP_SIZE, GAMMA = 10, 0.5
#: training steps between two reads of the loss on the host (the finite check, the progress bar)
CHECK_EVERY = 50

log = logging.getLogger("hyp2")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def batches_of(loader: DataLoader) -> Iterator[Iterator]:
    """``with batches_of(loader) as batches:`` iterates ``loader``; when an error leaves the block
    (a worker's, or the consumer's own), the loader's workers are stopped before it goes on. Left
    to the garbage collector (the error's traceback holds the iterator in a reference cycle), their
    shutdown would hold the process for torch's 5 s timeout at some later moment."""
    iterator = iter(loader)
    try:
        yield iterator
    except BaseException:
        stop = getattr(iterator, "_shutdown_workers", None)  # torch's own shutdown (none without workers)
        if stop is not None:
            stop()
        if getattr(loader, "_iterator", None) is iterator:  # persistent workers: the next epoch starts afresh
            loader._iterator = None
        raise


def _seed_worker(_worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive python/numpy seeds from it so
    # anything a transform draws is reproducible too.
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def make_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int, seed: int = 0,
                pin_memory: bool = False, sampler=None, drop_last: bool = False) -> DataLoader:
    """A DataLoader; the training one shuffles with a generator seeded by ``seed`` (or uses
    ``sampler``, e.g. a DistributedSampler). Workers persist across epochs. ``drop_last`` drops
    an incomplete last batch (training uses it only for a last batch of one image)."""
    # Every loader gets its own generator: a DataLoader without one draws its workers' base seed
    # from the global RNG, so evaluating would shift the training augmentation that follows.
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, generator=gen, worker_init_fn=_seed_worker if workers else None,
                      pin_memory=pin_memory, drop_last=drop_last, persistent_workers=workers > 0)


def make_optimizer(model: nn.Module, loss: HashLoss, net_lr: float, rate: float) -> torch.optim.SGD:
    """SGD(momentum 0.9, weight decay 5e-4 on every group, as the official code) over the network
    at ``net_lr`` and the loss's own parameter groups (proxies at ``rate`` for HyP²)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": net_lr, "name": "network"}]
    groups += loss.param_groups(rate, net_lr)
    return torch.optim.SGD(groups, lr=net_lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def make_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=STEP_SIZE, gamma=GAMMA)


@dataclass
class EpochStats:
    """Mean loss and terms over an epoch's samples, the seconds its steps took (the epoch's wall
    time less the time spent waiting for batches), that waiting time, and the network's learning
    rate during the epoch."""

    loss: float
    components: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    wait_seconds: float = 0.0
    lr: float = 0.0


@dataclass
class StepOptions:
    """How a training step runs. ``amp``: bf16 autocast on CUDA (the loss stays float32);
    ``channels_last``: NHWC images; ``gather``: maps local outputs and labels to the global batch's
    before the loss (multi-process); ``after_backward``: runs between backward and the optimiser
    step (multi-process training averages the loss's gradients there)."""

    amp: bool = False
    channels_last: bool = False
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    after_backward: Callable[[], None] | None = None


def train_one_epoch(model: nn.Module, loss_fn: HashLoss, loader, optimizer: torch.optim.Optimizer,
                    device: torch.device | str, epoch: int, desc: str = "",
                    options: StepOptions | None = None) -> EpochStats:
    """One pass over ``loader`` (batches of ``(images (B, 3, S, S), labels (B, C), indices)``).

    The loss and its terms are summed on the device and read every :data:`CHECK_EVERY` steps and
    at the end, never inside a step, so the GPU never waits for the host. A non-finite loss stops
    the run with a :class:`UserError` naming the epoch and the first bad step (no checkpoint of
    this epoch is written: those on disk are the last good ones).
    """
    o = options or StepOptions()
    model.train()
    loss_fn.train()
    device = torch.device(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=o.amp and device.type == "cuda")
    total = torch.zeros((), dtype=torch.float64, device=device)
    parts: dict[str, torch.Tensor] = {}
    first_bad = torch.zeros((), dtype=torch.int64, device=device)
    count, wait, lr = 0, 0.0, optimizer.param_groups[0]["lr"]
    start = ready = time.perf_counter()
    with batches_of(loader) as served, bar(served, desc=desc or f"epoch {epoch}", total=len(loader)) as batches:
        for step, (images, labels, _) in enumerate(batches, 1):
            wait += time.perf_counter() - ready
            if not ((labels == 0) | (labels == 1)).all():  # on the host, as the loader made them: no sync
                raise UserError(f"epoch {epoch}, step {step}: a training batch holds labels other than 0/1; "
                                f"check the dataset's label lists")
            images = images.to(device, non_blocking=True)
            if o.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with autocast:
                h = model(images).float()
            if o.gather is not None:
                h, labels = o.gather(h), o.gather(labels)
            loss = _checked_loss(loss_fn, h, labels)
            value = loss.detach()
            first_bad = torch.where((first_bad == 0) & ~torch.isfinite(value), step, first_bad)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o.after_backward is not None:
                o.after_backward()
            optimizer.step()
            n = len(labels)
            count += n
            total += value.double() * n
            for k, v in loss_fn.components.items():
                parts[k] = parts[k] + v.double() * n if k in parts else v.double() * n
            if step % CHECK_EVERY == 0:
                _stop_if_not_finite(first_bad, epoch)
                batches.set_postfix(loss=f"{float(total) / count:.4f}")
            ready = time.perf_counter()
    if count == 0:
        raise UserError("the training split is empty; check the dataset's lists")
    _stop_if_not_finite(first_bad, epoch)  # also waits for the device: the wall time below is real
    seconds = time.perf_counter() - start - wait
    return EpochStats(float(total) / count, {k: float(v) / count for k, v in parts.items()}, seconds, wait, lr)


def _stop_if_not_finite(first_bad: torch.Tensor, epoch: int) -> None:
    step = int(first_bad)
    if step:
        raise UserError(f"the loss became NaN or infinite at epoch {epoch}, step {step}; lower the learning rate "
                        f"(--lr / --rate) or check the data; the last good checkpoint is kept")


def _checked_loss(loss_fn: HashLoss, h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``loss_fn(h, labels)``, with what a plugin's backbone or loss can get wrong said in one line:
    outputs of another width, a value that is not a differentiable scalar, a broken term."""
    name = loss_fn.name or type(loss_fn).__name__
    if h.dim() != 2 or h.shape[1] != loss_fn.num_bits:
        raise UserError(f"the network gives outputs of shape {tuple(h.shape)}, not (B, {loss_fn.num_bits}) for "
                        f"--hash_bit {loss_fn.num_bits}; its hash layer must output one value per bit")
    try:
        with labels_checked():
            loss = loss_fn(h, labels)
    except ValueError as e:
        raise UserError(f"--loss {name}: {e}") from None
    if not (torch.is_tensor(loss) and loss.dim() == 0 and loss.is_floating_point()):
        got = f"shape {tuple(loss.shape)}" if torch.is_tensor(loss) else type(loss).__name__
        raise UserError(f"--loss {name} returned {got}, not a scalar tensor; a loss returns one number per batch")
    if not loss.requires_grad:
        raise UserError(f"--loss {name} returned a value without a gradient (it does not depend on the network's "
                        f"outputs); a loss must be differentiable w.r.t. them")
    return loss


class Checkpoints(Protocol):
    """What the loop hands each finished epoch to (:class:`hyp2.checkpointer.Checkpointer`)."""

    def end_epoch(self, epoch: int, train_seconds: float, stats: EpochStats, evaluation: float | None) -> None: ...


@dataclass
class TrainingRun:
    """Everything the epoch loop works with, built once per run (:func:`hyp2.experiment.build_training`).

    ``model`` is the network as checkpoints store it; ``net`` what trains (the model, under DDP
    and/or ``torch.compile``). ``evaluate()`` encodes the query and database splits and returns
    mAP@K. ``board`` writes TensorBoard scalars, when asked for.
    """

    model: nn.Module
    net: nn.Module
    loss_fn: HashLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: DataLoader
    device: torch.device
    epochs: int
    eval_every: int
    evaluate: Callable[[], float]
    step: StepOptions = field(default_factory=StepOptions)
    board: Any = None


def fit(run: TrainingRun, checkpoints: Checkpoints, start_epoch: int = 1, train_seconds: float = 0.0) -> float:
    """Train epochs ``start_epoch..run.epochs`` (1-based); returns the training seconds in all.

    Per epoch: train one pass, step the scheduler, evaluate when due (every ``eval_every``-th
    epoch and the last), then hand the epoch to ``checkpoints`` (best checkpoint, resumable state,
    JSON, in that order). ``train_seconds`` accumulates the steps' time only (not evaluation).
    """
    sampler = getattr(run.train_loader, "sampler", None)
    for epoch in range(start_epoch, run.epochs + 1):
        if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new, seeded order per epoch
            sampler.set_epoch(epoch)
        lrs = [g["lr"] for g in run.optimizer.param_groups]
        stats = train_one_epoch(run.net, run.loss_fn, run.train_loader, run.optimizer, run.device, epoch,
                                desc=f"epoch {epoch}/{run.epochs}", options=run.step)
        run.scheduler.step()
        train_seconds += stats.seconds
        terms = " ".join(f"{k} {v:.4f}" for k, v in stats.components.items())
        log.info(f"epoch {epoch}/{run.epochs} loss {stats.loss:.4f} ({terms}) lr {stats.lr:.5g} "
                 f"train {train_seconds:.1f}s")
        evaluation = run.evaluate() if epoch % run.eval_every == 0 or epoch == run.epochs else None
        if run.board is not None:
            run.board.epoch(epoch, stats, lrs, evaluation)
        checkpoints.end_epoch(epoch, train_seconds, stats, evaluation)
    return train_seconds


def rng_state(loader_generator: torch.Generator | None) -> dict:
    """Every random state a resumed run needs to continue exactly (weights_only-loadable)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict, loader_generator: torch.Generator | None) -> None:
    """Restore :func:`rng_state`; ``ValueError`` naming the part that is malformed."""
    try:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        if loader_generator is not None and "loader" in state:
            loader_generator.set_state(state["loader"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise ValueError(f"its random states are malformed ({type(e).__name__}: {e})") from None
