"""±1 code books of the losses built from (C, K, seed): CSQ's hash centres, OrthoHash's codebook.

Sylvester–Hadamard matrices (exactly orthogonal rows) and Bernoulli(0.5) codes drawn from a
private ``torch.Generator`` — never the global RNG — so a loss's fixed parts are reproducible from
its seed alone.
"""
from __future__ import annotations

import torch

from ..validate import is_int
from ._batch import off_diagonal


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
