"""The official HyP² training recipe (Xu et al., ACM MM 2022, Sec. 4.1, and the authors' code):
SGD with momentum 0.9 and weight decay 5e-4 over two parameter groups (the network at its
backbone's lr, the loss's proxies at ``--rate``), StepLR(step 10, γ 0.5) stepped per epoch,
evaluation every ``eval_every`` epochs, best checkpoint kept."""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .errors import UserError
from .losses import HashLoss

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
STEP_SIZE, GAMMA = 10, 0.5


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    """Mean loss and components over an epoch's steps, and the seconds its steps took."""

    loss: float
    components: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def train_one_epoch(model: nn.Module, loss_fn: HashLoss, loader: DataLoader,
                    optimizer: torch.optim.Optimizer, device: torch.device | str,
                    epoch: int, desc: str = "", amp: bool = False, channels_last: bool = False,
                    after_backward: Callable[[], None] | None = None,
                    gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> EpochStats:
    """One pass over ``loader``.

    ``amp`` runs the network under bf16 autocast on CUDA (the loss stays float32);
    ``channels_last`` feeds NHWC images; ``after_backward`` runs between backward and the
    optimiser step (multi-process training averages the loss's gradients there); ``gather``
    maps the local outputs and labels to the global batch's before the loss (multi-process). Stops with a
    :class:`UserError` on a non-finite loss, naming the epoch and step (the checkpoints on disk
    are the last good ones).
    """
    model.train()
    loss_fn.train()
    device = torch.device(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")
    total, count, parts = 0.0, 0, {}
    seconds = 0.0
    bar = tqdm(loader, desc=desc or f"epoch {epoch}", leave=False, disable=None)
    for step, (images, labels, _) in enumerate(bar, 1):
        start = time.perf_counter()
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast:
            h = model(images).float()
        if gather is not None:
            h, labels = gather(h), gather(labels)
        loss = loss_fn(h, labels)
        value = loss.item()
        if not math.isfinite(value):
            raise UserError(f"the loss became {value} at epoch {epoch}, step {step}; lower the learning "
                            f"rate (--lr / --rate) or check the data; the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        seconds += time.perf_counter() - start
        total += value * len(labels)
        count += len(labels)
        for k, v in loss_fn.components.items():
            parts[k] = parts.get(k, 0.0) + float(v) * len(labels)
        bar.set_postfix(loss=f"{value:.4f}")
    if count == 0:
        raise UserError("the training split is empty; check the dataset's lists")
    return EpochStats(total / count, {k: v / count for k, v in parts.items()}, seconds)


def fit(model: nn.Module, loss_fn: HashLoss, train_loader: DataLoader, *,
        optimizer: torch.optim.Optimizer, scheduler, device: torch.device | str, epochs: int,
        eval_every: int, evaluate: Callable[[], float],
        on_epoch: Callable[[int, EpochStats, float], None] | None = None,
        on_evaluation: Callable[[int, float, EpochStats, float], None] | None = None,
        on_epoch_end: Callable[[int, float], None] | None = None,
        start_epoch: int = 1, train_seconds: float = 0.0, **step_options) -> float:
    """Train epochs ``start_epoch..epochs`` (1-based).

    Per epoch: train, step the scheduler, ``on_epoch(epoch, stats, train_seconds)``; after every
    ``eval_every``-th epoch and the last one, ``evaluate() -> mAP`` then
    ``on_evaluation(epoch, map, stats, train_seconds)``; finally ``on_epoch_end(epoch,
    train_seconds)`` (where resumable state is saved). ``train_seconds`` accumulates the time of
    training steps only. ``step_options`` go to :func:`train_one_epoch`. Returns the total seconds.
    """
    sampler = getattr(train_loader, "sampler", None)
    for epoch in range(start_epoch, epochs + 1):
        if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new, seeded order per epoch
            sampler.set_epoch(epoch)
        stats = train_one_epoch(model, loss_fn, train_loader, optimizer, device, epoch,
                                desc=f"epoch {epoch}/{epochs}", **step_options)
        scheduler.step()
        train_seconds += stats.seconds
        if on_epoch is not None:
            on_epoch(epoch, stats, train_seconds)
        if epoch % eval_every == 0 or epoch == epochs:
            m = evaluate()
            if on_evaluation is not None:
                on_evaluation(epoch, m, stats, train_seconds)
        if on_epoch_end is not None:
            on_epoch_end(epoch, train_seconds)
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
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])
