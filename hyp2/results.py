"""What a run leaves in ``--result_dir``: the best checkpoint, a human log and a JSON history.

Files for run ``{run}`` (see :attr:`hyp2.config.Config.run_name`):

* ``{run}.ckpt``  — the best model and loss state (proxies), the full config and metadata;
* ``{run}.txt``   — a human-readable log;
* ``{run}.json``  — machine-readable results (schema in ``docs/run-json.md``).

Checkpoints and JSON are written atomically, so an interrupted run never leaves a truncated file
in place of a good one. Checkpoints load with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .io import atomic_save, atomic_write_json

CHECKPOINT_FORMAT = "hyp2-checkpoint"
CHECKPOINT_VERSION = 1
JSON_SCHEMA = 1


@dataclass(frozen=True)
class RunFiles:
    """Paths of one run's files."""

    result_dir: Path
    run: str

    def path(self, suffix: str) -> Path:
        return self.result_dir / f"{self.run}{suffix}"

    @property
    def checkpoint(self) -> Path:
        return self.path(".ckpt")

    @property
    def json(self) -> Path:
        return self.path(".json")

    @property
    def log(self) -> Path:
        return self.path(".txt")


def save_checkpoint(path: Path, *, model_state: dict, loss_state: dict, config: dict,
                    meta: dict[str, Any]) -> None:
    """Atomically write a checkpoint. ``meta`` holds dataset, backbone, hash_bit, loss, classes,
    num_classes, epoch, map and anything else users compare."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": model_state,
               "loss": loss_state, "config": config, "meta": meta}
    atomic_save(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a hyp2 checkpoint safely (``weights_only=True``); a clear :class:`UserError` when the
    file is missing, unreadable or not a hyp2 checkpoint."""
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; train first (same flags without --test), "
                        f"or point --result_dir at the folder holding it")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign files all get one line
        raise UserError(f"cannot read checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"it may be truncated or not a hyp2 checkpoint: retrain, or restore it") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a hyp2 checkpoint (the official code's .ckpt files hold only "
                        f"the network's state dict); retrain with this code")
    return payload


def check_compatible(path: Path, meta: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse a checkpoint whose ``meta`` differs from ``expected`` (the current flags) on any key."""
    for key, want in expected.items():
        have = meta.get(key)
        if have == want:
            continue
        if key in ("num_classes", "classes"):
            def show(v):
                return f"{len(v)} classes ({', '.join(map(str, v[:4]))}{', ...' if len(v) > 4 else ''})" \
                    if isinstance(v, list) else f"{v} classes"
            raise UserError(f"checkpoint {path} was trained on {show(have)} but this dataset has "
                            f"{show(want)}; evaluate it on the data it was trained on, or train a new one")
        raise UserError(f"checkpoint {path} was trained with {key}={have!r} but this run has "
                        f"{key}={want!r}; pass --{key} {have} to use it, or train a new one")


class RunRecorder:
    """Keeps the human log and the JSON history of a run up to date. With ``save=False`` it only
    prints (``--no_save`` writes nothing)."""

    def __init__(self, files: RunFiles, header: dict[str, Any], save: bool, resume_json: bool = False,
                 verbose: bool = True):
        self.files, self.save, self.verbose = files, save, verbose
        self.data: dict[str, Any] = {"schema": JSON_SCHEMA, **header, "history": [], "best": None}
        if resume_json and files.json.is_file():
            # Training's record stays as it was, its config included; --test only adds "test".
            self.data.update({k: v for k, v in read_json(files.json).items()
                              if k in ("history", "best", "test", "config")})

    @classmethod
    def for_test(cls, files: RunFiles, header: dict[str, Any], save: bool) -> "RunRecorder":
        """Keep an existing JSON's history (from training) and add the test section to it."""
        return cls(files, header, save, resume_json=True)

    def log(self, line: str, echo: bool = True) -> None:
        if echo and self.verbose:
            print(line, flush=True)
        if self.save:
            self.files.log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.files.log, "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.write()

    def write(self) -> None:
        if self.save:
            atomic_write_json(self.files.json, self.data)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read results file {path} ({e}); delete it or pass --result_dir") from None
