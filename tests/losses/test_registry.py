"""Tests of hyp2.losses.registry: registration in LOSSES, build_loss, parsing --loss_opt, the
weighted sum the base class owns, and the option tables of docs/losses.md kept in step with the
declarations."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import torch

from hyp2.errors import UserError
from hyp2.losses import LOSSES, HashLoss, Option, build_loss

DOCS = Path(__file__).resolve().parents[2] / "docs" / "losses.md"


@pytest.fixture
def scratch_names():
    """Names registered by a test, removed from the registry afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        LOSSES.unregister(name)


def test_every_loss_in_the_package_is_registered():
    # registration order: HyP² first (the package imports it first), then the baselines' modules
    assert LOSSES.names() == ["hyp2", "csq", "dcilh", "dhn", "dpsh", "hashnet", "idhn", "orthohash", "proxy_anchor"]
    assert LOSSES.get("dpsh").options[0].name == "eta" and LOSSES.get("dpsh").options[0].default == 10.0


@pytest.mark.parametrize("call", [
    lambda: build_loss("nope", 3, 4), lambda: LOSSES.get("nope")])
def test_unknown_loss_names_the_known_ones(call):
    with pytest.raises(UserError, match=r"^unknown loss 'nope'; known losses: hyp2, csq, dcilh, dhn, dpsh, ") as e:
        call()
    assert isinstance(e.value, ValueError)  # what a Python caller expects of a bad argument


def test_build_loss_checks_sizes_before_deriving_defaults():
    # HashNet's α = 10/K must not divide by K = 0, HyP²'s ζ not look up C = 0
    with pytest.raises(ValueError, match="^hashnet: num_bits must be an integer >= 1, got 0$"):
        build_loss("hashnet", 3, 0)
    with pytest.raises(ValueError, match="^hyp2: num_classes must be an integer >= 1, got 0$"):
        build_loss("hyp2", 0, 8)
    with pytest.raises(ValueError, match="^dpsh: seed must be an integer, got 0.5$"):
        build_loss("dpsh", 3, 8, seed=0.5)


def test_options_must_be_a_mapping():
    with pytest.raises(TypeError, match="dpsh: options must be a mapping"):
        build_loss("dpsh", 3, 4, options=["eta=1"])
    assert build_loss("dpsh", 3, 4, options=None).hparams == {"eta": 10.0}


def test_parse_then_build_is_the_command_line_path():
    options = LOSSES.get("dpsh").parse(["eta=2.5"])
    assert options == {"eta": 2.5}
    assert build_loss("dpsh", 3, 4, options=options).eta == 2.5
    options = LOSSES.get("orthohash").parse(["codebook=hadamard", "margin=0"])
    loss = build_loss("orthohash", 3, 8, options=options)
    assert loss.codebook_method == "hadamard" and loss.margin == 0.0
    assert loss.hparams == {"scale": 8.0, "margin": 0.0, "quant_weight": 0.0, "codebook": "hadamard"}


def test_build_loss_takes_options_only_as_a_mapping():
    with pytest.raises(TypeError):
        build_loss("hyp2", 20, 48, beta=0.2)  # noqa - the former keyword is gone: options={"beta": 0.2}
    assert build_loss("hyp2", 20, 48, seed=3, options={"beta": 0.2}).hparams == {"zeta": 0.0, "beta": 0.2}


def test_register_loss_refuses_what_it_cannot_serve(scratch_names):
    with pytest.raises(TypeError, match="expected a HashLoss subclass"):
        LOSSES.register("scratch_fn", "a function")(lambda c, k: None)
    with pytest.raises(ValueError, match="loss 'dpsh' is already registered; choose another name"):
        LOSSES.register("dpsh", "again")(type("Again", (HashLoss,), {}))
    with pytest.raises(ValueError, match="weights name options it does not declare: gamma"):
        LOSSES.register("scratch_weights", "bad")(type("W", (HashLoss,), {"weights": {"a": "gamma"}}))
    for options, bad in (((Option("seed", 1, "m", "s"),), "seed"),
                         ((Option("w", 1.0, "m", "s"), Option("w", 2.0, "m", "s")), "w")):
        with pytest.raises(ValueError, match=f"option names must be unique and not one of num_classes, "
                                             f"num_bits, seed; got {bad}$"):
            LOSSES.register("scratch_bad", "bad")(type("Bad", (HashLoss,), {"options": options}))
    assert not {"scratch_fn", "scratch_bad", "scratch_weights"} & set(LOSSES.names())


