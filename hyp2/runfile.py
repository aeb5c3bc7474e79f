"""A run's JSON record, ``{run}.json`` (docs/run-json.md): the one place that writes it
(:class:`RunRecord`) and the one that reads it (:func:`load_run`), every field checked.

Training writes the history and the best evaluation after each epoch, ``--test`` adds the
``test`` section; figures, reports and galleries read it back, and this module also names runs for
legends and says in one line what a run lacks for a figure.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .errors import UserError, reason
from .io import atomic_write_json, parse_json
from .validate import is_real

#: the run JSON's schema number (docs/run-json.md)
JSON_SCHEMA = 1

_BACKBONES = {"alexnet": "AlexNet", "googlenet": "GoogLeNet", "resnet": "ResNet",
              "vgg": "VGG", "small": "small CNN"}


class MissingData(Exception):
    """A run lacks the data of one figure; the message says which and how to get it."""

# --------------------------------------------------------------------------------------------
# Loading and validating a run JSON


def _invalid(path: Path, what: str) -> UserError:
    return UserError(f"{path}: invalid run JSON: {what}; rewrite it by rerunning that run "
                     f"with --test (format: docs/run-json.md)")


def _check_numbers(path: Path, where: str, values: Any) -> None:
    if not isinstance(values, list) or not all(is_real(v) for v in values):
        raise _invalid(path, f"{where} must be a list of numbers")


def _check_curve(path: Path, where: str, section: Any, keys: Sequence[str]) -> None:
    if not isinstance(section, dict):
        raise _invalid(path, f"{where} must be an object with keys {', '.join(keys)}")
    for key in keys:
        if key not in section:
            raise _invalid(path, f"{where}.{key} is missing")
        _check_numbers(path, f"{where}.{key}", section[key])
    lengths = {len(section[key]) for key in keys}
    if len(lengths) > 1:
        raise _invalid(path, f"{where}: lists {', '.join(keys)} differ in length")


def _check_run(run: Any, path: Path) -> None:
    if not isinstance(run, dict):
        raise _invalid(path, "the top level must be an object")
    schema = run.get("schema", JSON_SCHEMA)
    if schema != JSON_SCHEMA:
        raise UserError(f"{path}: run JSON schema {schema!r} is not supported (this hyp2 reads "
                        f"schema {JSON_SCHEMA}); use the hyp2 version that wrote it")
    for key in ("dataset", "backbone"):
        if not isinstance(run.get(key), str) or not run[key]:
            raise _invalid(path, f"'{key}' must be a non-empty string")
    bits = run.get("hash_bit")
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
        raise _invalid(path, "'hash_bit' must be a positive integer")
    for key in ("loss", "run"):
        if key in run and (not isinstance(run[key], str) or not run[key]):
            raise _invalid(path, f"'{key}' must be a non-empty string")
    if "classes" in run and not (isinstance(run["classes"], list)
                                 and all(isinstance(c, str) for c in run["classes"])):
        raise _invalid(path, "'classes' must be a list of strings")
    if run.get("topk") is not None and not is_real(run["topk"]):
        raise _invalid(path, "'topk' must be a number")
    history = run.get("history", [])
    if history is not None:
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise _invalid(path, "'history' must be a list of objects")
        for i, entry in enumerate(history):
            for key in ("epoch", "map", "train_seconds", "loss"):
                if entry.get(key) is not None and not is_real(entry[key]):
                    raise _invalid(path, f"history[{i}].{key} must be a number")
    best = run.get("best")
    if best is not None and (not isinstance(best, dict)
                             or (best.get("map") is not None and not is_real(best["map"]))
                             or not isinstance(best.get("digest", ""), str)):
        raise _invalid(path, "'best' must be an object whose 'map' is a number")
    if run.get("test") is not None:
        _check_test(run["test"], path)


def _check_test(test: Any, path: Path) -> None:
    if not isinstance(test, dict):
        raise _invalid(path, "'test' must be an object")
    for key in ("map", "topk", "precision_radius2", "acg", "ndcg", "weighted_map", "tie_aware_map"):
        if test.get(key) is not None and not is_real(test[key]):
            raise _invalid(path, f"test.{key} must be a number")
    if test.get("precision_at_n") is not None:
        _check_curve(path, "test.precision_at_n", test["precision_at_n"], ("n", "precision"))
    if test.get("pr_curve") is not None:
        _check_curve(path, "test.pr_curve", test["pr_curve"], ("radius", "precision", "recall"))
    for key in ("codes_sample", "codes"):
        if test.get(key) is not None and not isinstance(test[key], str):
            raise _invalid(path, f"test.{key} must be a file name (string)")


def load_run(path: str | Path) -> dict:
    """Read and check one run JSON (docs/run-json.md).

    Returns the JSON's object with one key added, ``"_path"``: the :class:`~pathlib.Path` it was
    read from (``test.codes_sample`` is relative to its folder). Sections may be absent (not
    measured); present sections must be well formed. A missing, unreadable or malformed file
    raises :class:`~hyp2.errors.UserError` naming the file and the problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such run JSON; pass the result/{{run}}.json a training "
                        f"run wrote") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a run JSON; pass result/{{run}}.json "
                        f"files") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"{path}: cannot read the run JSON ({reason}); check the path and "
                        f"its permissions") from None
    try:
        run = parse_json(text)
    except ValueError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: {exc.msg}" if hasattr(exc, "lineno") else str(exc)
        raise _invalid(path, f"not JSON ({where})") from None
    _check_run(run, path)
    run = dict(run)
    run["_path"] = path
    return run


