"""Building blocks of the losses' forward passes, one batch at a time. Nothing here is a loss.

Every loss takes hash outputs ``h`` (B, K) and 0/1 labels ``y`` (B, C); they share

* the check of a batch (:func:`check_batch`),
* the multi-label similarities: *relevance* (two samples share at least one label, the criterion
  of the mAP used throughout this project) and IDHN's *soft* similarity (cosine of label vectors),
* in-batch pair masks and an empty-safe masked mean (HyP² and every baseline),
* the pairwise logistic likelihood of DHN, HashNet, IDHN and DPSH, the smooth |x| surrogate
  log cosh of DHN and CSQ, and detached ±1 codes of a batch.

The ±1 code books built once per loss (Hadamard rows, seeded Bernoulli codes) are in
:mod:`._codes`.
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator

import torch

# Set while the training loop calls a loss with labels it has checked already (hyp2.train):
# checking their values again would make the host wait for the device at every step.
_CHECKED = threading.local()


@contextlib.contextmanager
def labels_checked() -> Iterator[None]:
    """Within the block, :func:`check_batch` checks shapes and types only, not that every label is
    0/1: the caller has checked the values where reading them is free (on the host)."""
    previous = getattr(_CHECKED, "on", False)
    _CHECKED.on = True
    try:
        yield
    finally:
        _CHECKED.on = previous


# ---------------------------------------------------------------- the batch


def check_batch(owner: str, h: torch.Tensor, y: torch.Tensor, num_bits: int,
                num_classes: int) -> torch.Tensor:
    """Validate one batch and return its labels as a 0/1 tensor of h's dtype on h's device.

    Args:
        h: (B, K) floating hash outputs, B ≥ 1, K = ``num_bits``.
        y: (B, C) labels holding only 0 and 1 (any dtype, bool included), C = ``num_classes``.

    Returns:
        (B, C) tensor of h's dtype and device.

    Raises:
        ValueError: on a wrong type, shape or dtype, an empty batch, or labels other than 0/1.
    """
    if not torch.is_tensor(h) or h.dim() != 2 or h.shape[1] != num_bits:
        got = tuple(h.shape) if torch.is_tensor(h) else type(h).__name__
        raise ValueError(f"{owner}: h must be a (B, K={num_bits}) tensor, got {got}")
    if not h.is_floating_point():
        raise ValueError(f"{owner}: h must be a floating tensor, got dtype {h.dtype}")
    batch = h.shape[0]
    if batch == 0:
        raise ValueError(f"{owner}: empty batch (h has 0 rows)")
    if not torch.is_tensor(y) or tuple(y.shape) != (batch, num_classes):
        got = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"{owner}: y must be a (B={batch}, C={num_classes}) tensor matching h, "
                         f"got {got}")
    y = y.to(device=h.device)
    if not getattr(_CHECKED, "on", False) and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"{owner}: y must hold only 0/1 labels")
    return y.to(h.dtype)


# ---------------------------------------------------------------- label similarities, pairs


def shares_label(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) bool: samples i and j share at least one label (y_i·y_j > 0).

    ``labels`` is (B, C) 0/1. A sample without labels shares nothing, not even with itself.
    """
    return (labels @ labels.T) > 0


def label_cosine(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) cosine of label vectors, y_i·y_j / (|y_i| |y_j|), in labels' dtype.

    IDHN's soft similarity. A pair involving a sample without labels has similarity 0 (the cosine
    is undefined there; 0 = "shares nothing" is the only reading consistent with relevance).
    """
    norms = labels.norm(dim=1)
    denom = norms[:, None] * norms[None, :]
    dots = labels @ labels.T
    return torch.where(denom > 0, dots / denom.clamp(min=torch.finfo(labels.dtype).tiny),
                       torch.zeros((), dtype=labels.dtype, device=labels.device))


def off_diagonal(batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(B, B) bool mask of the ordered pairs (i, j) with i ≠ j.

    The baselines' pairwise terms run over these in-batch pairs only: a self-pair says nothing
    about how two images relate.
    """
    return ~torch.eye(batch, dtype=torch.bool, device=device)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (broadcastable to values), 0 when the mask is empty.

    A masked sum over a clamped count: no data-dependent indexing, so no NaN and no host sync.
    """
    mask = mask.expand_as(values)
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return total.sum() / mask.sum().clamp(min=1).to(values.dtype)


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    """log cosh(x), elementwise, without overflow: |x| + log1p(exp(−2|x|)) − log 2."""
    a = x.abs()
    return a + torch.log1p(torch.exp(-2.0 * a)) - math.log(2.0)


def pair_logistic(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of pairwise labels s under p(s=1) = σ(θ): log(1 + e^θ) − s·θ.

    Elementwise and overflow-free (log(1 + e^θ) as logaddexp(0, θ), exact for every θ); the common
    term of DHN, HashNet, IDHN and DPSH.
    """
    return torch.logaddexp(torch.zeros_like(theta), theta) - s * theta
