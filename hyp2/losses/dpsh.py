"""DPSH loss: Li, Wang & Kang, "Feature Learning based Deep Supervised Hashing with Pairwise
Labels", IJCAI 2016.

DPSH uses the network output u_i ∈ R^K directly (no squashing) and models a pairwise label
s_ij ∈ {0, 1} with p(s_ij = 1 | u_i, u_j) = σ(Θ_ij), Θ_ij = ½ u_iᵀu_j. Its relaxed objective is
the negative log-likelihood plus η times the squared distance of each output from its binary code
b_i = sign(u_i)::

    J = Σ_{pairs} [ log(1 + e^Θ_ij) − s_ij Θ_ij ] + η Σ_i ‖b_i − u_i‖²

(Equation numbers are not quoted: they were not checked against the PDF.)

Here the pairs are the ordered in-batch pairs i ≠ j, and J is divided by their number B(B − 1)
(by 1 for a batch of one, which has no pair), i.e. the authors' per-batch normalisation (they
divide by the number of (batch, training-set) pairs) with the training set replaced by the batch::

    L_pair  = Σ_{i ≠ j} [ log(1 + e^Θ_ij) − s_ij Θ_ij ] / B(B − 1)
    L_quant = Σ_i ‖b_i − u_i‖² / B(B − 1)
    L       = L_pair + η · L_quant,      η = 10

η = 10 is the value of the authors' CIFAR-10 demo (github.com/jiangqy/DPSH-pytorch,
``DPSH_CIFAR_10_demo.py``). b_i is a constant (the sign has no gradient); sign(0) is taken as +1
so that every bit of b is ±1.

Project-wide choices (docs/losses.md): s_ij = 1 iff the samples share a label; only in-batch pairs
(the authors also pair the batch with a memory of the whole training set's outputs). With B
instead of the training-set size in the denominator, the quantization term weighs relatively
more than in the authors' runs; η is kept at the published value rather than re-tuned.
"""
from __future__ import annotations

import torch

from ..validate import check_int, check_real
from ._batch import binarize, check_batch, off_diagonal, pair_logistic, shares_label
from .base import HashLoss, register_loss


class DPSHLoss(HashLoss):
    """DPSH pairwise likelihood + η quantization, over in-batch pairs.

    Args:
        num_classes: C ≥ 1 (checked against the labels of each batch).
        num_bits: K ≥ 1.
        eta: η ≥ 0, weight of the quantization term (authors' code: 10).

    Attributes:
        components: after each forward, detached ``pair`` and ``quant`` (unweighted, both divided
            by the number of ordered pairs), so that loss = pair + eta · quant.
    """

    name = "dpsh"

    def __init__(self, num_classes: int, num_bits: int, eta: float = 10.0) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_classes = check_int(owner, "num_classes", num_classes, 1)
        self.num_bits = check_int(owner, "num_bits", num_bits, 1)
        self.eta = check_real(owner, "eta", eta, low=0.0)

    @classmethod
    def build(cls, num_classes: int, num_bits: int, **_ignored) -> "DPSHLoss":
        """Registry builder with the published defaults; options of other losses are ignored."""
        return cls(num_classes, num_bits)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_bits={self.num_bits}, eta={self.eta:g}"

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            h: (B, K) floating outputs u, used as they are.
            y: (B, C) 0/1 labels.

        Returns:
            A scalar of h's dtype, differentiable w.r.t. h.
        """
        labels = check_batch(type(self).__name__, h, y, self.num_bits, self.num_classes)
        batch = h.shape[0]
        count = max(batch * (batch - 1), 1)
        s = shares_label(labels).to(h.dtype)
        theta = 0.5 * (h @ h.T)
        nll = pair_logistic(theta, s)
        pair = torch.where(off_diagonal(batch, h.device), nll, torch.zeros_like(nll)).sum()
        quant = (binarize(h) - h).pow(2).sum()
        pair, quant = pair / count, quant / count
        self._log(pair=pair, quant=quant)
        return pair + self.eta * quant


register_loss("dpsh", "DPSH pairwise likelihood + quantization, in-batch pairs "
                      "(Li et al., IJCAI 2016)")(DPSHLoss.build)
