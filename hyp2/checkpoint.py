"""The two checkpoint files of a run, written and read with every field checked.

* ``{run}.ckpt`` — the best model, self-describing (:class:`Checkpoint`): its state dict, the
  :class:`~hyp2.models.ModelRecipe` that rebuilds the network and its input pipeline, the loss's
  name, hyper-parameters and state, the class names, the run's config and metadata (dataset,
  epoch, mAP, ...).
* ``{run}_last.ckpt`` — the resumable state after the last finished epoch (:class:`ResumeState`).

Each file carries a **digest**: SHA-256 over everything in it (weights, recipe, loss record,
classes, config, metadata; for the resumable state also the optimiser, scheduler, random states
and history). A file whose contents do not match its digest was altered or damaged, and is refused
in one line: nothing read from a checkpoint is trusted unchecked. Every value that rebuilds the
model or is reported is also checked against the bounds its flag has (bits, image size, epoch,
mAP), so a hand-made file is refused rather than run. Apart from that digest, the best checkpoint
keeps ``meta.model_digest``, the identity of its weights alone, which codes exported from the model
carry (:mod:`hyp2.codes`).

Files are written atomically after a free-space check (:mod:`hyp2.io`) and load with
``torch.load(weights_only=True)``: no pickle of arbitrary objects is ever read.
"""
from __future__ import annotations

import hashlib
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import UserError, reason
from .io import write_atomic
from .models import ModelRecipe, state_digest
from .validate import is_int, is_real

CHECKPOINT_FORMAT = "hyp2-checkpoint"
CHECKPOINT_VERSION = 3
LAST_FORMAT = "hyp2-last"
LAST_VERSION = 3
_RETRAIN = "retrain (the run's flags without --test), or restore the file"


# ---------------------------------------------------------------------------------------- digests


def content_digest(obj: Any) -> str:
    """16 hex digits of SHA-256 over a structure of dicts, lists, tensors, strings and numbers:
    keys sorted, tensors by dtype, shape and bytes. Equal contents give equal digests on every
    machine; any change of a value, a key or a tensor's bytes changes it."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()[:16]


def _feed(h, obj: Any) -> None:
    if torch.is_tensor(obj):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no copy
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}|".encode())
        for key in sorted(obj, key=str):
            h.update(f"K{key!r}|".encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}|".encode())
        for item in obj:
            _feed(h, item)
    else:  # str, int, float, bool, None: their JSON text is exact (floats round-trip by repr)
        h.update(f"S{json.dumps(obj, sort_keys=True, default=repr)}|".encode())


def _signed(payload: dict) -> dict:
    return {**payload, "digest": content_digest(payload)}


def _check_digest(payload: dict, bad) -> None:
    recorded = payload.get("digest")
    body = {k: v for k, v in payload.items() if k != "digest"}
    if not isinstance(recorded, str):
        raise bad("it has no digest: it was not written by this hyp2, or was altered")
    found = content_digest(body)
    if found != recorded:
        raise bad(f"its contents do not match their digest {recorded} (found {found}): the file was altered or "
                  f"damaged")


# ---------------------------------------------------------------------------------------- reading, writing


def _tensor_bytes(obj: Any) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def write_torch(path: Path, payload: Any, what: str) -> None:
    """``torch.save(payload)`` to ``path`` with :func:`~hyp2.io.write_atomic`, checking the room
    it needs."""
    write_atomic(path, lambda fh: torch.save(payload, fh), what, need=_tensor_bytes(payload) + (1 << 20))


def read_torch(path: Path, what: str, how: str) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors (missing, a folder, empty,
    another kind of file, unreadable)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file; {how}")
    if not path.is_file():
        raise UserError(f"no {what} at {path}; {how}")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {path} is empty (0 bytes), e.g. from a full disk or an interrupted copy; {how}")
    if _is_npz(path):
        raise UserError(f"{path} is a NumPy .npz file (an exported codes file?), not a {what}; {how}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign files all get one line
        raise UserError(f"cannot read {what} {path} ({reason(e)}); it may be truncated or not a hyp2 file: "
                        f"{how}") from None


def _is_npz(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def _state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in value.items())


def _non_finite(state: Mapping[str, torch.Tensor]) -> str | None:
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            return name
    return None


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
        digest: :func:`~hyp2.models.state_digest` of ``model_state``: the model's identity, which
            its exported codes carry.
        file_digest: the digest of the whole file (what the resumable state and the run JSON
            record of the best checkpoint they describe).
    """

    path: Path
    recipe: ModelRecipe
    model_state: dict[str, torch.Tensor]
    loss: dict[str, Any]
    classes: tuple[str, ...]
    meta: dict[str, Any]
    config: dict[str, Any]
    digest: str
    file_digest: str

    @property
    def backbone(self) -> str:
        return self.recipe.backbone

    @property
    def num_bits(self) -> int:
        return self.recipe.num_bits


