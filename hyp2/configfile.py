"""Flags in YAML files: ``python retrieval.py --config FILE.yaml [flags]`` (timm's convention).

A config file is a mapping whose keys are ``retrieval.py``'s flags without dashes and whose
values are what the flag takes: ``hash_bit: 48``, ``no_pretrained: true``, ``loss_opt: {beta:
0.3}`` (or a list of ``KEY=VALUE`` strings), ``plugin: [my_loss.py]``. It becomes command-line
text in front of the real command line, so every value is checked exactly like the flag it
stands for, and the flags typed after it win (a ``--loss_opt`` key replaces the file's value of
that key; ``--cuda`` replaces the file's ``device`` and the reverse, as do ``--resume`` and
``--overwrite``, ``--weights`` and ``--no_pretrained``). ``false`` and ``null`` mean the flag is
absent. An unknown key, a value of the wrong type or unreadable YAML is one line naming the file
and the key. The same checks read the flags of a sweep's plan (:mod:`hyp2.sweep`).

A training run's resolved configuration is written as such a file by :func:`render_config`
(``result/{run}.yaml``), so that ``retrieval.py --config result/{run}.yaml`` repeats the run.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from .errors import UserError, reason

T = TypeVar("T")
FLAG = "--config"
#: Keys a file may not set: the file itself, and help.
_NOT_KEYS = ("config", "help")
#: A flag typed on the command line replaces these keys of the file (besides its own).
_REPLACES = {"cuda": ("device",), "device": ("cuda",), "resume": ("overwrite",), "overwrite": ("resume",),
             "weights": ("no_pretrained",), "no_pretrained": ("weights",)}
#: Config fields that describe one invocation, not the run: not written by render_config
#: (``overwrite: true`` in a file would silently replace the run it describes).
_INVOCATION = ("test", "resume", "overwrite", "export_codes", "plots", "cuda", "checkpoint", "verbosity")
#: Fields written under the flag that sets them, inverted.
_NEGATED = {"save": "no_save", "pretrained": "no_pretrained", "check_md5": "no_md5", "download": "no_download"}
#: Flags a dataset may not use (written only for datasets that do).
_DATASET_FLAGS = ("split_file", "voc_url", "no_md5")


@dataclass(frozen=True)
class Flag:
    """What a key may hold: ``kind`` is bool, int, float, str or list; ``nullable`` when the flag's
    default is None (``null`` then means "the default")."""

    key: str
    kind: str
    nullable: bool


def flag_table() -> dict[str, Flag]:
    """Every flag of ``retrieval.py`` by key (its name without dashes)."""
    from .cli import build_parser

    table = {}
    for action in build_parser()._actions:  # argparse has no public way to list them
        key = action.option_strings[-1].lstrip("-") if action.option_strings else ""
        if not key or key in _NOT_KEYS:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            kind = "bool"
        elif isinstance(action, argparse._AppendAction):
            kind = "list"
        else:
            kind = {int: "int", float: "float"}.get(action.type, "str")
        table[key] = Flag(key, kind, action.default is None)
    return table


_WANT = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
         "list": "a list of strings"}


def _value(flag: Flag, value: Any, where: str) -> Any:
    """``value`` of ``flag`` as its type; a string is parsed as the command line would."""
    bad = UserError(f"{where}: {flag.key}: expected {_WANT[flag.kind]}, got {value!r}")
    if value is None:
        if flag.nullable:
            return None
        raise bad
    if flag.kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if flag.kind in ("int", "float"):
        number = int if flag.kind == "int" else float
        if isinstance(value, bool) or (flag.kind == "int" and isinstance(value, float)):
            raise bad
        try:
            return number(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise bad from None
    if flag.kind == "str":
        if not isinstance(value, str):
            raise bad
        return value
    return _strings(flag, value, where, bad)


def _strings(flag: Flag, value: Any, where: str, bad: UserError) -> list[str]:
    if flag.key == "loss_opt" and isinstance(value, Mapping):
        from .losses.options import show

        for v in value.values():
            if not isinstance(v, (bool, int, float, str)):
                raise UserError(f"{where}: loss_opt: the value of each key must be a number, true/false or a "
                                f"string, got {v!r}")
        return [f"{k}={show(v)}" for k, v in value.items()]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad
    return list(value)


def check_flags(raw: Any, where: str, table: Mapping[str, Flag] | None = None) -> dict[str, Any]:
    """The mapping ``raw`` read from ``where`` as checked ``{key: value}`` (see the module doc)."""
    table = flag_table() if table is None else table
    if not isinstance(raw, Mapping):
        raise UserError(f"{where}: expected a mapping of flag: value (e.g. 'hash_bit: 48'), got "
                        f"{type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in table:
            import difflib

            close = difflib.get_close_matches(str(key), list(table), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{where}: unknown key {key!r}: not a retrieval.py flag; {hint}keys are the flags "
                            f"without dashes (retrieval.py --help)")
        out[key] = _value(table[key], value, where)
    return out


def read_yaml(path: str | Path, what: str) -> Any:
    """The YAML document in ``path``; one line on a missing, unreadable or malformed file."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path}: cannot read it ({reason(e)})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or reason(e)
        raise UserError(f"{path}: not valid YAML{where} ({problem}); fix the file") from None


def load_flags(path: str | Path) -> dict[str, Any]:
    """A config file's checked flags (an empty file is no flags)."""
    raw = read_yaml(path, FLAG)
    return check_flags({} if raw is None else raw, str(path))


