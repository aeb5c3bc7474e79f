"""DPSH loss: Li, Wang & Kang, "Feature Learning based Deep Supervised Hashing with Pairwise
Labels", IJCAI 2016.

DPSH uses the network output u_i ∈ R^K directly (no squashing) and models a pairwise label
s_ij ∈ {0, 1} with p(s_ij = 1 | u_i, u_j) = σ(Θ_ij), Θ_ij = ½ u_iᵀu_j. Its relaxed objective is
the negative log-likelihood plus η times the squared distance of each output from its binary code
b_i = sign(u_i)::

    J = Σ_{pairs} [ log(1 + e^Θ_ij) − s_ij Θ_ij ] + η Σ_i ‖b_i − u_i‖²

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

from ..metrics import signs
from ._batch import off_diagonal, pair_logistic, shares_label
from .base import HashLoss
from .options import Option
from .registry import LOSSES


@LOSSES.register("dpsh", "DPSH pairwise likelihood + quantization, in-batch pairs (Li et al., IJCAI 2016)")
class DPSHLoss(HashLoss):
    """DPSH pairwise likelihood + η quantization, over in-batch pairs.

    Attributes:
        components: after each forward, detached ``pair`` and ``quant`` (unweighted, both divided
            by the number of ordered pairs), so that loss = pair + eta · quant.
    """

    options = (
        Option("eta", 10.0, "weight η of the quantization term",
               "authors' code (jiangqy/DPSH-pytorch, DPSH_CIFAR_10_demo.py)", low=0.0),
    )

    weights = {"pair": 1.0, "quant": "eta"}

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, K) outputs h (used as they are: DPSH's u), (B, C) 0/1 labels -> pair and quant."""
        batch = h.shape[0]
        count = max(batch * (batch - 1), 1)
        s = shares_label(labels).to(h.dtype)
        theta = 0.5 * (h @ h.T)
        nll = pair_logistic(theta, s)
        pair = torch.where(off_diagonal(batch, h.device), nll, torch.zeros_like(nll)).sum()
        quant = (signs(h.detach(), h.dtype) - h).pow(2).sum()
        return {"pair": pair / count, "quant": quant / count}
