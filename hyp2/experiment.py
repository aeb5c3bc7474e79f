"""One run, from a frozen :class:`~hyp2.config.Config`: train with periodic evaluation and keep the
best checkpoint, or (``--test``) reload it and write every retrieval metric."""
from __future__ import annotations

import dataclasses
import gc
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .config import Config
from .data import DataOptions, RetrievalData, build_dataset
from .data._cache import maybe_cache
from .errors import UserError
from .evaluate import encode, full_evaluation
from .io import atomic_save
from .losses import HashLoss, build_loss
from .metrics import mean_average_precision
from .models import build_model
from .results import RunFiles, RunRecorder, check_compatible, load_checkpoint, save_checkpoint
from .distributed import (Dist, all_agree, average_gradients, barrier, broadcast_float, gather_batch,
                          gather_rows, init_from_env, per_rank_batch, shard, shutdown)
from .train import (fit, make_loader, make_optimizer, make_scheduler, rng_state, seed_everything,
                    set_rng_state)

SAMPLE_DB, SAMPLE_QUERIES = 2000, 10


def run(config: Config) -> float:
    """Train or test as ``config.test`` says; returns the mAP printed as ``map: <value>``."""
    return run_test(config) if config.test else run_train(config)


def load_data(config: Config) -> RetrievalData:
    options = DataOptions(root=config.data_root, image_size=config.image_size, seed=config.seed,
                          cache=False, voc_url=config.voc_url, check_md5=config.check_md5,
                          split_file=config.split_file, download=config.download)
    try:
        data = build_dataset(config.dataset, options)
    except ValueError as e:
        raise UserError(f"--dataset {config.dataset}: {e}") from None
    if config.subset:
        data = dataclasses.replace(data, **{s: getattr(data, s).head(config.subset)
                                            for s in ("train", "query", "database")})
    for split in ("train", "query", "database"):
        if len(getattr(data, split)) == 0:
            raise UserError(f"--dataset {config.dataset}: the {split} split is empty; check its files under "
                            f"{config.data_root}")
    # Cache after subsetting, so a --subset smoke test never caches a whole dataset.
    return maybe_cache(data, dataclasses.replace(options, cache=config.cache))


def protocol_topk(config: Config, data: RetrievalData) -> int:
    """K of mAP@K: ``--retrieve`` when set, else the protocol's, capped at the database size."""
    k = config.retrieve or data.topk or len(data.database)
    return min(k, len(data.database))


def make_loss(config: Config, num_classes: int) -> HashLoss:
    """The ``--loss`` for C classes and K bits; HyP² takes ζ from the code table unless ``--zeta``."""
    try:
        return build_loss(config.loss, num_classes, config.hash_bit, seed=config.seed, beta=config.beta,
                          zeta=config.zeta)
    except ValueError as e:
        raise UserError(f"--hash_bit {config.hash_bit} with {num_classes} classes (--loss {config.loss}): "
                        f"{e}") from None


def header(config: Config, data: RetrievalData, topk: int) -> dict[str, Any]:
    return {"run": config.run_name, "dataset": config.dataset, "backbone": config.backbone,
            "hash_bit": config.hash_bit, "loss": config.loss, "classes": list(data.classes),
            "num_classes": data.num_classes, "topk": topk, "config": config.to_dict()}


def eval_loader(dataset, config: Config, device: torch.device, d: Dist | None = None) -> DataLoader:
    """The loader encoding a split — this rank's contiguous shard under torchrun — built once per run
    so its workers are reused by every evaluation."""
    part = Subset(dataset, shard(len(dataset), d)) if d is not None and d.enabled else dataset
    return make_loader(part, config.batch_size, train=False, workers=config.workers,
                       pin_memory=device.type == "cuda")


def encode_split(model, loader: DataLoader, size: int, device, d: Dist, desc: str):
    """Encode a split through its :func:`eval_loader`, gathered from all ranks, in dataset order."""
    out, labels = encode(model, loader, device, desc)
    return gather_rows(out, size, d), gather_rows(labels, size, d)


def run_train(config: Config) -> float:
    d, device_name = init_from_env(config.device)
    try:
        best = _train(config, d, torch.device(device_name))
        if d.enabled:
            gc.collect()  # a DDP module still alive at destroy_process_group can abort (gloo)
            barrier(d)  # and no rank tears the group down while another still talks to it
        return best
    finally:
        shutdown(d)


