"""One run, from a frozen :class:`~hyp2.config.Config`: train with periodic evaluation and keep the
best checkpoint, or (``--test``) rebuild the trained model from its checkpoint alone and write every
retrieval metric. The protocol is HyP²'s (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for
Multi-label Image Retrieval", ACM MM 2022, Sec. 4.1): mAP@K of query vs. database codes, evaluated
every few epochs, best checkpoint kept."""
from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .config import Config
from .data import DataOptions, RetrievalData, load_dataset, unlabelled_warning
from .distributed import (Dist, all_agree, average_gradients, barrier, broadcast_float, gather_batch, gather_rows,
                          init_from_env, per_rank_batch, shard, shutdown)
from .errors import UserError, reason
from .evaluate import encode, full_evaluation
from .hasher import rebuild_model
from .losses import HashLoss, build_loss
from .metrics import binarize, mean_average_precision
from .models import ModelRecipe, initial_model
from .results import (RunFiles, RunLock, RunRecorder, check_compatible, load_checkpoint, load_last,
                      prepare_result_dir, read_json, save_checkpoint, save_last, write_atomic)
from .train import (EpochStats, fit, make_loader, make_optimizer, make_scheduler, rng_state, seed_everything,
                    set_rng_state)

SAMPLE_DB, SAMPLE_QUERIES = 2000, 10
# Flags whose value --resume must find unchanged: they shape the optimisation (--epochs and
# --eval_every may change, to extend a run).
RESUME_KEYS = ("dataset", "backbone", "hash_bit", "loss", "image_size", "batch_size", "seed", "lr", "rate", "beta",
               "zeta", "loss_options", "amp", "subset", "pretrained")


def run(config: Config) -> float:
    """Train or test as ``config.test`` says; returns the mAP printed as ``map: <value>``."""
    return run_test(config) if config.test else run_train(config)


# ---------------------------------------------------------------------------------------- shared parts


def load_data(config: Config, image_size: int | None = None) -> RetrievalData:
    """The dataset at ``image_size`` (default ``config.image_size``), subset and cached as asked."""
    options = DataOptions(root=config.data_root, image_size=image_size or config.image_size, seed=config.seed,
                          cache=config.cache, voc_url=config.voc_url, check_md5=config.check_md5,
                          split_file=config.split_file, download=config.download)
    return load_dataset(config.dataset, options, subset=config.subset)


def log_data(rec: RunRecorder, data: RetrievalData) -> None:
    """Where the data came from (lists, split), and a warning about items without any label."""
    for key, value in data.provenance.items():
        rec.log(f"data {key}: {value}")
    warning = unlabelled_warning(data)
    if warning:
        rec.log(warning)


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
        raise UserError(f"--loss {config.loss} with --hash_bit {config.hash_bit} and {num_classes} classes: "
                        f"{e}") from None


def loss_record(name: str, loss_fn: HashLoss) -> dict[str, Any]:
    """What a checkpoint keeps of the loss: its name, resolved hyper-parameters and state."""
    return {"name": name, "hparams": loss_fn.hparams, "state": loss_fn.state_dict()}


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


@contextlib.contextmanager
def owned_run(config: Config, d: Dist | None = None) -> Iterator[RunFiles]:
    """Hold the run's name in ``--result_dir`` for the block (see :class:`~hyp2.results.RunLock`):
    the first process of the job creates the folder, takes the lock and removes this run's own
    stale temporary files; every process learns whether that worked (no rank waits forever)."""
    files, d = RunFiles(config.result_dir, config.run_name), d or Dist()
    if not config.save:
        yield files
        return
    lock, error = RunLock(files), None
    if d.is_main:
        try:
            prepare_result_dir(config.result_dir)
            lock.__enter__()
            files.remove_stale_temps()  # left by a killed writer of this run; we own the name now
        except UserError as e:
            lock.__exit__(None, None, None)  # a no-op unless the lock was taken before the failure
            error = e
    if not all_agree(error is None, d) or error is not None:
        raise error or UserError(f"run {config.run_name}: the first process could not take {files.lock}")
    try:
        yield files
    finally:
        lock.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------- training


