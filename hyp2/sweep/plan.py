"""Plans: which runs a sweep makes, read from a YAML file (docs/sweeps.md).

A plan is a mapping with

* ``name:`` (default: the file's stem) — names the sweep's journal and report folders;
* ``description:`` — one line for people;
* ``defaults:`` — flags of every run (keys as in a ``--config`` file, :mod:`hyp2.configfile`);
* ``grid:`` — ``flag: [values]``; the runs are the product of the lists, in the order written. A
  list of such mappings is several grids, one after the other (the paper's two tables differ in
  their bit lengths);
* ``runs:`` — a list of flag mappings, one run each, after the grids' runs.

A run's flags are the defaults, then its grid cell or entry, then the sweep's ``--set`` values.
Each run is an ordinary ``retrieval.py`` run: its name and files are the ones the same flags typed
by hand give. The sweep adds ``--resume`` to train and runs ``--test`` itself, so a plan may not set
``test``, ``resume``, ``overwrite`` or ``no_save``; two runs of one plan may not share a name in one
result folder.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..configfile import Flag, check_flags, flag_table, flags_to_argv, read_yaml
from ..errors import UserError

PLANS_DIR = Path(__file__).resolve().parents[1] / "plans"
_KEYS = ("name", "description", "defaults", "grid", "runs")
#: Flags the sweep sets itself, and why a plan may not.
_SWEEP_OWNS = {"test": "the sweep runs --test after training",
               "resume": "the sweep trains every run with --resume",
               "overwrite": "a sweep never replaces a run; delete its files or pick another --result_dir",
               "no_save": "a sweep's state is its runs' files, which --no_save never writes"}
#: Flags of the --test step only.
TEST_ONLY = ("export_codes", "plots")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Run:
    """One run of a plan.

    Attributes:
        name: the run's name (``{dataset}_{backbone}_{hash_bit}[_{loss}]``).
        flags: its checked flags, ``{key: value}`` in the order they were set.
        result_dir: the folder of its files.
        epochs: the epochs it trains (its flag, else the dataset's default).
    """

    name: str
    flags: Mapping[str, Any]
    result_dir: Path
    epochs: int

    @property
    def argv(self) -> list[str]:
        """Its flags as command-line text (``python retrieval.py ARGV`` is the run by hand)."""
        return flags_to_argv(self.flags)

    def train_argv(self) -> list[str]:
        return flags_to_argv({k: v for k, v in self.flags.items() if k not in TEST_ONLY}) + ["--resume"]

    def test_argv(self) -> list[str]:
        return self.argv + ["--test"]

    def file(self, suffix: str) -> Path:
        return self.result_dir / f"{self.name}{suffix}"


@dataclass(frozen=True)
class Plan:
    """A loaded plan: its name, where it came from, its runs and the sweep's folder."""

    name: str
    source: Path
    description: str
    runs: tuple[Run, ...]
    result_dir: Path

    @property
    def journal_dir(self) -> Path:
        """Where the sweep keeps its journal: beside the runs, ``{result_dir}/sweep-{name}``."""
        return self.result_dir / f"sweep-{self.name}"


def shipped_plans() -> list[str]:
    """The names of the plans shipped in ``hyp2/plans``."""
    return sorted(p.stem for p in PLANS_DIR.glob("*.yaml"))


def plan_path(spec: str) -> Path:
    """``spec`` as a plan file: a path, or the name of a shipped plan."""
    path = Path(spec)
    if path.is_file():
        return path
    if _NAME.match(spec) and (PLANS_DIR / f"{spec}.yaml").is_file():
        return PLANS_DIR / f"{spec}.yaml"
    raise UserError(f"PLAN {spec}: no such file, and not a shipped plan ({', '.join(shipped_plans())})")


def identify(argv: Sequence[str]) -> tuple[str, Path, int]:
    """``(run name, result folder, epochs)`` of the run ``retrieval.py ARGV`` would make, with the
    dataset's defaults (a plugin's dataset too). An unknown dataset gets the global defaults: the
    run itself then fails with the reason."""
    from .._plugins import load_plugins
    from ..cli import GLOBAL_DEFAULTS, build_parser
    from ..config import Config
    from ..data import DATASETS

    load_plugins(argv)
    args = build_parser().parse_args(list(argv))
    dataset = args.dataset or GLOBAL_DEFAULTS["dataset"]
    try:
        defaults = {**GLOBAL_DEFAULTS, **DATASETS.get(dataset).defaults}
    except ValueError:
        defaults = dict(GLOBAL_DEFAULTS)
    config = Config(dataset=dataset, backbone=args.backbone or defaults["backbone"], loss=args.loss or "hyp2",
                    hash_bit=defaults["hash_bit"] if args.hash_bit is None else args.hash_bit)
    epochs = defaults["epochs"] if args.epochs is None else args.epochs
    return config.run_name, args.result_dir or Path("result"), epochs


def _grid_cells(grid: Any, where: str, table: Mapping[str, Flag]) -> list[dict[str, Any]]:
    grids = grid if isinstance(grid, list) else [grid]
    cells: list[dict[str, Any]] = []
    for i, one in enumerate(grids):
        at = f"{where}: grid" + (f"[{i}]" if isinstance(grid, list) else "")
        if not isinstance(one, Mapping) or not one:
            raise UserError(f"{at}: expected a non-empty mapping of flag: [values]")
        columns = []
        for key, values in one.items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise UserError(f"{at}: {key}: an empty list makes no runs; give at least one value")
            columns.append([check_flags({key: v}, at, table) for v in values])
        cells += [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*columns)]
    return cells


