"""Tests of hyp2.losses.dhn.DHNLoss against a naive loop reference and a hand-computed case."""
from __future__ import annotations

import math

import pytest
import torch

from hyp2.losses import build_loss, loss_names
from hyp2.losses.dhn import DHNLoss


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


def _labels(pattern, batch, classes, g):
    if pattern == "sparse":
        return (torch.rand(batch, classes, generator=g) < 0.2).long()
    if pattern == "dense":
        return (torch.rand(batch, classes, generator=g) < 0.6).long()
    if pattern == "single":             # one label each: only same-class pairs are similar
        y = torch.zeros(batch, classes, dtype=torch.long)
        y[torch.arange(batch), torch.randint(classes, (batch,), generator=g)] = 1
        return y
    if pattern == "zero_rows":          # every third sample has no label
        y = (torch.rand(batch, classes, generator=g) < 0.4).long()
        y[::3] = 0
        return y
    if pattern == "all_zero":           # no similar pair at all
        return torch.zeros(batch, classes, dtype=torch.long)
    if pattern == "all_one":            # no dissimilar pair at all
        return torch.ones(batch, classes, dtype=torch.long)
    raise AssertionError(pattern)


PATTERNS = ["sparse", "dense", "single", "zero_rows", "all_zero", "all_one"]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("bits", [4, 48])
def test_matches_reference(pattern, batch, bits):
    g = torch.Generator().manual_seed(31 * batch + bits)
    y = _labels(pattern, batch, 5, g)
    loss = DHNLoss(5, bits, quant_weight=0.3)
    for dtype, tol in ((torch.float64, dict(rel=1e-10, abs=1e-12)),
                       (torch.float32, dict(rel=1e-5, abs=1e-6))):
        h = (2.0 * torch.randn(batch, bits, generator=g, dtype=torch.float64)).to(dtype)
        pair, quant, total = reference(h, y, 0.3)
        got = loss(h, y)
        assert got.dtype == dtype
        assert got.item() == pytest.approx(total, **tol)
        assert loss.components["pair"].item() == pytest.approx(pair, **tol)
        assert loss.components["quant"].item() == pytest.approx(quant, **tol)


def test_reference_cases_have_both_kinds_of_pair():
    # guard: the "sparse" random case really mixes similar and dissimilar pairs
    g = torch.Generator().manual_seed(0)
    y = _labels("sparse", 9, 5, g)
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
    g = torch.Generator().manual_seed(1)
    h = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]])
    assert torch.autograd.gradcheck(lambda x: DHNLoss(2, 3)(x, y), (h,))


@pytest.mark.parametrize("y", [
    torch.tensor([[1, 0, 0]]),                                  # batch of one: no pair
    torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),            # no similar pair
    torch.tensor([[1, 1, 0], [1, 0, 0], [1, 0, 1]]),            # no dissimilar pair
    torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0]]),            # a sample without labels
], ids=["one", "no-similar", "no-dissimilar", "zero-row"])
def test_degenerate_batches_are_finite_with_gradients(y):
    h = torch.randn(len(y), 6, generator=torch.Generator().manual_seed(2), requires_grad=True)
    value = DHNLoss(3, 6)(h, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


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
    assert "dhn" in loss_names()
    loss = build_loss("dhn", num_classes=20, num_bits=48, seed=0, beta=0.5, zeta=0.0)
    assert type(build_loss("dhn", 20, 48, rate=0.02, unknown="x")) is type(loss)
    assert isinstance(loss, DHNLoss) and loss.quant_weight == 0.1
    assert loss.param_groups(0.02) == []                        # nothing learnable


def test_state_dict_round_trip():
    a, b = DHNLoss(3, 4), DHNLoss(3, 4)
    b.load_state_dict(a.state_dict())
    h, y = torch.randn(3, 4), torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    assert torch.equal(a(h, y), b(h, y))


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
    with pytest.raises(ValueError, match=match):
        DHNLoss(**(dict(num_classes=3, num_bits=4) | kwargs))


@pytest.mark.parametrize("h,y,match", [
    (torch.randn(2, 5), torch.zeros(2, 3), r"\(B, K=4\)"),
    (torch.ones(2, 4, dtype=torch.long), torch.zeros(2, 3), "floating"),
    (torch.randn(0, 4), torch.zeros(0, 3), "empty"),
    (torch.randn(2, 4), torch.zeros(2, 4), r"\(B=2, C=3\)"),
    (torch.randn(2, 4), torch.tensor([[0, 2, 0], [1, 0, 0]]), "0/1"),
])
def test_forward_rejects(h, y, match):
    with pytest.raises(ValueError, match=match):
        DHNLoss(3, 4)(h, y)