def _train(config: Config, d: Dist, device: torch.device) -> float:
    files = RunFiles(config.result_dir, config.run_name)
    last_path = files.path("_last.ckpt")
    if config.save and not (config.resume or config.overwrite):
        existing = [p for p in (files.checkpoint, last_path) if p.exists()]
        if existing:
            raise UserError(f"{existing[0]} exists from an earlier run; pass --resume to continue it, "
                            f"--overwrite to replace it, or another --result_dir")
    if config.save and d.is_main:
        for stale in config.result_dir.glob(f".{config.run_name}*.tmp"):
            stale.unlink()  # left by a run killed inside an atomic write; never a complete file
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
    model = build_model(config.backbone, config.hash_bit, pretrained=config.pretrained,
                        weights_path=config.weights).to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    net: torch.nn.Module = model
    if d.enabled:
        seed_everything(config.seed + d.rank)  # distinct augmentation per rank; weights come from rank 0
        net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if config.compile:
        net = torch.compile(net)
    sampler = (DistributedSampler(data.train, d.world_size, d.rank, shuffle=True, seed=config.seed)
               if d.enabled else None)
    train_loader = make_loader(data.train, per_rank_batch(config.batch_size, d), train=True,
                               workers=config.workers, seed=config.seed, pin_memory=cuda, sampler=sampler)
    query_loader = eval_loader(data.query, config, device, d)
    db_loader = eval_loader(data.database, config, device, d)
    optimizer = make_optimizer(model, loss_fn, config.lr, config.rate)
    scheduler = make_scheduler(optimizer)

    rec = RunRecorder(files, header(config, data, topk), save=config.save and d.is_main, verbose=d.is_main)
    start_epoch, seconds = 1, 0.0
    if config.resume and not all_agree(last_path.exists(), d):
        raise UserError(f"--resume: {last_path} exists on some machines only; under torchrun across "
                        f"machines, --result_dir must be on a file system they all share")
    if config.resume and last_path.exists():
        start_epoch, seconds = _restore(last_path, config, data, model, loss_fn, optimizer, scheduler,
                                        train_loader.generator, rec)
        rec.log(f"resumed {config.run_name} from {last_path} after epoch {start_epoch - 1}")
    elif config.resume:
        rec.log(f"--resume: no {last_path} yet, starting from epoch 1")
    zeta = getattr(loss_fn, "zeta", None)
    rec.log(f"run {config.run_name}: {len(data.train)} train / {len(data.query)} query / "
            f"{len(data.database)} database images, {data.num_classes} classes, {config.hash_bit} bits, "
            f"mAP@{topk}, loss {config.loss}" + (f" (ζ = {zeta:.4f}, β = {config.beta})" if zeta is not None else "")
            + f", {config.backbone} at {config.image_size}px on {device}"
            + (f" x {d.world_size} processes" if d.enabled else ""))
    rec.log(f"config: {config.to_dict()}", echo=False)
    if config.amp and not cuda:
        rec.log("--amp: bf16 autocast is used on CUDA only; this run on the CPU is in float32")

    def evaluate() -> float:
        q, ql = encode_split(model, query_loader, len(data.query), device, d, "encode query")
        db, dl = encode_split(model, db_loader, len(data.database), device, d, "encode database")
        m = mean_average_precision(q, db, ql, dl, topk=topk) if d.is_main else 0.0
        return broadcast_float(m, d, device)

    def on_epoch(epoch, stats, seconds):
        parts = " ".join(f"{k} {v:.4f}" for k, v in stats.components.items())
        rec.log(f"epoch {epoch}/{config.epochs} loss {stats.loss:.4f} ({parts}) "
                f"lr {optimizer.param_groups[0]['lr']:.5g} train {seconds:.1f}s")

    def on_evaluation(epoch, m, stats, seconds):
        improved = rec.data["best"] is None or m > rec.data["best"]["map"]
        # The JSON is written at the epoch's end, after the resumable checkpoint (see on_epoch_end).
        rec.data["history"].append({"epoch": epoch, "map": m, "loss": stats.loss,
                                    "train_seconds": round(seconds, 3), "lr": optimizer.param_groups[0]["lr"],
                                    "components": stats.components})
        if improved:
            rec.data["best"] = {"epoch": epoch, "map": m}
            if rec.save:
                save_checkpoint(files.checkpoint, model_state=model.state_dict(), loss_state=loss_fn.state_dict(),
                                config=config.to_dict(),
                                meta={**{k: v for k, v in header(config, data, topk).items() if k != "config"},
                                      "epoch": epoch, "map": m, "image_size": config.image_size})
        best = rec.data["best"]
        rec.log(f"epoch {epoch}: map {m:.4f} (best {best['map']:.4f} at epoch {best['epoch']})"
                + (" -> saved" if improved and rec.save else ""))

    def on_epoch_end(epoch, seconds):
        if rec.save:
            # Order matters for a kill at any moment: best checkpoint, then this resumable state
            # (which carries the history), then the JSON rebuilt from it.
            payload = {"format": "hyp2-last", "epoch": epoch, "train_seconds": seconds,
                       "model": model.state_dict(), "loss": loss_fn.state_dict(),
                       "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "history": rec.data["history"], "best": rec.data["best"],
                       "config": config.to_dict(), "rng": rng_state(train_loader.generator)}
            atomic_save(last_path, lambda fh: torch.save(payload, fh))
            rec.write()

    step_options = {"amp": config.amp, "channels_last": cuda}
    if d.enabled:
        step_options.update(gather=lambda t: gather_batch(t, d),
                            after_backward=lambda: average_gradients(loss_fn.parameters(), d))
    fit(net, loss_fn, train_loader, optimizer=optimizer, scheduler=scheduler, device=device,
        epochs=config.epochs, eval_every=config.eval_every, evaluate=evaluate,
        on_epoch=on_epoch, on_evaluation=on_evaluation, on_epoch_end=on_epoch_end,
        start_epoch=start_epoch, train_seconds=seconds, **step_options)
    best = rec.data["best"]
    if best is None:
        raise UserError(f"{last_path} already holds all {config.epochs} epochs but no evaluation; "
                        f"raise --epochs to continue")
    if rec.save:
        rec.log(f"best checkpoint: {files.checkpoint} (epoch {best['epoch']})")
    rec.log(f"map: {best['map']:.4f}", echo=False)
    if d.is_main:
        print(f"map: {best['map']}")
    return best["map"]


