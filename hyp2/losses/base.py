"""Common interface of the hashing losses, and the loss registry.

A loss is an ``nn.Module`` whose ``forward(h, y)`` takes the network's hash outputs ``h`` (B, K)
and 0/1 labels ``y`` (B, C) and returns a scalar. After each forward, ``components`` holds the
loss's named parts, detached, for logging. Learnable parts (proxies, centres, codebooks) live
in the loss and are saved with the checkpoint; :meth:`HashLoss.param_groups` declares how the
optimiser should treat them, so the training loop never special-cases a loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class HashLoss(nn.Module):
    """Base class. Subclasses implement ``forward(h, y) -> scalar`` and fill ``self.components``."""

    #: registry name, set by :func:`register_loss`
    name: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.components: dict[str, torch.Tensor] = {}

    def param_groups(self, rate: float) -> list[dict]:
        """Optimiser parameter groups for the loss's own parameters.

        ``rate`` is ``--rate`` (the official proxies' learning rate). The default puts every
        parameter of the loss in one group at ``rate``; a loss with other needs overrides this.
        Returns ``[]`` when the loss has no parameters.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": rate, "name": f"{self.name or 'loss'}"}] if params else []

    def _log(self, **parts: torch.Tensor | float) -> None:
        self.components = {k: (v.detach() if torch.is_tensor(v) else torch.tensor(float(v)))
                           for k, v in parts.items()}


@dataclass(frozen=True)
class LossSpec:
    """Registry entry. ``build(num_classes, num_bits, seed=..., beta=..., zeta=...)`` makes the loss;
    builders take the keyword arguments they understand and ignore the others."""

    name: str
    build: Callable[..., HashLoss]
    description: str


_LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, description: str):
    """Class or function decorator registering a loss builder under ``name``."""

    def deco(builder):
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        _LOSSES[name] = LossSpec(name, builder, description)
        if isinstance(builder, type):
            builder.name = name
        return builder

    return deco
