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

from ._batch import label_cosine, off_diagonal, pair_logistic
from .base import HashLoss
from .options import Option
from .registry import LOSSES


@LOSSES.register("idhn", "IDHN soft pairwise similarity: cross-entropy + MSE + quantization "
                      "(Zhang et al., IEEE TMM 2019)")
class IDHNLoss(HashLoss):
    """IDHN soft-similarity loss: cross-entropy on hard pairs, MSE on soft pairs, quantization.

    Pairs with label cosine s < threshold or s > 1 − threshold are hard, the others soft.

    Attributes:
        components: after each forward, detached ``hard`` (Σ of ℓ over hard pairs),
            ``soft`` (Σ of K((⟨u_i,u_j⟩+K)/2K − s)² over soft pairs, *without* γ), both divided by
            the number of pairs, and ``quant``; loss = hard + soft_weight · soft
            + quant_weight · quant.
    """

    options = (
        Option("scale", 5.0, "β in Θ_ij = β ⟨u_i, u_j⟩ / K", "authors' code (pectinid16/IDHN, belta)",
               low=0.0, open_low=True),
        Option("soft_weight", 0.1, "weight γ of the squared error on soft pairs", "authors' code (gama)",
               low=0.0),
        Option("quant_weight", 0.1, "weight λ of the quantization term", "authors' code (alpha)", low=0.0),
        Option("threshold", 0.01, "pairs with s < t or s > 1 − t are hard", "authors' code (0.01 / 0.99)",
               low=0.0, high=0.5, open_high=True),
    )

    weights = {"hard": 1.0, "soft": "soft_weight", "quant": "quant_weight"}

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, K) outputs h (softsign applied here), (B, C) 0/1 labels -> hard, soft and quant."""
        k = float(self.num_bits)
        u = h / (1.0 + h.abs())                                         # softsign, (B, K)
        s = label_cosine(labels)                                        # (B, B) in [0, 1]
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
        return {"hard": hard_part, "soft": soft_part, "quant": quant}
