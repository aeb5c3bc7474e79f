"""HashNet loss: Cao, Long, Wang & Yu, "HashNet: Deep Learning to Hash by Continuation",
ICCV 2017.

HashNet learns exactly binary codes by *continuation*: the activation of the hash layer is
h = tanh(β z), and β grows during training so that tanh(β z) tends to sign(z). Pairs are fitted
with a weighted maximum likelihood, p(s_ij = 1 | h_i, h_j) = σ(α ⟨h_i, h_j⟩), the weights
balancing the scarce similar pairs against the plentiful dissimilar ones::

    ℓ_ij = log(1 + exp(α ⟨h_i, h_j⟩)) − s_ij α ⟨h_i, h_j⟩
    w_ij = c_ij |S| / |S_1|  if s_ij = 1,      |S| / |S_0|  if s_ij = 0
    L    = Σ_{(i,j) ∈ S} w_ij ℓ_ij / |S|  =  mean_{S_1} c_ij ℓ_ij  +  mean_{S_0} ℓ_ij

with S the pairs, S_1 / S_0 its similar / dissimilar pairs. Dividing the paper's sum by |S| makes
the loss the sum of two means, which stays finite when the batch has no similar (or no dissimilar)
pair: that mean is 0.
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
ordered in-batch pairs i ≠ j (the authors pair two independently drawn half-batches). HyP²'s
``beta`` (``--beta``) is its pair weight, not HashNet's β: HashNet has no ``beta`` option, its
schedule starts at ``beta_init``.
"""
from __future__ import annotations

import math

import torch

from ._batch import masked_mean, off_diagonal, pair_logistic, shares_label
from .base import HashLoss
from .options import Derived, Option
from .registry import LOSSES


@LOSSES.register("hashnet", "HashNet class-balanced pairwise cross-entropy with tanh(βz) continuation "
                         "(Cao et al., ICCV 2017)")
class HashNetLoss(HashLoss):
    """HashNet weighted pairwise cross-entropy with tanh(βz) continuation.

    β = beta_init (1 + gamma t)^power, t the training iteration rounded down to a multiple of
    ``step_size``; ``jaccard`` weights similar pairs by the Jaccard index of their label sets
    (see the module doc).

    Attributes:
        step: long buffer, the number of training-mode forwards so far.
        components: after each forward, detached ``similar`` (mean of c_ij ℓ_ij over similar
            pairs), ``dissimilar`` (mean of ℓ_ij over dissimilar pairs) and ``beta`` (the β used),
            so that loss = similar + dissimilar.
    """

    options = (
        Option("alpha", Derived("10/K", lambda c, k: 10.0 / k), "scale α of the pairwise sigmoid",
               "authors' code (thuml/HashNet, sigmoid_param = 10. / hash_bit)", low=0.0, open_low=True),
        Option("beta_init", 1.0, "β₀, the tanh(βz) slope at iteration 0", "authors' code",
               low=0.0, open_low=True),
        Option("gamma", 0.005, "γ of the schedule β = β₀ (1 + γ t)^power", "authors' code (gamma)", low=0.0),
        Option("power", 0.5, "exponent of the β schedule", "authors' code (power)", low=0.0),
        Option("step_size", 200, "β is refreshed every step_size training iterations",
               "authors' code (step_size)", low=1),
        Option("jaccard", False, "weight similar pairs by the Jaccard index of their labels",
               "paper's c_ij; off in the authors' code"),
    )

    def __init__(self, num_classes: int, num_bits: int, **options: object) -> None:
        super().__init__(num_classes, num_bits, **options)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def beta_at(self, step: int) -> float:
        """β after ``step`` training iterations: β₀ (1 + γ t)^p, t = step rounded down to a
        multiple of ``step_size``."""
        t = (int(step) // self.step_size) * self.step_size
        return self.beta_init * math.pow(1.0 + self.gamma * t, self.power)

    @property
    def beta(self) -> float:
        """The β the next evaluation-mode forward uses (the current iteration's)."""
        return self.beta_at(int(self.step))

    weights = {"similar": 1.0, "dissimilar": 1.0}

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, K) pre-activations z (tanh(βz) applied here), (B, C) 0/1 labels -> similar and
        dissimilar, and the β used (recorded, not summed). In training mode, first advances
        :attr:`step` by one."""
        if self.training:
            self.step += 1
        # β from the step counter on the device (float64, as beta_at computes it): reading the
        # counter on the host would make every training step wait for the device
        t = torch.div(self.step, self.step_size, rounding_mode="floor") * self.step_size
        beta = self.beta_init * (1.0 + self.gamma * t.double()) ** self.power
        code = torch.tanh(beta.to(h.dtype) * h)                         # (B, K)
        share = shares_label(labels)                                    # (B, B) bool
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
        return {"similar": similar, "dissimilar": dissimilar, "beta": beta}
