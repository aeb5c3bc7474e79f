"""The order in which a training run writes its files, enforced in one place.

At the end of every epoch (:meth:`Checkpointer.end_epoch`):

1. a new best model goes to ``{run}.next.ckpt`` (the best checkpoint in place is untouched);
2. the resumable state ``{run}_last.ckpt`` is written: this is the **commit**. It holds the history
   and the best evaluation with the digest of the best checkpoint it describes;
3. the new best is renamed to ``{run}.ckpt``;
4. the run JSON is rewritten from that state.

Each write is atomic, so a kill at any moment leaves either the previous committed state or the
new one, and the next start completes or undoes what was in flight (:meth:`Checkpointer.recover`):
a ``{run}.next.ckpt`` whose digest the resumable state records is renamed into place, any other is
an uncommitted best and is deleted. ``--resume`` and ``--test`` then check that ``{run}.ckpt`` is
the checkpoint the resumable state (or, without one, the JSON) describes, and refuse in one line
when it is not.

``--overwrite`` first moves the earlier run's files, the resumable state first, into
``{run}.retired/`` (:meth:`~hyp2.runfiles.RunFiles.retire`); that folder is deleted once the fresh
run commits its first epoch. A start that finds the folder and no committed state of the fresh run
moves the earlier run back: a kill at any moment leaves the earlier run whole, or the fresh one.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from .checkpoint import Checkpoint, ResumeState, checkpoint_payload, load_checkpoint, load_last, save_last, write_torch
from .errors import UserError
from .models import ModelRecipe
from .runfile import RunRecord
from .runfiles import RunFiles
from .train import EpochStats, TrainingRun, rng_state

log = logging.getLogger("hyp2")


def recover(files: RunFiles) -> None:
    """Complete or undo what a killed run of this name left in flight (call it holding the lock):
    an uncommitted new best, an unfinished ``--overwrite`` retirement."""
    if files.pending.exists():
        state = load_last(files.last) if files.last.exists() else None
        best = state.best if state is not None else None
        if best is not None and _file_digest(files.pending) == best["digest"]:
            os.replace(files.pending, files.checkpoint)  # committed before the kill: finish step 3
        else:
            files.pending.unlink()  # never committed: the best checkpoint in place is the one
    if files.retired.is_dir():
        if files.last.exists():  # the fresh run committed (the earlier state is moved first)
            files.drop_retired()
        else:
            moved = files.restore_retired()
            log.warning(f"an --overwrite of run {files.run} stopped before its first epoch was saved; the earlier "
                        f"run is back in place ({len(moved)} files)")


def _file_digest(path) -> str | None:
    try:
        return load_checkpoint(path).file_digest
    except UserError:
        return None


def check_best(files: RunFiles, ckpt: Checkpoint, described: dict[str, Any] | None, source: str) -> None:
    """Refuse a best checkpoint that is not the one ``described`` (``best`` of the resumable state
    or the JSON, read from ``source``) records: the files come from different runs."""
    digest = (described or {}).get("digest")
    if digest is not None and digest != ckpt.file_digest:
        raise UserError(f"{ckpt.path} (digest {ckpt.file_digest}) is not the best checkpoint {source} describes "
                        f"(epoch {described.get('epoch')}, digest {digest}): the run's files come from different runs; "
                        f"restore the matching files, or retrain with --overwrite")


@dataclass
class Checkpointer:
    """Writes one training run's files in the order of the module docstring.

    ``meta`` is the run JSON's header without its config (dataset, classes, topk, loss
    hyper-parameters, ...); the best checkpoint stores it with the epoch and mAP. With
    ``save=False`` (``--no_save``) nothing is written.
    """

    files: RunFiles
    record: RunRecord
    run: TrainingRun
    recipe: ModelRecipe
    classes: tuple[str, ...]
    config: dict[str, Any]
    meta: dict[str, Any]
    loss_name: str
    save: bool = True
    #: an ``--overwrite`` moved the earlier run aside; it is deleted at this run's first commit
    retiring: bool = False

    def resume(self, required_config: tuple[str, ...]) -> ResumeState | None:
        """The committed resumable state, checked against the best checkpoint it describes; None
        when there is none."""
        if not self.files.last.exists():
            return None
        state = load_last(self.files.last, required_config)
        if state.best is not None:
            check_best(self.files, load_checkpoint(self.files.checkpoint), state.best, str(self.files.last))
        return state

    def end_epoch(self, epoch: int, train_seconds: float, stats: EpochStats, evaluation: float | None) -> None:
        """Record the epoch, and write its files: new best, resumable state (the commit), JSON."""
        improved = False
        if evaluation is not None:
            improved = self.record.add_evaluation({
                "epoch": epoch, "map": evaluation, "loss": stats.loss, "train_seconds": round(train_seconds, 3),
                "lr": stats.lr, "components": stats.components})
            if improved and self.save:
                self.record.set_best_digest(self._save_best(epoch, evaluation))
            best = self.record.best
            log.info(f"epoch {epoch}: map {evaluation:.4f} (best {best['map']:.4f} at epoch {best['epoch']})"
                     + (" -> saved" if improved and self.save else ""))
        if not self.save:
            return
        save_last(self.files.last, self._state(epoch, train_seconds))
        if improved:
            os.replace(self.files.pending, self.files.checkpoint)
        self.record.write()
        if self.retiring:
            self.files.drop_retired()
            self.retiring = False

    def _save_best(self, epoch: int, value: float) -> str:
        """Write the new best to ``{run}.next.ckpt``; returns its file digest."""
        run = self.run
        payload = checkpoint_payload(recipe=self.recipe, model_state=run.model.state_dict(),
                                     loss={"name": self.loss_name, "hparams": run.loss_fn.hparams,
                                           "state": run.loss_fn.state_dict()},
                                     classes=list(self.classes), config=self.config,
                                     meta={**self.meta, "epoch": epoch, "map": value})
        write_torch(self.files.pending, payload, "checkpoint")
        return payload["digest"]

    def _state(self, epoch: int, train_seconds: float) -> ResumeState:
        run = self.run
        return ResumeState(epoch=epoch, train_seconds=train_seconds, model=run.model.state_dict(),
                           loss=run.loss_fn.state_dict(), optimizer=run.optimizer.state_dict(),
                           scheduler=run.scheduler.state_dict(), rng=rng_state(run.train_loader.generator),
                           history=self.record.history, best=self.record.best, config=self.config)
