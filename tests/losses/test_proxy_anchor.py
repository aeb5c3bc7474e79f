"""Tests of hyp2.losses.proxy_anchor.ProxyAnchorLoss: loop reference, hand case, proxies."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from hyp2.losses.proxy_anchor import ProxyAnchorLoss

from .conftest import (
    ALL_ONE, ALL_ZERO, DEGENERATE_BATCHES, PATTERNS, assert_constructor_rejects,
    assert_finite_gradients, assert_matches, assert_state_round_trip,
    built_by_registry, degenerate_outputs, dense_batch, dtype_rounds, gradcheck_outputs,
    pattern_labels,
)


# ---------------------------------------------------------------- naive reference


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a))
                                               * math.sqrt(sum(y * y for y in b)))


def reference(h, y, proxies, alpha=32.0, delta=0.1):
    """Proxy Anchor with loops in Python floats: (pos, neg, loss)."""
    h, y, proxies = h.double().tolist(), y.int().tolist(), proxies.double().tolist()
    pos_terms, neg_total = [], 0.0
    for c, p in enumerate(proxies):
        positives = [x for x, row in zip(h, y) if row[c]]
        negatives = [x for x, row in zip(h, y) if not row[c]]
        if positives:
            pos_terms.append(math.log(1 + sum(math.exp(-alpha * (_cos(x, p) - delta))
                                              for x in positives)))
        neg_total += math.log(1 + sum(math.exp(alpha * (_cos(x, p) + delta)) for x in negatives))
    pos = sum(pos_terms) / len(pos_terms) if pos_terms else 0.0
    neg = neg_total / len(proxies)
    return pos, neg, pos + neg


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("bits", [4, 48])
def test_matches_reference(pattern, batch, bits):
    g = torch.Generator().manual_seed(29 * batch + bits)
    y = pattern_labels(pattern, batch, 6, g)
    loss = ProxyAnchorLoss(6, bits, seed=batch)
    for dtype, tol in dtype_rounds(f32_abs=1e-5):
        h = torch.randn(batch, bits, generator=g, dtype=torch.float64).to(dtype)
        pos, neg, total = reference(h, y, loss.proxies.detach())
        assert_matches(loss(h, y), loss, dtype, tol, total, pos=pos, neg=neg)


def test_matches_reference_with_other_alpha_delta():
    g = torch.Generator().manual_seed(4)
    y = pattern_labels("sparse", 7, 5, g)
    h = torch.randn(7, 6, generator=g, dtype=torch.float64)
    loss = ProxyAnchorLoss(5, 6, alpha=8.0, delta=0.3, seed=2)
    expected = reference(h, y, loss.proxies.detach(), 8.0, 0.3)[2]
    assert loss(h, y).item() == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------- hand-computed case


def test_hand_case():
    # K = 2, C = 2, proxies p0 = (1, 0), p1 = (0, 1); α = 1, δ = 0.5.
    #   x0 = (1, 0), labels {0}:    cos to p0, p1 = 1, 0
    #   x1 = (0, 2), labels {0, 1}: cos to p0, p1 = 0, 1
    # P⁺ = {p0, p1}.
    #   p0: positives x0, x1 -> log(1 + e^{-(1 - .5)} + e^{-(0 - .5)}) = log(1 + e^-.5 + e^.5)
    #   p1: positive  x1     -> log(1 + e^{-(1 - .5)})                 = log(1 + e^-.5)
    #   pos = mean of the two
    #   p0: no negative      -> log 1 = 0
    #   p1: negative x0      -> log(1 + e^{(0 + .5)})                   = log(1 + e^.5)
    #   neg = (0 + log(1 + e^.5)) / |P| = / 2
    loss = ProxyAnchorLoss(2, 2, alpha=1.0, delta=0.5)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    value = loss(torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64),
                 torch.tensor([[1, 0], [1, 1]]))
    e = math.exp(0.5)
    pos = (math.log(1 + 1 / e + e) + math.log(1 + 1 / e)) / 2
    neg = math.log(1 + e) / 2
    assert loss.components["pos"].item() == pytest.approx(pos, rel=1e-7)
    assert loss.components["neg"].item() == pytest.approx(neg, rel=1e-7)
    assert value.item() == pytest.approx(pos + neg, rel=1e-7)


# ---------------------------------------------------------------- gradients, degenerate batches


def test_gradcheck_h_and_proxies():
    h = gradcheck_outputs(4)
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]])   # class 2: no pos
    loss = ProxyAnchorLoss(3, 4, alpha=4.0, seed=3).double()
    proxies = loss.proxies.detach().clone().requires_grad_()

    def f(h, p):
        return functional_call(loss, {"proxies": p}, (h, y))

    assert torch.autograd.gradcheck(f, (h, proxies))


@pytest.mark.parametrize("y", DEGENERATE_BATCHES + [ALL_ZERO, ALL_ONE])
def test_degenerate_batches_are_finite_with_gradients(y):
    h = degenerate_outputs(len(y))
    loss = ProxyAnchorLoss(3, 6)
    assert_finite_gradients(loss(h, y), h)
    assert torch.isfinite(loss.proxies.grad).all() and loss.proxies.grad.abs().sum() > 0


def test_large_alpha_does_not_overflow():
    # exp(α (cos + δ)) would overflow float32 for α = 1000; the log-sum-exp does not
    h = torch.randn(4, 8, generator=torch.Generator().manual_seed(5), requires_grad=True)
    loss = ProxyAnchorLoss(3, 8, alpha=1000.0)
    value = loss(h, torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]))
    assert_finite_gradients(value, h, nonzero=False)


def test_zero_output_is_finite():
    h = torch.zeros(2, 4, requires_grad=True)
    value = ProxyAnchorLoss(2, 4)(h, torch.tensor([[1, 0], [0, 1]]))
    assert_finite_gradients(value, h, nonzero=False)


# ---------------------------------------------------------------- proxies and optimiser groups


def test_proxies_reproducible_kaiming_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = ProxyAnchorLoss(20, 48, seed=5).proxies
    b = ProxyAnchorLoss(20, 48, seed=5).proxies
    c = ProxyAnchorLoss(20, 48, seed=6).proxies
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(a, torch.nn.Parameter) and a.requires_grad and a.shape == (20, 48)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # Kaiming normal, mode fan_out: fan_out of a (C, K) tensor is C, std = √(2 / C)
    big = ProxyAnchorLoss(200, 256, seed=0).proxies.detach()
    assert big.mean().item() == pytest.approx(0.0, abs=0.01)
    assert big.std().item() == pytest.approx(math.sqrt(2 / 200), rel=0.03)


def test_state_dict_round_trip():
    a, b = ProxyAnchorLoss(5, 8, seed=1), ProxyAnchorLoss(5, 8, seed=2)
    assert set(a.state_dict()) == {"proxies"}
    assert_state_round_trip(a, b, *dense_batch(4, 8, 5))
    assert torch.equal(a.proxies, b.proxies)


def test_param_groups():
    loss = ProxyAnchorLoss(5, 8)
    (group,) = loss.param_groups(0.02)                          # the shared proxies' rate
    assert group["lr"] == 0.02 and group["params"] == [loss.proxies]
    assert group["name"] == "proxy_anchor"
    (group,) = loss.param_groups(0.02, net_lr=1e-4)             # default: --rate all the same
    assert group["lr"] == 0.02
    (group,) = ProxyAnchorLoss(5, 8, proxy_lr_multiplier=100.0).param_groups(0.02, net_lr=1e-4)
    assert group["lr"] == pytest.approx(1e-2)                    # the paper's 100 × network lr
    (group,) = ProxyAnchorLoss(5, 8, proxy_lr_multiplier=10.0).param_groups(0.02)
    assert group["lr"] == 0.02                                   # no network lr known: --rate
    loss.proxies.requires_grad_(False)
    assert loss.param_groups(0.02) == []


# ---------------------------------------------------------------- registry, errors


def test_registry_builds_with_project_options():
    loss = built_by_registry("proxy_anchor", ProxyAnchorLoss, seed=3)
    assert (loss.alpha, loss.delta) == (32.0, 0.1)
    assert torch.equal(loss.proxies, ProxyAnchorLoss(20, 48, seed=3).proxies)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"), (dict(num_bits=0), "num_bits"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=float("nan")), "alpha"), (dict(delta=-0.1), "delta"),
    (dict(seed="1"), "seed"), (dict(proxy_lr_multiplier=-1.0), "proxy_lr_multiplier"),
])
def test_constructor_rejects(kwargs, match):
    assert_constructor_rejects(ProxyAnchorLoss, kwargs, match)
