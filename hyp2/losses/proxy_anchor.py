"""Proxy Anchor loss: Kim, Kim, Cho & Kwak, "Proxy Anchor Loss for Deep Metric Learning",
CVPR 2020.

One learnable proxy p ∈ R^K per class. Each proxy is an *anchor*: it is pulled towards the batch
samples of its class (its positives X⁺_p) and pushed from the others (X⁻_p), all samples weighted
softly through a log-sum-exp. With s(x, p) the cosine similarity, scale α and margin δ::

    L = 1/|P⁺| Σ_{p ∈ P⁺} log(1 + Σ_{x ∈ X⁺_p} exp(−α (s(x, p) − δ)))
      + 1/|P|  Σ_{p ∈ P}  log(1 + Σ_{x ∈ X⁻_p} exp( α (s(x, p) + δ)))

where P is the set of all C proxies and P⁺ those with at least one positive in the batch. Defaults α = 32,
δ = 0.1, as in the paper and the authors' code (github.com/tjddus9597/Proxy-Anchor-CVPR2020,
``code/losses.py``). The loss works on the real-valued outputs, as a metric-learning loss (no
squashing, no quantization): hashing takes their signs afterwards.

Multi-label: X⁺_p holds the samples having label p, X⁻_p those without it, so a sample is a
positive of every one of its labels' proxies; a sample without labels is a negative of all.
log(1 + Σ exp(·)) is computed as a log-sum-exp with an extra 0 term, exact and overflow-free.

Proxies start as in the authors' code: Kaiming normal with ``mode="fan_out"`` (std √(2/C) for a
(C, K) tensor), drawn from a private generator seeded by ``seed``. The paper trains them with a
learning rate 100× the network's (with AdamW); with SGD at the official 0.02 that would be 2.0,
so by default the proxies train at the shared proxies' rate ``--rate``, as HyP²'s do, and the
option ``proxy_lr_multiplier`` (``--loss_opt proxy_lr_multiplier=100``) applies the paper's rule.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._batch import masked_mean
from ._codes import new_generator
from .base import HashLoss
from .options import Option
from .registry import LOSSES


def _log1p_sum_exp(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per column c: log(1 + Σ_{rows r with mask[r, c]} exp(logits[r, c])), shape (C,).

    ``logits`` and ``mask`` are (B, C). A log-sum-exp over the masked rows plus one 0 logit.
    """
    neg_inf = torch.full((), float("-inf"), dtype=logits.dtype, device=logits.device)
    masked = torch.where(mask, logits, neg_inf)
    zeros = torch.zeros(1, logits.shape[1], dtype=logits.dtype, device=logits.device)
    return torch.logsumexp(torch.cat([zeros, masked], dim=0), dim=0)


@LOSSES.register("proxy_anchor", "Proxy Anchor loss on cosine similarities, α=32, δ=0.1 (Kim et al., CVPR 2020)")
class ProxyAnchorLoss(HashLoss):
    """Proxy Anchor loss with one learnable proxy per class.

    ``seed`` seeds the private generator that initialises the proxies.

    Attributes:
        proxies: ``nn.Parameter`` of shape (C, K).
        components: after each forward, detached ``pos`` and ``neg`` (the two terms), so that
            loss = pos + neg.
    """

    options = (
        Option("alpha", 32.0, "scale α", "paper and authors' code (tjddus9597/Proxy-Anchor-CVPR2020)",
               low=0.0, open_low=True),
        Option("delta", 0.1, "margin δ", "paper and authors' code", low=0.0),
        Option("proxy_lr_multiplier", 0.0, "if > 0, proxies' lr = this × the network's (paper: 100); 0: --rate",
               "paper (proxies at 100× the network's learning rate, with AdamW)", low=0.0),
    )

    def __init__(self, num_classes: int, num_bits: int, **options: object) -> None:
        super().__init__(num_classes, num_bits, **options)
        proxies = torch.empty(self.num_classes, self.num_bits)
        # for a (C, K) tensor torch's fan_out is C: std = √2 / √C (gain of relu / leaky_relu a=0)
        nn.init.kaiming_normal_(proxies, mode="fan_out", generator=new_generator(self.seed))
        self.proxies = nn.Parameter(proxies)

    def param_groups(self, rate: float, net_lr: float | None = None) -> list[dict]:
        """Optimiser group of the proxies.

        Args:
            rate: ``--rate``, the shared learning rate of loss proxies.
            net_lr: the network's learning rate, if the caller knows it.

        Returns:
            One group ``{"params": [proxies], "lr": ..., "name": "proxy_anchor"}`` at
            ``proxy_lr_multiplier × net_lr`` (the paper's rule) when the multiplier is positive and
            ``net_lr`` given, else at ``rate``; ``[]`` when the proxies are frozen.
        """
        if not self.proxies.requires_grad:
            return []
        use_rule = self.proxy_lr_multiplier > 0 and net_lr is not None
        lr = self.proxy_lr_multiplier * net_lr if use_rule else rate
        return [{"params": [self.proxies], "lr": lr, "name": self.name}]

    weights = {"pos": 1.0, "neg": 1.0}

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, K) embeddings h (only their direction matters), (B, C) 0/1 labels -> pos and neg,
        differentiable w.r.t. h and :attr:`proxies`."""
        cos = F.normalize(h, dim=1) @ F.normalize(self.proxies.to(h.dtype), dim=1).T   # (B, C)
        positive = labels > 0
        pos_per_proxy = _log1p_sum_exp(-self.alpha * (cos - self.delta), positive)    # (C,)
        neg_per_proxy = _log1p_sum_exp(self.alpha * (cos + self.delta), ~positive)    # (C,)
        with_positive = positive.any(dim=0)                                            # P⁺
        pos = masked_mean(pos_per_proxy, with_positive)
        neg = neg_per_proxy.mean()
        return {"pos": pos, "neg": neg}
