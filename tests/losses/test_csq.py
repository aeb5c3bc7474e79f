"""Tests of hyp2.losses.csq.CSQLoss: hash centres, multi-label centres, reference, hand case."""
from __future__ import annotations

import math

import pytest
import torch

from hyp2.losses import build_loss
from hyp2.losses.csq import CSQLoss, hash_centres

from .conftest import (
    ALL_ZERO, DEGENERATE_BATCHES, GRAD_LABELS_3, PATTERNS, assert_constructor_rejects,
    assert_finite_gradients, assert_gradcheck, assert_matches,
    assert_state_round_trip, built_by_registry, degenerate_outputs, dense_batch, dtype_rounds,
    pattern_labels,
)


# ---------------------------------------------------------------- naive reference


def reference_targets(y, centres, tie_break):
    """Each sample's ±1 centre with loops: sign of the centroid, ties from tie_break."""
    y, centres, tie_break = y.int().tolist(), centres.tolist(), tie_break.tolist()
    out = []
    for row in y:
        mine = [c for c, flag in zip(centres, row) if flag]
        target = []
        for k in range(len(tie_break)):
            mean = sum(c[k] for c in mine) / len(mine) if mine else 0.0
            target.append(1.0 if mean > 0 else -1.0 if mean < 0 else tie_break[k])
        out.append(target)
    return out


def reference(h, y, centres, tie_break, quant_weight=1e-4):
    """CSQ with loops in Python floats: (central, quant, loss)."""
    targets = reference_targets(y, centres, tie_break)
    h, y = h.double().tolist(), y.int().tolist()
    bce = []
    for row, labels, target in zip(h, y, targets):
        if not any(labels):
            continue                                    # no centre: not in the central term
        terms = []
        for v, c in zip(row, target):
            p, t = (math.tanh(v) + 1) / 2, (c + 1) / 2
            terms.append(-(t * math.log(p) + (1 - t) * math.log(1 - p)))
        bce.append(sum(terms) / len(terms))
    central = sum(bce) / len(bce) if bce else 0.0
    flat = [v for row in h for v in row]
    quant = sum(math.log(math.cosh(abs(math.tanh(v)) - 1)) for v in flat) / len(flat)
    return central, quant, central + quant_weight * quant


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("batch", [1, 2, 9])
@pytest.mark.parametrize("classes,bits", [(6, 8), (6, 12), (12, 8)])   # hadamard, bernoulli, ±H
def test_matches_reference(pattern, batch, classes, bits):
    g = torch.Generator().manual_seed(23 * batch + bits + classes)
    y = pattern_labels(pattern, batch, classes, g, sparse=0.3)
    loss = CSQLoss(classes, bits, quant_weight=0.5, seed=batch)
    for dtype, tol in dtype_rounds():
        h = (1.5 * torch.randn(batch, bits, generator=g, dtype=torch.float64)).to(dtype)
        central, quant, total = reference(h, y, loss.centres, loss.tie_break, 0.5)
        assert_matches(loss(h, y), loss, dtype, tol, total, central=central, quant=quant)


# ---------------------------------------------------------------- hash centres


def _hamming(a, b):
    return int((a != b).sum())


