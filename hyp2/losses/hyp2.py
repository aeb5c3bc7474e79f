"""HyP² loss: Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image
Retrieval", ACM MM 2022 (arXiv:2208.06866).

The Hybrid Proxy-Pair loss adds a pair term over irrelevant pairs to a multi-label proxy loss.
With one learnable proxy p_c ∈ R^K per class, hash outputs h_i ∈ R^K, labels y ∈ {0, 1}^{B×C}
and cos(a, b) = a·b / (|a| |b|):

* the **multi-label proxy loss** (the paper's L_proxy) pulls each sample towards the proxy of
  every class it has and pushes it, with a hinge at ζ, away from the proxies of the others::

      L_proxy = mean_{(i,c): y_ic = 1} (1 − cos(h_i, p_c))
              + mean_{(i,c): y_ic = 0} relu(cos(h_i, p_c) − ζ)

* the **irrelevant-pair constraint** (the paper's L_neg_pair) pushes apart samples with no label
  in common. Only samples with more than one label take part, as in the official code (our
  reading of why: a single-label sample is pinned to its proxy by L_proxy, while a multi-label
  one sits between several proxies, where L_proxy alone can leave it near irrelevant data)::

      L_pair = mean_{(i,j) ordered: |y_i| > 1, |y_j| > 1, y_i·y_j = 0} relu(cos(h_i, h_j) − ζ)

and the loss is ``L_proxy + β·L_pair``. ζ = 1 − 2d/K comes from the best known minimum distance d
of a binary linear [K, ⌈log₂ C⌉] code (:mod:`hyp2.codetable`). (Equation numbers of the two
terms are not quoted here: they were not checked against the PDF while writing this module.)

Choices matching the official implementation (github.com/JerryXu0129/HyP2-Loss, ``model.py``):

* each mean is over the *entries* of the batch (positives over all (i, c) with y_ic = 1, not per
  sample first), and the pair mean over all ordered irrelevant pairs (both (i, j) and (j, i));
* the official positive term sums entries where y == 1 but divides by the number of *nonzero*
  entries; the two coincide for 0/1 labels, so labels other than 0/1 are rejected here rather
  than given a meaning the paper never defined;
* proxies start as Kaiming-normal with ``mode="fan_out"`` (std √2/√C for a (C, K) tensor). The
  official code draws them from the global RNG after a throwaway ``randn``; here a private
  ``torch.Generator`` seeded by ``seed`` is used, so the global RNG is untouched (same law,
  not the same numbers).

Deliberate difference: where the official code divides by a count of zero (a batch without any
positive, or without any negative entry) and gets NaN, an empty mean is 0 here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import codetable
from ..validate import is_int, is_real
from .base import HashLoss, register_loss


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (same shape), 0 when the mask is empty (not NaN).

    Done as a masked sum over a clamped count, so no data-dependent indexing and no host sync.
    """
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return total.sum() / mask.sum().clamp(min=1).to(values.dtype)


