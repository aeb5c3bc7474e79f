"""Hashing losses behind one registry (``--loss``). HyP² is the default; the paper's baselines
live one per module beside it. Every module here not starting with ``_`` is imported on first use
of the registry, so a new loss is one new file calling :func:`register_loss`."""
from __future__ import annotations

from .._plugins import import_submodules
from .base import HashLoss, LossSpec, _LOSSES, register_loss
from .hyp2 import HyP2Loss

__all__ = ["HashLoss", "HyP2Loss", "LossSpec", "build_loss", "loss_names", "loss_spec", "register_loss"]


def _load_all() -> None:
    import_submodules(__name__)


def loss_names() -> list[str]:
    _load_all()
    return sorted(_LOSSES)


def loss_spec(name: str) -> LossSpec:
    """The registry entry of ``name``; ``ValueError`` naming the known losses otherwise."""
    _load_all()
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(_LOSSES))}")
    return _LOSSES[name]


def build_loss(name: str, num_classes: int, num_bits: int, **options) -> HashLoss:
    """Build the loss registered as ``name``. ``options`` (seed, beta, zeta, ...) go to its builder,
    which takes what it understands. Unknown names raise ``ValueError`` naming the known ones."""
    _load_all()
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(sorted(_LOSSES))}")
    return _LOSSES[name].build(num_classes, num_bits, **options)
