"""DHN loss: Zhu, Long, Wang & Cao, "Deep Hashing Network for Efficient Similarity Retrieval",
AAAI 2016.

DHN squashes the hash layer with tanh, z_i = tanh(h_i) ∈ (−1, 1)^K, and models a pairwise label
s_ij ∈ {0, 1} with the likelihood p(s_ij = 1 | z_i, z_j) = σ(⟨z_i, z_j⟩). Its objective is the
pairwise cross-entropy (the negative log-likelihood) plus a quantization loss: the L1 distance
‖ |z_i| − 1 ‖₁ of each code from the hypercube vertices, made differentiable with the smooth
surrogate |x| ≈ log cosh x::

    L_pair  = mean_{i ≠ j} [ log(1 + exp⟨z_i, z_j⟩) − s_ij ⟨z_i, z_j⟩ ]
    L_quant = mean_i Σ_k log cosh(|z_ik| − 1)
    L       = L_pair + λ · L_quant,      λ = 0.1

Choices, from the authors' Caffe code (github.com/zhuhan1236/dhn-caffe: a ``TanH`` after the hash
layer; ``PairwiseLoss`` with ``q_gamma: 0.1``):

* the inner product is not scaled (unlike DPSH's ½ or HashNet's α);
* the pairwise term is a mean over pairs; the quantization term is summed over the K bits and
  averaged over samples, which is the scaling of the authors' gradient (their reported forward
  value divides by B·K instead, but the gradient is what trains the network);
* λ = 0.1 is the authors' ``q_gamma``.

Project-wide choices (docs/losses.md): s_ij = 1 iff samples i and j share a label (the relevance
of the mAP); pairs are the ordered in-batch pairs i ≠ j (the authors' layer also counts i = j).
"""
from __future__ import annotations

import torch

from ._batch import log_cosh, masked_mean, off_diagonal, pair_logistic, shares_label
from .base import HashLoss
from .options import Option
from .registry import LOSSES


@LOSSES.register("dhn", "DHN pairwise cross-entropy + log-cosh quantization (Zhu et al., AAAI 2016)")
class DHNLoss(HashLoss):
    """DHN pairwise cross-entropy + log-cosh quantization.

    Attributes:
        components: after each forward, detached ``pair`` and ``quant`` (unweighted), so that
            loss = pair + quant_weight · quant.
    """

    options = (
        Option("quant_weight", 0.1, "weight λ of the log-cosh quantization term",
               "authors' Caffe code (zhuhan1236/dhn-caffe, q_gamma: 0.1)", low=0.0),
    )

    weights = {"pair": 1.0, "quant": "quant_weight"}

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, K) outputs h (tanh applied here), (B, C) 0/1 labels -> pair and quant."""
        z = torch.tanh(h)                                               # (B, K)
        s = shares_label(labels).to(h.dtype)                            # (B, B)
        inner = z @ z.T                                                 # (B, B)
        pair = masked_mean(pair_logistic(inner, s), off_diagonal(len(h), h.device))
        quant = log_cosh(z.abs() - 1.0).sum(dim=1).mean()
        return {"pair": pair, "quant": quant}
