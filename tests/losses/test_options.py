"""Tests of hyp2.losses.options: declaring, checking, resolving and parsing loss options."""
from __future__ import annotations

import pytest

from hyp2.losses.options import Derived, Option, describe, parse_options, resolve_options, show

OPTIONS = (
    Option("weight", 0.1, "a weight", "somewhere", low=0.0),
    Option("scale", Derived("10/K", lambda c, k: 10.0 / k), "a scale", "elsewhere", low=0.0, open_low=True),
    Option("steps", 200, "a period", "there", low=1),
    Option("flag", False, "a switch", "here"),
    Option("kind", "a", "a choice", "a paper", choices=("a", "b")),
    Option("share", 0.01, "a fraction", "a table", low=0.0, high=0.5, open_high=True),
)
LISTING = ("valid: weight=0.1 (a weight), scale=10/K (a scale), steps=200 (a period), flag=false (a switch), "
           "kind=a (a choice), share=0.01 (a fraction)")


def resolve(**given):
    return resolve_options("toy", OPTIONS, given, num_classes=3, num_bits=4)


def test_defaults_are_resolved_in_declaration_order():
    assert resolve() == {"weight": 0.1, "scale": 2.5, "steps": 200, "flag": False, "kind": "a",
                         "share": 0.01}
    assert list(resolve(kind="b", weight=1)) == [o.name for o in OPTIONS]


def test_given_values_are_checked_and_normalised():
    values = resolve(weight=1, scale=0.5, steps=3, flag=True, kind="b", share=0.0)
    assert values == {"weight": 1.0, "scale": 0.5, "steps": 3, "flag": True, "kind": "b", "share": 0.0}
    assert type(values["weight"]) is float and type(values["steps"]) is int


@pytest.mark.parametrize("given,expected", [
    (dict(nope=1), "toy: unknown option 'nope'"),
    (dict(weight=-0.1), "toy: weight must be a finite number in [0, inf), got -0.1"),
    (dict(weight=float("nan")), "toy: weight must be a finite number"),
    (dict(weight=True), "toy: weight must be a finite number"),      # a bool is not a number
    (dict(weight=None), "toy: weight must be a finite number"),      # None is not "the default"
    (dict(weight="0.1"), "toy: weight must be a finite number"),
    (dict(scale=0.0), "toy: scale must be a finite number in (0, inf)"),
    (dict(steps=0), "toy: steps must be an integer >= 1, got 0"),
    (dict(steps=2.0), "toy: steps must be an integer >= 1, got 2.0"),
    (dict(flag=1), "toy: flag must be true or false, got 1"),
    (dict(kind="c"), "toy: kind must be one of a, b, got 'c'"),
    (dict(share=0.5), "toy: share must be a finite number in [0, 0.5), got 0.5"),
    (dict(share=-0.1), "toy: share must be a finite number in [0, 0.5), got -0.1"),
])
def test_errors_are_one_line_ending_in_the_valid_keys(given, expected):
    with pytest.raises(ValueError) as e:
        resolve(**given)
    message = str(e.value)
    assert message.startswith(expected) and message.endswith("; " + LISTING) and "\n" not in message


def test_a_derived_default_that_does_not_exist_says_which_option_to_set():
    options = (Option("zeta", Derived("from a table", lambda c, k: _fail(c)), "a hinge", "a paper"),)
    with pytest.raises(ValueError, match=r"^toy: no default zeta \(from a table\) for C=1, K=4: "
                                         r"C=1 is too small; or set zeta$"):
        resolve_options("toy", options, {}, num_classes=1, num_bits=4)
    assert resolve_options("toy", options, {"zeta": 0.5}, num_classes=1, num_bits=4) == {"zeta": 0.5}


def _fail(c):
    raise ValueError(f"C={c} is too small")


def test_parse_types_each_value():
    pairs = ["weight=1e-3", " steps = 7 ", "flag=TRUE", "kind=b", "scale=3"]
    assert parse_options("toy", OPTIONS, pairs) == {"weight": 0.001, "steps": 7, "flag": True,
                                                     "kind": "b", "scale": 3.0}
    for text, value in (("true", True), ("yes", True), ("on", True), ("1", True),
                        ("false", False), ("No", False), ("off", False), ("0", False)):
        assert parse_options("toy", OPTIONS, [f"flag={text}"]) == {"flag": value}
    assert parse_options("toy", OPTIONS, []) == {}


@pytest.mark.parametrize("pairs,expected", [
    (["weight"], "toy: loss option 'weight' is not KEY=VALUE; valid: "),
    (["=1"], "toy: loss option '=1' is not KEY=VALUE; valid: "),
    (["wieght=1"], "toy: unknown option 'wieght'; valid: "),
    (["weight=abc"], "toy: option weight='abc' is not a number; valid: "),
    (["weight="], "toy: option weight='' is not a number; valid: "),
    (["weight=nan"], "toy: weight must be a finite number in [0, inf), got nan; valid: "),
    (["steps=2.5"], "toy: option steps='2.5' is not an integer; valid: "),
    (["flag=maybe"], "toy: option flag='maybe' is not true or false; valid: "),
    (["kind=c"], "toy: kind must be one of a, b, got 'c'; valid: "),
    (["weight=1", "weight=2"], "toy: option weight is given twice (weight=1.0 and weight=2); give it once"),
])
def test_parse_errors_are_one_line(pairs, expected):
    with pytest.raises(ValueError) as e:
        parse_options("toy", OPTIONS, pairs)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_show_writes_what_parse_reads_back():
    values = {"weight": 0.1 + 0.2, "steps": 12, "flag": True, "kind": "b", "scale": 10 / 48}
    assert parse_options("toy", OPTIONS, [f"{k}={show(v)}" for k, v in values.items()]) == values


def test_describe_and_shown_defaults():
    assert describe(OPTIONS) == LISTING.removeprefix("valid: ")
    assert describe(()) == "none"
    assert [o.shown_default for o in OPTIONS] == ["0.1", "10/K", "200", "false", "a", "0.01"]
    assert [o.type for o in OPTIONS] == [float, float, int, bool, str, float]


def test_an_option_of_another_type_is_refused():
    with pytest.raises(TypeError, match="option w: type must be one of bool, int, float, str, got list"):
        Option("w", [1], "a list", "nowhere")