def flags_to_argv(flags: Mapping[str, Any]) -> list[str]:
    """Checked flags as command-line text, in their order."""
    argv: list[str] = []
    for key, value in flags.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(f"--{key}")
        elif isinstance(value, list):
            for item in value:
                argv += [f"--{key}", item]
        else:
            argv += [f"--{key}", repr(value) if isinstance(value, float) else str(value)]
    return argv


def split_config(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """``(FILE, the other arguments)`` of ``--config FILE`` / ``--config=FILE`` in ``argv``."""
    path, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == FLAG or arg.startswith(FLAG + "="):
            if path is not None:
                raise UserError(f"{FLAG} given twice ({path} and another); pass one file")
            if arg == FLAG:
                if i + 1 >= len(argv):
                    raise UserError(f"{FLAG} needs a file: {FLAG} FILE.yaml")
                path, i = argv[i + 1], i + 2
                continue
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return path, rest


def _loss_keys(pairs: Sequence[str]) -> set[str]:
    return {p.split("=", 1)[0].strip() for p in pairs}


def merge(file_flags: Mapping[str, Any], argv: Sequence[str]) -> list[str]:
    """The file's flags as command-line text in front of ``argv``, less what ``argv`` replaces."""
    from .cli import build_parser, given_flags

    typed = set(given_flags(list(argv)))
    typed_loss = _loss_keys(build_parser().parse_args(list(argv)).loss_opt) if "loss_opt" in typed else set()
    kept = dict(file_flags)
    for key in typed:
        for replaced in (key, *_REPLACES.get(key, ())):
            if replaced not in ("loss_opt", "plugin"):
                kept.pop(replaced, None)
    if kept.get("loss_opt"):  # a typed key (or --beta / --zeta) replaces the file's value of that key
        gone = typed_loss | ({"beta", "zeta"} & typed)
        kept["loss_opt"] = [p for p in kept["loss_opt"] if _loss_keys([p]).isdisjoint(gone)]
    for key in ("beta", "zeta"):
        if key in typed_loss:
            kept.pop(key, None)
    return flags_to_argv(kept) + list(argv)


def expand_argv(argv: Sequence[str] | None) -> tuple[list[str], str | None, set[str]]:
    """``argv`` (default ``sys.argv[1:]``) with ``--config FILE`` replaced by the file's flags.

    Returns the expanded arguments, the file (or None) and the keys that came from it.
    """
    import sys

    path, rest = split_config(list(sys.argv[1:] if argv is None else argv))
    if path is None:
        return rest, None, set()
    expanded = merge(load_flags(path), rest)
    from_file = set(_given(expanded)) - set(_given(rest))
    return expanded, path, from_file


def _given(argv: Sequence[str]) -> tuple[str, ...]:
    from .cli import given_flags

    return given_flags(list(argv))


def with_config_file(argv: Sequence[str] | None, parse: Callable[[list[str]], T]) -> T:
    """``parse(argv with --config expanded)``; an error about a flag the file set names the file."""
    expanded, path, from_file = expand_argv(argv)
    try:
        return parse(expanded)
    except UserError as e:
        flags = re.findall(r"--(\w+)", str(e))
        if path is not None and flags and flags[0] in from_file:
            raise UserError(f"{e} (set by {FLAG} {path})") from None
        raise


# ---------------------------------------------------------------------------------------- writing


def config_flags(config) -> dict[str, Any]:
    """The flags that give ``config`` (a :class:`hyp2.config.Config`) back, for a config file."""
    from .data import DATASETS

    d = config.to_dict()
    try:
        dataset_uses = set(DATASETS.get(config.dataset).flags)
    except ValueError:
        dataset_uses = set()
    env_plugins = [n for n in os.environ.get("HYP2_PLUGINS", "").split(os.pathsep) if n.strip()]
    options = dict(d.pop("loss_options"))
    flags: dict[str, Any] = {}
    for field, value in d.items():
        key = _NEGATED.get(field, field)
        if field in _INVOCATION or value is None or (key in _DATASET_FLAGS and key not in dataset_uses):
            continue
        if field in ("beta", "zeta"):
            # --beta/--zeta set the Config field and the loss option; --loss_opt only the option
            if value == type(config).__dataclass_fields__[field].default:
                continue
            options.pop(field, None)
        elif field == "plugins":
            key, value = "plugin", [p for p in value if p not in env_plugins]
        elif key in _NEGATED.values():
            value = not value
        flags[key] = value
    flags["loss_opt"] = options
    return flags


def render_config(config) -> str:
    """``config`` as a config file's text (keys in the Config's order, a comment on top)."""
    import yaml

    body = yaml.safe_dump(config_flags(config), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return (f"# The resolved configuration of run {config.run_name}. Repeat the run with\n"
            f"#   python retrieval.py --config <this file> [flags]   (flags typed after it win)\n{body}")


def write_run_config(config, path: str | Path) -> None:
    """Write :func:`render_config` of ``config`` to ``path`` atomically; one line if it cannot."""
    from .io import atomic_write_text

    try:
        atomic_write_text(path, render_config(config))
    except OSError as e:
        raise UserError(f"cannot write the run's configuration {path} ({e.strerror or reason(e)}); check the "
                        f"free space and permissions of {Path(path).parent}") from None
