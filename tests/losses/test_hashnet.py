"""Tests of hyp2.losses.hashnet.HashNetLoss: loop reference, hand case, β continuation."""
from __future__ import annotations

import math

import pytest
import torch

from hyp2.losses import build_loss
from hyp2.losses.hashnet import HashNetLoss

from .conftest import (
    DEGENERATE_BATCHES, GRAD_LABELS_2, PATTERNS, assert_constructor_rejects,
    assert_finite_gradients, assert_gradcheck, assert_matches,
    built_by_registry, degenerate_outputs, dtype_rounds, pattern_labels,
)


# ---------------------------------------------------------------- naive reference


def reference(h, y, alpha, beta, jaccard=False):
    """HashNet with loops in Python floats: (similar, dissimilar, loss).

    Written as the paper's weighted sum Σ w_ij ℓ_ij / |S| with w = c|S|/|S1| or |S|/|S0|."""
    z, y = h.double().tolist(), y.int().tolist()
    code = [[math.tanh(beta * v) for v in row] for row in z]
    sim, dis = [], []
    for i in range(len(code)):
        for j in range(len(code)):
            if i == j:
                continue
            theta = alpha * sum(a * b for a, b in zip(code[i], code[j]))
            inter = sum(a * b for a, b in zip(y[i], y[j]))
            s = 1.0 if inter > 0 else 0.0
            nll = math.log1p(math.exp(theta)) - s * theta
            if s:
                union = sum(max(a, b) for a, b in zip(y[i], y[j]))
                sim.append((inter / union if jaccard else 1.0, nll))
            else:
                dis.append(nll)
    total = len(sim) + len(dis)
    weighted = sum(c * total / len(sim) * nll for c, nll in sim) + \
        sum(total / len(dis) * nll for nll in dis)
    similar = sum(c * nll for c, nll in sim) / len(sim) if sim else 0.0
    dissimilar = sum(dis) / len(dis) if dis else 0.0
    return similar, dissimilar, (weighted / total if total else 0.0)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("jaccard", [False, True])
def test_matches_reference(pattern, batch, jaccard):
    bits = 12
    g = torch.Generator().manual_seed(13 * batch + jaccard)
    y = pattern_labels(pattern, batch, 5, g)
    loss = HashNetLoss(5, bits, jaccard=jaccard).eval()        # eval: β stays at β0 = 1
    for dtype, tol in dtype_rounds():
        h = torch.randn(batch, bits, generator=g, dtype=torch.float64).to(dtype)
        similar, dissimilar, total = reference(h, y, 10.0 / bits, 1.0, jaccard)
        assert_matches(loss(h, y), loss, dtype, tol, total, similar=similar,
                       dissimilar=dissimilar)


def test_matches_reference_with_other_beta_and_alpha():
    g = torch.Generator().manual_seed(5)
    y = pattern_labels("sparse", 8, 4, g)
    h = torch.randn(8, 6, generator=g, dtype=torch.float64)
    loss = HashNetLoss(4, 6, alpha=0.7, beta_init=2.5).eval()
    assert loss(h, y).item() == pytest.approx(reference(h, y, 0.7, 2.5)[2], rel=1e-10)


# ---------------------------------------------------------------- hand-computed case


def test_hand_case_class_balance():
    # α = 1, β = 1. Codes tanh(h): c0 = c1 = (0.6, 0.8), c2 = (0, 0).
    # Labels: 0 and 1 share class 0; 2 has class 1 only.
    # Similar pairs (0,1), (1,0): ⟨c0, c1⟩ = 1, ℓ = log(1 + e) - 1 = log(1 + e^-1).
    # Dissimilar pairs (0,2), (2,0), (1,2), (2,1): ⟨·, c2⟩ = 0, ℓ = log 2.
    # |S| = 6, |S1| = 2, |S0| = 4: Σ w ℓ / |S| = mean over S1 + mean over S0
    #   = log(1 + e^-1) + log 2     (the unweighted mean would be (2 log(1+e^-1) + 4 log 2) / 6)
    h = torch.atanh(torch.tensor([[0.6, 0.8], [0.6, 0.8], [0.0, 0.0]], dtype=torch.float64))
    y = torch.tensor([[1, 0], [1, 0], [0, 1]])
    loss = HashNetLoss(2, 2, alpha=1.0)
    value = loss(h, y)                                          # first training step: β = 1
    assert loss.components["beta"].item() == 1.0
    assert loss.components["similar"].item() == pytest.approx(math.log1p(math.exp(-1)))
    assert loss.components["dissimilar"].item() == pytest.approx(math.log(2))
    assert value.item() == pytest.approx(math.log1p(math.exp(-1)) + math.log(2), rel=1e-12)