def _restore(path, config, data, model, loss_fn, optimizer, scheduler, generator, rec) -> tuple[int, float]:
    """Load ``{run}_last.ckpt`` into the live objects; returns (next epoch, training seconds)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot read {path} ({type(e).__name__}); delete it to start over, "
                        f"or pass --overwrite") from None
    if not isinstance(state, dict) or state.get("format") != "hyp2-last":
        raise UserError(f"{path} is not a hyp2 resumable checkpoint; delete it or pass --overwrite")
    saved = state["config"]
    # --epochs and --eval_every may change (to extend a run); anything shaping the optimisation may not.
    for key in ("dataset", "backbone", "hash_bit", "loss", "image_size", "batch_size", "seed", "lr",
                "rate", "beta", "zeta", "amp", "subset"):
        if saved.get(key) != getattr(config, key):
            raise UserError(f"--resume: {path} was trained with --{key} {saved.get(key)} but this run has "
                            f"--{key} {getattr(config, key)}; use the same flags, or --overwrite to start over")
    model.load_state_dict(state["model"])
    loss_fn.load_state_dict(state["loss"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"], generator)
    epoch = int(state["epoch"])
    # The history saved with this state is authoritative: the JSON is only written after it, so an
    # evaluation the killed run recorded in the JSON alone is dropped here and redone.
    rec.data["history"] = state["history"]
    rec.data["best"] = state["best"]
    rec.write()
    return epoch + 1, float(state["train_seconds"])


def run_test(config: Config) -> float:
    files = RunFiles(config.result_dir, config.run_name)
    for flag, wanted in (("--plots", config.plots), ("--export_codes", config.export_codes)):
        if wanted and not config.save:
            raise UserError(f"{flag} writes files beside the checkpoint; drop --no_save")
    device = torch.device(config.device)
    ckpt = load_checkpoint(files.checkpoint, map_location="cpu")
    meta = ckpt.get("meta", {})
    check_compatible(files.checkpoint, meta, {"dataset": config.dataset, "backbone": config.backbone,
                                              "hash_bit": config.hash_bit, "loss": config.loss})
    data = load_data(config)
    check_compatible(files.checkpoint, meta, {"num_classes": data.num_classes, "classes": list(data.classes)})
    topk = protocol_topk(config, data)
    model = build_model(config.backbone, config.hash_bit, pretrained=False)
    loss_fn = make_loss(config, data.num_classes)
    try:
        model.load_state_dict(ckpt["model"])
        loss_fn.load_state_dict(ckpt["loss"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"checkpoint {files.checkpoint} does not fit --backbone {config.backbone} "
                        f"--hash_bit {config.hash_bit} ({type(e).__name__}); retrain or pass its flags") from None
    model.to(device)
    query = encode(model, eval_loader(data.query, config, device), device, "encode query")
    database = encode(model, eval_loader(data.database, config, device), device, "encode database")
    results = full_evaluation(query, database, topk)
    results["checkpoint_epoch"] = meta.get("epoch")
    rec = RunRecorder.for_test(files, header(config, data, topk), save=config.save)
    if config.save:
        sample = files.path("_sample.npz")
        _save_codes_sample(sample, query, database, seed=config.seed)
        results["codes_sample"] = sample.name
    rec.set("test", results)
    rec.log(f"test: map@{topk} {results['map']:.4f}, precision within radius 2 "
            f"{results['precision_radius2']:.4f} (checkpoint from epoch {meta.get('epoch')})")
    if config.export_codes:
        from .search import export_codes
        written = export_codes(files.path("_codes.npz"), database[0], database[1], data.database.ids,
                               config.hash_bit, list(data.classes), {**meta, "topk": topk})
        rec.log("exported database codes: " + ", ".join(str(p) for p in written))
    if config.plots:
        from .plots import plot_run
        notes: list[str] = []
        written = plot_run(files.json, config.result_dir, seed=config.seed, notes=notes)
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

    def signs(x):
        return np.where(x.cpu().numpy() >= 0, 1, -1).astype(np.int8)

    arrays = {"db_codes": signs(d[di]), "db_labels": dl[di].cpu().numpy().astype(np.uint8),
              "query_codes": signs(q[qi]), "query_labels": ql[qi].cpu().numpy().astype(np.uint8)}
    atomic_save(path, lambda fh: np.savez_compressed(fh, **arrays))
