"""Common interface of the hashing losses.

A loss is an ``nn.Module`` called as ``loss(h, y)`` with the network's hash outputs ``h`` (B, K)
and 0/1 labels ``y`` (B, C); it returns a scalar. The base class owns that call: it validates the
batch, asks the subclass for its named terms (:meth:`HashLoss.terms`), records them, detached, in
``components`` for the log, and returns their weighted sum (:attr:`HashLoss.weights`). A subclass
only computes its terms.

Learnable parts (proxies, centres, codebooks) live in the loss and are saved with the checkpoint;
:meth:`HashLoss.param_groups` declares how the optimiser should treat them, so the training loop
never special-cases a loss. Hyper-parameters are declared, not hand-checked: a subclass lists them
as ``options`` (:class:`~hyp2.losses.options.Option`), and the base class validates them, sets
them as attributes, reports them as :attr:`HashLoss.hparams` and prints them in ``repr``.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..validate import check_int
from ._batch import check_batch as _check_batch
from .options import Option, resolve_options, show


class HashLoss(nn.Module):
    """Base class. Subclasses declare ``options`` and ``weights`` and implement :meth:`terms`.

    Args:
        num_classes: C ≥ 1, the number of labels.
        num_bits: K ≥ 1, the hash length.
        seed: integer seeding whatever the loss draws at construction (proxies, codes) from a
            private generator; a loss that draws nothing ignores it.
        **options: values of the declared ``options``; the others take their defaults.

    Raises:
        ValueError: one line, on a bad C, K or seed, an unknown option or a bad value (then the
            line ends with the valid options and their defaults).
    """

    #: registry name, set when the class is registered (:data:`hyp2.losses.LOSSES`)
    name: str = ""
    #: the declared hyper-parameters (name, default, meaning, source)
    options: tuple[Option, ...] = ()
    #: term name -> its weight in the loss: a number, or the name of an option holding it. The sum
    #: runs in this order. A term :meth:`terms` returns without a weight here is recorded in
    #: ``components`` but not summed (a diagnostic, such as HashNet's current β).
    weights: Mapping[str, float | str] = {}

    def __init__(self, num_classes: int, num_bits: int, *, seed: int = 0, **options: object) -> None:
        super().__init__()
        owner = self._owner()
        self.num_classes = check_int(owner, "num_classes", num_classes, 1)
        self.num_bits = check_int(owner, "num_bits", num_bits, 1)
        self.seed = check_int(owner, "seed", seed)
        values = resolve_options(owner, self.options, options, self.num_classes, self.num_bits)
        for option in self.options:
            setattr(self, option.attr or option.name, values[option.name])
        self.components: dict[str, torch.Tensor] = {}

    @classmethod
    def _owner(cls) -> str:
        """How errors name this loss: its registry name, else its class name."""
        return cls.name or cls.__name__

    @property
    def hparams(self) -> dict[str, object]:
        """The value of every declared option (derived defaults resolved), JSON-able.

        ``build_loss(name, C, K, seed=seed, options=loss.hparams)`` rebuilds this loss.
        """
        return {o.name: getattr(self, o.attr or o.name) for o in self.options}

    def extra_repr(self) -> str:
        values = {"num_classes": self.num_classes, "num_bits": self.num_bits, **self.hparams}
        return ", ".join(f"{k}={show(v)}" for k, v in values.items())

    def terms(self, h: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss's named terms for one checked batch.

        Args:
            h: (B, K) floating network outputs, raw: each loss applies its own squashing.
            labels: (B, C) 0/1 labels in h's dtype, on h's device.

        Returns:
            ``{name: scalar}``, one entry per key of :attr:`weights` (each a 0-d tensor of h's
            dtype, differentiable w.r.t. h and the loss's parameters), plus any diagnostic values.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement terms(h, labels)")

    def term_weights(self) -> dict[str, float]:
        """The weight of each summed term, options resolved to their values."""
        return {k: float(getattr(self, w)) if isinstance(w, str) else float(w) for k, w in self.weights.items()}

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of one batch: the weighted sum of :meth:`terms`.

        Args:
            h: (B, K) floating network outputs.
            y: (B, C) labels holding only 0/1 (any dtype, bool included).

        Returns:
            A scalar of h's dtype, differentiable w.r.t. h and the loss's own parameters; every
            term is left, detached, in :attr:`components`.

        Raises:
            ValueError: a malformed batch, or terms that break the contract (one line naming the
                loss).
        """
        terms = self.terms(h, self.check_batch(h, y))
        owner, weights = self._owner(), self.term_weights()
        if not isinstance(terms, Mapping) or not set(weights) <= set(terms):
            got = sorted(terms) if isinstance(terms, Mapping) else type(terms).__name__
            raise ValueError(f"{owner}: terms() must return a dict with the terms {sorted(weights)}, got {got}")
        self.components = {k: _recorded(owner, k, v, h) for k, v in terms.items()}
        total = None
        for key, weight in weights.items():
            part = terms[key] if weight == 1.0 else weight * terms[key]
            total = part if total is None else total + part
        if total is None:
            raise ValueError(f"{owner}: declares no weighted term; set its class attribute weights")
        return total

    def check_batch(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Validate a batch: ``h`` (B ≥ 1, K) floating, ``y`` (B, C) holding only 0/1 (any dtype).

        Returns:
            The labels as a (B, C) 0/1 tensor of h's dtype on h's device.

        Raises:
            ValueError: one line naming the loss, on a wrong type, shape, dtype or label value.
        """
        return _check_batch(self._owner(), h, y, self.num_bits, self.num_classes)

    def param_groups(self, rate: float, net_lr: float | None = None) -> list[dict]:
        """Optimiser parameter groups for the loss's own parameters.

        ``rate`` is ``--rate`` (the official proxies' learning rate), ``net_lr`` the network's.
        The default puts every parameter of the loss in one group at ``rate``; a loss with other
        needs overrides this. Returns ``[]`` when the loss has no parameters.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": rate, "name": f"{self.name or 'loss'}"}] if params else []


def _recorded(owner: str, key: str, value: object, h: torch.Tensor) -> torch.Tensor:
    """A term as ``components`` keeps it: a detached 0-d tensor on h's device (no host sync)."""
    if torch.is_tensor(value):
        if value.dim() != 0 or not value.is_floating_point():
            raise ValueError(f"{owner}: term {key!r} must be a scalar floating tensor, got "
                             f"{value.dtype} of shape {tuple(value.shape)}")
        return value.detach()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=h.dtype, device=h.device)
    raise ValueError(f"{owner}: term {key!r} must be a scalar tensor or a number, got {type(value).__name__}")
