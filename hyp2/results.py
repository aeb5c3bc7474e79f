"""What a run leaves in ``--result_dir``, and the one place that reads and writes it.

Files for run ``{run}`` (see :attr:`hyp2.config.Config.run_name`):

* ``{run}.ckpt``      — the best model, self-describing (:class:`Checkpoint`): its state dict, the
  :class:`~hyp2.models.ModelRecipe` that rebuilds the network and its input pipeline, the loss's
  name, hyper-parameters and state, the class names, the run's config and metadata, and the
  model's digest (the identity exported codes carry);
* ``{run}_last.ckpt`` — the resumable state after the last finished epoch (``--resume``);
* ``{run}.txt``       — a human-readable log; ``{run}.json`` — the results (docs/run-json.md);
* ``{run}.lock``      — held (``fcntl.flock``) by the process using the run's name, released by the
  operating system when that process ends, however it ends. It is never deleted: deleting a lock
  file another process is about to open would let two runs hold "the" lock.

The checkpoints follow HyP² (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label
Image Retrieval", ACM MM 2022): the best mAP on query vs. database is kept. Every file is written
atomically (:mod:`hyp2.io`) after a free-space check, so an interrupted or failed write never
leaves a truncated file in place of a good one. Checkpoints load with ``weights_only=True``.
"""
from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .errors import UserError, reason
from .io import atomic_write_json, write_atomic
from .runfile import JSON_SCHEMA
from .models import ModelRecipe, state_digest

