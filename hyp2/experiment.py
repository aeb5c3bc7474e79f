"""One run, from a frozen :class:`~hyp2.config.Config`: train with periodic evaluation and keep the
best checkpoint, or (``--test``) rebuild the trained model from its checkpoint alone and write every
retrieval metric. The protocol is HyP²'s (Xu et al., ACM MM 2022, Sec. 4.1): mAP@K of query vs.
database codes, evaluated every few epochs, best checkpoint kept.

Training: :func:`run_train` takes the run's name (:func:`hyp2.runfiles.owned_run`), completes what
a killed run left (:func:`hyp2.checkpointer.recover`), builds every part once
(:func:`build_training`), resumes if asked, and hands the loop (:func:`hyp2.train.fit`) a
:class:`~hyp2.checkpointer.Checkpointer`, which writes the files in their one safe order.
"""
from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .checkpoint import ResumeState
from .checkpointer import Checkpointer, recover
from .config import Config
from .configfile import write_run_config
from .data import DataOptions, RetrievalData, load_dataset, unlabelled_warning
from .distributed import (Dist, all_agree, average_gradients, barrier, broadcast_float, gather_batch, gather_rows,
                          init_from_env, per_rank_batch, shard, shutdown)
from .errors import UserError, reason
from .evaluate import encode
from .logs import Board, configure, run_log
from .losses import HashLoss, build_loss
from .metrics import mean_average_precision
from .models import ModelRecipe, initial_model
from .runfile import RunRecord, load_run
from .runfiles import RunFiles, owned_run
from .train import StepOptions, TrainingRun, fit, make_loader, make_optimizer, make_scheduler, seed_everything, \
    set_rng_state

log = logging.getLogger("hyp2")
# Flags whose value --resume must find unchanged: they shape the optimisation (--epochs and
# --eval_every may change, to extend a run).
RESUME_KEYS = ("dataset", "backbone", "hash_bit", "loss", "image_size", "batch_size", "seed", "lr", "rate", "beta",
               "zeta", "loss_options", "amp", "subset", "pretrained")


def run(config: Config) -> float:
    """Train or test as ``config.test`` says; returns the mAP logged as ``map: <value>``."""
    if config.test:
        from .testing import run_test
        return run_test(config)
    return run_train(config)


# ---------------------------------------------------------------------------------------- shared parts


def load_data(config: Config, image_size: int | None = None) -> RetrievalData:
    """The dataset at ``image_size`` (default ``config.image_size``), subset and cached as asked."""
    options = DataOptions(root=config.data_root, image_size=image_size or config.image_size, seed=config.seed,
                          cache=config.cache, voc_url=config.voc_url, check_md5=config.check_md5,
                          split_file=config.split_file, download=config.download)
    return load_dataset(config.dataset, options, subset=config.subset)


def log_data(data: RetrievalData) -> None:
    """Where the data came from (lists, split), and a warning about items without any label."""
    for key, value in data.provenance.items():
        log.info(f"data {key}: {value}")
    warning = unlabelled_warning(data)
    if warning:
        log.warning(warning.removeprefix("warning: "))


def protocol_topk(config: Config, data: RetrievalData) -> int:
    """K of mAP@K: ``--retrieve`` when set, else the protocol's, capped at the database size."""
    k = config.retrieve or data.topk or len(data.database)
    return min(k, len(data.database))


def make_loss(config: Config, num_classes: int) -> HashLoss:
    """The ``--loss`` with its options for C classes and K bits (HyP²'s ζ from the code table
    unless given)."""
    try:
        return build_loss(config.loss, num_classes, config.hash_bit, seed=config.seed,
                          options=dict(config.loss_options))
    except ValueError as e:
        text = str(e).replace("use K ≥", "use --hash_bit ≥")
        raise UserError(f"--loss {config.loss} with --hash_bit {config.hash_bit} and {num_classes} classes: "
                        f"{text}") from None


def header(config: Config, data: RetrievalData, topk: int, loss_hparams: dict[str, Any]) -> dict[str, Any]:
    """The run JSON's identification: run, dataset, model, loss with every hyper-parameter, classes,
    mAP@K and the config."""
    return {"run": config.run_name, "dataset": config.dataset, "backbone": config.backbone,
            "hash_bit": config.hash_bit, "loss": config.loss, "loss_hparams": loss_hparams,
            "classes": list(data.classes), "num_classes": data.num_classes, "topk": topk,
            "data": dict(data.provenance), "config": config.to_dict()}


def eval_loader(dataset, config: Config, device: torch.device, d: Dist | None = None) -> DataLoader:
    """The loader encoding a split — this rank's contiguous shard under torchrun — built once per run
    so its workers are reused by every evaluation."""
    part = Subset(dataset, shard(len(dataset), d)) if d is not None and d.enabled else dataset
    return make_loader(part, config.batch_size, train=False, workers=config.workers,
                       pin_memory=device.type == "cuda")


# ---------------------------------------------------------------------------------------- training


