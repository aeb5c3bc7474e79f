"""OrthoHash loss: Hoe, Ng, Zhang, Chan, Song & Xiang, "One Loss for All: Deep Hashing with a
Single Cosine Similarity based Learning Objective", NeurIPS 2021.

OrthoHash assigns each class a fixed binary codeword b_c ∈ {−1, 1}^K, the codewords (nearly)
orthogonal, and trains a classifier whose logits are the cosine similarities between the
continuous code and the codewords, with a scale s and an additive cosine margin m on the true
class (as in CosFace). Maximising the cosine to one's own codeword both separates the classes and
shrinks the quantization error, so the paper needs a single objective; for multi-label data it
uses label smoothing — the softmax cross-entropy with the target spread evenly over a sample's
labels::

    logit_ic = s (cos(h_i, b_c) − m y_ic)
    L_CE     = mean_{i labelled} − Σ_c (y_ic / Σ_c' y_ic') log softmax_c(logit_i)
    L_quan   = mean_i (1 − cos(h_i, sign(h_i)))          (sign as a constant)
    L        = L_CE + λ L_quan,          s = 8, m = 0.2, λ = 0
For a single-label
sample the target is one-hot and L_CE is the usual cross-entropy.

Defaults, from the authors' code (github.com/kamwoh/orthohash: ``main.py``,
``functions/loss/orthohash.py``): s = 8 (``--scale``), m = 0.2 (``--margin``), the multi-label
loss ``label_smoothing`` (the default of ``--multiclass-loss``; ``bce`` is an option there),
a Bernoulli(0.5) codebook (``--codebook-method B``) and the optional cosine quantization term at
weight 0 (``--quan 0``) — the one-loss setting of the paper's title. ``codebook="hadamard"``
takes the first C rows of a Sylvester–Hadamard matrix instead: exactly orthogonal codewords,
possible when K is a power of two and C ≤ K.

Samples without labels have no target: they take no part in L_CE (the authors' normalisation
y / Σy divides by zero there), but do in L_quan. The codebook is a buffer, saved in the state
dict. The authors' network ends with a BatchNorm on the code layer; that belongs to the network
and is not part of this loss (every loss here shares one network).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..metrics import signs
from ._batch import masked_mean
from ._codes import hadamard, is_power_of_two, new_generator, random_signs
from .base import HashLoss
from .options import Option
from .registry import LOSSES

_CODEBOOKS = ("bernoulli", "hadamard")


def make_codebook(num_classes: int, num_bits: int, method: str, seed: int) -> torch.Tensor:
    """(C, K) float32 ±1 codewords.

    ``"bernoulli"``: i.i.d. Bernoulli(0.5) bits from a private generator seeded by ``seed``
    (the authors' ``B``). ``"hadamard"``: rows 0..C−1 of the K×K Sylvester–Hadamard matrix
    (seed unused); ``ValueError`` unless K is a power of two and C ≤ K.
    """
    if method == "bernoulli":
        return random_signs((num_classes, num_bits), new_generator(seed))
    if method == "hadamard":
        if not is_power_of_two(num_bits) or num_classes > num_bits:
            raise ValueError(f"OrthoHashLoss: a Hadamard codebook needs K a power of two and "
                             f"C <= K, got K={num_bits}, C={num_classes}; use "
                             f"codebook='bernoulli'")
        return hadamard(num_bits)[:num_classes].clone()
    raise ValueError(f"OrthoHashLoss: codebook must be one of {', '.join(_CODEBOOKS)}, "
                     f"got {method!r}")


@LOSSES.register("orthohash", "OrthoHash cosine-margin cross-entropy to a ±1 codebook, label smoothing "
                           "for multi-label (Hoe et al., NeurIPS 2021)")
class OrthoHashLoss(HashLoss):
    """Cosine-margin cross-entropy against a fixed ±1 codebook, label smoothing for multi-label.

    ``seed`` seeds the private generator of a Bernoulli codebook.

    Attributes:
        codebook: (C, K) ±1 buffer.
        codebook_method: the ``codebook`` option, ``"bernoulli"`` or ``"hadamard"``.
        components: after each forward, detached ``ce`` and ``quant`` (unweighted), so that
            loss = ce + quant_weight · quant.
    """

    options = (
        Option("scale", 8.0, "scale s of the cosine logits", "authors' code (kamwoh/orthohash, --scale)",
               low=0.0, open_low=True),
        Option("margin", 0.2, "cosine margin m on the true classes", "authors' code (--margin)", low=0.0),
        Option("quant_weight", 0.0, "weight λ of the cosine quantization term", "authors' code (--quan 0)",
               low=0.0),
        Option("codebook", "bernoulli", "codewords: Bernoulli(0.5) bits, or Hadamard rows (K = 2^n, C ≤ K)",
               "authors' code (--codebook-method B)", choices=_CODEBOOKS, attr="codebook_method"),
    )
    weights = {"ce": 1.0, "quant": "quant_weight"}

    def __init__(self, num_classes: int, num_bits: int, **options: object) -> None:
        super().__init__(num_classes, num_bits, **options)
        self.register_buffer("codebook", make_codebook(self.num_classes, self.num_bits,
                                                       self.codebook_method, self.seed))

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, K) continuous codes h (used as they are), (B, C) 0/1 labels -> ce and quant."""
        cos = F.normalize(h, dim=1) @ F.normalize(self.codebook.to(h.dtype), dim=1).T  # (B, C)
        logits = self.scale * (cos - self.margin * labels)
        counts = labels.sum(dim=1, keepdim=True)
        target = labels / counts.clamp(min=1.0)                  # label smoothing; 0 if no label
        per_sample = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
        ce = masked_mean(per_sample, counts.squeeze(1) > 0)
        quant = (1.0 - F.cosine_similarity(h, signs(h.detach(), h.dtype), dim=1)).mean()
        return {"ce": ce, "quant": quant}
