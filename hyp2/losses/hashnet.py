"""HashNet loss: Cao, Long, Wang & Yu, "HashNet: Deep Learning to Hash by Continuation",
ICCV 2017.

HashNet learns exactly binary codes by *continuation*: the activation of the hash layer is
h = tanh(β z), and β grows during training so that tanh(β z) tends to sign(z). Pairs are fitted
with a weighted maximum likelihood, p(s_ij = 1 | h_i, h_j) = σ(α ⟨h_i, h_j⟩), the weights
balancing the scarce similar pairs against the plentiful dissimilar ones::

    ℓ_ij = log(1 + exp(α ⟨h_i, h_j⟩)) − s_ij α ⟨h_i, h_j⟩
    w_ij = c_ij |S| / |S_1|  if s_ij = 1,      |S| / |S_0|  if s_ij = 0
    L    = Σ_{(i,j) ∈ S} w_ij ℓ_ij / |S|  =  mean_{S_1} c_ij ℓ_ij  +  mean_{S_0} ℓ_ij

with S the pairs, S_1 / S_0 its similar / dissimilar pairs. (Equation numbers are not quoted: they
were not checked against the PDF.) Dividing the paper's sum by |S| makes the loss the sum of two
means, which stays finite when the batch has no similar (or no dissimilar) pair: that mean is 0.
There is no quantization term: continuation makes the codes binary.

Hyper-parameters, from the authors' PyTorch code (github.com/thuml/HashNet, ``pytorch/src``):

* α = 10 / K (``sigmoid_param = 10. / hash_bit``);
* β = β₀ (1 + γ t)^p with β₀ = 1, γ = 0.005, p = 0.5, where t is the training iteration and β is
  refreshed every 200 iterations (``step_size``), i.e. t is rounded down to a multiple of 200.
  The iteration counter is the buffer ``step``: it advances on every forward in training mode
  (not in ``eval()``), and is saved in the state dict, so a resumed run continues the schedule.

The paper writes a continuous similarity c_ij into the weights for multi-label data (the Jaccard
index of the two label sets). Read literally it zeroes the weight of every dissimilar pair, and
the authors' code does not use it; by default c_ij = 1, and ``jaccard=True`` applies the Jaccard
index to similar pairs only.

Project-wide choices (docs/losses.md): s_ij = 1 iff the samples share a label; pairs are the
ordered in-batch pairs i ≠ j (the authors pair two independently drawn half-batches). The
registry's ``beta`` option is HyP²'s pair weight, not HashNet's β, and is ignored here.
"""
from __future__ import annotations

import math

import torch

from ..validate import check_int, check_real
from ._batch import check_batch, masked_mean, off_diagonal, pair_logistic, shares_label
from .base import HashLoss, register_loss


class HashNetLoss(HashLoss):
    """HashNet weighted pairwise cross-entropy with tanh(βz) continuation.

    Args:
        num_classes: C ≥ 1 (checked against the labels of each batch).
        num_bits: K ≥ 1.
        alpha: α > 0, the sigmoid's scale; ``None`` means the authors' 10 / K.
        beta_init: β₀ > 0, β at iteration 0.
        gamma: γ ≥ 0 of the schedule β = β₀ (1 + γ t)^power.
        power: p ≥ 0 of the schedule.
        step_size: β is refreshed every ``step_size`` ≥ 1 training iterations.
        jaccard: weight similar pairs by the Jaccard index of their label sets (see module doc).

    Attributes:
        step: long buffer, the number of training-mode forwards so far.
        components: after each forward, detached ``similar`` (mean of c_ij ℓ_ij over similar
            pairs), ``dissimilar`` (mean of ℓ_ij over dissimilar pairs) and ``beta`` (the β used),
            so that loss = similar + dissimilar.
    """

    name = "hashnet"

    def __init__(self, num_classes: int, num_bits: int, alpha: float | None = None,
                 beta_init: float = 1.0, gamma: float = 0.005, power: float = 0.5,
                 step_size: int = 200, jaccard: bool = False) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_classes = check_int(owner, "num_classes", num_classes, 1)
        self.num_bits = check_int(owner, "num_bits", num_bits, 1)
        if alpha is None:
            alpha = 10.0 / self.num_bits
        self.alpha = check_real(owner, "alpha", alpha, low=0.0, open_low=True)
        self.beta_init = check_real(owner, "beta_init", beta_init, low=0.0, open_low=True)
        self.gamma = check_real(owner, "gamma", gamma, low=0.0)
        self.power = check_real(owner, "power", power, low=0.0)
        self.step_size = check_int(owner, "step_size", step_size, 1)
        if not isinstance(jaccard, bool):
            raise ValueError(f"{owner}: jaccard must be True or False, got {jaccard!r}")
        self.jaccard = jaccard
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @classmethod
    def build(cls, num_classes: int, num_bits: int, **_ignored) -> "HashNetLoss":
        """Registry builder with the authors' defaults; other options (HyP²'s ``beta`` among
        them) are ignored."""
        return cls(num_classes, num_bits)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_bits={self.num_bits}, "
                f"alpha={self.alpha:g}, beta_init={self.beta_init:g}, gamma={self.gamma:g}, "
                f"power={self.power:g}, step_size={self.step_size}, jaccard={self.jaccard}")

    def beta_at(self, step: int) -> float:
        """β after ``step`` training iterations: β₀ (1 + γ t)^p, t = step rounded down to a
        multiple of ``step_size``."""
        t = (int(step) // self.step_size) * self.step_size
        return self.beta_init * math.pow(1.0 + self.gamma * t, self.power)

    @property
    def beta(self) -> float:
        """The β the next evaluation-mode forward uses (the current iteration's)."""
        return self.beta_at(int(self.step))

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of one batch; in training mode, first advances :attr:`step` by one.

        Args:
            h: (B, K) floating pre-activations z (tanh(βz) is applied here).
            y: (B, C) 0/1 labels.

        Returns:
            A scalar of h's dtype, differentiable w.r.t. h.
        """
        labels = check_batch(type(self).__name__, h, y, self.num_bits, self.num_classes)
        if self.training:
            self.step += 1
        beta = self.beta
        code = torch.tanh(beta * h)                                     # (B, K)
        share = shares_label(labels)                                # (B, B) bool
        pairs = off_diagonal(len(h), h.device)
        theta = self.alpha * (code @ code.T)
        nll = pair_logistic(theta, share.to(h.dtype))
        similar_nll = nll
        if self.jaccard:
            inter = labels @ labels.T
            counts = labels.sum(dim=1)
            union = counts[:, None] + counts[None, :] - inter
            similar_nll = nll * (inter / union.clamp(min=1.0))
        similar = masked_mean(similar_nll, share & pairs)
        dissimilar = masked_mean(nll, ~share & pairs)
        self._log(similar=similar, dissimilar=dissimilar, beta=beta)
        return similar + dissimilar


register_loss("hashnet", "HashNet class-balanced pairwise cross-entropy with tanh(βz) "
                         "continuation (Cao et al., ICCV 2017)")(HashNetLoss.build)
