"""Shared pieces of the loss tests: label patterns, the float64/float32 tolerance rounds, and the
checks every loss's test file repeats (gradcheck, degenerate batches, registry, state dict, errors).

The naive reference implementations stay in each test file: they are each loss's specification,
written from its paper. Test modules import these helpers with ``from .conftest import ...``, as
tests/data does; being a conftest, this module's asserts get pytest's assertion rewriting, so a
failing check inside a helper still reports both sides.
"""
from __future__ import annotations

import pytest
import torch

from hyp2.losses import LOSSES, build_loss

# ---------------------------------------------------------------- random cases

PATTERNS = ["sparse", "dense", "single", "zero_rows", "all_zero", "all_one"]


def pattern_labels(pattern: str, batch: int, classes: int, g: torch.Generator,
           sparse: float = 0.2) -> torch.Tensor:
    """(B, C) int64 0/1 labels following one named pattern, drawn from ``g``.

    ``sparse`` is the label density of the "sparse" pattern (each loss picks one that mixes
    similar and dissimilar pairs for its batch sizes). Patterns:
      sparse, dense      independent labels, density ``sparse`` or 0.6
      single             exactly one label each: only same-class pairs are similar
      empty_class        class 0 has no positive in the batch
      zero_rows          every third sample has no label
      ones_rows          every third sample has every label
      all_zero, all_one  no similar (no positive) / no dissimilar (no negative) entry at all
    """
    def rand(density):
        return (torch.rand(batch, classes, generator=g) < density).long()
    if pattern == "sparse":
        return rand(sparse)
    if pattern == "dense":
        return rand(0.6)
    if pattern == "single":
        y = torch.zeros(batch, classes, dtype=torch.long)
        y[torch.arange(batch), torch.randint(classes, (batch,), generator=g)] = 1
        return y
    if pattern == "empty_class":
        y = rand(0.4)
        y[:, 0] = 0
        return y
    if pattern == "zero_rows":
        y = rand(0.4)
        y[::3] = 0
        return y
    if pattern == "ones_rows":
        y = rand(0.2)
        y[::3] = 1
        return y
    if pattern == "all_zero":
        return torch.zeros(batch, classes, dtype=torch.long)
    if pattern == "all_one":
        return torch.ones(batch, classes, dtype=torch.long)
    raise AssertionError(pattern)


def dense_batch(batch: int, bits: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded float32 (B, K) output batch and its (B, C) "dense" labels."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, bits, generator=g), pattern_labels("dense", batch, classes, g)


def dtype_rounds(f32_abs: float = 1e-6):
    """The (dtype, pytest.approx tolerance) rounds of a reference test: float64, then float32."""
    return ((torch.float64, dict(rel=1e-10, abs=1e-12)),
            (torch.float32, dict(rel=1e-5, abs=f32_abs)))


def assert_matches(got: torch.Tensor, loss, dtype: torch.dtype, tol: dict, total: float,
                   **components: float) -> None:
    """``got`` (the scalar ``loss`` just returned) has ``dtype``, equals ``total`` and each named
    entry of ``loss.components`` equals its reference value, within ``tol``."""
    assert got.dtype == dtype
    assert got.item() == pytest.approx(total, **tol)
    for name, value in components.items():
        assert loss.components[name].item() == pytest.approx(value, **tol)


# ---------------------------------------------------------------- gradients, degenerate batches

GRAD_LABELS_2 = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]])
GRAD_LABELS_3 = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1]])


def gradcheck_outputs(bits: int) -> torch.Tensor:
    """(5, K) seeded float64 outputs requiring grad: the input of every gradcheck."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, bits, generator=g, dtype=torch.float64, requires_grad=True)


def assert_gradcheck(loss, y: torch.Tensor, bits: int) -> None:
    """Analytic and numerical gradients of ``loss`` with respect to h agree at gradcheck_outputs."""
    h = gradcheck_outputs(bits)
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (h,))


# (B, C = 3) label batches at the edges of the pairwise losses, as pytest.params with their ids
DEGENERATE_BATCHES = [
    pytest.param(torch.tensor([[1, 0, 0]]), id="one"),                       # no pair at all
    pytest.param(torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), id="no-similar"),
    pytest.param(torch.tensor([[1, 1, 0], [1, 0, 0], [1, 0, 1]]), id="no-dissimilar"),
    pytest.param(torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0]]), id="zero-row"),  # unlabelled
]
ALL_ZERO = pytest.param(torch.zeros(3, 3, dtype=torch.long), id="all-zero")
ALL_ONE = pytest.param(torch.ones(3, 3, dtype=torch.long), id="all-one")


def degenerate_outputs(batch: int, bits: int = 6) -> torch.Tensor:
    """(B, K) seeded float32 outputs requiring grad, for a degenerate label batch."""
    return torch.randn(batch, bits, generator=torch.Generator().manual_seed(2), requires_grad=True)


def assert_finite_gradients(value: torch.Tensor, h: torch.Tensor, nonzero: bool = True) -> None:
    """Back-propagates ``value``: it and h's gradient are finite (and the gradient not all zero)."""
    value.backward()
    if nonzero:
        assert torch.isfinite(value) and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0
    else:
        assert torch.isfinite(value) and torch.isfinite(h.grad).all()


# ---------------------------------------------------------------- registry, state, errors


def built_by_registry(name: str, cls: type, seed: int = 0):
    """The loss ``name`` built as the trainer builds it (declared defaults), after checking that
    the registry lists it, builds ``cls`` and refuses an option the loss does not declare."""
    assert name in LOSSES.names()
    loss = build_loss(name, num_classes=20, num_bits=48, seed=seed)
    assert isinstance(loss, cls)
    with pytest.raises(ValueError, match=f"^{name}: unknown option 'rate'; valid: "):
        build_loss(name, 20, 48, options={"rate": 0.02})
    return loss


def assert_state_round_trip(a, b, h: torch.Tensor | None = None,
                            y: torch.Tensor | None = None) -> None:
    """Loading a's state dict into b makes b compute a's loss (on a small (3, 4), C = 3 batch by
    default)."""
    b.load_state_dict(a.state_dict())
    if h is None:
        h, y = torch.randn(3, 4), torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    assert torch.equal(a(h, y), b(h, y))


def assert_constructor_rejects(cls: type, kwargs: dict, match: str) -> None:
    """``cls(num_classes=3, num_bits=4, **kwargs)`` raises ValueError matching ``match``."""
    with pytest.raises(ValueError, match=match):
        cls(**(dict(num_classes=3, num_bits=4) | kwargs))
