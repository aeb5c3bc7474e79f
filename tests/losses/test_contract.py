"""The contract every registered loss keeps, checked for each entry of the registry.

A loss registered later — in the package or from a module of its own — is checked without a line
added here: see ``test_a_loss_from_outside_the_package_gets_the_contract``. What each loss
computes is tested against its reference in its own file; this file checks what the trainer,
the checkpoint and the command line rely on.
"""
from __future__ import annotations

import importlib
import inspect
import io
import json
import sys

import pytest
import torch

from hyp2.losses import LOSSES, HashLoss, build_loss
from hyp2.losses.options import show

C, K = 4, 8
# shared labels, multi-label samples with nothing in common (HyP²'s pair term) and an unlabelled one
LABELS = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
NO_POSITIVE_PAIR = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])


def outputs(batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, K) seeded outputs requiring grad."""
    h = torch.randn(batch, K, generator=torch.Generator().manual_seed(batch), dtype=torch.float64)
    return h.to(dtype).requires_grad_()


def trainable(loss: HashLoss) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in loss.named_parameters() if p.requires_grad]


def backward_is_finite(loss: HashLoss, h: torch.Tensor, y: torch.Tensor, nonzero: bool) -> None:
    value = loss(h, y)
    assert value.dim() == 0 and value.dtype == h.dtype and torch.isfinite(value), value
    value.backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()
    assert not nonzero or h.grad.abs().sum() > 0
    for name, p in trainable(loss):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert not nonzero or p.grad.abs().sum() > 0, name


def assert_one_line(excinfo: pytest.ExceptionInfo, name: str, *parts: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"{name}: "), message
    for part in parts:
        assert part in message, (part, message)


def valid_keys(name: str) -> list[str]:
    """What an error listing the valid keys must show: each ``key=default``."""
    return [f"{o.name}={o.shown_default}" for o in LOSSES.get(name).options]


def other_value(option, value):
    """A valid value of ``option`` other than ``value``, or None."""
    if option.type is bool:
        return not value
    if option.type is str:
        return next((c for c in option.choices if c != value), None)
    step = 1 if option.type is int else 0.1
    for candidate in (value * 2, value + step, value / 2 if option.type is float else value - 1):
        try:
            if candidate != value:
                return option.check("test", candidate)
        except ValueError:
            continue
    return None


# ---------------------------------------------------------------- the checks


def check_registered(name: str) -> None:
    spec = LOSSES.get(name)
    loss = build_loss(name, C, K)
    assert isinstance(loss, HashLoss) and type(loss) is spec.cls and loss.name == name
    assert spec.description and "\n" not in spec.description
    for option in spec.options:
        assert option.help and option.source and "\n" not in option.help
    # a default written in the constructor's signature too must be the declared one
    signature = inspect.signature(spec.cls.__init__).parameters
    for option in spec.options:
        declared = signature.get(option.name)
        if declared is not None and declared.default is not inspect.Parameter.empty:
            assert declared.default == option.default, option.name


def check_scalar_with_gradients(name: str) -> None:
    loss = build_loss(name, C, K, seed=1)
    backward_is_finite(loss, outputs(len(LABELS)), LABELS, nonzero=True)
    # the trainer optimises what param_groups hands it: every trainable parameter, once
    grouped = [id(p) for group in loss.param_groups(0.02) for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for _, p in trainable(loss))


def check_float32_and_float64(name: str) -> None:
    values = {}
    # (loss's dtype, outputs' dtype): the trainer's float32, float64 outputs, a loss moved with .to
    for module_dtype, dtype in ((torch.float32, torch.float32), (torch.float32, torch.float64),
                                (torch.float64, torch.float64)):
        loss = build_loss(name, C, K, seed=1).to(module_dtype)
        h = outputs(len(LABELS), dtype)
        backward_is_finite(loss, h, LABELS, nonzero=True)
        assert h.grad.dtype == dtype
        values[module_dtype, dtype] = loss(h, LABELS).item()
    for value in values.values():
        assert value == pytest.approx(values[torch.float64, torch.float64], rel=1e-4, abs=1e-5)


def check_degenerate_batches(name: str) -> None:
    for y in (LABELS[:1], NO_POSITIVE_PAIR, torch.zeros(3, C, dtype=torch.long)):
        backward_is_finite(build_loss(name, C, K, seed=1), outputs(len(y)), y, nonzero=False)


def check_components_detached(name: str) -> None:
    loss = build_loss(name, C, K, seed=1)
    loss(outputs(len(LABELS)), LABELS)
    assert isinstance(loss.components, dict)
    for key, part in loss.components.items():
        assert torch.is_tensor(part) and part.dim() == 0 and torch.isfinite(part), key
        assert not part.requires_grad and part.grad_fn is None, key


def check_state_dict_round_trip(name: str) -> None:
    a, b = build_loss(name, C, K, seed=1), build_loss(name, C, K, seed=2)
    h = outputs(len(LABELS)).detach()
    a(h, LABELS)
    with torch.no_grad():            # move all of a's state away from a fresh loss's
        for t in [*a.parameters(), *a.buffers()]:
            if t.is_floating_point():
                t.neg_()
            else:
                t.add_(1000)         # e.g. HashNet's step: another β
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)  # as a checkpoint does
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(a(h, LABELS), b(h, LABELS))


def check_hparams_round_trip(name: str) -> None:
    spec = LOSSES.get(name)
    loss = build_loss(name, C, K, seed=3)
    choices = [{}] + [{o.name: v} for o in spec.options
                      if (v := other_value(o, loss.hparams[o.name])) is not None]
    h = outputs(len(LABELS)).detach()
    for options in choices:
        loss = build_loss(name, C, K, seed=3, options=options)
        record = json.loads(json.dumps(loss.hparams))      # as the run's JSON holds them
        assert record == loss.hparams and list(record) == [o.name for o in spec.options]
        assert options.items() <= record.items()
        again = build_loss(name, C, K, seed=3, options=record)
        assert again.hparams == record and repr(again) == repr(loss)
        again.load_state_dict(loss.state_dict())
        assert torch.equal(again(h, LABELS), loss(h, LABELS))
        # what --loss_opt would say for these values parses back to them
        assert LOSSES.get(name).parse([f"{k}={show(v)}" for k, v in record.items()]) == record


def check_option_errors(name: str) -> None:
    keys, resolved = valid_keys(name), build_loss(name, C, K).hparams
    with pytest.raises(ValueError) as e:
        build_loss(name, C, K, options={"no_such_option": 1.0})
    assert_one_line(e, name, "unknown option 'no_such_option'", *keys)
    for option in LOSSES.get(name).options:
        bad = "x" if option.type is not str else "no-such-choice"
        with pytest.raises(ValueError) as e:
            build_loss(name, C, K, options={option.name: bad})
        assert_one_line(e, name, option.name, *keys)
    for pairs, expected in ((["no_equals_sign"], "not KEY=VALUE"), (["no_such_option=1"], "unknown option")):
        with pytest.raises(ValueError) as e:
            LOSSES.get(name).parse(pairs)
        assert_one_line(e, name, expected, *keys)
    for option in LOSSES.get(name).options:
        if option.type is not str:
            with pytest.raises(ValueError) as e:
                LOSSES.get(name).parse([f"{option.name}=abc"])
            assert_one_line(e, name, f"{option.name}='abc'", *keys)
        with pytest.raises(ValueError) as e:
            LOSSES.get(name).parse([f"{option.name}={show(resolved[option.name])}"] * 2)
        assert_one_line(e, name, "given twice")


BAD_BATCHES = [
    (lambda: torch.randn(4), lambda: torch.zeros(4, C), rf"\(B, K={K}\)"),
    (lambda: torch.randn(2, K + 1), lambda: torch.zeros(2, C), rf"\(B, K={K}\)"),
    (lambda: torch.randn(2, 2, K), lambda: torch.zeros(2, C), rf"\(B, K={K}\)"),
    (lambda: torch.ones(2, K, dtype=torch.long), lambda: torch.zeros(2, C), "floating"),
    (lambda: torch.randn(0, K), lambda: torch.zeros(0, C), "empty batch"),
    (lambda: torch.randn(2, K), lambda: torch.zeros(3, C), rf"\(B=2, C={C}\)"),
    (lambda: torch.randn(2, K), lambda: torch.zeros(2, C + 1), rf"\(B=2, C={C}\)"),
    (lambda: torch.randn(2, K), lambda: torch.zeros(2 * C), rf"\(B=2, C={C}\)"),
    (lambda: torch.randn(2, K), lambda: [[0] * C, [1] * C], rf"\(B=2, C={C}\)"),
    (lambda: torch.randn(2, K), lambda: torch.tensor([[0, 2, 0, 0], [1, 0, 0, 0]]), "0/1"),
    (lambda: torch.randn(2, K), lambda: torch.tensor([[0, -1, 0, 0], [1, 0, 0, 0]]), "0/1"),
    (lambda: torch.randn(2, K), lambda: torch.tensor([[0, 0.5, 0, 0], [1, 0, 0, 0]]), "0/1"),
]


def check_rejects_bad_batches(name: str) -> None:
    loss = build_loss(name, C, K)
    for h, y, match in BAD_BATCHES:
        with pytest.raises(ValueError, match=f"^{name}: .*{match}"):
            loss(h(), y())


CHECKS = [check_registered, check_scalar_with_gradients, check_float32_and_float64,
          check_degenerate_batches, check_components_detached, check_state_dict_round_trip,
          check_hparams_round_trip, check_option_errors, check_rejects_bad_batches]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", LOSSES.names())
def test_contract(name, check):
    check(name)


# ---------------------------------------------------------------- a loss from outside the package

TOY_MODULE = '''
"""Toy losses a researcher might add, in a module of their own."""
import torch
import torch.nn.functional as F

from hyp2.losses import LOSSES, HashLoss, Option


@LOSSES.register("toy_centres", "toy: cosine hinge to learnable class centres")
class ToyCentres(HashLoss):
    options = (
        Option("margin", 0.25, "hinge on cosines to other classes' centres", "made up", low=0.0),
        Option("squash", True, "apply tanh to h first", "made up"),
    )

    def __init__(self, num_classes, num_bits, **options):
        super().__init__(num_classes, num_bits, **options)
        g = torch.Generator().manual_seed(self.seed)
        self.centres = torch.nn.Parameter(torch.randn(num_classes, num_bits, generator=g))

    weights = {"pull": 1.0, "push": 1.0}

    def terms(self, h, labels):
        z = torch.tanh(h) if self.squash else h
        cos = F.normalize(z, dim=1) @ F.normalize(self.centres.to(h.dtype), dim=1).T
        pull = ((1 - cos) * labels).sum() / labels.sum().clamp(min=1)
        push = (F.relu(cos - self.margin) * (1 - labels)).sum() / (1 - labels).sum().clamp(min=1)
        return {"pull": pull, "push": push}


# overrides the call the base class owns, so that it can record undetached components
@LOSSES.register("toy_broken", "toy: NaN without positives, components not detached")
class ToyBroken(HashLoss):
    def forward(self, h, y):
        labels = self.check_batch(h, y)
        # a mean over similar pairs i != j, with no guard for a batch without one
        similar = ((labels @ labels.T) > 0).to(h.dtype) * (1 - torch.eye(len(h), dtype=h.dtype))
        value = ((h @ h.T) * similar).sum() / similar.sum()
        self.components = {"all": value}
        return value
'''


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    """Registers the toy losses by importing a module written outside the package."""
    (tmp_path / "toy_hash_losses.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield importlib.import_module("toy_hash_losses")
    finally:
        sys.modules.pop("toy_hash_losses", None)
        for name in ("toy_centres", "toy_broken"):
            LOSSES.unregister(name)


def test_a_loss_from_outside_the_package_gets_the_contract(toy_module):
    assert {"toy_centres", "toy_broken"} <= set(LOSSES.names())
    for check in CHECKS:
        check("toy_centres")
    assert LOSSES.get("toy_centres").parse(["margin=0.5", "squash=false"]) == \
        {"margin": 0.5, "squash": False}
    assert build_loss("toy_centres", C, K, options={"squash": False}).hparams == \
        {"margin": 0.25, "squash": False}


@pytest.mark.parametrize("check", [check_degenerate_batches, check_components_detached])
def test_the_contract_catches_a_broken_loss(toy_module, check):
    with pytest.raises(AssertionError):
        check("toy_broken")
