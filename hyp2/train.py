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


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive python/numpy seeds from it so
    # anything a transform draws is reproducible too.
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def make_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int, seed: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader; the training one shuffles with a generator seeded by ``seed``."""
    gen = torch.Generator().manual_seed(seed) if train else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=workers,
                      generator=gen, worker_init_fn=_seed_worker if workers else None,
                      pin_memory=pin_memory, drop_last=False, persistent_workers=workers > 0)


def make_optimizer(model: nn.Module, loss: HashLoss, net_lr: float, rate: float) -> torch.optim.SGD:
    """SGD(momentum 0.9, weight decay 5e-4 on every group, as the official code) over the network
    at ``net_lr`` and the loss's own parameter groups (proxies at ``rate`` for HyP²)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": net_lr, "name": "network"}]
    groups += loss.param_groups(rate)
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
                    epoch: int, desc: str = "") -> EpochStats:
    """One pass over ``loader``. Stops with a :class:`UserError` on a non-finite loss, naming the
    epoch and step (the checkpoint on disk is the last good one)."""
    model.train()
    loss_fn.train()
    total, count, parts = 0.0, 0, {}
    seconds = 0.0
    bar = tqdm(loader, desc=desc or f"epoch {epoch}", leave=False, disable=None)
    for step, (images, labels, _) in enumerate(bar, 1):
        start = time.perf_counter()
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        loss = loss_fn(model(images), labels)
        value = loss.item()
        if not math.isfinite(value):
            raise UserError(f"the loss became {value} at epoch {epoch}, step {step}; lower the learning "
                            f"rate (--lr / --rate) or check the data; the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
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
        start_epoch: int = 1, train_seconds: float = 0.0) -> float:
    """Train epochs ``start_epoch..epochs`` (1-based). After every ``eval_every``-th epoch (and the
    last one) call ``evaluate() -> mAP`` then ``on_evaluation(epoch, map, stats, train_seconds)``.
    ``train_seconds`` accumulates the time of training steps only. Returns the total seconds."""
    for epoch in range(start_epoch, epochs + 1):
        stats = train_one_epoch(model, loss_fn, train_loader, optimizer, device, epoch,
                                desc=f"epoch {epoch}/{epochs}")
        scheduler.step()
        train_seconds += stats.seconds
        if on_epoch is not None:
            on_epoch(epoch, stats, train_seconds)
        if epoch % eval_every == 0 or epoch == epochs:
            m = evaluate()
            if on_evaluation is not None:
                on_evaluation(epoch, m, stats, train_seconds)
    return train_seconds
