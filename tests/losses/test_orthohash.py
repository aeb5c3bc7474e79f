"""Tests of hyp2.losses.orthohash.OrthoHashLoss: loop reference, hand case, codebooks."""
from __future__ import annotations

import math

import pytest
import torch

from hyp2.losses.orthohash import OrthoHashLoss, make_codebook

from .conftest import (
    DEGENERATE_BATCHES, GRAD_LABELS_3, PATTERNS, assert_constructor_rejects,
    assert_finite_gradients, assert_gradcheck, assert_matches,
    assert_state_round_trip, built_by_registry, degenerate_outputs, dense_batch, dtype_rounds,
    pattern_labels,
)


# ---------------------------------------------------------------- naive reference


def _cos(a, b):
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def reference(h, y, codebook, scale=8.0, margin=0.2, quant_weight=0.0):
    """OrthoHash with loops in Python floats: (ce, quant, loss)."""
    h, y, codebook = h.double().tolist(), y.int().tolist(), codebook.double().tolist()
    ces = []
    for row, labels in zip(h, y):
        if not any(labels):
            continue                                    # no target: left out of the CE
        logits = [scale * (_cos(row, b) - margin * t) for b, t in zip(codebook, labels)]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(v - top) for v in logits))
        n = sum(labels)
        ces.append(-sum(t / n * (v - log_z) for v, t in zip(logits, labels)))
    ce = sum(ces) / len(ces) if ces else 0.0
    quant = sum(1 - _cos(row, [1.0 if v >= 0 else -1.0 for v in row]) for row in h) / len(h)
    return ce, quant, ce + quant_weight * quant


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("bits,codebook", [(8, "hadamard"), (12, "bernoulli"), (48, "bernoulli")])
def test_matches_reference(pattern, batch, bits, codebook):
    g = torch.Generator().manual_seed(37 * batch + bits)
    y = pattern_labels(pattern, batch, 6, g)
    loss = OrthoHashLoss(6, bits, scale=5.0, margin=0.3, quant_weight=0.7, codebook=codebook,
                         seed=batch)
    for dtype, tol in dtype_rounds():
        h = torch.randn(batch, bits, generator=g, dtype=torch.float64).to(dtype)
        ce, quant, total = reference(h, y, loss.codebook, 5.0, 0.3, 0.7)
        assert_matches(loss(h, y), loss, dtype, tol, total, ce=ce, quant=quant)


# ---------------------------------------------------------------- hand-computed case


def test_hand_case():
    # K = 2, C = 2, Hadamard codebook b0 = (1, 1), b1 = (1, -1); s = 2, m = 0.5, λ = 0.5.
    # h0 = (1, 0), labels {0}: cos = (1/√2, 1/√2); logits = 2(1/√2 - .5), 2/√2 differ by 1,
    #   the true class being the smaller: CE = log(1 + e^1).
    # h1 = (0, 1), labels {0, 1}: cos = (1/√2, -1/√2); logits l0 = 2(1/√2 - .5) = √2 - 1,
    #   l1 = 2(-1/√2 - .5) = -√2 - 1; target (½, ½): CE = logsumexp(l) - (l0 + l1)/2
    #   = logsumexp(l) + 1.
    # quant: sign(h0) = (1, 1) (sign 0 -> +1), cos(h0, (1,1)) = 1/√2; the same for h1.
    loss = OrthoHashLoss(2, 2, scale=2.0, margin=0.5, quant_weight=0.5, codebook="hadamard")
    value = loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
                 torch.tensor([[1, 0], [1, 1]]))
    l0, l1 = math.sqrt(2) - 1, -math.sqrt(2) - 1
    ce1 = math.log(math.exp(l0) + math.exp(l1)) + 1
    ce = (math.log(1 + math.e) + ce1) / 2
    quant = 1 - 1 / math.sqrt(2)
    assert loss.components["ce"].item() == pytest.approx(ce, rel=1e-12)
    assert loss.components["quant"].item() == pytest.approx(quant, rel=1e-12)
    assert value.item() == pytest.approx(ce + 0.5 * quant, rel=1e-12)


def test_single_label_is_the_cosface_cross_entropy():
    g = torch.Generator().manual_seed(3)
    h, labels = torch.randn(6, 16, generator=g), torch.randint(4, (6,), generator=g)
    loss = OrthoHashLoss(4, 16)
    value = loss(h, torch.nn.functional.one_hot(labels, 4))
    cos = torch.nn.functional.normalize(h, dim=1) @ torch.nn.functional.normalize(
        loss.codebook, dim=1).T
    logits = 8.0 * (cos - 0.2 * torch.nn.functional.one_hot(labels, 4))
    assert value.item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


# ---------------------------------------------------------------- codebooks


def test_bernoulli_codebook_reproducible_from_seed():
    state = torch.get_rng_state()
    a, b, c = (OrthoHashLoss(20, 48, seed=s).codebook for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (20, 48) and set(a.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_hadamard_codebook_is_orthogonal():
    book = make_codebook(10, 16, "hadamard", seed=0)
    assert torch.equal(book @ book.T, 16 * torch.eye(10))
    with pytest.raises(ValueError, match="power of two"):
        make_codebook(10, 12, "hadamard", seed=0)
    with pytest.raises(ValueError, match="C <= K"):
        make_codebook(20, 16, "hadamard", seed=0)


def test_codebook_is_a_buffer_and_round_trips():
    a, b = OrthoHashLoss(20, 48, seed=1), OrthoHashLoss(20, 48, seed=2)
    assert set(a.state_dict()) == {"codebook"} and a.param_groups(0.02) == []
    assert_state_round_trip(a, b, *dense_batch(4, 48, 20))
    assert torch.equal(a.codebook, b.codebook)


# ---------------------------------------------------------------- gradients, degenerate batches


def test_gradcheck():
    assert_gradcheck(OrthoHashLoss(3, 4, quant_weight=0.5).double(), GRAD_LABELS_3, bits=4)


@pytest.mark.parametrize("y", DEGENERATE_BATCHES)
def test_degenerate_batches_are_finite_with_gradients(y):
    h = degenerate_outputs(len(y))
    assert_finite_gradients(OrthoHashLoss(3, 6)(h, y), h)


def test_unlabelled_batch_is_zero_without_quantization():
    h = torch.randn(3, 6, requires_grad=True)
    loss = OrthoHashLoss(3, 6)
    value = loss(h, torch.zeros(3, 3))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(h.grad).all()


# ---------------------------------------------------------------- registry, errors


def test_registry_builds_with_project_options():
    loss = built_by_registry("orthohash", OrthoHashLoss, seed=4)
    assert (loss.scale, loss.margin, loss.quant_weight, loss.codebook_method) == \
        (8.0, 0.2, 0.0, "bernoulli")
    assert torch.equal(loss.codebook, OrthoHashLoss(20, 48, seed=4).codebook)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"), (dict(num_bits=0), "num_bits"),
    (dict(scale=0.0), "scale"), (dict(margin=-0.1), "margin"),
    (dict(quant_weight=-1.0), "quant_weight"), (dict(codebook="gaussian"), "codebook"),
    (dict(codebook="hadamard", num_bits=6), "power of two"), (dict(seed=1.0), "seed"),
])
def test_constructor_rejects(kwargs, match):
    assert_constructor_rejects(OrthoHashLoss, kwargs, match)
