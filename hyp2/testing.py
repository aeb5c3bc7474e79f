"""``--test``: rebuild a trained model from its checkpoint alone and write every retrieval metric.

The checkpoint is found by the run's name (the official ``--test``: ``--result_dir`` and the flags
that name the run) or given as ``--checkpoint PATH``. It says what to rebuild (recipe, loss,
classes, image size); flags that disagree with it stop the run in one line, and so does a best
checkpoint that is not the one the run's resumable state or JSON describes. Query and database
are encoded, every metric of :func:`hyp2.evaluate.full_evaluation` goes into the run JSON's
``test`` section, and ``--export_codes``/``--plots`` write the codes and figures beside it.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from .checkpoint import Checkpoint, check_compatible, load_checkpoint, load_last
from .checkpointer import check_best, recover
from .config import Config
from .errors import UserError, reason
from .evaluate import encode, full_evaluation
from .experiment import eval_loader, header, load_data, log_data, protocol_topk
from .hasher import rebuild_model
from .io import write_atomic
from .logs import configure, run_log
from .metrics import binarize
from .runfile import RunRecord, load_run
from .runfiles import RunFiles, owned_run

log = logging.getLogger("hyp2")
SAMPLE_DB, SAMPLE_QUERIES = 2000, 10


def run_test(config: Config) -> float:
    """Evaluate the run's best checkpoint; returns its mAP (logged as ``map: <value>``)."""
    configure(config.verbosity)
    for flag, wanted in (("--plots", config.plots), ("--export_codes", config.export_codes)):
        if wanted and not config.save:
            raise UserError(f"{flag} writes files beside the checkpoint; drop --no_save")
    device = torch.device(config.device)
    with owned_run(config.run_dir, config.run_name, save=config.save) as files:
        if config.save:
            recover(files)
        ckpt = load_checkpoint(config.checkpoint or files.checkpoint)
        check_compatible(ckpt, _flags_to_check(config))
        _check_described(files, ckpt)
        with run_log(files.log if config.save else None):
            return _evaluate(config, ckpt, files, device)


def _flags_to_check(config: Config) -> dict[str, tuple[str, Any]]:
    """The checkpoint properties the command line states, as ``{key: (flag, value)}``: the run's
    name fixes backbone, bits and loss; image size and loss options only when given."""
    expected = {"backbone": ("--backbone", config.backbone), "hash_bit": ("--hash_bit", config.hash_bit),
                "loss": ("--loss", config.loss)}
    if config.image_size is not None:
        expected["image_size"] = ("--image_size", config.image_size)
    for key, value in config.loss_options:
        expected[f"loss.{key}"] = (f"--loss_opt {key}=", value)
    return expected


def _check_described(files: RunFiles, ckpt: Checkpoint) -> None:
    """The checkpoint must be the best one the run's resumable state (else its JSON) records."""
    if ckpt.path != files.checkpoint:
        return  # --checkpoint elsewhere than its run's folder: nothing beside it describes it
    if files.last.exists():
        check_best(files, ckpt, load_last(files.last).best, str(files.last))
    elif files.json.is_file():
        check_best(files, ckpt, load_run(files.json).get("best"), str(files.json))


def _encoded(model, loader, device, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    outputs, labels = encode(model, loader, device, f"encode {what}")
    if not torch.isfinite(outputs).all():
        raise UserError(f"the checkpoint's model gives NaN or infinite outputs on the {what} images; the checkpoint "
                        f"is broken: retrain")
    return outputs, labels


def _evaluate(config: Config, ckpt: Checkpoint, files: RunFiles, device: torch.device) -> float:
    data = load_data(config, image_size=ckpt.recipe.image_size)
    check_compatible(ckpt, {"classes": (f"--dataset {config.dataset}", list(data.classes))})
    model = rebuild_model(ckpt, device)
    topk = protocol_topk(config, data)
    query = _encoded(model, eval_loader(data.query, config, device), device, "query")
    database = _encoded(model, eval_loader(data.database, config, device), device, "database")
    results = full_evaluation(query, database, topk)
    results["checkpoint_epoch"] = ckpt.meta.get("epoch")
    results["model_digest"] = ckpt.digest
    record = RunRecord.for_test(files.json, header(config, data, topk, ckpt.loss["hparams"]), save=config.save)
    log_data(data)
    trained_on = ckpt.meta.get("data")
    if trained_on is not None and trained_on != dict(data.provenance):
        log.warning(f"the checkpoint was trained on other data ({trained_on}) than this test uses "
                    f"({dict(data.provenance)})")
    if config.save:
        sample = files.path("_sample.npz")
        _save_codes_sample(sample, query, database, seed=config.seed)
        results["codes_sample"] = sample.name
    record.set("test", results)
    log.info(f"test: map@{topk} {results['map']:.4f}, precision within radius 2 {results['precision_radius2']:.4f} "
             f"(checkpoint from epoch {ckpt.meta.get('epoch')}, {ckpt.recipe.image_size}px)")
    if config.export_codes or config.plots:  # the figures' gallery shows exactly these codes
        results["codes"] = _export(config, ckpt, files, data, topk, query, database)
        record.set("test", results)
    if config.plots:
        _plots(config, files)
    log.info(f"map: {results['map']}")
    return results["map"]


def _export(config: Config, ckpt: Checkpoint, files: RunFiles, data, topk: int, query, database) -> str:
    from .codes import export_codes

    # what rebuilds the dataset to show its images (hyp2.gallery.ImageSource.for_codes)
    meta = {**ckpt.meta, "topk": topk, "data_root": str(config.data_root), "subset": config.subset,
            "seed": config.seed, "split_file": str(config.split_file) if config.split_file else None}
    written = export_codes(files.path("_codes.npz"), database[0], database[1], data.database.ids, ckpt.num_bits,
                           list(data.classes), meta, queries=(query[0], query[1], data.query.ids))
    log.info("exported the database and query codes: " + ", ".join(str(p) for p in written))
    return written[0].name


def _plots(config: Config, files: RunFiles) -> None:
    from .plots import plot_run

    notes: list[str] = []
    try:
        written = plot_run(files.json, files.result_dir, seed=config.seed, notes=notes)
    except OSError as e:  # as hyp2.report does: the figures' folder is the command's to name
        raise UserError(f"--plots: cannot write the figures into {files.result_dir} ({reason(e)}); check its free "
                        f"space and permissions") from None
    for note in notes:
        log.info(f"plots: {note}")
    log.info(f"plots: wrote {len(written)} files to {files.result_dir}")


def _save_codes_sample(path, query, database, seed: int) -> None:
    """A seeded sample of ±1 codes and labels for t-SNE figures (see docs/run-json.md)."""
    rng = np.random.default_rng(seed)
    (q, ql), (d, dl) = query, database
    di = np.sort(rng.choice(len(d), size=min(SAMPLE_DB, len(d)), replace=False))
    qi = np.sort(rng.choice(len(q), size=min(SAMPLE_QUERIES, len(q)), replace=False))
    arrays = {"db_codes": binarize(d[di]).cpu().numpy(), "db_labels": dl[di].cpu().numpy().astype(np.uint8),
              "query_codes": binarize(q[qi]).cpu().numpy(), "query_labels": ql[qi].cpu().numpy().astype(np.uint8)}
    write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays), "codes sample")
