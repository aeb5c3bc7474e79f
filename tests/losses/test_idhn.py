"""Tests of hyp2.losses.idhn.IDHNLoss against a naive loop reference and a hand-computed case."""
from __future__ import annotations

import math

import pytest
import torch

from hyp2.losses.idhn import IDHNLoss

from .conftest import (
    DEGENERATE_BATCHES, GRAD_LABELS_2, PATTERNS, assert_constructor_rejects,
    assert_finite_gradients, assert_gradcheck, assert_matches,
    built_by_registry, degenerate_outputs, dtype_rounds, pattern_labels,
)


# ---------------------------------------------------------------- naive reference


def reference(h, y, scale=5.0, soft_weight=0.1, quant_weight=0.1, threshold=0.01):
    """IDHN with loops in Python floats: (hard, soft, quant, loss)."""
    h, y = h.double().tolist(), y.int().tolist()
    k = len(h[0])
    u = [[v / (1.0 + abs(v)) for v in row] for row in h]
    hard = soft = 0.0
    count = 0
    for i in range(len(u)):
        for j in range(len(u)):
            if i == j:
                continue
            count += 1
            ni, nj = math.sqrt(sum(y[i])), math.sqrt(sum(y[j]))
            s = sum(a * b for a, b in zip(y[i], y[j])) / (ni * nj) if ni and nj else 0.0
            inner = sum(a * b for a, b in zip(u[i], u[j]))
            if s < threshold or s > 1 - threshold:
                theta = scale * inner / k
                hard += math.log1p(math.exp(theta)) - s * theta
            else:
                soft += k * ((inner + k) / (2 * k) - s) ** 2
    hard, soft = (hard / count, soft / count) if count else (0.0, 0.0)
    quant = sum(abs(abs(v) - 1.0) for row in u for v in row) / (len(u) * k)
    return hard, soft, quant, hard + soft_weight * soft + quant_weight * quant


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("bits", [4, 24])
def test_matches_reference(pattern, batch, bits):
    g = torch.Generator().manual_seed(19 * batch + bits)
    y = pattern_labels(pattern, batch, 5, g, sparse=0.3)
    loss = IDHNLoss(5, bits, scale=3.0, soft_weight=0.2, quant_weight=0.3)
    for dtype, tol in dtype_rounds():
        h = (3.0 * torch.randn(batch, bits, generator=g, dtype=torch.float64)).to(dtype)
        hard, soft, quant, total = reference(h, y, 3.0, 0.2, 0.3)
        assert_matches(loss(h, y), loss, dtype, tol, total, hard=hard, soft=soft, quant=quant)


def test_reference_cases_have_soft_pairs():
    # guard: the "dense" random labels give fractional similarities, so the MSE branch is tested
    g = torch.Generator().manual_seed(19 * 9 + 4)
    y = pattern_labels("dense", 9, 5, g)
    loss = IDHNLoss(5, 4)
    loss(torch.randn(9, 4, generator=g), y)
    assert loss.components["soft"] > 0 and loss.components["hard"] > 0


# ---------------------------------------------------------------- hand-computed case


def test_hand_case():
    # K = 2. softsign: h = 1 -> 0.5, h = 3 -> 0.75.
    #   u0 = (0.5, 0.5), labels {0, 1};  u1 = (0.5, -0.5), labels {0};  u2 = (-0.75, 0.75), {2}
    # label cosines: s01 = 1/√2 (soft), s02 = s12 = 0 (hard)
    # inner products: ⟨u0,u1⟩ = 0, ⟨u0,u2⟩ = 0, ⟨u1,u2⟩ = -0.75
    # hard pairs, Θ = 5 · ⟨·,·⟩ / 2: Θ02 = 0 -> log 2; Θ12 = -1.875 -> log(1 + e^-1.875)
    # soft pair (unweighted): K ((0 + K)/2K - s01)² = 2 (0.5 - 1/√2)²
    # each appears twice among the 6 ordered pairs
    # quantization: |u| = 0.5 (4 entries), 0.75 (2 entries) -> (4·0.5 + 2·0.25) / 6 = 2.5 / 6
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-3.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    loss = IDHNLoss(3, 2)
    value = loss(h, y)
    hard = 2 * (math.log(2) + math.log1p(math.exp(-1.875))) / 6
    soft = 2 * 2 * (0.5 - 1 / math.sqrt(2)) ** 2 / 6
    quant = 2.5 / 6
    assert loss.components["hard"].item() == pytest.approx(hard, rel=1e-12)
    assert loss.components["soft"].item() == pytest.approx(soft, rel=1e-12)
    assert loss.components["quant"].item() == pytest.approx(quant, rel=1e-12)
    assert value.item() == pytest.approx(hard + 0.1 * soft + 0.1 * quant, rel=1e-12)


def test_identical_label_sets_are_hard_similar_pairs():
    # s = 1 exactly (same label set of two labels): cross-entropy with s = 1, not the MSE
    h = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)   # u = (0.5, 0.5) twice
    loss = IDHNLoss(2, 2, quant_weight=0.0)
    value = loss(h, torch.tensor([[1, 1], [1, 1]]))
    theta = 5 * 0.5 / 2                                               # ⟨u, u⟩ = 0.5
    assert loss.components["soft"].item() == 0.0
    assert value.item() == pytest.approx(math.log1p(math.exp(theta)) - theta, rel=1e-12)


# ---------------------------------------------------------------- gradients, degenerate batches


def test_gradcheck():
    assert_gradcheck(IDHNLoss(2, 3), GRAD_LABELS_2, bits=3)          # hard and soft pairs


@pytest.mark.parametrize("y", DEGENERATE_BATCHES + [
    pytest.param(torch.zeros(4, 3, dtype=torch.long), id="all-zero"),
])
def test_degenerate_batches_are_finite_with_gradients(y):
    h = degenerate_outputs(len(y))
    assert_finite_gradients(IDHNLoss(3, 6)(h, y), h)


# ---------------------------------------------------------------- registry, state, errors


def test_registry_builds_with_project_options():
    loss = built_by_registry("idhn", IDHNLoss)
    assert (loss.scale, loss.soft_weight, loss.quant_weight, loss.threshold) == (5, 0.1, 0.1, 0.01)
    assert loss.param_groups(0.02) == []


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"), (dict(num_bits=-2), "num_bits"),
    (dict(scale=0.0), "scale"), (dict(soft_weight=-1.0), "soft_weight"),
    (dict(quant_weight=float("inf")), "quant_weight"), (dict(threshold=0.5), "threshold"),
    (dict(threshold=-0.1), "threshold"),
])
def test_constructor_rejects(kwargs, match):
    assert_constructor_rejects(IDHNLoss, kwargs, match)
