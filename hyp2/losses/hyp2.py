"""HyP² loss (Xu et al., ACM MM 2022, arXiv:2208.06866).

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
of a binary linear [K, ⌈log₂ C⌉] code (:mod:`hyp2.codetable`).

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

import torch
import torch.nn.functional as F
from torch import nn

from .. import codetable
from ._batch import masked_mean
from ._codes import new_generator
from .base import HashLoss
from .options import Derived, Option
from .registry import LOSSES


@LOSSES.register("hyp2", "HyP² hybrid proxy-pair loss (Xu et al., ACM MM 2022); the default")
class HyP2Loss(HashLoss):
    """HyP² loss with learnable class proxies.

    Args:
        num_classes: C, the number of labels (≥ 1).
        num_bits: K, the hash length (≥ 1).
        zeta: ζ ∈ [−1, 1], the hinge on cosines to negative proxies and irrelevant samples;
            usually :func:`hyp2.codetable.zeta` (K, C), which ``build_loss`` fills in.
        beta: β ≥ 0, weight of the irrelevant-pair term (the official default 0.5).
        seed: seeds the private generator that initialises the proxies.

    Attributes:
        proxies: ``nn.Parameter`` of shape (C, K).
        components: after each call, detached scalars ``proxy_pos``, ``proxy_neg`` and ``pair``
            (the *unweighted* pair mean): loss = proxy_pos + proxy_neg + beta · pair.
    """

    options = (
        Option("zeta", Derived("from the code table", lambda c, k: codetable.zeta(k, c)),
               "hinge ζ on cosines to negative proxies and irrelevant samples",
               "paper: 1 − 2d/K, d of the best known binary linear [K, ⌈log₂ C⌉] code (the official "
               "code reads codetable.xlsx)", low=-1.0, high=1.0),
        Option("beta", 0.5, "weight β of the irrelevant-pair term",
               "official code (--beta, default 0.5)", low=0.0),
    )
    weights = {"proxy_pos": 1.0, "proxy_neg": 1.0, "pair": "beta"}

    def __init__(self, num_classes: int, num_bits: int, zeta: float, beta: float = 0.5,
                 seed: int = 0) -> None:
        super().__init__(num_classes, num_bits, seed=seed, zeta=zeta, beta=beta)
        proxies = torch.empty(self.num_classes, self.num_bits)
        # For a (C, K) weight torch's fan_out is C: std = gain / √C with gain √2 (leaky_relu, a=0).
        nn.init.kaiming_normal_(proxies, mode="fan_out", generator=new_generator(self.seed))
        self.proxies = nn.Parameter(proxies)

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, K) outputs h (before the sign), (B, C) 0/1 labels -> the three terms."""
        positive = labels > 0
        unit_h = F.normalize(h, p=2, dim=1)
        cos = unit_h @ F.normalize(self.proxies.to(h.dtype), p=2, dim=1).T       # (B, C)
        multi = labels.sum(dim=1) > 1                                           # (B,) ≥ 2 labels
        # irrelevant ordered pairs among multi-label samples; the diagonal never qualifies,
        # as y_i·y_i = |y_i| ≥ 2 there
        irrelevant = (labels @ labels.T == 0) & multi[:, None] & multi[None, :]   # (B, B)
        return {"proxy_pos": masked_mean(1.0 - cos, positive),
                "proxy_neg": masked_mean(F.relu(cos - self.zeta), ~positive),
                "pair": masked_mean(F.relu(unit_h @ unit_h.T - self.zeta), irrelevant)}