def checkpoint_payload(*, recipe: ModelRecipe, model_state: dict, loss: Mapping[str, Any],
                       classes: list[str] | tuple[str, ...], config: dict, meta: dict[str, Any]) -> dict[str, Any]:
    """The contents of a best checkpoint, signed: ``payload["digest"]`` is its file digest and
    ``payload["meta"]["model_digest"]`` its model's.

    ``loss`` is ``{"name", "hparams", "state"}``; ``meta`` holds dataset, epoch, map, topk and
    anything else users compare.
    """
    model_state = {k: v.detach().cpu() for k, v in model_state.items()}
    return _signed({
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": model_state, "recipe": recipe.to_dict(),
        "loss": {"name": loss["name"], "hparams": dict(loss["hparams"]),
                 "state": {k: v.detach().cpu() for k, v in loss["state"].items()}},
        "classes": list(classes), "config": config,
        "meta": {**meta, "backbone": recipe.backbone, "hash_bit": recipe.num_bits, "image_size": recipe.image_size,
                 "classes": list(classes), "num_classes": len(classes), "loss": loss["name"],
                 "model_digest": state_digest(model_state)}})


def save_checkpoint(path: Path, **contents: Any) -> str:
    """Write a best checkpoint of :func:`checkpoint_payload`'s ``contents`` (atomically, after a
    free-space check); returns the model digest, the identity its exported codes carry."""
    payload = checkpoint_payload(**contents)
    write_torch(path, payload, "checkpoint")
    return payload["meta"]["model_digest"]


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and validate a best checkpoint; :class:`UserError` naming what is wrong otherwise."""
    path = Path(path)
    payload = read_torch(path, "checkpoint", _RETRAIN)
    if isinstance(payload, dict) and payload.get("format") == LAST_FORMAT:
        run = path.name.removesuffix("_last.ckpt")
        raise UserError(f"{path} is the resumable state of run {run} (for --resume), not its best checkpoint; pass "
                        f"{path.with_name(run + '.ckpt')}")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a hyp2 checkpoint (the official code's .ckpt files hold only the network's "
                        f"state dict); retrain with this code")

    def bad(what: str) -> UserError:
        return UserError(f"checkpoint {path} is malformed ({what}); {_RETRAIN}")

    version = payload.get("version")
    if version != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} has version {version!r}; this hyp2 reads version {CHECKPOINT_VERSION}: "
                        f"use the hyp2 version that wrote it, or retrain")
    for key, kind in (("model", dict), ("meta", dict), ("config", dict), ("loss", dict), ("classes", list)):
        if not isinstance(payload.get(key), kind):
            raise bad(f"'{key}' is {type(payload.get(key)).__name__}, not a {kind.__name__}")
    if not _state_dict(payload["model"]):
        raise bad("'model' is not a state dict of tensors")
    _check_digest(payload, bad)
    try:
        recipe = ModelRecipe.from_dict(payload.get("recipe"))
    except ValueError as e:
        raise bad(str(e)) from None
    loss = payload["loss"]
    if not (isinstance(loss.get("name"), str) and isinstance(loss.get("hparams"), dict)
            and _state_dict(loss.get("state"))):
        raise bad("'loss' must hold its name, hparams and state")
    classes = payload["classes"]
    if not classes or not all(isinstance(c, str) for c in classes):
        raise bad("'classes' must be a non-empty list of names")
    _check_meta(payload["meta"], bad)
    weights = state_digest(payload["model"])
    if payload["meta"].get("model_digest") != weights:
        raise bad(f"its weights do not match their recorded digest {payload['meta'].get('model_digest')} (found "
                  f"{weights}): the file was altered")
    broken = _non_finite(payload["model"])
    if broken is not None:
        raise bad(f"its weights hold NaN or infinite values ({broken}): the run diverged before it was saved")
    return Checkpoint(path, recipe, payload["model"], loss, tuple(classes), payload["meta"], payload["config"],
                      weights, payload["digest"])


def _check_meta(meta: dict, bad) -> None:
    epoch, value = meta.get("epoch"), meta.get("map")
    if epoch is not None and not (is_int(epoch) and epoch >= 1):
        raise bad(f"meta.epoch {epoch!r} is not an epoch number (an integer >= 1)")
    if value is not None and not (is_real(value) and 0.0 <= value <= 1.0):
        raise bad(f"meta.map {value!r} is not an mAP (a number in [0, 1])")


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


@dataclass(frozen=True)
class ResumeState:
    """The resumable state after ``epoch`` finished epochs (``{run}_last.ckpt``).

    ``history`` and ``best`` are the run JSON's (``best``: ``{"epoch", "map", "digest"}`` of the
    best checkpoint this state describes, or None before any evaluation); ``config`` is the run's
    ``Config.to_dict()``; ``rng`` every random state (:func:`hyp2.train.rng_state`).
    """

    epoch: int
    train_seconds: float
    model: dict[str, torch.Tensor]
    loss: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    config: dict[str, Any]


def save_last(path: Path, state: ResumeState) -> None:
    """Write the resumable state (atomically, after a free-space check), with its digest."""
    payload = {"format": LAST_FORMAT, "version": LAST_VERSION, **{f: getattr(state, f) for f in _LAST_FIELDS}}
    write_torch(path, _signed(payload), "resumable checkpoint")


_LAST_FIELDS = tuple(ResumeState.__dataclass_fields__)


def load_last(path: Path, required_config: tuple[str, ...] = ()) -> ResumeState:
    """Read and validate ``{run}_last.ckpt``: its digest, and the type and range of every field
    (``required_config``: keys its config must hold). One line naming the problem otherwise."""
    how = "delete it to start over, or pass --overwrite"
    payload = read_torch(path, "resumable checkpoint", how)

    def bad(what: str) -> UserError:
        return UserError(f"resumable checkpoint {path} is malformed ({what}); {how}")

    if not isinstance(payload, dict) or payload.get("format") != LAST_FORMAT:
        raise UserError(f"{path} is not a hyp2 resumable checkpoint; {how}")
    if payload.get("version") != LAST_VERSION:
        raise UserError(f"resumable checkpoint {path} has version {payload.get('version')!r}; this hyp2 reads version "
                        f"{LAST_VERSION}: finish the run with the hyp2 version that wrote it, or {how}")
    missing = [f for f in _LAST_FIELDS if f not in payload]
    if missing:
        raise bad(f"no {', '.join(missing)}")
    _check_digest(payload, bad)
    fields = {f: payload[f] for f in _LAST_FIELDS}
    for key in ("model", "loss"):
        if not _state_dict(fields[key]):
            raise bad(f"'{key}' is not a state dict of tensors")
    for key in ("optimizer", "scheduler", "rng", "config"):
        if not isinstance(fields[key], dict):
            raise bad(f"'{key}' is {type(fields[key]).__name__}, not a dict")
    if not (is_int(fields["epoch"]) and fields["epoch"] >= 1):
        raise bad(f"epoch {fields['epoch']!r} is not an epoch number (an integer >= 1)")
    if not (is_real(fields["train_seconds"]) and math.isfinite(fields["train_seconds"])
            and fields["train_seconds"] >= 0):
        raise bad(f"train_seconds {fields['train_seconds']!r} is not a duration (a finite number >= 0)")
    absent = [k for k in required_config if k not in fields["config"]]
    if absent:
        raise bad(f"its config lacks {', '.join(absent)}")
    _check_history(fields["history"], fields["best"], fields["epoch"], bad)
    return ResumeState(**fields)


def _check_history(history: Any, best: Any, epoch: int, bad) -> None:
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise bad("'history' must be a list of evaluations")
    for i, h in enumerate(history):
        if not (is_int(h.get("epoch")) and 1 <= h["epoch"] <= epoch):
            raise bad(f"history[{i}].epoch {h.get('epoch')!r} is not an epoch from 1 to {epoch}")
        if not (is_real(h.get("map")) and 0.0 <= h["map"] <= 1.0):
            raise bad(f"history[{i}].map {h.get('map')!r} is not an mAP (a number in [0, 1])")
    if best is None:
        if history:
            raise bad("'best' is missing although the history holds evaluations")
        return
    if not (isinstance(best, dict) and isinstance(best.get("digest"), str)
            and any(h["epoch"] == best.get("epoch") and h["map"] == best.get("map") for h in history)):
        raise bad(f"'best' {best!r} is not one of its history's evaluations with the digest of its checkpoint")
