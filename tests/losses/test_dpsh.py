"""Tests of hyp2.losses.dpsh.DPSHLoss against a naive loop reference and a hand-computed case."""
from __future__ import annotations

import math

import pytest
import torch

from hyp2.losses.dpsh import DPSHLoss

from .conftest import (
    DEGENERATE_BATCHES, GRAD_LABELS_2, PATTERNS, assert_constructor_rejects,
    assert_finite_gradients, assert_gradcheck, assert_matches,
    built_by_registry, degenerate_outputs, dtype_rounds, pattern_labels,
)


# ---------------------------------------------------------------- naive reference


def reference(h, y, eta=10.0):
    """DPSH's in-batch J / (number of ordered pairs), with loops: (pair, quant, loss)."""
    u, y = h.double().tolist(), y.int().tolist()
    batch = len(u)
    count = max(batch * (batch - 1), 1)
    pair = 0.0
    for i in range(batch):
        for j in range(batch):
            if i != j:
                theta = 0.5 * sum(a * b for a, b in zip(u[i], u[j]))
                s = 1.0 if sum(a * b for a, b in zip(y[i], y[j])) > 0 else 0.0
                pair += math.log1p(math.exp(theta)) - s * theta
    quant = sum(((1.0 if v >= 0 else -1.0) - v) ** 2 for row in u for v in row)
    return pair / count, quant / count, (pair + eta * quant) / count


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("bits", [4, 24])
def test_matches_reference(pattern, batch, bits):
    g = torch.Generator().manual_seed(17 * batch + bits)
    y = pattern_labels(pattern, batch, 5, g)
    loss = DPSHLoss(5, bits, eta=2.5)
    for dtype, tol in dtype_rounds():
        h = torch.randn(batch, bits, generator=g, dtype=torch.float64).to(dtype)
        pair, quant, total = reference(h, y, 2.5)
        assert_matches(loss(h, y), loss, dtype, tol, total, pair=pair, quant=quant)


# ---------------------------------------------------------------- hand-computed case


def test_hand_case():
    # u0 = (1, 2), u1 = (-1, 0.5); no shared label, s = 0.
    # Θ = ½ (1·(-1) + 2·0.5) = 0, so each of the 2 ordered pairs costs log(1 + e^0) = log 2.
    # b0 = (1, 1): ‖b0 - u0‖² = 0 + 1 = 1;  b1 = (-1, 1): ‖b1 - u1‖² = 0 + 0.25 = 0.25.
    # Divided by the B(B-1) = 2 pairs: pair = log 2, quant = 1.25 / 2 = 0.625;
    # loss = log 2 + 10 · 0.625.
    loss = DPSHLoss(2, 2)
    value = loss(torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64),
                 torch.tensor([[1, 0], [0, 1]]))
    assert loss.components["pair"].item() == pytest.approx(math.log(2), rel=1e-12)
    assert loss.components["quant"].item() == pytest.approx(0.625, rel=1e-12)
    assert value.item() == pytest.approx(math.log(2) + 6.25, rel=1e-12)


def test_zero_output_binarises_to_plus_one():
    # b = sign(u) with sign(0) = +1: u = (0, 0) is 1 away from b = (1, 1) in each bit
    loss = DPSHLoss(1, 2)
    loss(torch.zeros(1, 2), torch.tensor([[1]]))
    assert loss.components["quant"].item() == pytest.approx(2.0)


# ---------------------------------------------------------------- gradients, degenerate batches


def test_gradcheck():
    assert_gradcheck(DPSHLoss(2, 3), GRAD_LABELS_2, bits=3)


@pytest.mark.parametrize("y", DEGENERATE_BATCHES)
def test_degenerate_batches_are_finite_with_gradients(y):
    h = degenerate_outputs(len(y))
    assert_finite_gradients(DPSHLoss(3, 6)(h, y), h)


def test_large_outputs_stay_finite():
    h = torch.full((3, 64), 30.0)
    h[1] = -30.0
    value = DPSHLoss(2, 64)(h.requires_grad_(), torch.tensor([[1, 0], [1, 0], [0, 1]]))
    assert_finite_gradients(value, h, nonzero=False)


# ---------------------------------------------------------------- registry, state, errors


def test_registry_builds_with_project_options():
    loss = built_by_registry("dpsh", DPSHLoss)
    assert loss.eta == 10.0
    assert loss.param_groups(0.02) == []


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"), (dict(num_bits=0), "num_bits"),
    (dict(eta=-1.0), "eta"), (dict(eta=float("inf")), "eta"), (dict(eta=None), "eta"),
])
def test_constructor_rejects(kwargs, match):
    assert_constructor_rejects(DPSHLoss, kwargs, match)
