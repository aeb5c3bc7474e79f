"""CSQ loss: Yuan, Wang, Zhang, Tay, Jie, Liu & Feng, "Central Similarity Quantization for
Efficient Image and Video Retrieval", CVPR 2020.

CSQ gives every class a fixed *hash centre* c ∈ {−1, 1}^K, the centres far apart in Hamming
space, and pulls each code to the centre of its sample (a pointwise loss, no pairs):

* **centres.** When K is a power of two and C ≤ 2K, the rows of a K×K Hadamard matrix H_K
  (pairwise Hamming distance exactly K/2), followed by the rows of −H_K when C > K. Otherwise each
  centre is drawn bit by bit from Bernoulli(0.5); of 100 seeded draws of all C centres the one
  with the largest minimum pairwise distance is kept (the authors re-sample until the centres
  are far enough apart; a fixed number of draws keeps this deterministic and bounded).
* **multi-label centre.** A sample's centre is the centroid of its labels' centres, binarised
  by sign; a bit where the centroid is exactly 0 is taken from one fixed random ±1 vector
  (``tie_break``), as in the authors' code.
* **loss.** With the code squashed to u = tanh(h) ∈ (−1, 1)^K, the central similarity is the
  binary cross-entropy between the bits mapped to [0, 1], and a quantization term pulls |u| to 1
  with DHN's smooth |·| surrogate log cosh::

      L_C = mean_{i labelled} mean_k BCE((u_ik + 1)/2, (c_ik + 1)/2)
      L_Q = mean_{i,k} log cosh(|u_ik| − 1)
      L   = L_C + λ L_Q,         λ = 10⁻⁴

  Since (tanh(x) + 1)/2 = σ(2x), the cross-entropy is computed from the logits 2h, exactly and
  without log(0).

λ = 10⁻⁴ is the value of DeepHash-pytorch's CSQ (swuxyj/DeepHash-pytorch, ``CSQ.py``). The authors'
code (github.com/yuanli2333/Hadamard-Matrix-for-hashing, ``train.py``) differs from the paper: a
squared quantization (|u| − 1)² with weight 0.05 and an extra HashNet-style pairwise term with
weight 0.2. We follow the paper's loss (central similarity + log-cosh quantization), see
docs/losses.md. Samples without labels have no centre: they take no part in L_C (the authors had
the same exclusion, commented out, "for nus_wide"), but do in L_Q.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._batch import log_cosh, masked_mean
from ._codes import hadamard, is_power_of_two, new_generator, random_signs, spread_random_codes
from .base import HashLoss
from .options import Option
from .registry import LOSSES


def hash_centres(num_classes: int, num_bits: int, seed: int) -> tuple[torch.Tensor, str]:
    """CSQ's class centres: ((C, K) float32 ±1 tensor, ``"hadamard"`` or ``"bernoulli"``).

    Hadamard rows (then their negations) when K is a power of two and C ≤ 2K; otherwise the most
    spread of 100 seeded Bernoulli(0.5) draws (:func:`._codes.spread_random_codes`).
    """
    if is_power_of_two(num_bits) and num_classes <= 2 * num_bits:
        h = hadamard(num_bits)
        return torch.cat([h, -h], dim=0)[:num_classes].clone(), "hadamard"
    generator = new_generator(seed)
    return spread_random_codes(num_classes, num_bits, generator), "bernoulli"


@LOSSES.register("csq", "CSQ central similarity to Hadamard/Bernoulli hash centres (Yuan et al., CVPR 2020)")
class CSQLoss(HashLoss):
    """Central similarity to fixed hash centres + log-cosh quantization.

    ``seed`` seeds the private generator of the Bernoulli centres and of ``tie_break``.

    Attributes:
        centres: (C, K) ±1 buffer, one hash centre per class (saved in the state dict).
        tie_break: (K,) ±1 buffer, the bits of a multi-label centre whose centroid is 0.
        centre_method: ``"hadamard"`` or ``"bernoulli"``.
        components: after each forward, detached ``central`` and ``quant`` (unweighted), so that
            loss = central + quant_weight · quant.
    """

    options = (
        Option("quant_weight", 1e-4, "weight λ of the log-cosh quantization term",
               "DeepHash-pytorch (swuxyj/DeepHash-pytorch, CSQ.py)", low=0.0),
    )
    weights = {"central": 1.0, "quant": "quant_weight"}

    def __init__(self, num_classes: int, num_bits: int, **options: object) -> None:
        super().__init__(num_classes, num_bits, **options)
        centres, self.centre_method = hash_centres(self.num_classes, self.num_bits, self.seed)
        # the tie-break vector has its own stream, so it does not depend on how many draws the
        # centres took
        tie_break = random_signs((self.num_bits,), new_generator(self.seed + 1))
        self.register_buffer("centres", centres)
        self.register_buffer("tie_break", tie_break)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, centres={self.centre_method}"

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, K) ±1 centre of each sample from its (B, C) 0/1 labels.

        Sign of the centroid of the labels' centres; zero bits (ties, and every bit of a sample
        without labels) come from :attr:`tie_break`.
        """
        centres = self.centres.to(labels.dtype)
        centroid = labels @ centres                 # sum, not mean: the sign is the same
        tie = self.tie_break.to(labels.dtype).expand_as(centroid)
        return torch.where(centroid > 0, torch.ones_like(centroid),
                           torch.where(centroid < 0, -torch.ones_like(centroid), tie))

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, K) outputs h (tanh applied here), (B, C) 0/1 labels -> central and quant."""
        target01 = (self.targets(labels) + 1.0) / 2.0                   # (B, K) in {0, 1}
        # BCE((tanh h + 1)/2, t) == BCE-with-logits(2h, t), since (tanh x + 1)/2 = σ(2x)
        bce = F.binary_cross_entropy_with_logits(2.0 * h, target01, reduction="none").mean(dim=1)
        central = masked_mean(bce, labels.sum(dim=1) > 0)
        quant = log_cosh(torch.tanh(h).abs() - 1.0).mean()
        return {"central": central, "quant": quant}
