"""DCILH loss: Shen, Dong, Zheng, Lan, Tsang & Sun, "Deep Co-Image-Label Hashing for Multi-Label
Image Retrieval", IEEE Transactions on Multimedia, 2021 (doi 10.1109/TMM.2021.3119868).

What the paper's abstract states, and what this module builds from each statement:

* *image and label are two views mapped into one common Hamming space*: the network's image
  codes u_i = tanh(h_i) ∈ (−1, 1)^K, and a label network, one linear layer and tanh, mapping a
  sample's label vector to a code of the same space, v_i = tanh(y_i E + e) ∈ (−1, 1)^K;
* *a learnable prototype for each label*: p_c ∈ R^K, with code z_c = tanh(p_c);
* *similarity preserved among images, labels and prototypes*: the pairwise likelihood
  p(s = 1) = σ(Θ), Θ = a·⟨x, x'⟩ (a = ½ as in DPSH and DCMH), on every kind of pair: image–image
  and label–label (ordered pairs i ≠ j), image–label (all (i, j), its own labels included), with
  s_ij = 1 iff samples i and j share a label; image–prototype and label–prototype, with
  s_ic = y_ic;
* *a label-correlation aware loss on the predicted labels, pushing a positive label's output
  above a negative one's*: a linear prediction head on the image code, ŷ_i = u_i Wᵀ + w, under
  the pairwise exponential ranking error of BP-MLL (Zhang & Zhou, IEEE TKDE 2006)::

      rank_i = 1/(|Y_i| |Ȳ_i|) Σ_{p ∈ Y_i, q ∈ Ȳ_i} exp(ŷ_iq − ŷ_ip)

  averaged over the samples having a positive and a negative label.

The loss is ``image_image + image_label + label_label + proto_weight · (image_proto +
label_proto) + rank_weight · rank``, every term a mean (over its pairs, its (sample, label)
entries, its samples); an empty mean is 0.

Only the abstract could be read, and no code of the authors could be found: the forms above
(tanh codes, a one-layer label network, the likelihood and its ½, the BP-MLL form, the linear
head, equal weights) are our reading of it, written from those standard components; none of them
is checked against the paper's equations. docs/losses.md lists the choices.

The label network (E, e), the prototypes and the head (W, w) are parameters of the loss, drawn
from a private generator seeded by ``seed`` (never the global RNG): E, e, W and w as torch's
``nn.Linear`` default (uniform in ±1/√fan_in), prototypes Kaiming normal (``fan_out``: std √(2/C))
as HyP²'s proxies. They are saved with the checkpoint and train at ``--rate``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._batch import masked_mean, off_diagonal, pair_logistic, shares_label
from ._codes import new_generator
from .base import HashLoss
from .options import Option
from .registry import LOSSES


def label_ranking(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BP-MLL's ranking error of predicted label scores, as a mean over samples.

    Args:
        scores: (B, C) predicted label outputs ŷ.
        labels: (B, C) 0/1 labels.

    Returns:
        mean over the samples i with a positive and a negative label of
        mean_{p ∈ Y_i, q ∉ Y_i} exp(ŷ_iq − ŷ_ip); 0 when no sample has both.
    """
    positive = labels > 0
    # order[i, p, q] = ŷ_iq − ŷ_ip over (positive p, negative q); other entries masked to 0
    # before exp, so that nothing off the mask can overflow
    pairs = positive[:, :, None] & ~positive[:, None, :]                       # (B, C, C)
    diff = scores[:, None, :] - scores[:, :, None]
    zero = torch.zeros((), dtype=scores.dtype, device=scores.device)
    per_entry = torch.where(pairs, torch.exp(torch.where(pairs, diff, zero)), zero)
    counts = pairs.sum(dim=(1, 2))                                             # |Y_i| |Ȳ_i|
    per_sample = per_entry.sum(dim=(1, 2)) / counts.clamp(min=1).to(scores.dtype)
    return masked_mean(per_sample, counts > 0)