class HyP2Loss(HashLoss):
    """HyP² loss with learnable class proxies.

    Args:
        num_classes: C, the number of labels (≥ 1).
        num_bits: K, the hash length (≥ 1).
        zeta: ζ ∈ [−1, 1], the hinge on cosines to negative proxies and irrelevant samples;
            usually :func:`hyp2.codetable.zeta` (K, C), which :meth:`build` fills in.
        beta: β ≥ 0, weight of the irrelevant-pair term (the official default 0.5).
        seed: seeds the private generator that initialises the proxies.

    Attributes:
        proxies: ``nn.Parameter`` of shape (C, K).
        components: after each forward, detached scalars ``proxy_pos``, ``proxy_neg`` and
            ``pair`` (the *unweighted* pair mean), so that
            loss = proxy_pos + proxy_neg + beta · pair.
    """

    name = "hyp2"

    def __init__(self, num_classes: int, num_bits: int, zeta: float, beta: float = 0.5,
                 seed: int = 0) -> None:
        super().__init__()
        if not is_int(num_classes) or num_classes < 1:
            raise ValueError(f"HyP2Loss: num_classes must be an integer >= 1, got {num_classes!r}")
        if not is_int(num_bits) or num_bits < 1:
            raise ValueError(f"HyP2Loss: num_bits must be an integer >= 1, got {num_bits!r}")
        if not is_real(zeta) or not math.isfinite(zeta) or not -1.0 <= zeta <= 1.0:
            raise ValueError(f"HyP2Loss: zeta must be a finite number in [-1, 1], got {zeta!r}")
        if not is_real(beta) or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"HyP2Loss: beta must be a finite number >= 0, got {beta!r}")
        if not is_int(seed):
            raise ValueError(f"HyP2Loss: seed must be an integer, got {seed!r}")
        self.num_classes = int(num_classes)
        self.num_bits = int(num_bits)
        self.zeta = float(zeta)
        self.beta = float(beta)
        generator = torch.Generator().manual_seed(int(seed))
        proxies = torch.empty(self.num_classes, self.num_bits)
        # For a (C, K) weight torch's fan_out is C: std = gain / √C with gain √2 (leaky_relu, a=0).
        nn.init.kaiming_normal_(proxies, mode="fan_out", generator=generator)
        self.proxies = nn.Parameter(proxies)

    @classmethod
    def build(cls, num_classes: int, num_bits: int, *, seed: int = 0, beta: float = 0.5,
              zeta: float | None = None, **_ignored) -> "HyP2Loss":
        """Registry builder: ``zeta=None`` takes ζ from the code table for (K, C); options meant
        for other losses are ignored."""
        if zeta is None:
            zeta = codetable.zeta(num_bits, num_classes)
        return cls(num_classes, num_bits, zeta, beta=beta, seed=seed)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_bits={self.num_bits}, "
                f"zeta={self.zeta:.6g}, beta={self.beta:g}")

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            h: (B, K) floating hash outputs (before the sign); the loss is computed in h's dtype.
            y: (B, C) labels with values in {0, 1} (any dtype, bool included).

        Returns:
            A scalar tensor of h's dtype, differentiable w.r.t. h and :attr:`proxies`.
        """
        if not torch.is_tensor(h) or h.dim() != 2 or h.shape[1] != self.num_bits:
            raise ValueError(f"HyP2Loss: h must be a (B, K={self.num_bits}) tensor, "
                             f"got {tuple(h.shape) if torch.is_tensor(h) else type(h).__name__}")
        if not h.is_floating_point():
            raise ValueError(f"HyP2Loss: h must be a floating tensor, got dtype {h.dtype}")
        batch = h.shape[0]
        if batch == 0:
            raise ValueError("HyP2Loss: empty batch (h has 0 rows)")
        if not torch.is_tensor(y) or y.shape != (batch, self.num_classes):
            raise ValueError(f"HyP2Loss: y must be a (B={batch}, C={self.num_classes}) tensor "
                             f"matching h, got "
                             f"{tuple(y.shape) if torch.is_tensor(y) else type(y).__name__}")
        y = y.to(device=h.device)
        positive = y == 1
        negative = y == 0
        if not bool((positive | negative).all()):
            raise ValueError("HyP2Loss: y must hold only 0/1 labels")

        unit_h = F.normalize(h, p=2, dim=1)
        unit_p = F.normalize(self.proxies.to(h.dtype), p=2, dim=1)
        cos = unit_h @ unit_p.T                                     # (B, C)

        proxy_pos = _masked_mean(1.0 - cos, positive)
        proxy_neg = _masked_mean(F.relu(cos - self.zeta), negative)

        labels = positive.to(h.dtype)                               # (B, C) 0/1
        multi = labels.sum(dim=1) > 1                               # (B,) samples with ≥ 2 labels
        # irrelevant ordered pairs among multi-label samples; the diagonal never qualifies,
        # as y_i·y_i = |y_i| ≥ 2 there
        irrelevant = (labels @ labels.T == 0) & multi[:, None] & multi[None, :]   # (B, B)
        sim = unit_h @ unit_h.T                                     # (B, B)
        pair = _masked_mean(F.relu(sim - self.zeta), irrelevant)

        self._log(proxy_pos=proxy_pos, proxy_neg=proxy_neg, pair=pair)
        return proxy_pos + proxy_neg + self.beta * pair


register_loss("hyp2", "HyP² hybrid proxy-pair loss (Xu et al., ACM MM 2022); the default")(
    HyP2Loss.build)
