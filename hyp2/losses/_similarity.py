"""Shared helpers of the baseline losses: argument checks, label similarities, ±1 codes.

Nothing here is a loss. The baselines (DHN, HashNet, CSQ, IDHN, DPSH, Proxy Anchor, OrthoHash)
all take hash outputs ``h`` (B, K) and 0/1 labels ``y`` (B, C); they share

* the checks of their constructor arguments and of a batch (:func:`check_batch`),
* the multi-label similarities: *relevance* (two samples share at least one label, the criterion
  of the mAP used throughout this project) and IDHN's *soft* similarity (cosine of label vectors),
* in-batch pair masks and an empty-safe masked mean,
* the smooth |x| surrogate log cosh of DHN and CSQ,
* ±1 code construction: Sylvester–Hadamard matrices (CSQ's centres, OrthoHash's orthogonal
  codebook) and seeded Bernoulli codes drawn from a private ``torch.Generator`` (never the global
  RNG), so fixed parts of a loss are reproducible from its seed alone.
"""
from __future__ import annotations

import math

import torch

from ..validate import check_int, check_real, is_int  # noqa: F401 - re-exported to the losses


# ---------------------------------------------------------------- argument checks


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
    if not bool(((y == 0) | (y == 1)).all()):
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


def binarize(x: torch.Tensor) -> torch.Tensor:
    """±1 codes of ``x`` (0 maps to +1, so every bit is a valid code bit), detached."""
    x = x.detach()
    return torch.where(x >= 0, torch.ones((), dtype=x.dtype, device=x.device),
                       -torch.ones((), dtype=x.dtype, device=x.device))


# ---------------------------------------------------------------- ±1 codes


def is_power_of_two(n: int) -> bool:
    return is_int(n) and n >= 1 and (n & (n - 1)) == 0


def hadamard(n: int) -> torch.Tensor:
    """(n, n) Sylvester–Hadamard matrix of ±1 (float32); n must be a power of two.

    H_1 = [1], H_2m = [[H_m, H_m], [H_m, −H_m]]: rows are pairwise orthogonal, so any two rows
    differ in exactly n/2 positions (n ≥ 2).
    """
    if not is_power_of_two(n):
        raise ValueError(f"hadamard: n must be a power of two, got {n!r}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)], dim=0)
    return h


def random_signs(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """i.i.d. Bernoulli(0.5) ±1 entries (float32) drawn from ``generator``."""
    return torch.randint(0, 2, shape, generator=generator).float() * 2.0 - 1.0


def hamming_distances(codes: torch.Tensor) -> torch.Tensor:
    """(N, N) Hamming distances between the ±1 rows of ``codes`` (N, K): (K − c_i·c_j) / 2."""
    k = codes.shape[1]
    return (k - codes @ codes.T) / 2.0


def spread_random_codes(num_codes: int, num_bits: int, generator: torch.Generator,
                        draws: int = 100) -> torch.Tensor:
    """(N, K) Bernoulli(0.5) ±1 codes, the best spread of ``draws`` independent draws.

    Each draw is N i.i.d. Bernoulli rows; the kept draw maximises the minimum pairwise Hamming
    distance (ties: the larger mean distance, then the earlier draw). Retrying draws follows the
    CSQ authors' centre generation, which re-samples until the centres are far enough apart; a
    fixed number of draws keeps it deterministic and bounded where no draw can reach a target
    (e.g. 80 classes at 12 bits). With one code there is nothing to spread: the first draw.
    """
    best, best_key = None, None
    off = off_diagonal(num_codes)
    for _ in range(draws):
        codes = random_signs((num_codes, num_bits), generator)
        if num_codes < 2:
            return codes
        dist = hamming_distances(codes)[off]
        key = (float(dist.min()), float(dist.mean()))
        if best_key is None or key > best_key:
            best, best_key = codes, key
    return best


def new_generator(seed: int) -> torch.Generator:
    """A private CPU generator seeded with ``seed`` (the global RNG is never touched)."""
    return torch.Generator().manual_seed(int(seed))


def pair_logistic(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of pairwise labels s under p(s=1) = σ(θ): log(1 + e^θ) − s·θ.

    Elementwise and overflow-free (log(1 + e^θ) as logaddexp(0, θ), exact for every θ); the common
    term of DHN, HashNet, IDHN and DPSH.
    """
    return torch.logaddexp(torch.zeros_like(theta), theta) - s * theta