# --------------------------------------------------------------------------------------------
# Writing


class RunRecord:
    """The run JSON as training and ``--test`` keep it on disk (schema: docs/run-json.md).

    ``header`` identifies the run (run, dataset, model, loss and its hyper-parameters, classes,
    mAP@K, data provenance, config). With ``save=False`` (``--no_save``) nothing is written.
    """

    def __init__(self, path: Path, header: dict[str, Any], save: bool):
        self.path, self.save = Path(path), save
        self._data: dict[str, Any] = {"schema": JSON_SCHEMA, **header, "history": [], "best": None}

    @classmethod
    def for_test(cls, path: Path, header: dict[str, Any], save: bool) -> "RunRecord":
        """Keep an existing JSON's training record (history, best, test, config) to add ``test``."""
        rec = cls(path, header, save)
        if rec.path.is_file():
            earlier = load_run(rec.path)
            rec._data.update({k: v for k, v in earlier.items() if k in ("history", "best", "test", "config")})
        return rec

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self._data["history"])

    @property
    def best(self) -> dict[str, Any] | None:
        best = self._data["best"]
        return None if best is None else dict(best)

    def add_evaluation(self, entry: dict[str, Any]) -> bool:
        """Append one evaluation (``epoch``, ``map``, ...); returns whether it is the new best.
        Not written yet: the resumable state that commits it comes first (:mod:`hyp2.checkpointer`)."""
        self._data["history"].append(dict(entry))
        improved = self._data["best"] is None or entry["map"] > self._data["best"]["map"]
        if improved:
            self._data["best"] = {"epoch": entry["epoch"], "map": entry["map"]}
        return improved

    def set_best_digest(self, digest: str) -> None:
        """The file digest of the best checkpoint written for the current best evaluation."""
        self._data["best"]["digest"] = digest

    def restore(self, history: list[dict[str, Any]], best: dict[str, Any] | None) -> None:
        """Take the history of a resumed state (authoritative over the JSON) and write it."""
        self._data["history"], self._data["best"] = list(history), None if best is None else dict(best)
        self.write()

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value
        self.write()

    def write(self) -> None:
        if not self.save:
            return
        try:
            atomic_write_json(self.path, self._data)
        except OSError as e:
            raise UserError(f"cannot write results {self.path} ({e.strerror or reason(e)}); check the free space and "
                            f"permissions of {self.path.parent} (the previous file is kept)") from None


# --------------------------------------------------------------------------------------------
# Names and styles


def run_label(run: dict) -> str:
    """The legend name of a run: ``"dataset · backbone · K bits · loss"``."""
    return (f"{run['dataset']} · {run['backbone']} · {run['hash_bit']} bits · "
            f"{run.get('loss', 'hyp2')}")


def run_labels(runs: Sequence[dict]) -> list[str]:
    """:func:`run_label` of each run, made unique: repeats get the run's file name appended."""
    labels = [run_label(r) for r in runs]
    for level in (1, 2):
        seen: dict[str, int] = {}
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
        for i, run in enumerate(runs):
            if seen[labels[i]] > 1:
                where = Path(run.get("_path", f"run {i + 1}"))
                labels[i] += f" ({where.name})" if level == 1 else f" [{i + 1}]"
    return labels


def run_name(run: dict) -> str:
    """Where a note comes from: the run's file as the user named it."""
    return str(run.get("_path", run.get("run", "run")))


def backbone_title(name: str) -> str:
    """A backbone as papers write it (``"googlenet"`` -> ``"GoogLeNet"``)."""
    return _BACKBONES.get(name, name)


def note(notes: list[str] | None, text: str) -> None:
    """Append ``text`` to ``notes`` unless the caller keeps none."""
    if notes is not None:
        notes.append(text)


def from_test(run: dict, key: str, hint: str = "evaluate the model with --test"):
    """``run["test"][key]``; :class:`MissingData` saying what is absent and ``hint`` otherwise."""
    test = run.get("test")
    if not isinstance(test, dict):
        raise MissingData(f"the run has no test results; {hint}")
    value = test.get(key)
    if value is None:
        raise MissingData(f"test.{key} is missing; {hint}")
    return value


def run_topk(run: dict) -> int | None:
    """K of the run's mAP@K (``topk``, else ``test.topk``), or None when the JSON lacks it."""
    for value in (run.get("topk"), (run.get("test") or {}).get("topk")):
        if value is not None:
            return int(value)
    return None