def test_hadamard_centres_when_they_fit():
    centres, method = hash_centres(6, 16, seed=0)
    assert method == "hadamard" and centres.shape == (6, 16)
    # rows of a Hadamard matrix: pairwise orthogonal, so exactly K/2 = 8 bits apart
    assert torch.equal(centres @ centres.T, 16 * torch.eye(6))
    # C ≤ 2K: the rows of -H follow the rows of H
    centres, method = hash_centres(20, 16, seed=0)
    assert method == "hadamard"
    assert torch.equal(centres[16:], -centres[:4])
    # the Sylvester construction of H_4, written out
    assert torch.equal(hash_centres(4, 4, seed=0)[0], torch.tensor(
        [[1., 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]))


@pytest.mark.parametrize("classes,bits", [(20, 48), (33, 16), (80, 12), (1, 12)])
def test_bernoulli_centres_otherwise(classes, bits):
    state = torch.get_rng_state()
    a, method = hash_centres(classes, bits, seed=4)
    assert torch.equal(torch.get_rng_state(), state)          # the global RNG is untouched
    assert method == "bernoulli" and a.shape == (classes, bits)
    assert set(a.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(a, hash_centres(classes, bits, seed=4)[0])
    assert not torch.equal(a, hash_centres(classes, bits, seed=5)[0])


def test_bernoulli_centres_are_spread():
    # best of 100 draws: for 20 centres of 48 bits a single Bernoulli draw has a minimum
    # pairwise distance of 13-16 in 9 draws out of 10 (measured over 1000 draws; 17 or more in
    # about 1 in 20), the kept draw reaches 17 or more
    for seed in range(3):
        centres, _ = hash_centres(20, 48, seed=seed)
        dist = [_hamming(centres[i], centres[j]) for i in range(20) for j in range(i + 1, 20)]
        assert min(dist) >= 17
        assert 20 <= sum(dist) / len(dist) <= 28                # still about K/2 on average


def test_centres_and_tie_break_are_buffers_reproducible_from_seed():
    a, b, c = CSQLoss(20, 48, seed=1), CSQLoss(20, 48, seed=1), CSQLoss(20, 48, seed=2)
    assert set(a.state_dict()) == {"centres", "tie_break"}
    assert torch.equal(a.centres, b.centres) and torch.equal(a.tie_break, b.tie_break)
    assert not torch.equal(a.centres, c.centres) and not torch.equal(a.tie_break, c.tie_break)
    assert a.param_groups(0.02) == []                          # fixed, not learnable
    # Hadamard centres do not depend on the seed; the tie-break vector still does
    d, e = CSQLoss(10, 16, seed=1), CSQLoss(10, 16, seed=2)
    assert torch.equal(d.centres, e.centres) and not torch.equal(d.tie_break, e.tie_break)


def test_state_dict_round_trip_restores_centres():
    a, b = CSQLoss(20, 48, seed=1), CSQLoss(20, 48, seed=9)
    assert_state_round_trip(a, b, *dense_batch(5, 48, 20))
    assert torch.equal(a.centres, b.centres) and torch.equal(a.tie_break, b.tie_break)


# ---------------------------------------------------------------- multi-label centres


def test_multi_label_centre_is_the_binarised_centroid():
    # H_4 centres c0 = (1,1,1,1), c1 = (1,-1,1,-1), c2 = (1,1,-1,-1).
    # labels {0}: c0.  {0, 1}: centroid (1, 0, 1, 0) -> bits 1 and 3 are ties -> tie_break.
    # {0, 1, 2}: centroid (3, 1, 1, -1)/3 -> (1, 1, 1, -1).  {}: everything from tie_break.
    loss = CSQLoss(3, 4, seed=0)
    loss.tie_break.copy_(torch.tensor([-1.0, 1.0, -1.0, -1.0]))
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.float64)
    expected = torch.tensor([[1., 1, 1, 1], [1, 1, 1, -1], [1, 1, 1, -1], [-1, 1, -1, -1]],
                            dtype=torch.float64)
    assert torch.equal(loss.targets(y), expected)


# ---------------------------------------------------------------- hand-computed case


def test_hand_case():
    # K = 2, C = 2: centres are the rows of H_2, c0 = (1, 1), c1 = (1, -1).
    # Sample 0, label {0}: h0 = (atanh 0.6, 0) -> u0 = (0.6, 0), p = (u+1)/2 = (0.8, 0.5),
    #   target bits (1, 1): BCE = (-log 0.8 - log 0.5) / 2 = (log 1.25 + log 2) / 2.
    # Sample 1 has no label: no centre, so it is left out of the central term (mean over 1).
    #   h1 = (0, 0) -> u1 = (0, 0).
    # quantization over all 4 entries: log cosh(|u| - 1) = log cosh 0.4, log cosh 1 (×3).
    h = torch.tensor([[math.atanh(0.6), 0.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1, 0], [0, 0]])
    loss = CSQLoss(2, 2, quant_weight=0.5)
    value = loss(h, y)
    central = (math.log(1.25) + math.log(2)) / 2
    quant = (math.log(math.cosh(0.4)) + 3 * math.log(math.cosh(1.0))) / 4
    assert loss.components["central"].item() == pytest.approx(central, rel=1e-12)
    assert loss.components["quant"].item() == pytest.approx(quant, rel=1e-12)
    assert value.item() == pytest.approx(central + 0.5 * quant, rel=1e-12)


# ---------------------------------------------------------------- gradients, degenerate batches


def test_gradcheck():
    assert_gradcheck(CSQLoss(3, 4, quant_weight=0.3).double(), GRAD_LABELS_3, bits=4)


@pytest.mark.parametrize("y", DEGENERATE_BATCHES + [ALL_ZERO])
def test_degenerate_batches_are_finite_with_gradients(y):
    h = degenerate_outputs(len(y))
    assert_finite_gradients(CSQLoss(3, 6)(h, y), h)


def test_saturated_outputs_stay_finite():
    # tanh(±60) is ±1 in floating point: BCE on probabilities would take log 0
    h = torch.tensor([[60.0, -60.0], [-60.0, 60.0]], requires_grad=True)
    value = CSQLoss(2, 2)(h, torch.tensor([[1, 0], [0, 1]]))
    assert_finite_gradients(value, h, nonzero=False)
    assert value.item() > 30                                    # one bit is badly wrong


# ---------------------------------------------------------------- registry, errors


def test_registry_builds_with_project_options():
    loss = built_by_registry("csq", CSQLoss)
    assert loss.quant_weight == 1e-4
    assert loss.centre_method == "bernoulli"
    assert torch.equal(loss.centres, CSQLoss(20, 48, seed=0).centres)
    assert build_loss("csq", num_classes=20, num_bits=32).centre_method == "hadamard"


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"), (dict(num_bits=0), "num_bits"),
    (dict(quant_weight=-1e-4), "quant_weight"), (dict(seed=0.5), "seed"),
    (dict(seed=None), "seed"),
])
def test_constructor_rejects(kwargs, match):
    assert_constructor_rejects(CSQLoss, kwargs, match)