CHECKPOINT_FORMAT = "hyp2-checkpoint"
CHECKPOINT_VERSION = 2
LAST_FORMAT = "hyp2-last"
# Files of a run that can be large or take long to make; only their own temporary files are
# cleaned up when a run of that name starts (see RunFiles.remove_stale_temps).
_OWNED_SUFFIXES = (".ckpt", "_last.ckpt", ".json", "_codes.npz", "_codes.faissbin", "_sample.npz")


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
    def last(self) -> Path:
        return self.path("_last.ckpt")

    @property
    def json(self) -> Path:
        return self.path(".json")

    @property
    def log(self) -> Path:
        return self.path(".txt")

    @property
    def lock(self) -> Path:
        return self.path(".lock")

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temporary files a killed writer of THIS run left (``.{file}.XXXX.tmp`` of its
        own file names exactly; another run's names never match). Call it holding the run lock."""
        removed = []
        for suffix in _OWNED_SUFFIXES:
            name = f"{self.run}{suffix}"
            for tmp in self.result_dir.glob(f".{glob.escape(name)}.*.tmp"):
                middle = tmp.name[len(name) + 2:-len(".tmp")]
                if "." not in middle:  # mkstemp's random part has no dot
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed


def prepare_result_dir(path: Path) -> Path:
    """Create ``--result_dir`` if needed and check that it is a writable folder (one line if not)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--result_dir {path} is a file, not a folder; pass a folder for checkpoints and results")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--result_dir {path}: cannot create it ({e.strerror or reason(e)}); pass a folder you can "
                        f"write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--result_dir {path} is not writable (read-only file system or permissions); pass a "
                        f"folder you can write to")
    return path


# ---------------------------------------------------------------------------------------- lock


class RunLock:
    """Exclusive ownership of a run's name in its result folder while the process lives.

    ``with RunLock(files):`` takes an ``fcntl.flock`` on ``{run}.lock`` without waiting; if another
    live process holds it, :class:`UserError` names that process's PID. The operating system
    releases the lock when the process exits or is killed, so a SIGKILL leaves no stale lock. On
    systems without ``fcntl`` (Windows) there is no lock.
    """

    def __init__(self, files: RunFiles):
        self.files = files
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        path = self.files.lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot create the run lock {path} ({e.strerror or reason(e)}); pass a --result_dir "
                            f"you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"run {self.files.run} is in use by another process (PID {holder}, lock {path}); "
                            f"wait for it to end, or pass another --result_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays (see the module docstring)
            self._fd = None


# ---------------------------------------------------------------------------------------- writing


def _tensor_bytes(obj: Any) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def write_torch(path: Path, payload: Any, what: str) -> None:
    """``torch.save(payload)`` to ``path`` with :func:`write_atomic`, checking the room it needs."""
    write_atomic(path, lambda fh: torch.save(payload, fh), what, need=_tensor_bytes(payload) + (1 << 20))


def _write_json(path: Path, obj: Any) -> None:
    try:
        atomic_write_json(path, obj)
    except OSError as e:
        raise UserError(f"cannot write results {path} ({e.strerror or reason(e)}); check the free space and "
                        f"permissions of {path.parent} (the previous file is kept)") from None


# ---------------------------------------------------------------------------------------- best checkpoint


@dataclass(frozen=True)
class Checkpoint:
    """A validated best checkpoint.

    Attributes:
        path: where it was read from.
        recipe: rebuilds the network and its input pipeline (:class:`~hyp2.models.ModelRecipe`).
        model_state: the network's state dict.
        loss: ``{"name": str, "hparams": dict, "state": dict}`` — the loss that trained it.
        classes: the C class names, in label-column order.
        meta: dataset, epoch, map, topk and other metadata (JSON-able).
        config: the training run's config (``Config.to_dict()``).
        digest: :func:`~hyp2.models.state_digest` of ``model_state``.
    """

    path: Path
    recipe: ModelRecipe
    model_state: dict[str, torch.Tensor]
    loss: dict[str, Any]
    classes: tuple[str, ...]
    meta: dict[str, Any]
    config: dict[str, Any]
    digest: str

    @property
    def backbone(self) -> str:
        return self.recipe.backbone

    @property
    def num_bits(self) -> int:
        return self.recipe.num_bits


def save_checkpoint(path: Path, *, recipe: ModelRecipe, model_state: dict, loss: Mapping[str, Any],
                    classes: list[str] | tuple[str, ...], config: dict, meta: dict[str, Any]) -> str:
    """Write a best checkpoint (atomically, after a free-space check); returns the model digest.

    ``loss`` is ``{"name", "hparams", "state"}``; ``meta`` holds dataset, epoch, map, topk and
    anything else users compare (the digest is added to it).
    """
    digest = state_digest(model_state)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": model_state,
               "recipe": recipe.to_dict(), "loss": dict(loss), "classes": list(classes), "config": config,
               "meta": {**meta, "backbone": recipe.backbone, "hash_bit": recipe.num_bits,
                        "image_size": recipe.image_size, "classes": list(classes), "num_classes": len(classes),
                        "loss": loss["name"], "model_digest": digest}}
    write_torch(path, payload, "checkpoint")
    return digest


def read_torch(path: Path, what: str, how: str) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors (missing, empty, unreadable)."""
    if not path.is_file():
        raise UserError(f"no {what} at {path}; {how}")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {path} is empty (0 bytes), e.g. from a full disk or an interrupted copy; {how}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign files all get one line
        raise UserError(f"cannot read {what} {path} ({reason(e)}); it may be truncated or not a hyp2 file: "
                        f"{how}") from None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and validate a best checkpoint; :class:`UserError` naming what is wrong otherwise.

    Version 1 checkpoints (before the recipe was stored) are read by deriving the recipe from
    their config (backbone, bits, image size, and whether it started from ImageNet weights).
    """
    path = Path(path)
    how = "retrain (the run's flags without --test), or restore the file"
    payload = read_torch(path, "checkpoint", how)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a hyp2 checkpoint (the official code's .ckpt files hold only the network's "
                        f"state dict); retrain with this code")

    def bad(what: str) -> UserError:
        return UserError(f"checkpoint {path} is malformed ({what}); {how}")

    version = payload.get("version")
    if version not in (1, CHECKPOINT_VERSION):
        raise UserError(f"checkpoint {path} has version {version!r}; this hyp2 reads versions 1 and "
                        f"{CHECKPOINT_VERSION}: use the hyp2 version that wrote it")
    for key, kind in (("model", dict), ("meta", dict), ("config", dict)):
        if not isinstance(payload.get(key), kind):
            raise bad(f"'{key}' is {type(payload.get(key)).__name__}, not a {kind.__name__}")
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in payload["model"].items()):
        raise bad("'model' is not a state dict of tensors")
    if version == 1:
        payload = _upgrade_v1(payload, bad)
    try:
        recipe = ModelRecipe.from_dict(payload.get("recipe"))
    except ValueError as e:
        raise bad(str(e)) from None
    loss = payload.get("loss")
    if not (isinstance(loss, dict) and isinstance(loss.get("name"), str) and isinstance(loss.get("hparams"), dict)
            and isinstance(loss.get("state"), dict)):
        raise bad("'loss' must hold its name, hparams and state")
    classes = payload.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("'classes' must be a list of names")
    digest = state_digest(payload["model"])
    recorded = payload["meta"].get("model_digest")
    if recorded is not None and recorded != digest:
        raise bad(f"its weights do not match their recorded digest {recorded} (found {digest}): the file was "
                  f"altered")
    return Checkpoint(path, recipe, payload["model"], loss, tuple(classes), payload["meta"], payload["config"],
                      digest)


def _upgrade_v1(payload: dict, bad: Callable[[str], UserError]) -> dict:
    """A version-1 payload in version-2 form: the recipe and loss record derived from its config."""
    meta, config = payload["meta"], payload["config"]
    try:
        recipe = ModelRecipe.for_training(meta["backbone"], meta["hash_bit"],
                                          meta.get("image_size", config.get("image_size")),
                                          pretrained=bool(config.get("pretrained", False)))
    except (KeyError, ValueError) as e:
        raise bad(f"version 1 without a usable backbone, hash_bit or image_size ({e})") from None
    state = payload.get("loss")
    if not isinstance(state, dict):
        raise bad("'loss' is not a state dict")
    hparams = {k: config[k] for k in ("beta", "zeta") if config.get(k) is not None}
    return {**payload, "recipe": recipe.to_dict(), "classes": meta.get("classes"),
            "loss": {"name": meta.get("loss", config.get("loss", "hyp2")), "hparams": hparams, "state": state}}


def check_compatible(ckpt: Checkpoint, expected: Mapping[str, tuple[str, Any]]) -> None:
    """Refuse a checkpoint that disagrees with the flags a user gave.

    ``expected`` maps a checkpoint property (``backbone``, ``hash_bit``, ``image_size``, ``loss``,
    ``classes``, or a loss hyper-parameter ``loss.<name>``) to ``(flag, value)``; the first
    disagreement is one line naming both values.
    """
    have_of = {"backbone": ckpt.recipe.backbone, "hash_bit": ckpt.recipe.num_bits,
               "image_size": ckpt.recipe.image_size, "loss": ckpt.loss["name"], "classes": list(ckpt.classes)}
    for key, (flag, want) in expected.items():
        have = ckpt.loss["hparams"].get(key[5:]) if key.startswith("loss.") else have_of[key]
        if have == want:
            continue
        if key == "classes":
            raise UserError(f"checkpoint {ckpt.path} was trained on {_show_classes(have)} but this dataset has "
                            f"{_show_classes(want)}; evaluate it on the data it was trained on, or train a new one")
        sep = "" if flag.endswith("=") else " "
        raise UserError(f"checkpoint {ckpt.path} was trained with {flag}{sep}{have} but this run has "
                        f"{flag}{sep}{want}; drop {flag.rstrip('=')} (the checkpoint knows it) or train a new model")


def _show_classes(v: Any) -> str:
    if not isinstance(v, list):
        return f"{v} classes"
    return f"{len(v)} classes ({', '.join(map(str, v[:4]))}{', ...' if len(v) > 4 else ''})"


# ---------------------------------------------------------------------------------------- resumable state


def save_last(path: Path, **state: Any) -> None:
    """Write the resumable state (model, loss, optimiser, scheduler, RNG, history, best, config)."""
    write_torch(path, {"format": LAST_FORMAT, **state}, "resumable checkpoint")


def load_last(path: Path) -> dict[str, Any]:
    """Read ``{run}_last.ckpt``; one line when it is unreadable or not hyp2's resumable state."""
    how = "delete it to start over, or pass --overwrite"
    state = read_torch(path, "resumable checkpoint", how)
    required = ("model", "loss", "optimizer", "scheduler", "history", "config", "rng", "epoch", "train_seconds")
    if not isinstance(state, dict) or state.get("format") != LAST_FORMAT or any(k not in state for k in required):
        raise UserError(f"{path} is not a hyp2 resumable checkpoint; {how}")
    return state


# ---------------------------------------------------------------------------------------- the JSON record


def read_json(path: Path) -> dict[str, Any]:
    """A run JSON as a dict; one line when it is unreadable, not JSON, or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read results file {path} ({reason(e)}); delete it or pass another "
                        f"--result_dir") from None
    if not isinstance(data, dict):
        raise UserError(f"results file {path} holds a JSON {type(data).__name__}, not a run record (an object); "
                        f"delete it or pass another --result_dir")
    return data


class RunRecorder:
    """The run's human log and JSON record (schema in docs/run-json.md), kept on disk as they
    change. With ``save=False`` it only prints (``--no_save`` writes nothing)."""

    def __init__(self, files: RunFiles, header: dict[str, Any], save: bool, verbose: bool = True):
        self.files, self.save, self.verbose = files, save, verbose
        self._data: dict[str, Any] = {"schema": JSON_SCHEMA, **header, "history": [], "best": None}

    @classmethod
    def for_test(cls, files: RunFiles, header: dict[str, Any], save: bool) -> "RunRecorder":
        """Keep an existing JSON's training record (history, best, config) and add ``test`` to it."""
        rec = cls(files, header, save)
        if files.json.is_file():
            rec._data.update({k: v for k, v in read_json(files.json).items()
                              if k in ("history", "best", "test", "config")})
        return rec

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self._data["history"])

    @property
    def best(self) -> dict[str, Any] | None:
        return self._data["best"]

    def add_evaluation(self, entry: dict[str, Any]) -> bool:
        """Append one evaluation (``epoch``, ``map``, ...); returns whether it is the new best.
        Not written yet: :meth:`write` follows the resumable checkpoint (see ``experiment``)."""
        self._data["history"].append(dict(entry))
        improved = self.best is None or entry["map"] > self.best["map"]
        if improved:
            self._data["best"] = {"epoch": entry["epoch"], "map": entry["map"]}
        return improved

    def restore(self, history: list[dict[str, Any]], best: dict[str, Any] | None) -> None:
        """Take the history of a resumed state (authoritative over the JSON) and write it."""
        self._data["history"], self._data["best"] = list(history), best
        self.write()

    def log(self, line: str, echo: bool = True) -> None:
        if echo and self.verbose:
            print(line, flush=True)
        if self.save:
            try:
                with open(self.files.log, "a", encoding="utf-8") as fh:
                    fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
            except OSError as e:
                raise UserError(f"cannot write the log {self.files.log} ({e.strerror or reason(e)}); check the "
                                f"free space and permissions of {self.files.result_dir}") from None

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value
        self.write()

    def write(self) -> None:
        if self.save:
            _write_json(self.files.json, self._data)