def run_train(config: Config) -> float:
    d, device_name = init_from_env(config.device)
    configure(config.verbosity, rank=d.rank)
    try:
        with owned_run(config.result_dir, config.run_name, save=config.save, first=d.is_main,
                       agree=lambda ok: all_agree(ok, d)) as files:
            retired: list[str] = []
            if config.save and d.is_main:
                recover(files)
                _refuse_to_replace(config, files)
                if config.overwrite:  # before this run writes anything, its log included
                    retired = files.retire()
            with run_log(files.log if config.save and d.is_main else None):
                if retired:
                    log.info(f"--overwrite: moved the earlier run's {len(retired)} files to {files.retired}; they are "
                             f"deleted when this run's first epoch is saved")
                best = _train(config, d, torch.device(device_name), files, retiring=bool(retired))
        if d.enabled:
            gc.collect()  # a DDP module still alive at destroy_process_group can abort (gloo)
            barrier(d)  # and no rank tears the group down while another still talks to it
        return best
    finally:
        shutdown(d)


def _refuse_to_replace(config: Config, files: RunFiles) -> None:
    if config.overwrite or config.resume:
        if config.resume and not files.last.exists() and files.json.is_file() and load_run(files.json).get("history"):
            # The JSON is written after the resumable state, so a history without that state means
            # it was removed, not that a first epoch was interrupted: starting over would replace
            # the earlier best checkpoint and history.
            raise UserError(f"--resume: {files.last} is missing but {files.json} holds the history of an earlier "
                            f"run, which starting over would replace; restore {files.last.name}, or pass "
                            f"--overwrite instead of --resume to start over")
        return
    existing = [p for p in (files.checkpoint, files.last) if p.exists()]
    if existing:
        raise UserError(f"{existing[0]} exists from an earlier run; pass --resume to continue it, "
                        f"--overwrite to replace it, or another --result_dir")


@dataclass
class Prepared:
    """A training run's parts beside the loop's (:class:`~hyp2.train.TrainingRun`): the data, the
    protocol's K and the recipe checkpoints record."""

    run: TrainingRun
    data: RetrievalData
    topk: int
    recipe: ModelRecipe
    drop_last: bool


def _train(config: Config, d: Dist, device: torch.device, files: RunFiles, retiring: bool) -> float:
    parts = build_training(config, d, device)
    run, data = parts.run, parts.data
    head = header(config, data, parts.topk, run.loss_fn.hparams)
    save = config.save and d.is_main
    record = RunRecord(files.json, head, save=save)
    checkpointer = Checkpointer(files, record, run, parts.recipe, data.classes, config.to_dict(),
                                {k: v for k, v in head.items() if k != "config"}, config.loss, save=save,
                                retiring=retiring)
    start, seconds = _resume(config, d, checkpointer, run, record)
    if save:  # after the resume's checks: a refused run leaves the earlier run's file as it was
        write_run_config(config, files.yaml)  # `retrieval.py --config {run}.yaml` repeats the run
    _log_start(config, parts, d)
    if config.tensorboard and d.is_main and config.save:
        run.board = Board(files.tensorboard, [g.get("name", str(i)) for i, g in enumerate(run.optimizer.param_groups)])
    try:
        fit(run, checkpointer, start, seconds)
    finally:
        if run.board is not None:
            run.board.close()
    best = record.best
    if best is None:
        raise UserError(f"{files.last} already holds all {config.epochs} epochs but no evaluation; "
                        f"raise --epochs to continue")
    if checkpointer.save:
        log.info(f"best checkpoint: {files.checkpoint} (epoch {best['epoch']})")
    log.info(f"map: {best['map']}")
    return best["map"]


def build_training(config: Config, d: Dist, device: torch.device) -> Prepared:
    """Every part of a training run, built once: data, loss, network (DDP, compiled), loaders,
    optimiser, scheduler, and the evaluation of mAP@K."""
    cuda = device.type == "cuda"
    seed_everything(config.seed)
    # Under torchrun, each machine's first process downloads / caches; the others then find the
    # files ready instead of racing to write them.
    if d.local_rank != 0:
        barrier(d)
    data = load_data(config)
    if d.local_rank == 0:
        barrier(d)
    topk = protocol_topk(config, data)
    loss_fn = make_loss(config, data.num_classes).to(device)
    recipe = ModelRecipe.for_training(config.backbone, config.hash_bit, config.image_size,
                                      pretrained=config.pretrained)
    model = initial_model(recipe, config.pretrained, config.weights).to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    net: nn.Module = model
    step = StepOptions(amp=config.amp, channels_last=cuda)
    if d.enabled:
        seed_everything(config.seed + d.rank)  # distinct augmentation per rank; weights come from rank 0
        net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
        step.gather = lambda t: gather_batch(t, d)
        step.after_backward = lambda: average_gradients(loss_fn.parameters(), d)
    if config.compile:
        net = _maybe_compile(net, device)
    sampler = (DistributedSampler(data.train, d.world_size, d.rank, shuffle=True, seed=config.seed)
               if d.enabled else None)
    batch = per_rank_batch(config.batch_size, d)
    # A last batch of one image cannot train a BatchNorm network (its batch statistics are
    # undefined); it is dropped, that one image changing with the shuffle every epoch.
    per_rank = len(sampler) if sampler is not None else len(data.train)
    drop_last = per_rank % batch == 1 and per_rank > 1 and _has_batchnorm(model)
    train_loader = make_loader(data.train, batch, train=True, workers=config.workers, seed=config.seed,
                               pin_memory=cuda, sampler=sampler, drop_last=drop_last)
    query_loader = eval_loader(data.query, config, device, d)
    db_loader = eval_loader(data.database, config, device, d)

    def evaluate() -> float:
        q, ql = _encode_split(model, query_loader, len(data.query), device, d, "encode query")
        db, dl = _encode_split(model, db_loader, len(data.database), device, d, "encode database")
        m = mean_average_precision(q, db, ql, dl, topk=topk) if d.is_main else 0.0
        return broadcast_float(m, d, device)

    optimizer = make_optimizer(model, loss_fn, config.lr, config.rate)
    run = TrainingRun(model, net, loss_fn, optimizer, make_scheduler(optimizer), train_loader, device,
                      config.epochs, config.eval_every, evaluate, step)
    return Prepared(run, data, topk, recipe, drop_last)