def test_a_registered_class_gets_its_name_and_builds(scratch_names):
    @LOSSES.register("scratch_ok", "fine")
    class Fine(HashLoss):
        options = (Option("w", 1.0, "a weight", "made up", low=0.0),)
        weights = {"all": "w"}

        def terms(self, h, labels):
            return {"all": labels.sum() * h.sum()}

    scratch_names.append("scratch_ok")
    assert Fine.name == "scratch_ok" and "scratch_ok" in LOSSES.names()
    loss = build_loss("scratch_ok", 3, 4, seed=7, options={"w": 2})
    assert (loss.w, loss.seed, loss.hparams) == (2.0, 7, {"w": 2.0})
    assert repr(loss) == "Fine(num_classes=3, num_bits=4, w=2.0)"
    with pytest.raises(ValueError, match=r"^scratch_ok: unknown option 'v'; valid: w=1.0 \(a weight\)$"):
        Fine(3, 4, v=1)                                         # the class itself checks too


def test_the_base_class_sums_the_weighted_terms_and_records_every_one(scratch_names):
    @LOSSES.register("scratch_sum", "terms a, b summed, c recorded")
    class Sum(HashLoss):
        options = (Option("w", 0.5, "weight of b", "made up", low=0.0),)
        weights = {"a": 1.0, "b": "w"}

        def terms(self, h, labels):
            return {"a": h.sum(), "b": (h * h).sum(), "c": 3}

    scratch_names.append("scratch_sum")
    h = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    loss = build_loss("scratch_sum", 3, 2, options={"w": 0.25})
    value = loss(h, torch.tensor([[1, 0, 0], [0, 1, 1]]))
    assert value.item() == 5.0 + 0.25 * 15.0
    assert {k: v.item() for k, v in loss.components.items()} == {"a": 5.0, "b": 15.0, "c": 3.0}
    assert all(not v.requires_grad for v in loss.components.values())
    value.backward()
    assert h.grad.tolist() == [[1.5, 2.0], [2.5, 0.5]]                # 1 + 0.25 * 2h


@pytest.mark.parametrize("terms, message", [
    (lambda h: h.sum(), "terms() must return a dict with the terms ['a'], got Tensor"),
    (lambda h: {"b": h.sum()}, "terms() must return a dict with the terms ['a'], got ['b']"),
    (lambda h: {"a": h.sum(dim=0)}, "term 'a' must be a scalar floating tensor, got torch.float32 of shape (2,)"),
    (lambda h: {"a": "x"}, "term 'a' must be a scalar tensor or a number, got str"),
])
def test_terms_that_break_the_contract_are_one_line_naming_the_loss(scratch_names, terms, message):
    @LOSSES.register("scratch_broken", "broken terms")
    class Broken(HashLoss):
        weights = {"a": 1.0}

        def terms(self, h, labels):
            return terms(h)

    scratch_names.append("scratch_broken")
    with pytest.raises(ValueError) as e:
        build_loss("scratch_broken", 3, 2)(torch.ones(2, 2), torch.zeros(2, 3))
    assert str(e.value) == f"scratch_broken: {message}"


def _docs_section(name: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"^## [^\n]*— `{name}`\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/losses.md has no section ending in — `{name}`"
    return match.group(1)


@pytest.mark.parametrize("name", LOSSES.names())
def test_docs_list_every_option_with_its_default(name):
    section = _docs_section(name)
    for option in LOSSES.get(name).options:
        assert f"| `{option.name}` | {option.shown_default} |" in section, option.name
