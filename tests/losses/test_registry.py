"""Tests of hyp2.losses.registry: registration, build_loss, parse_loss_options, and the option
tables of docs/losses.md kept in step with the declarations."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from hyp2.losses import HashLoss, Option, build_loss, loss_names, loss_spec, parse_loss_options
from hyp2.losses import register_loss
from hyp2.losses.registry import _LOSSES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "losses.md"


@pytest.fixture
def scratch_names():
    """Names registered by a test, removed from the registry afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        _LOSSES.pop(name, None)


def test_every_loss_in_the_package_is_registered():
    assert loss_names() == ["csq", "dhn", "dpsh", "hashnet", "hyp2", "idhn", "orthohash", "proxy_anchor"]
    assert loss_spec("dpsh").options[0].name == "eta" and loss_spec("dpsh").options[0].default == 10.0


@pytest.mark.parametrize("call", [
    lambda: build_loss("nope", 3, 4), lambda: loss_spec("nope"), lambda: parse_loss_options("nope", [])])
def test_unknown_loss_names_the_known_ones(call):
    with pytest.raises(ValueError, match=r"^unknown loss 'nope'; known losses: csq, dhn, dpsh, hashnet, hyp2, "):
        call()


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
    options = parse_loss_options("dpsh", ["eta=2.5"])
    assert options == {"eta": 2.5}
    assert build_loss("dpsh", 3, 4, options=options).eta == 2.5
    options = parse_loss_options("orthohash", ["codebook=hadamard", "margin=0"])
    loss = build_loss("orthohash", 3, 8, options=options)
    assert loss.codebook_method == "hadamard" and loss.margin == 0.0
    assert loss.hparams == {"scale": 8.0, "margin": 0.0, "quant_weight": 0.0, "codebook": "hadamard"}


def test_build_loss_takes_options_only_as_a_mapping():
    with pytest.raises(TypeError):
        build_loss("hyp2", 20, 48, beta=0.2)  # noqa - the former keyword is gone: options={"beta": 0.2}
    assert build_loss("hyp2", 20, 48, seed=3, options={"beta": 0.2}).hparams == {"zeta": 0.0, "beta": 0.2}


def test_register_loss_refuses_what_it_cannot_serve(scratch_names):
    with pytest.raises(TypeError, match="expected a HashLoss subclass"):
        register_loss("scratch_fn", "a function")(lambda c, k: None)
    with pytest.raises(ValueError, match="loss 'dpsh' is registered twice"):
        register_loss("dpsh", "again")(type("Again", (HashLoss,), {}))
    for options, bad in (((Option("seed", 1, "m", "s"),), "seed"),
                         ((Option("w", 1.0, "m", "s"), Option("w", 2.0, "m", "s")), "w")):
        with pytest.raises(ValueError, match=f"option names must be unique and not one of num_classes, "
                                             f"num_bits, seed; got {bad}$"):
            register_loss("scratch_bad", "bad")(type("Bad", (HashLoss,), {"options": options}))
    assert "scratch_fn" not in loss_names() and "scratch_bad" not in loss_names()


def test_a_registered_class_gets_its_name_and_builds(scratch_names):
    @register_loss("scratch_ok", "fine")
    class Fine(HashLoss):
        options = (Option("w", 1.0, "a weight", "made up", low=0.0),)

        def forward(self, h, y):
            return self.w * self.check_batch(h, y).sum() * h.sum()

    scratch_names.append("scratch_ok")
    assert Fine.name == "scratch_ok" and "scratch_ok" in loss_names()
    loss = build_loss("scratch_ok", 3, 4, seed=7, options={"w": 2})
    assert (loss.w, loss.seed, loss.hparams) == (2.0, 7, {"w": 2.0})
    assert repr(loss) == "Fine(num_classes=3, num_bits=4, w=2.0)"
    with pytest.raises(ValueError, match=r"^scratch_ok: unknown option 'v'; valid: w=1.0 \(a weight\)$"):
        Fine(3, 4, v=1)                                         # the class itself checks too


def _docs_section(name: str) -> str:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(rf"^## [^\n]*— `{name}`\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/losses.md has no section ending in — `{name}`"
    return match.group(1)


@pytest.mark.parametrize("name", loss_names())
def test_docs_list_every_option_with_its_default(name):
    section = _docs_section(name)
    for option in loss_spec(name).options:
        assert f"| `{option.name}` | {option.shown_default} |" in section, option.name