def _uniform(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """torch's ``nn.Linear`` default: uniform in ±1/√fan_in."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(torch.empty(shape), -bound, bound, generator=generator)


@LOSSES.register("dcilh", "DCILH image/label codes, label prototypes, BP-MLL ranking head (Shen et al., IEEE TMM 2021)")
class DCILHLoss(HashLoss):
    """DCILH loss with its label network, label prototypes and prediction head.

    ``seed`` seeds the private generator that initialises them.

    Attributes:
        prototypes: ``nn.Parameter`` (C, K), one per label (codes tanh(p_c)).
        label_weight, label_bias: ``nn.Parameter`` (C, K) and (K,), the label network
            y ↦ tanh(y E + e).
        head_weight, head_bias: ``nn.Parameter`` (C, K) and (C,), the prediction head
            u ↦ u Wᵀ + w.
        components: after each forward, detached ``image_image``, ``image_label``,
            ``label_label``, ``image_proto``, ``label_proto`` and ``rank`` (unweighted).
    """

    options = (
        Option("scale", 0.5, "a in Θ = a·⟨x, x'⟩ of the pairwise likelihood",
               "our choice (paper not available): DPSH's and DCMH's ½", low=0.0, open_low=True),
        Option("proto_weight", 1.0, "weight of the image–prototype and label–prototype terms",
               "our choice (paper not available): an unweighted sum", low=0.0),
        Option("rank_weight", 1.0, "weight of the label-correlation aware ranking term",
               "our choice (paper not available): an unweighted sum", low=0.0),
    )
    weights = {"image_image": 1.0, "image_label": 1.0, "label_label": 1.0,
               "image_proto": "proto_weight", "label_proto": "proto_weight", "rank": "rank_weight"}

    def __init__(self, num_classes: int, num_bits: int, **options: object) -> None:
        super().__init__(num_classes, num_bits, **options)
        c, k = self.num_classes, self.num_bits
        g = new_generator(self.seed)
        prototypes = torch.empty(c, k)
        # for a (C, K) tensor torch's fan_out is C: std = √2 / √C, as HyP²'s proxies
        nn.init.kaiming_normal_(prototypes, mode="fan_out", generator=g)
        self.prototypes = nn.Parameter(prototypes)
        self.label_weight = nn.Parameter(_uniform((c, k), c, g))
        self.label_bias = nn.Parameter(_uniform((k,), c, g))
        self.head_weight = nn.Parameter(_uniform((c, k), k, g))
        self.head_bias = nn.Parameter(_uniform((c,), k, g))

    def label_codes(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, C) 0/1 labels -> (B, K) label-view codes tanh(y E + e), in labels' dtype."""
        dtype = labels.dtype
        return torch.tanh(labels @ self.label_weight.to(dtype) + self.label_bias.to(dtype))

    def predict(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, K) image codes u -> (B, C) predicted label outputs u Wᵀ + w."""
        dtype = codes.dtype
        return codes @ self.head_weight.to(dtype).T + self.head_bias.to(dtype)

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, K) outputs h (squashed by tanh), (B, C) 0/1 labels -> the six terms."""
        a = self.scale
        u = torch.tanh(h)                                       # image codes (B, K)
        v = self.label_codes(labels)                            # label codes (B, K)
        z = torch.tanh(self.prototypes.to(h.dtype))             # prototype codes (C, K)
        s = shares_label(labels).to(h.dtype)                    # (B, B)
        distinct = off_diagonal(h.shape[0], h.device)
        return {"image_image": masked_mean(pair_logistic(a * (u @ u.T), s), distinct),
                "image_label": pair_logistic(a * (u @ v.T), s).mean(),
                "label_label": masked_mean(pair_logistic(a * (v @ v.T), s), distinct),
                "image_proto": pair_logistic(a * (u @ z.T), labels).mean(),
                "label_proto": pair_logistic(a * (v @ z.T), labels).mean(),
                "rank": label_ranking(self.predict(u), labels)}
