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

(Equation numbers are not quoted: they were not checked against the PDF.)

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

from ..validate import check_int, check_real
from ._batch import check_batch, log_cosh, masked_mean, off_diagonal, pair_logistic, shares_label
from .base import HashLoss, register_loss


class DHNLoss(HashLoss):
    """DHN pairwise cross-entropy + log-cosh quantization.

    Args:
        num_classes: C ≥ 1 (checked against the labels of each batch).
        num_bits: K ≥ 1.
        quant_weight: λ ≥ 0, weight of the quantization term (paper's authors: 0.1).

    Attributes:
        components: after each forward, detached ``pair`` and ``quant`` (unweighted), so that
            loss = pair + quant_weight · quant.
    """

    name = "dhn"

    def __init__(self, num_classes: int, num_bits: int, quant_weight: float = 0.1) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_classes = check_int(owner, "num_classes", num_classes, 1)
        self.num_bits = check_int(owner, "num_bits", num_bits, 1)
        self.quant_weight = check_real(owner, "quant_weight", quant_weight, low=0.0)

    @classmethod
    def build(cls, num_classes: int, num_bits: int, **_ignored) -> "DHNLoss":
        """Registry builder with the paper's defaults; options of other losses are ignored."""
        return cls(num_classes, num_bits)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_bits={self.num_bits}, "
                f"quant_weight={self.quant_weight:g}")

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            h: (B, K) floating hash outputs (before any squashing; tanh is applied here).
            y: (B, C) 0/1 labels.

        Returns:
            A scalar of h's dtype, differentiable w.r.t. h.
        """
        labels = check_batch(type(self).__name__, h, y, self.num_bits, self.num_classes)
        z = torch.tanh(h)                                               # (B, K)
        s = shares_label(labels).to(h.dtype)                        # (B, B)
        inner = z @ z.T                                                 # (B, B)
        pair = masked_mean(pair_logistic(inner, s), off_diagonal(len(h), h.device))
        quant = log_cosh(z.abs() - 1.0).sum(dim=1).mean()
        self._log(pair=pair, quant=quant)
        return pair + self.quant_weight * quant


register_loss("dhn", "DHN pairwise cross-entropy + log-cosh quantization "
                     "(Zhu et al., AAAI 2016)")(DHNLoss.build)