def _entries(runs: Any, where: str, table: Mapping[str, Flag]) -> list[dict[str, Any]]:
    if not isinstance(runs, list):
        raise UserError(f"{where}: runs: expected a list of flag mappings")
    return [check_flags(entry or {}, f"{where}: runs[{i}]", table) for i, entry in enumerate(runs)]


def parse_sets(sets: Sequence[str], table: Mapping[str, Flag]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs (VALUE read as YAML: ``epochs=2``, ``loss_opt={beta: 0.3}``)."""
    import yaml

    out: dict[str, Any] = {}
    for text in sets:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {text}: expected KEY=VALUE, e.g. --set epochs=2")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        out.update(check_flags({key.strip(): parsed}, f"--set {text}", table))
    return out


def _refuse_owned(flags: Mapping[str, Any], where: str) -> None:
    for key, why in _SWEEP_OWNS.items():
        if flags.get(key):
            raise UserError(f"{where}: {key}: a plan may not set it ({why}); remove it")


def load_plan(spec: str, sets: Sequence[str] = (), result_dir: str | Path | None = None) -> Plan:
    """Read plan ``spec`` (a file or a shipped plan's name) with the sweep's ``--set`` pairs and
    ``--result_dir``; every error is one line naming the file and the key."""
    path = plan_path(spec)
    raw = read_yaml(path, "plan")
    if not isinstance(raw, Mapping):
        raise UserError(f"{path}: a plan is a mapping with {', '.join(_KEYS)}")
    unknown = [k for k in raw if k not in _KEYS]
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; a plan has {', '.join(_KEYS)}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"{path}: name: {name!r} must be letters, digits, '_', '-' or '.' (it names folders)")
    table = flag_table()
    defaults = check_flags(raw.get("defaults") or {}, f"{path}: defaults", table)
    cells = _grid_cells(raw["grid"], str(path), table) if raw.get("grid") is not None else []
    cells += _entries(raw["runs"], str(path), table) if raw.get("runs") is not None else []
    overrides = parse_sets(sets, table)
    if result_dir is not None:
        overrides["result_dir"] = str(result_dir)
    _refuse_owned(defaults, f"{path}: defaults")
    _refuse_owned(overrides, "--set")
    runs = []
    for i, cell in enumerate(cells or [{}]):
        _refuse_owned(cell, f"{path}: run {i + 1}")
        flags = {**defaults, **cell, **overrides}
        run_name, folder, epochs = identify(flags_to_argv(flags))
        runs.append(Run(run_name, flags, Path(folder), epochs))
    _refuse_duplicates(runs, path)
    folder = Path(overrides.get("result_dir") or defaults.get("result_dir") or "result")
    description = raw.get("description") or ""
    return Plan(name, path, str(description).strip(), tuple(runs), folder)


def _refuse_duplicates(runs: Sequence[Run], path: Path) -> None:
    seen: dict[tuple[Path, str], Run] = {}
    for run in runs:
        key = (run.result_dir.resolve(), run.name)
        if key in seen:
            raise UserError(f"{path}: two runs would both be {run.name} in {run.result_dir} "
                            f"({' '.join(seen[key].argv)} and {' '.join(run.argv)}); a run's name holds dataset, "
                            f"backbone, bits and loss only: give them different result_dir values")
        seen[key] = run
