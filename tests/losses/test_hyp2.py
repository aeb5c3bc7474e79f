"""Tests of hyp2.losses.hyp2.HyP2Loss against a naive loop reference and hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from hyp2.losses import LOSSES, HyP2Loss, build_loss

from .conftest import pattern_labels


# ---------------------------------------------------------------- naive reference


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def reference(h, y, proxies, zeta, beta):
    """HyP² written out with loops, in Python floats (double precision).

    Returns (proxy_pos, proxy_neg, pair, loss)."""
    h, y, proxies = h.double().tolist(), y.int().tolist(), proxies.double().tolist()
    batch, classes = len(h), len(proxies)
    pos, neg = [], []
    for i in range(batch):
        for c in range(classes):
            cos = _cos(h[i], proxies[c])
            if y[i][c] == 1:
                pos.append(1.0 - cos)
            else:
                neg.append(max(0.0, cos - zeta))
    multi = [i for i in range(batch) if sum(y[i]) > 1]
    pairs = []
    for i in multi:
        for j in multi:
            shared = sum(y[i][c] * y[j][c] for c in range(classes))
            if i != j and shared == 0:
                pairs.append(max(0.0, _cos(h[i], h[j]) - zeta))
    parts = (_mean(pos), _mean(neg), _mean(pairs))
    return parts + (parts[0] + parts[1] + beta * parts[2],)


PATTERNS = ["sparse", "dense", "single", "empty_class", "zero_rows", "ones_rows", "all_zero",
            "all_one"]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 7, 32])
@pytest.mark.parametrize("classes", [2, 5, 20])
@pytest.mark.parametrize("bits", [8, 48])
def test_matches_reference(pattern, batch, classes, bits):
    for seed in range(2):
        g = torch.Generator().manual_seed(1000 * seed + 7 * batch + classes + bits)
        y = pattern_labels(pattern, batch, classes, g, sparse=0.15)
        zeta = float(torch.empty(()).uniform_(-0.3, 0.5, generator=g))
        loss = HyP2Loss(classes, bits, zeta, beta=0.7, seed=seed)
        # the label dtype should not matter: each (seed, dtype) round uses another one
        label_dtypes = iter([torch.int64, torch.bool] if seed == 0 else [torch.uint8, torch.float32])
        for dtype in (torch.float32, torch.float64):
            h = torch.randn(batch, bits, generator=g, dtype=torch.float64).to(dtype)
            labels = y.to(next(label_dtypes))
            got = loss(h, labels)
            expected = reference(h, y, loss.proxies.detach(), zeta, 0.7)
            tol = dict(rel=1e-5, abs=1e-6) if dtype == torch.float32 else dict(rel=1e-12, abs=1e-12)
            assert got.dtype == dtype
            assert got.item() == pytest.approx(expected[3], **tol)
            parts = loss.components
            assert [parts[k].item() for k in ("proxy_pos", "proxy_neg", "pair")] == \
                [pytest.approx(e, **tol) for e in expected[:3]]


def test_reference_cases_exercise_every_term():
    # guard against the random cases above silently never reaching the pair term or the hinge
    g = torch.Generator().manual_seed(0)
    y = pattern_labels("sparse", 32, 20, g, sparse=0.15)
    loss = HyP2Loss(20, 8, 0.0, seed=0)
    loss(torch.randn(32, 8, generator=g), y)
    assert all(loss.components[k] > 0 for k in ("proxy_pos", "proxy_neg", "pair"))


# ---------------------------------------------------------------- hand-computed cases


def _with_proxies(classes, bits, zeta, beta, proxies):
    loss = HyP2Loss(classes, bits, zeta, beta=beta)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor(proxies, dtype=torch.float32))
    return loss


def test_hand_case_proxy_terms():
    # K = 2, C = 2, proxies p0 = (1, 0), p1 = (0, 1), ζ = 0.5.
    # h0 = (3, 4) -> unit (0.6, 0.8), labels [1, 0]: cos to p0, p1 = 0.6, 0.8
    # h1 = (-1, 1) -> unit (-1/√2, 1/√2), labels [0, 1]: cos = -1/√2, 1/√2
    # positives (0,p0), (1,p1): 1 - 0.6 = 0.4 and 1 - 1/√2      -> mean (1.4 - 1/√2) / 2
    # negatives (0,p1), (1,p0): relu(0.8 - 0.5) = 0.3 and 0      -> mean 0.15
    # nobody has two labels                                       -> pair 0
    loss = _with_proxies(2, 2, 0.5, 0.5, [[1, 0], [0, 1]])
    value = loss(torch.tensor([[3.0, 4.0], [-1.0, 1.0]]), torch.tensor([[1, 0], [0, 1]]))
    expected_pos = (1.4 - 1 / math.sqrt(2)) / 2
    assert loss.components["proxy_pos"].item() == pytest.approx(expected_pos, rel=1e-6)
    assert loss.components["proxy_neg"].item() == pytest.approx(0.15, rel=1e-6)
    assert loss.components["pair"].item() == 0.0
    assert value.item() == pytest.approx(expected_pos + 0.15, rel=1e-6)


def test_hand_case_with_pairs():
    # K = 2, C = 4, proxies (1,0), (0,1), (-1,0), (0,-1); ζ = 0, β = 0.5.
    #   h0 = (1, 0)  labels [1,1,0,0]   unit (1, 0)      cos to proxies [1, 0, -1, 0]
    #   h1 = (3, 4)  labels [0,0,1,1]   unit (0.6, 0.8)  cos [0.6, 0.8, -0.6, -0.8]
    #   h2 = (0, 1)  labels [1,0,1,0]   unit (0, 1)      cos [0, 1, 0, -1]
    #   h3 = (5, 0)  labels [0,0,0,1]   unit (1, 0)      cos [1, 0, -1, 0]
    # positives, 1 - cos: h0: 0, 1; h1: 1.6, 1.8; h2: 1, 1; h3: 1   -> 7.4 / 7
    # negatives, relu(cos): h0: 0, 0; h1: 0.6, 0.8; h2: 1, 0; h3: 1, 0, 0   -> 3.4 / 9
    # pairs: multi-label samples h0, h1, h2; only h0, h1 share no label (h3 is disjoint from h0
    # but single-label, so it does not count); ordered pairs (0,1) and (1,0), each
    # relu(cos(h0, h1) - 0) = 0.6                                    -> pair mean 0.6
    # loss = 7.4/7 + 3.4/9 + 0.5 · 0.6
    loss = _with_proxies(4, 2, 0.0, 0.5, [[1, 0], [0, 1], [-1, 0], [0, -1]])
    h = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0], [5.0, 0.0]])
    y = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]])
    value = loss(h, y)
    assert loss.components["proxy_pos"].item() == pytest.approx(7.4 / 7, rel=1e-6)
    assert loss.components["proxy_neg"].item() == pytest.approx(3.4 / 9, rel=1e-6)
    assert loss.components["pair"].item() == pytest.approx(0.6, rel=1e-6)
    assert value.item() == pytest.approx(7.4 / 7 + 3.4 / 9 + 0.3, rel=1e-6)


def test_empty_means_are_zero_not_nan():
    loss = HyP2Loss(3, 4, 0.0)
    h = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    value = loss(h, torch.zeros(2, 3))
    assert loss.components["proxy_pos"].item() == 0.0
    assert torch.isfinite(value)
    value = loss(h, torch.ones(2, 3))
    assert loss.components["proxy_neg"].item() == 0.0
    assert loss.components["pair"].item() == 0.0        # all rows overlap
    assert torch.isfinite(value)


# ---------------------------------------------------------------- gradients


def _grad_case():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0],
                      [0, 0, 0, 0]])
    return h, y


def test_gradcheck_h_and_proxies():
    h, y = _grad_case()
    loss = HyP2Loss(4, 5, -0.2, beta=0.5, seed=1).double()
    proxies = loss.proxies.detach().clone()
    # stay away from the relu kinks, where the numerical derivative is not defined
    unit = torch.nn.functional.normalize
    assert (unit(h, dim=1) @ unit(proxies, dim=1).T + 0.2).abs().min() > 1e-3
    assert (unit(h, dim=1) @ unit(h, dim=1).T + 0.2).abs().min() > 1e-3
    loss(h, y)
    assert loss.components["pair"] > 0                  # the pair term is in play

    def f(h, p):
        return functional_call(loss, {"proxies": p}, (h, y))

    assert torch.autograd.gradcheck(f, (h.requires_grad_(), proxies.requires_grad_()))


def test_gradients_reach_h_and_proxies():
    h, y = _grad_case()
    h = h.float().requires_grad_()
    loss = HyP2Loss(4, 5, -0.2, seed=1)
    loss(h, y).backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    assert loss.proxies.grad is not None and loss.proxies.grad.abs().sum() > 0


def test_float64_input_with_float32_proxies():
    h, y = _grad_case()
    loss = HyP2Loss(4, 5, 0.1)
    assert loss.proxies.dtype == torch.float32
    out = loss(h.requires_grad_(), y)
    assert out.dtype == torch.float64
    out.backward()
    assert loss.proxies.grad.dtype == torch.float32


# ---------------------------------------------------------------- initialisation


def test_proxies_reproducible_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = HyP2Loss(20, 48, 0.0, seed=5).proxies
    b = HyP2Loss(20, 48, 0.0, seed=5).proxies
    c = HyP2Loss(20, 48, 0.0, seed=6).proxies
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (20, 48) and isinstance(a, torch.nn.Parameter) and a.requires_grad
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_proxies_are_kaiming_fan_out():
    # torch's fan_out of a (C, K) weight is C: std = √2 / √C (gain √2 for leaky_relu, a = 0)
    proxies = HyP2Loss(200, 256, 0.0, seed=0).proxies.detach()
    expected = torch.empty(200, 256).normal_(0, math.sqrt(2 / 200),
                                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(proxies, expected)
    assert proxies.std().item() == pytest.approx(math.sqrt(2 / 200), rel=0.03)


def test_proxies_move_with_to():
    loss = HyP2Loss(3, 4, 0.0).to(torch.float64)
    assert loss.proxies.dtype == torch.float64
    loss = loss.to("meta")
    assert loss.proxies.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    h, y = _grad_case()
    cpu = HyP2Loss(4, 5, 0.1)
    gpu = HyP2Loss(4, 5, 0.1).cuda()
    assert torch.allclose(gpu(h.cuda(), y.cuda()).cpu(), cpu(h, y))


# ---------------------------------------------------------------- registry and options


def test_build_loss_takes_zeta_from_code_table():
    assert "hyp2" in LOSSES.names()
    loss = build_loss("hyp2", 20, 48)
    assert isinstance(loss, HyP2Loss) and loss.name == "hyp2"
    assert loss.zeta == 0.0 and loss.beta == 0.5
    assert build_loss("hyp2", 38, 12).zeta == pytest.approx(1 / 3)


def test_build_loss_options():
    loss = build_loss("hyp2", 20, 48, seed=3, options={"beta": 0.2, "zeta": 0.25})
    assert (loss.zeta, loss.beta) == (0.25, 0.2)
    assert loss.hparams == {"zeta": 0.25, "beta": 0.2}
    assert torch.equal(loss.proxies, HyP2Loss(20, 48, 0.0, seed=3).proxies)
    assert build_loss("hyp2", 20, 48).hparams == {"zeta": 0.0, "beta": 0.5}   # ζ from the table
    with pytest.raises(ValueError, match="num_classes"):
        build_loss("hyp2", 1, 48)           # ζ needs C ≥ 2; pass zeta explicitly for C = 1
    assert build_loss("hyp2", 1, 48, options={"zeta": 0.0}).proxies.shape == (1, 48)
    with pytest.raises(ValueError, match="^hyp2: unknown option 'rate'; valid: zeta=from the code "
                                         "table .*, beta=0.5 "):
        build_loss("hyp2", 20, 48, options={"rate": 0.02})


def test_param_groups_hold_the_proxies():
    loss = build_loss("hyp2", 5, 8)
    (group,) = loss.param_groups(0.02)
    assert group["lr"] == 0.02 and group["name"] == "hyp2"
    assert group["params"] == [loss.proxies]


def test_components_detached_and_sum_to_loss():
    h, y = _grad_case()
    loss = HyP2Loss(4, 5, -0.2, beta=0.3)
    value = loss(h.float().requires_grad_(), y)
    parts = loss.components
    assert set(parts) == {"proxy_pos", "proxy_neg", "pair"}
    assert all(not p.requires_grad and p.dim() == 0 for p in parts.values())
    total = parts["proxy_pos"] + parts["proxy_neg"] + 0.3 * parts["pair"]
    assert total.item() == pytest.approx(value.item(), rel=1e-6)


def test_beta_zero_is_the_proxy_loss_alone():
    h, y = _grad_case()
    with_pairs = HyP2Loss(4, 5, -0.2, beta=0.5)
    without = HyP2Loss(4, 5, -0.2, beta=0.0)
    full, proxy_only = with_pairs(h, y), without(h, y)
    assert with_pairs.components["pair"] > 0
    assert proxy_only.item() == pytest.approx(
        (without.components["proxy_pos"] + without.components["proxy_neg"]).item(), rel=1e-12)
    assert proxy_only.item() == pytest.approx(
        full.item() - 0.5 * with_pairs.components["pair"].item(), rel=1e-12)


def test_inputs_not_mutated():
    h, y = _grad_case()
    h0, y0 = h.clone(), y.clone()
    HyP2Loss(4, 5, 0.0)(h, y)
    assert torch.equal(h, h0) and torch.equal(y, y0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=2.0), "num_classes"),
    (dict(num_classes=True), "num_classes"),
    (dict(num_bits=0), "num_bits"),
    (dict(num_bits=1.5), "num_bits"),
    (dict(zeta=1.5), "zeta"),
    (dict(zeta=-1.01), "zeta"),
    (dict(zeta=float("nan")), "zeta"),
    (dict(zeta=float("inf")), "zeta"),
    (dict(zeta="0"), "zeta"),
    (dict(zeta=None), "zeta"),
    (dict(zeta=True), "zeta"),
    (dict(beta=-0.1), "beta"),
    (dict(beta=float("nan")), "beta"),
    (dict(beta=float("inf")), "beta"),
    (dict(seed=1.5), "seed"),
])
def test_constructor_rejects(kwargs, match):
    args = dict(num_classes=3, num_bits=4, zeta=0.0, beta=0.5, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        HyP2Loss(**args)


def test_constructor_accepts_edges():
    HyP2Loss(1, 1, -1.0, beta=0.0)
    HyP2Loss(3, 4, 1, beta=2)