def test_hand_case_jaccard():
    # labels {0, 1} and {0}: Jaccard = |{0}| / |{0, 1}| = 1/2 scales the similar pairs' ℓ.
    # Codes c0 = c1 = (0.6, 0.8), α = 1: ℓ = log(1 + e^-1) on both ordered pairs.
    h = torch.atanh(torch.tensor([[0.6, 0.8], [0.6, 0.8]], dtype=torch.float64))
    y = torch.tensor([[1, 1], [1, 0]])
    loss = HashNetLoss(2, 2, alpha=1.0, jaccard=True)
    assert loss(h, y).item() == pytest.approx(0.5 * math.log1p(math.exp(-1)), rel=1e-12)
    assert loss.components["dissimilar"].item() == 0.0          # there is no dissimilar pair


# ---------------------------------------------------------------- continuation


def test_beta_schedule():
    # β = (1 + 0.005 t)^0.5, t rounded down to a multiple of 200 (the authors' refresh)
    loss = HashNetLoss(2, 2)
    assert [loss.beta_at(t) for t in (0, 199, 200, 399, 400, 1000)] == pytest.approx(
        [1.0, 1.0, math.sqrt(2.0), math.sqrt(2.0), math.sqrt(3.0), math.sqrt(6.0)])
    custom = HashNetLoss(2, 2, beta_init=2.0, gamma=0.1, power=1.0, step_size=10)
    assert custom.beta_at(25) == pytest.approx(2.0 * (1 + 0.1 * 20))


def test_step_advances_in_training_mode_only():
    loss = HashNetLoss(2, 2)
    h, y = torch.randn(2, 2), torch.tensor([[1, 0], [0, 1]])
    for _ in range(199):
        loss(h, y)
    assert int(loss.step) == 199 and loss.components["beta"].item() == 1.0
    loss(h, y)                                                  # the 200th iteration
    assert int(loss.step) == 200
    assert loss.components["beta"].item() == pytest.approx(math.sqrt(2.0))
    loss.eval()
    for _ in range(300):
        loss(h, y)
    assert int(loss.step) == 200 and loss.beta == pytest.approx(math.sqrt(2.0))


def test_forward_uses_the_scheduled_beta():
    g = torch.Generator().manual_seed(9)
    h = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = pattern_labels("sparse", 6, 3, g)
    loss = HashNetLoss(3, 4)
    loss.step.fill_(399)
    value = loss(h, y)                                          # step 400: β = √3
    assert value.item() == pytest.approx(reference(h, y, 2.5, math.sqrt(3.0))[2], rel=1e-10)


def test_state_dict_round_trip_keeps_the_schedule():
    a = HashNetLoss(2, 2)
    a.step.fill_(1234)
    assert "step" in a.state_dict()
    b = HashNetLoss(2, 2)
    b.load_state_dict(a.state_dict())
    assert int(b.step) == 1234 and b.beta == a.beta
    h, y = torch.randn(3, 2), torch.tensor([[1, 0], [1, 1], [0, 1]])
    assert torch.equal(a.eval()(h, y), b.eval()(h, y))


# ---------------------------------------------------------------- gradients, degenerate batches


def test_gradcheck():
    assert_gradcheck(HashNetLoss(2, 3, jaccard=True).eval(), GRAD_LABELS_2, bits=3)


@pytest.mark.parametrize("y", DEGENERATE_BATCHES)
def test_degenerate_batches_are_finite(y):
    h = degenerate_outputs(len(y))
    value = HashNetLoss(3, 6)(h, y)
    assert_finite_gradients(value, h, nonzero=False)
    if len(y) > 1:
        assert h.grad.abs().sum() > 0
    else:
        assert value.item() == 0.0                              # no pair, no quantization term


# ---------------------------------------------------------------- registry, errors


def test_registry_builds_with_authors_defaults():
    loss = built_by_registry("hashnet", HashNetLoss)
    assert loss.alpha == pytest.approx(10 / 48) and loss.beta == 1.0 and not loss.jaccard
    assert loss.param_groups(0.02) == []
    # HyP²'s β is not HashNet's: the schedule's start is beta_init
    with pytest.raises(ValueError, match="unknown option 'beta'; valid: alpha=10/K .*beta_init=1.0"):
        build_loss("hashnet", 20, 48, options={"beta": 0.5})


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"), (dict(num_bits=0), "num_bits"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=-1.0), "alpha"), (dict(beta_init=0.0), "beta_init"),
    (dict(gamma=-0.1), "gamma"), (dict(power=float("nan")), "power"),
    (dict(step_size=0), "step_size"), (dict(step_size=2.5), "step_size"),
    (dict(jaccard=1), "jaccard"),
])
def test_constructor_rejects(kwargs, match):
    assert_constructor_rejects(HashNetLoss, kwargs, match)
