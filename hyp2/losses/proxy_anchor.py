"""Proxy Anchor loss: Kim, Kim, Cho & Kwak, "Proxy Anchor Loss for Deep Metric Learning",
CVPR 2020.

One learnable proxy p ∈ R^K per class. Each proxy is an *anchor*: it is pulled towards the batch
samples of its class (its positives X⁺_p) and pushed from the others (X⁻_p), all samples weighted
softly through a log-sum-exp. With s(x, p) the cosine similarity, scale α and margin δ::

    L = 1/|P⁺| Σ_{p ∈ P⁺} log(1 + Σ_{x ∈ X⁺_p} exp(−α (s(x, p) − δ)))
      + 1/|P|  Σ_{p ∈ P}  log(1 + Σ_{x ∈ X⁻_p} exp( α (s(x, p) + δ)))

where P is the set of all C proxies and P⁺ those with at least one positive in the batch.
(Equation numbers are not quoted: they were not checked against the PDF.) Defaults α = 32,
δ = 0.1, as in the paper and the authors' code (github.com/tjddus9597/Proxy-Anchor-CVPR2020,
``code/losses.py``). The loss works on the real-valued outputs, as a metric-learning loss (no
squashing, no quantization): hashing takes their signs afterwards.

Multi-label: X⁺_p holds the samples having label p, X⁻_p those without it, so a sample is a
positive of every one of its labels' proxies; a sample without labels is a negative of all.
log(1 + Σ exp(·)) is computed as a log-sum-exp with an extra 0 term, exact and overflow-free.

Proxies start as in the authors' code: Kaiming normal with ``mode="fan_out"`` (std √(2/C) for a
(C, K) tensor), drawn from a private generator seeded by ``seed``. The paper trains them with a
learning rate 100× the network's (with AdamW): :meth:`ProxyAnchorLoss.param_groups` applies that
rule when it is given the network's learning rate (``net_lr``), and otherwise uses the shared
proxies' rate ``--rate``, as HyP²'s proxies do.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..validate import check_int, check_real, is_int
from ._batch import check_batch, masked_mean
from ._codes import new_generator
from .base import HashLoss, register_loss


def _log1p_sum_exp(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per column c: log(1 + Σ_{rows r with mask[r, c]} exp(logits[r, c])), shape (C,).

    ``logits`` and ``mask`` are (B, C). A log-sum-exp over the masked rows plus one 0 logit.
    """
    neg_inf = torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device)
    masked = torch.where(mask, logits, neg_inf)
    zeros = torch.zeros(1, logits.shape[1], dtype=logits.dtype, device=logits.device)
    return torch.logsumexp(torch.cat([zeros, masked], dim=0), dim=0)


class ProxyAnchorLoss(HashLoss):
    """Proxy Anchor loss with one learnable proxy per class.

    Args:
        num_classes: C ≥ 1.
        num_bits: K ≥ 1.
        alpha: α > 0, the scale (paper: 32).
        delta: δ ≥ 0, the margin (paper: 0.1).
        seed: seeds the private generator that initialises the proxies.
        proxy_lr_multiplier: m > 0; with the network's learning rate known, the proxies train at
            m × that rate (paper: 100).

    Attributes:
        proxies: ``nn.Parameter`` of shape (C, K).
        components: after each forward, detached ``pos`` and ``neg`` (the two terms), so that
            loss = pos + neg.
    """

    name = "proxy_anchor"

    def __init__(self, num_classes: int, num_bits: int, alpha: float = 32.0, delta: float = 0.1,
                 seed: int = 0, proxy_lr_multiplier: float = 100.0) -> None:
        super().__init__()
        owner = type(self).__name__
        self.num_classes = check_int(owner, "num_classes", num_classes, 1)
        self.num_bits = check_int(owner, "num_bits", num_bits, 1)
        self.alpha = check_real(owner, "alpha", alpha, low=0.0, open_low=True)
        self.delta = check_real(owner, "delta", delta, low=0.0)
        self.proxy_lr_multiplier = check_real(owner, "proxy_lr_multiplier",
                                                  proxy_lr_multiplier, low=0.0, open_low=True)
        if not is_int(seed):
            raise ValueError(f"{owner}: seed must be an integer, got {seed!r}")
        proxies = torch.empty(self.num_classes, self.num_bits)
        # for a (C, K) tensor torch's fan_out is C: std = √2 / √C (gain of relu / leaky_relu a=0)
        nn.init.kaiming_normal_(proxies, mode="fan_out", generator=new_generator(int(seed)))
        self.proxies = nn.Parameter(proxies)

    @classmethod
    def build(cls, num_classes: int, num_bits: int, *, seed: int = 0,
              **_ignored) -> "ProxyAnchorLoss":
        """Registry builder with the paper's α, δ; options of other losses are ignored."""
        return cls(num_classes, num_bits, seed=seed)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, num_bits={self.num_bits}, "
                f"alpha={self.alpha:g}, delta={self.delta:g}, "
                f"proxy_lr_multiplier={self.proxy_lr_multiplier:g}")

    def param_groups(self, rate: float, net_lr: float | None = None) -> list[dict]:
        """Optimiser group of the proxies.

        Args:
            rate: ``--rate``, the shared learning rate of loss proxies.
            net_lr: the network's learning rate, if the caller knows it.

        Returns:
            One group ``{"params": [proxies], "lr": ..., "name": "proxy_anchor"}`` at
            ``proxy_lr_multiplier × net_lr`` (the paper's rule) when ``net_lr`` is given, else at
            ``rate``; ``[]`` when the proxies are frozen.
        """
        if not self.proxies.requires_grad:
            return []
        lr = rate if net_lr is None else self.proxy_lr_multiplier * net_lr
        return [{"params": [self.proxies], "lr": lr, "name": self.name}]

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            h: (B, K) floating embeddings (used as they are; only their direction matters).
            y: (B, C) 0/1 labels.

        Returns:
            A scalar of h's dtype, differentiable w.r.t. h and :attr:`proxies`.
        """
        labels = check_batch(type(self).__name__, h, y, self.num_bits, self.num_classes)
        cos = F.normalize(h, dim=1) @ F.normalize(self.proxies.to(h.dtype), dim=1).T   # (B, C)
        positive = labels > 0
        pos_per_proxy = _log1p_sum_exp(-self.alpha * (cos - self.delta), positive)    # (C,)
        neg_per_proxy = _log1p_sum_exp(self.alpha * (cos + self.delta), ~positive)    # (C,)
        with_positive = positive.any(dim=0)                                            # P⁺
        pos = masked_mean(pos_per_proxy, with_positive)
        neg = neg_per_proxy.mean()
        self._log(pos=pos, neg=neg)
        return pos + neg


register_loss("proxy_anchor", "Proxy Anchor loss on cosine similarities, α=32, δ=0.1 "
                              "(Kim et al., CVPR 2020)")(ProxyAnchorLoss.build)
