"""Hashing losses behind one registry (``--loss``), :data:`LOSSES`. HyP² is the default; the paper's
baselines live one per module beside it. Every module here not starting with ``_`` is imported on
first use of the registry, so a new loss is one new file: a :class:`HashLoss` subclass declaring its
``options`` and ``weights``, computing its ``terms``, decorated with ``@LOSSES.register``.

Building, configuring and rebuilding a loss::

    options = LOSSES.get("dpsh").parse(["eta=5"])              # --loss_opt eta=5 -> {"eta": 5.0}
    loss = build_loss("dpsh", num_classes, num_bits, seed=0, options=options)
    record = loss.hparams                                      # every option, resolved, JSON-able
    same = build_loss("dpsh", num_classes, num_bits, seed=0, options=record)
"""
from __future__ import annotations

from .base import HashLoss
from .hyp2 import HyP2Loss
from .options import Derived, Option
from .registry import LOSSES, LossSpec, build_loss

__all__ = ["LOSSES", "Derived", "HashLoss", "HyP2Loss", "LossSpec", "Option", "build_loss"]
