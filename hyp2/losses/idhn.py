"""IDHN loss: Zhang, Zou, Lin, Chen & Wang, "Improved Deep Hashing with Soft Pairwise Similarity
for Multi-label Image Retrieval", IEEE Transactions on Multimedia, 2019 (arXiv:1803.02987, first
titled "Instance Similarity Deep Hashing for Multi-Label Image Retrieval").

IDHN replaces the hard pairwise label by a *soft* similarity, the cosine of the label vectors,
s_ij = y_i·y_j / (|y_i| |y_j|) ∈ [0, 1], and treats the two kinds of pair differently: pairs whose
similarity is (numerically) 0 or 1 take a cross-entropy, the pairs in between a mean squared error
that asks the codes' normalised inner product — the fraction of agreeing bits for ±1 codes — to
equal s_ij. The codes are the softsign of the network output, u = h / (1 + |h|) ∈ (−1, 1)^K, and
a quantization term pulls |u| to 1::

    Θ_ij   = (β / K) ⟨u_i, u_j⟩
    hard   : s_ij < 0.01 or s_ij > 0.99      ℓ_ij = log(1 + e^Θ_ij) − s_ij Θ_ij
    soft   : otherwise                       ℓ_ij = γ K ((⟨u_i, u_j⟩ + K) / 2K − s_ij)²
    L      = mean_{i ≠ j} ℓ_ij + λ · mean_{i,k} | |u_ik| − 1 |

(Equation numbers are not quoted: they were not checked against the PDF.)

Hyper-parameters and details, from the authors' TensorFlow code (github.com/pectinid16/IDHN,
``train.py``): β = 5 (``belta``), γ = 0.1 (``gama``), λ = 0.1 (``alpha``), the 0.01 / 0.99
thresholds, the softsign output layer, the factor K in front of the squared error, and one mean
over all pairs of the batch for both kinds of pair.

Project-wide choices (docs/losses.md): pairs are the ordered in-batch pairs i ≠ j (the authors'
mean also counts i = j); a pair involving a sample without labels has s_ij = 0 (the cosine is
undefined there: the authors' code divides by zero).
"""
from __future__ import annotations

import torch

from ..validate import check_int, check_real
from ._batch import check_batch, label_cosine, off_diagonal, pair_logistic
from .base import HashLoss, register_loss


class IDHNLoss(HashLoss):
    """IDHN soft-similarity loss: cross-entropy on hard pairs, MSE on soft pairs, quantization.

    Args:
        num_classes: C ≥ 1 (checked against the labels of each batch).
        num_bits: K ≥ 1.
        scale: β > 0, Θ_ij = β ⟨u_i, u_j⟩ / K (authors: 5).
        soft_weight: γ ≥ 0, weight of the squared error on soft pairs (authors: 0.1).
        quant_weight: λ ≥ 0, weight of the quantization term (authors: 0.1).
        threshold: t ∈ [0, 0.5); pairs with s < t or s > 1 − t are hard (authors: 0.01).

    Attributes:
        components: after each forward, detached ``hard`` (Σ of ℓ over hard pairs),
            ``soft`` (Σ of K((⟨u_i,u_j⟩+K)/2K − s)² over soft pairs, *without* γ), both divided by
            the number of pairs, and ``quant``; loss = hard + soft_weight · soft
            + quant_weight · quant.
    """

    name = "idhn"

    def __init__(self, num_classes: int, num_bits: int, scale: float = 5.0,
                 soft_weight: float = 0.1, quant_weight: float = 0.1,
                 threshold: float = 0.01) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_classes = check_int(owner, "num_classes", num_classes, 1)
        self.num_bits = check_int(owner, "num_bits", num_bits, 1)
        self.scale = check_real(owner, "scale", scale, low=0.0, open_low=True)
        self.soft_weight = check_real(owner, "soft_weight", soft_weight, low=0.0)
        self.quant_weight = check_real(owner, "quant_weight", quant_weight, low=0.0)
        self.threshold = check_real(owner, "threshold", threshold, low=0.0)
        if self.threshold >= 0.5:
            raise ValueError(f"{owner}: threshold must be < 0.5 (hard pairs are s < t or "
                             f"s > 1 - t), got {threshold!r}")

    @classmethod
    def build(cls, num_classes: int, num_bits: int, **_ignored) -> "IDHNLoss":
        """Registry builder with the authors' defaults; options of other losses are ignored."""
        return cls(num_classes, num_bits)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_bits={self.num_bits}, scale={self.scale:g}, "
                f"soft_weight={self.soft_weight:g}, quant_weight={self.quant_weight:g}, "
                f"threshold={self.threshold:g}")

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            h: (B, K) floating hash outputs (softsign is applied here).
            y: (B, C) 0/1 labels.

        Returns:
            A scalar of h's dtype, differentiable w.r.t. h.
        """
        labels = check_batch(type(self).__name__, h, y, self.num_bits, self.num_classes)
        k = float(self.num_bits)
        u = h / (1.0 + h.abs())                                         # softsign, (B, K)
        s = label_cosine(labels)                                    # (B, B) in [0, 1]
        inner = u @ u.T
        hard = (s < self.threshold) | (s > 1.0 - self.threshold)
        pairs = off_diagonal(len(h), h.device)
        count = pairs.sum().clamp(min=1).to(h.dtype)
        zero = torch.zeros((), dtype=h.dtype, device=h.device)
        cross_entropy = pair_logistic(self.scale * inner / k, s)
        squared = k * ((inner + k) / (2.0 * k) - s).pow(2)
        hard_part = torch.where(hard & pairs, cross_entropy, zero).sum() / count
        soft_part = torch.where(~hard & pairs, squared, zero).sum() / count
        quant = (u.abs() - 1.0).abs().mean()
        self._log(hard=hard_part, soft=soft_part, quant=quant)
        return hard_part + self.soft_weight * soft_part + self.quant_weight * quant


register_loss("idhn", "IDHN soft pairwise similarity: cross-entropy + MSE + quantization "
                      "(Zhang et al., IEEE TMM 2019)")(IDHNLoss.build)
