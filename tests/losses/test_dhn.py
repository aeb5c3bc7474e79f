"""Tests of hyp2.losses.dhn.DHNLoss against a naive loop reference and a hand-computed case."""
from __future__ import annotations

import math

import pytest
import torch

from hyp2.losses.dhn import DHNLoss

from .conftest import (
    DEGENERATE_BATCHES, GRAD_LABELS_2, PATTERNS, assert_constructor_rejects,
    assert_finite_gradients, assert_gradcheck, assert_matches,
    built_by_registry, degenerate_outputs, dtype_rounds, pattern_labels,
)


# ---------------------------------------------------------------- naive reference


def reference(h, y, quant_weight=0.1):
    """DHN written out with loops in Python floats: (pair, quant, loss)."""
    h, y = h.double().tolist(), y.int().tolist()
    z = [[math.tanh(v) for v in row] for row in h]
    terms = []
    for i in range(len(z)):
        for j in range(len(z)):
            if i == j:
                continue
            inner = sum(a * b for a, b in zip(z[i], z[j]))
            s = 1.0 if sum(a * b for a, b in zip(y[i], y[j])) > 0 else 0.0
            terms.append(math.log1p(math.exp(inner)) - s * inner)
    pair = sum(terms) / len(terms) if terms else 0.0
    quant = sum(sum(math.log(math.cosh(abs(v) - 1.0)) for v in row) for row in z) / len(z)
    return pair, quant, pair + quant_weight * quant


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("bits", [4, 48])
def test_matches_reference(pattern, batch, bits):
    g = torch.Generator().manual_seed(31 * batch + bits)
    y = pattern_labels(pattern, batch, 5, g)
    loss = DHNLoss(5, bits, quant_weight=0.3)
    for dtype, tol in dtype_rounds():
        h = (2.0 * torch.randn(batch, bits, generator=g, dtype=torch.float64)).to(dtype)
        pair, quant, total = reference(h, y, 0.3)
        assert_matches(loss(h, y), loss, dtype, tol, total, pair=pair, quant=quant)


def test_reference_cases_have_both_kinds_of_pair():
    # guard: the "sparse" random case really mixes similar and dissimilar pairs
    g = torch.Generator().manual_seed(0)
    y = pattern_labels("sparse", 9, 5, g)
    share = (y @ y.T > 0) & ~torch.eye(9, dtype=torch.bool)
    assert share.any() and (~share & ~torch.eye(9, dtype=torch.bool)).any()


# ---------------------------------------------------------------- hand-computed case


def test_hand_case():
    # K = 2; z = tanh(h) chosen as z0 = (0.6, 0.8), z1 = (0.6, -0.8):
    #   ⟨z0, z1⟩ = 0.36 - 0.64 = -0.28.
    # The two samples share label 0, s = 1, so both ordered pairs cost
    #   log(1 + e^-0.28) - (-0.28) = log(1 + e^0.28)                     -> pair = log(1 + e^0.28)
    # quantization per sample: log cosh(0.6 - 1) + log cosh(0.8 - 1) = log cosh 0.4 + log cosh 0.2
    # loss = pair + 0.1 · quant
    h = torch.atanh(torch.tensor([[0.6, 0.8], [0.6, -0.8]], dtype=torch.float64))
    y = torch.tensor([[1, 0], [1, 1]])
    loss = DHNLoss(2, 2)
    value = loss(h, y)
    pair = math.log(1 + math.exp(0.28))
    quant = math.log(math.cosh(0.4)) + math.log(math.cosh(0.2))
    assert loss.components["pair"].item() == pytest.approx(pair, rel=1e-12)
    assert loss.components["quant"].item() == pytest.approx(quant, rel=1e-12)
    assert value.item() == pytest.approx(pair + 0.1 * quant, rel=1e-12)
    # the same outputs, but the samples share no label (s = 0): log(1 + e^-0.28) per pair
    loss(h, torch.tensor([[1, 0], [0, 1]]))
    assert loss.components["pair"].item() == pytest.approx(math.log(1 + math.exp(-0.28)))


# ---------------------------------------------------------------- gradients, degenerate batches


def test_gradcheck():
    assert_gradcheck(DHNLoss(2, 3), GRAD_LABELS_2, bits=3)


@pytest.mark.parametrize("y", DEGENERATE_BATCHES)
def test_degenerate_batches_are_finite_with_gradients(y):
    h = degenerate_outputs(len(y))
    assert_finite_gradients(DHNLoss(3, 6)(h, y), h)


def test_batch_of_one_is_quantization_only():
    loss = DHNLoss(3, 6)
    h = torch.randn(1, 6, generator=torch.Generator().manual_seed(3))
    assert loss(h, torch.tensor([[1, 0, 0]])).item() == pytest.approx(
        0.1 * loss.components["quant"].item())
    assert loss.components["pair"].item() == 0.0


def test_saturated_outputs_stay_finite():
    h = torch.full((4, 48), 50.0)
    h[1] = -50.0
    y = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]])
    assert torch.isfinite(DHNLoss(2, 48)(h.requires_grad_(), y))


# ---------------------------------------------------------------- registry, state, errors


def test_registry_builds_with_project_options():
    loss = built_by_registry("dhn", DHNLoss)
    assert loss.quant_weight == 0.1
    assert loss.param_groups(0.02) == []                        # nothing learnable


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.int32, torch.float16,
                                   torch.float64])
def test_label_dtype_does_not_matter(dtype):
    # the batch check shared by all baselines turns any 0/1 label tensor into h's dtype
    h = torch.randn(4, 4, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]])
    assert torch.equal(DHNLoss(3, 4)(h, y.to(dtype)), DHNLoss(3, 4)(h, y))


def test_inputs_not_mutated():
    h, y = torch.randn(3, 4), torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    h0, y0 = h.clone(), y.clone()
    DHNLoss(3, 4)(h, y)
    assert torch.equal(h, h0) and torch.equal(y, y0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"), (dict(num_bits=1.5), "num_bits"),
    (dict(num_bits=True), "num_bits"), (dict(quant_weight=-0.1), "quant_weight"),
    (dict(quant_weight=float("nan")), "quant_weight"), (dict(quant_weight="0.1"), "quant_weight"),
])
def test_constructor_rejects(kwargs, match):
    assert_constructor_rejects(DHNLoss, kwargs, match)