def run_train(config: Config) -> float:
    d, device_name = init_from_env(config.device)
    try:
        with owned_run(config, d) as files:
            best = _Training(config, d, torch.device(device_name), files).run()
        if d.enabled:
            gc.collect()  # a DDP module still alive at destroy_process_group can abort (gloo)
            barrier(d)  # and no rank tears the group down while another still talks to it
        return best
    finally:
        shutdown(d)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _maybe_compile(net: nn.Module, device: torch.device, log) -> nn.Module:
    """``torch.compile(net)``, or ``net`` with a warning when compilation cannot work here (no C++
    compiler on the CPU, no Triton on CUDA): a tiny function is compiled first to find out."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4, device=device))
    except Exception as e:  # noqa: BLE001 - inductor raises many types; all mean "cannot compile here"
        log(f"warning: --compile: torch.compile does not work on this machine ({reason(e)}); training without it. "
            f"On the CPU it needs a working C++ compiler (g++ or $CXX), on CUDA Triton")
        return net
    return torch.compile(net)


@dataclass
class _Training:
    """One training run: its parts, built from the config, and the callbacks :func:`fit` calls."""

    config: Config
    d: Dist
    device: torch.device
    files: RunFiles

    def run(self) -> float:
        self._refuse_to_replace()
        self._build()
        start_epoch, seconds = self._resume()
        self._log_start()
        c, cuda = self.config, self.device.type == "cuda"
        step_options = {"amp": c.amp, "channels_last": cuda}
        if self.d.enabled:
            step_options.update(gather=lambda t: gather_batch(t, self.d),
                                after_backward=lambda: average_gradients(self.loss_fn.parameters(), self.d))
        fit(self.net, self.loss_fn, self.train_loader, optimizer=self.optimizer, scheduler=self.scheduler,
            device=self.device, epochs=c.epochs, eval_every=c.eval_every, evaluate=self.evaluate,
            on_epoch=self.on_epoch, on_evaluation=self.on_evaluation, on_epoch_end=self.on_epoch_end,
            start_epoch=start_epoch, train_seconds=seconds, **step_options)
        return self._finish()

    def _refuse_to_replace(self) -> None:
        c, files = self.config, self.files
        if not c.save or c.overwrite:
            return
        if not c.resume:
            existing = [p for p in (files.checkpoint, files.last) if p.exists()]
            if existing:
                raise UserError(f"{existing[0]} exists from an earlier run; pass --resume to continue it, "
                                f"--overwrite to replace it, or another --result_dir")
        elif not files.last.exists() and files.json.is_file() and read_json(files.json).get("history"):
            # The JSON is written after the resumable state, so a history without that state means
            # it was removed, not that a first epoch was interrupted: starting over would replace
            # the earlier best checkpoint and history.
            raise UserError(f"--resume: {files.last} is missing but {files.json} holds the history of an earlier "
                            f"run, which starting over would replace; restore {files.last.name}, or pass "
                            f"--overwrite instead of --resume to start over")

    def _build(self) -> None:
        c, d, device = self.config, self.d, self.device
        cuda = device.type == "cuda"
        seed_everything(c.seed)
        # Under torchrun, each machine's first process downloads / caches; the others then find the
        # files ready instead of racing to write them.
        if d.local_rank != 0:
            barrier(d)
        self.data = load_data(c)
        if d.local_rank == 0:
            barrier(d)
        self.topk = protocol_topk(c, self.data)
        self.loss_fn = make_loss(c, self.data.num_classes).to(device)
        self.recipe = ModelRecipe.for_training(c.backbone, c.hash_bit, c.image_size, pretrained=c.pretrained)
        self.model = initial_model(self.recipe, c.pretrained, c.weights).to(device)
        if cuda:
            torch.backends.cudnn.benchmark = True
            self.model = self.model.to(memory_format=torch.channels_last)
        self.rec = RunRecorder(self.files, self._header(), save=c.save and d.is_main,
                               verbose=d.is_main)
        self.net = self.model
        if d.enabled:
            seed_everything(c.seed + d.rank)  # distinct augmentation per rank; weights come from rank 0
            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if cuda else None)
        if c.compile:
            self.net = _maybe_compile(self.net, device, self.rec.log)
        self._build_loaders()
        self.optimizer = make_optimizer(self.model, self.loss_fn, c.lr, c.rate)
        self.scheduler = make_scheduler(self.optimizer)

    def _header(self) -> dict[str, Any]:
        return header(self.config, self.data, self.topk, self.loss_fn.hparams)

    def _build_loaders(self) -> None:
        c, d, data = self.config, self.d, self.data
        sampler = (DistributedSampler(data.train, d.world_size, d.rank, shuffle=True, seed=c.seed)
                   if d.enabled else None)
        batch = per_rank_batch(c.batch_size, d)
        # A last batch of one image cannot train a BatchNorm network (its batch statistics are
        # undefined); it is dropped, that one image changing with the shuffle every epoch.
        per_rank = len(sampler) if sampler is not None else len(data.train)
        self.drop_last = per_rank % batch == 1 and per_rank > 1 and _has_batchnorm(self.model)
        self.train_loader = make_loader(data.train, batch, train=True, workers=c.workers, seed=c.seed,
                                        pin_memory=self.device.type == "cuda", sampler=sampler,
                                        drop_last=self.drop_last)
        self.query_loader = eval_loader(data.query, c, self.device, d)
        self.db_loader = eval_loader(data.database, c, self.device, d)

    def _resume(self) -> tuple[int, float]:
        c, files = self.config, self.files
        if c.resume and not all_agree(files.last.exists(), self.d):
            raise UserError(f"--resume: {files.last} exists on some machines only; under torchrun across machines, "
                            f"--result_dir must be on a file system they all share")
        if not c.resume:
            return 1, 0.0
        if not files.last.exists():
            self.rec.log(f"--resume: no earlier state of {c.run_name} in {c.result_dir}, starting from epoch 1")
            return 1, 0.0
        state = load_last(files.last)
        saved, current = state["config"], c.to_dict()
        for key in RESUME_KEYS:
            if saved.get(key, current[key]) != current[key]:
                raise UserError(f"--resume: {files.last} was trained with --{key} {saved.get(key)} but this run has "
                                f"--{key} {current[key]}; use the same flags, or --overwrite to start over")
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], self.train_loader.generator)
        # The history saved with this state is authoritative: the JSON is only written after it, so an
        # evaluation the killed run recorded in the JSON alone is dropped here and redone.
        self.rec.restore(state["history"], state["best"])
        self.rec.log(f"resumed {c.run_name} from {files.last} after epoch {state['epoch']}")
        return int(state["epoch"]) + 1, float(state["train_seconds"])

    def _log_start(self) -> None:
        c, data, d = self.config, self.data, self.d
        hparams = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in self.loss_fn.hparams.items())
        self.rec.log(f"run {c.run_name}: {len(data.train)} train / {len(data.query)} query / "
                     f"{len(data.database)} database images, {data.num_classes} classes, {c.hash_bit} bits, "
                     f"mAP@{self.topk}, loss {c.loss}" + (f" ({hparams})" if hparams else "")
                     + f", {c.backbone} at {c.image_size}px on {self.device}"
                     + (f" x {d.world_size} processes" if d.enabled else ""))
        self.rec.log(f"config: {c.to_dict()}", echo=False)
        log_data(self.rec, data)
        if self.drop_last:
            self.rec.log("the last training batch would hold one image, which a BatchNorm network cannot train "
                         "on; it is dropped every epoch (a different image each time)")
        if c.amp and self.device.type != "cuda":
            self.rec.log("--amp: bf16 autocast is used on CUDA only; this run on the CPU is in float32")

    def evaluate(self) -> float:
        d, data = self.d, self.data
        q, ql = _encode_split(self.model, self.query_loader, len(data.query), self.device, d, "encode query")
        db, dl = _encode_split(self.model, self.db_loader, len(data.database), self.device, d, "encode database")
        m = mean_average_precision(q, db, ql, dl, topk=self.topk) if d.is_main else 0.0
        return broadcast_float(m, d, self.device)

    def on_epoch(self, epoch: int, stats: EpochStats, seconds: float) -> None:
        parts = " ".join(f"{k} {v:.4f}" for k, v in stats.components.items())
        self.rec.log(f"epoch {epoch}/{self.config.epochs} loss {stats.loss:.4f} ({parts}) "
                     f"lr {self.optimizer.param_groups[0]['lr']:.5g} train {seconds:.1f}s")

    def on_evaluation(self, epoch: int, m: float, stats: EpochStats, seconds: float) -> None:
        # The JSON is written at the epoch's end, after the resumable checkpoint (see on_epoch_end).
        improved = self.rec.add_evaluation({"epoch": epoch, "map": m, "loss": stats.loss,
                                            "train_seconds": round(seconds, 3),
                                            "lr": self.optimizer.param_groups[0]["lr"],
                                            "components": stats.components})
        if improved and self.rec.save:
            meta = {k: v for k, v in self._header().items() if k != "config"}
            save_checkpoint(self.files.checkpoint, recipe=self.recipe, model_state=self.model.state_dict(),
                            loss=loss_record(self.config.loss, self.loss_fn), classes=list(self.data.classes),
                            config=self.config.to_dict(), meta={**meta, "epoch": epoch, "map": m})
        best = self.rec.best
        self.rec.log(f"epoch {epoch}: map {m:.4f} (best {best['map']:.4f} at epoch {best['epoch']})"
                     + (" -> saved" if improved and self.rec.save else ""))

    def on_epoch_end(self, epoch: int, seconds: float) -> None:
        if not self.rec.save:
            return
        # Order matters for a kill at any moment: best checkpoint, then this resumable state
        # (which carries the history), then the JSON rebuilt from it.
        save_last(self.files.last, epoch=epoch, train_seconds=seconds, model=self.model.state_dict(),
                  loss=self.loss_fn.state_dict(), optimizer=self.optimizer.state_dict(),
                  scheduler=self.scheduler.state_dict(), history=self.rec.history, best=self.rec.best,
                  config=self.config.to_dict(), rng=rng_state(self.train_loader.generator))
        self.rec.write()

    def _finish(self) -> float:
        best = self.rec.best
        if best is None:
            raise UserError(f"{self.files.last} already holds all {self.config.epochs} epochs but no evaluation; "
                            f"raise --epochs to continue")
        if self.rec.save:
            self.rec.log(f"best checkpoint: {self.files.checkpoint} (epoch {best['epoch']})")
        self.rec.log(f"map: {best['map']:.4f}", echo=False)
        if self.d.is_main:
            print(f"map: {best['map']}")
        return best["map"]


def _encode_split(model, loader: DataLoader, size: int, device, d: Dist, desc: str):
    """Encode a split through its :func:`eval_loader`, gathered from all ranks, in dataset order."""
    out, labels = encode(model, loader, device, desc)
    return gather_rows(out, size, d), gather_rows(labels, size, d)


# ---------------------------------------------------------------------------------------- --test


def _flags_to_check(config: Config) -> dict[str, tuple[str, Any]]:
    """The checkpoint properties the command line states, as ``{key: (flag, value)}``: the run's
    name fixes backbone, bits and loss; image size and loss options only when given."""
    expected = {"backbone": ("--backbone", config.backbone), "hash_bit": ("--hash_bit", config.hash_bit),
                "loss": ("--loss", config.loss)}
    if "image_size" in config.given:
        expected["image_size"] = ("--image_size", config.image_size)
    flag_of = {key: f"--{key}" if key in ("beta", "zeta") and key in config.given else f"--loss_opt {key}="
               for key, _ in config.loss_options}
    for key, value in config.loss_options:
        expected[f"loss.{key}"] = (flag_of[key], value)
    return expected


def run_test(config: Config) -> float:
    for flag, wanted in (("--plots", config.plots), ("--export_codes", config.export_codes)):
        if wanted and not config.save:
            raise UserError(f"{flag} writes files beside the checkpoint; drop --no_save")
    device = torch.device(config.device)
    with owned_run(config) as files:
        ckpt = load_checkpoint(files.checkpoint)
        check_compatible(ckpt, _flags_to_check(config))
        data = load_data(config, image_size=ckpt.recipe.image_size)
        check_compatible(ckpt, {"classes": (f"--dataset {config.dataset}", list(data.classes))})
        model = rebuild_model(ckpt, device)
        topk = protocol_topk(config, data)
        query = encode(model, eval_loader(data.query, config, device), device, "encode query")
        database = encode(model, eval_loader(data.database, config, device), device, "encode database")
        results = full_evaluation(query, database, topk)
        results["checkpoint_epoch"] = ckpt.meta.get("epoch")
        results["model_digest"] = ckpt.digest
        rec = RunRecorder.for_test(files, header(config, data, topk, ckpt.loss["hparams"]), save=config.save)
        log_data(rec, data)
        trained_on = ckpt.meta.get("data")
        if trained_on is not None and trained_on != dict(data.provenance):
            rec.log(f"warning: the checkpoint was trained on other data ({trained_on}) than this test uses "
                    f"({dict(data.provenance)})")
        if config.save:
            sample = files.path("_sample.npz")
            _save_codes_sample(sample, query, database, seed=config.seed)
            results["codes_sample"] = sample.name
        rec.set("test", results)
        rec.log(f"test: map@{topk} {results['map']:.4f}, precision within radius 2 "
                f"{results['precision_radius2']:.4f} (checkpoint from epoch {ckpt.meta.get('epoch')}, "
                f"{ckpt.recipe.image_size}px)")
        if config.export_codes or config.plots:  # the figures' gallery shows exactly these codes
            from .codes import export_codes
            # what rebuilds the dataset to show its images (hyp2.gallery.ImageSource.for_codes)
            meta = {**ckpt.meta, "topk": topk, "data_root": str(config.data_root), "subset": config.subset,
                    "seed": config.seed, "split_file": str(config.split_file) if config.split_file else None}
            written = export_codes(files.path("_codes.npz"), database[0], database[1], data.database.ids,
                                   ckpt.num_bits, list(data.classes), meta,
                                   queries=(query[0], query[1], data.query.ids))
            results["codes"] = written[0].name
            rec.set("test", results)
            rec.log("exported the database and query codes: " + ", ".join(str(p) for p in written))
        if config.plots:
            from .plots import plot_run
            notes: list[str] = []
            try:
                written = plot_run(files.json, config.result_dir, seed=config.seed, notes=notes)
            except OSError as e:  # as hyp2.report does: the figures' folder is the command's to name
                raise UserError(f"--plots: cannot write the figures into {config.result_dir} ({reason(e)}); check "
                                f"its free space and permissions") from None
            for note in notes:
                rec.log(f"plots: {note}")
            rec.log(f"plots: wrote {len(written)} files to {config.result_dir}")
    print(f"map: {results['map']}")
    return results["map"]


def _save_codes_sample(path, query, database, seed: int) -> None:
    """A seeded sample of ±1 codes and labels for t-SNE figures (see docs/run-json.md)."""
    rng = np.random.default_rng(seed)
    (q, ql), (d, dl) = query, database
    di = np.sort(rng.choice(len(d), size=min(SAMPLE_DB, len(d)), replace=False))
    qi = np.sort(rng.choice(len(q), size=min(SAMPLE_QUERIES, len(q)), replace=False))

    arrays = {"db_codes": binarize(d[di]).cpu().numpy(), "db_labels": dl[di].cpu().numpy().astype(np.uint8),
              "query_codes": binarize(q[qi]).cpu().numpy(), "query_labels": ql[qi].cpu().numpy().astype(np.uint8)}
    write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays), "codes sample")
