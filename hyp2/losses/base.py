"""Common interface of the hashing losses.

A loss is an ``nn.Module`` whose ``forward(h, y)`` takes the network's hash outputs ``h`` (B, K)
and 0/1 labels ``y`` (B, C) and returns a scalar. After each forward, ``components`` holds the
loss's named parts, detached, for logging. Learnable parts (proxies, centres, codebooks) live
in the loss and are saved with the checkpoint; :meth:`HashLoss.param_groups` declares how the
optimiser should treat them, so the training loop never special-cases a loss.

Hyper-parameters are declared, not hand-checked: a subclass lists them as ``options``
(:class:`~hyp2.losses.options.Option`), and :class:`HashLoss` validates them, sets them as
attributes, reports them as :attr:`HashLoss.hparams` and prints them in ``repr``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..validate import check_int
from ._batch import check_batch as _check_batch
from .options import Option, resolve_options, show


class HashLoss(nn.Module):
    """Base class. Subclasses declare ``options``, implement ``forward(h, y) -> scalar`` and fill
    ``self.components`` (through :meth:`_log`).

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

    #: registry name, set by :func:`~hyp2.losses.registry.register_loss`
    name: str = ""
    #: the declared hyper-parameters (name, default, meaning, source)
    options: tuple[Option, ...] = ()

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

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of one batch.

        Args:
            h: (B, K) floating network outputs, raw: each loss applies its own squashing.
            y: (B, C) labels holding only 0/1 (any dtype, bool included).

        Returns:
            A scalar of h's dtype, differentiable w.r.t. h and the loss's own parameters; the
            loss's parts are left, detached, in :attr:`components`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement forward(h, y)")

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

    def _log(self, **parts: torch.Tensor | float) -> None:
        self.components = {k: (v.detach() if torch.is_tensor(v) else torch.tensor(float(v)))
                           for k, v in parts.items()}