def _encode_split(model, loader: DataLoader, size: int, device, d: Dist, desc: str):
    """Encode a split through its :func:`eval_loader`, gathered from all ranks, in dataset order."""
    out, labels = encode(model, loader, device, desc)
    return gather_rows(out, size, d), gather_rows(labels, size, d)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _maybe_compile(net: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(net)``, or ``net`` with a warning when compilation cannot work here (no C++
    compiler on the CPU, no Triton on CUDA): a tiny function is compiled first to find out."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4, device=device))
    except Exception as e:  # noqa: BLE001 - inductor raises many types; all mean "cannot compile here"
        log.warning(f"--compile: torch.compile does not work on this machine ({reason(e)}); training without it. "
                    f"On the CPU it needs a working C++ compiler (g++ or $CXX), on CUDA Triton")
        return net
    return torch.compile(net)


def _resume(config: Config, d: Dist, checkpointer: Checkpointer, run: TrainingRun,
            record: RunRecord) -> tuple[int, float]:
    """The epoch to start from and the training seconds so far: 1 and 0 for a fresh run."""
    files = checkpointer.files
    if config.resume and not all_agree(files.last.exists(), d):
        raise UserError(f"--resume: {files.last} exists on some machines only; under torchrun across machines, "
                        f"--result_dir must be on a file system they all share")
    if not config.resume:
        return 1, 0.0
    state = checkpointer.resume(RESUME_KEYS)
    if state is None:
        log.info(f"--resume: no earlier state of {config.run_name} in {config.result_dir}, starting from epoch 1")
        return 1, 0.0
    current = config.to_dict()
    for key in RESUME_KEYS:
        if state.config[key] != current[key]:
            raise UserError(f"--resume: {files.last} was trained with --{key} {state.config[key]} but this run has "
                            f"--{key} {current[key]}; use the same flags, or --overwrite to start over")
    _load_state(files.last, state, run)
    # The history saved with this state is authoritative: the JSON is only written after it, so an
    # evaluation the killed run recorded in the JSON alone is dropped here and redone.
    record.restore(state.history, state.best)
    log.info(f"resumed {config.run_name} from {files.last} after epoch {state.epoch}")
    return state.epoch + 1, state.train_seconds


def _load_state(path, state: ResumeState, run: TrainingRun) -> None:
    """Put a resumable state into the run's parts; one line when a part does not fit."""
    for what, load in (("model", lambda: run.model.load_state_dict(state.model)),
                       ("loss", lambda: run.loss_fn.load_state_dict(state.loss)),
                       ("optimizer", lambda: run.optimizer.load_state_dict(state.optimizer)),
                       ("scheduler", lambda: run.scheduler.load_state_dict(state.scheduler)),
                       ("rng", lambda: set_rng_state(state.rng, run.train_loader.generator))):
        try:
            load()
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise UserError(f"--resume: the {what} state in {path} does not fit this run ({reason(e)}); it is not "
                            f"this run's state: delete it to start over, or pass --overwrite") from None


def _log_start(config: Config, parts: Prepared, d: Dist) -> None:
    data, run = parts.data, parts.run
    hparams = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in run.loss_fn.hparams.items())
    log.info(f"run {config.run_name}: {len(data.train)} train / {len(data.query)} query / "
             f"{len(data.database)} database images, {data.num_classes} classes, {config.hash_bit} bits, "
             f"mAP@{parts.topk}, loss {config.loss}" + (f" ({hparams})" if hparams else "")
             + f", {config.backbone} at {config.image_size}px on {run.device}"
             + (f" x {d.world_size} processes" if d.enabled else ""))
    log.debug(f"config: {config.to_dict()}")
    log_data(data)
    if parts.drop_last:
        log.info("the last training batch would hold one image, which a BatchNorm network cannot train "
                 "on; it is dropped every epoch (a different image each time)")
    if config.amp and run.device.type != "cuda":
        log.info("--amp: bf16 autocast is used on CUDA only; this run on the CPU is in float32")
