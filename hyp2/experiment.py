"""One run, from a frozen :class:`~hyp2.config.Config`: train with periodic evaluation and keep the
best checkpoint, or (``--test``) reload it and write every retrieval metric."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from . import codetable
from .config import Config
from .data import DataOptions, RetrievalData, build_dataset
from .errors import UserError
from .evaluate import encode, full_evaluation
from .io import atomic_save
from .losses import HashLoss, build_loss
from .metrics import mean_average_precision
from .models import build_model
from .results import RunFiles, RunRecorder, check_compatible, load_checkpoint, save_checkpoint
from .train import fit, make_loader, make_optimizer, make_scheduler, seed_everything

SAMPLE_DB, SAMPLE_QUERIES = 2000, 10


def run(config: Config) -> float:
    """Train or test as ``config.test`` says; returns the mAP printed as ``map: <value>``."""
    return run_test(config) if config.test else run_train(config)


def load_data(config: Config) -> RetrievalData:
    options = DataOptions(root=config.data_root, image_size=config.image_size, seed=config.seed,
                          cache=config.cache, voc_url=config.voc_url, check_md5=config.check_md5,
                          split_file=config.split_file)
    try:
        data = build_dataset(config.dataset, options)
    except ValueError as e:
        raise UserError(f"--dataset {config.dataset}: {e}") from None
    for split in ("train", "query", "database"):
        if len(getattr(data, split)) == 0:
            raise UserError(f"--dataset {config.dataset}: the {split} split is empty; check its files under {config.data_root}")
    return data


def protocol_topk(config: Config, data: RetrievalData) -> int:
    """K of mAP@K: ``--retrieve`` when set, else the protocol's, capped at the database size."""
    k = config.retrieve or data.topk or len(data.database)
    return min(k, len(data.database))


def resolve_zeta(config: Config, num_classes: int) -> float:
    if config.zeta is not None:
        return config.zeta
    try:
        return codetable.zeta(config.hash_bit, num_classes)
    except ValueError as e:
        raise UserError(f"--hash_bit {config.hash_bit} with {num_classes} classes: {e}") from None


def make_loss(config: Config, num_classes: int) -> HashLoss:
    return build_loss(config.loss, num_classes, config.hash_bit, seed=config.seed, beta=config.beta,
                      zeta=resolve_zeta(config, num_classes))


def header(config: Config, data: RetrievalData, topk: int) -> dict[str, Any]:
    return {"run": config.run_name, "dataset": config.dataset, "backbone": config.backbone,
            "hash_bit": config.hash_bit, "loss": config.loss, "classes": list(data.classes),
            "num_classes": data.num_classes, "topk": topk, "config": config.to_dict()}


def run_train(config: Config) -> float:
    seed_everything(config.seed)
    data = load_data(config)
    topk = protocol_topk(config, data)
    device = torch.device(config.device)
    loss_fn = make_loss(config, data.num_classes).to(device)
    model = build_model(config.backbone, config.hash_bit, pretrained=config.pretrained,
                        weights_path=config.weights).to(device)
    pin = device.type == "cuda"
    train_loader = make_loader(data.train, config.batch_size, train=True, workers=config.workers,
                               seed=config.seed, pin_memory=pin)
    query_loader = make_loader(data.query, config.batch_size, train=False, workers=config.workers, pin_memory=pin)
    db_loader = make_loader(data.database, config.batch_size, train=False, workers=config.workers, pin_memory=pin)
    optimizer = make_optimizer(model, loss_fn, config.lr, config.rate)
    scheduler = make_scheduler(optimizer)

    files = RunFiles(config.result_dir, config.run_name)
    rec = RunRecorder(files, header(config, data, topk), save=config.save)
    zeta = getattr(loss_fn, "zeta", None)
    rec.log(f"run {config.run_name}: {len(data.train)} train / {len(data.query)} query / "
            f"{len(data.database)} database images, {data.num_classes} classes, {config.hash_bit} bits, "
            f"mAP@{topk}, loss {config.loss}" + (f" (ζ = {zeta:.4f}, β = {config.beta})" if zeta is not None else "")
            + f", {config.backbone} at {config.image_size}px on {device}")
    rec.log(f"config: {config.to_dict()}", echo=False)

    def evaluate() -> float:
        q, ql = encode(model, query_loader, device, "encode query")
        d, dl = encode(model, db_loader, device, "encode database")
        return mean_average_precision(q, d, ql, dl, topk=topk)

    def on_epoch(epoch, stats, seconds):
        parts = " ".join(f"{k} {v:.4f}" for k, v in stats.components.items())
        rec.log(f"epoch {epoch}/{config.epochs} loss {stats.loss:.4f} ({parts}) "
                f"lr {optimizer.param_groups[0]['lr']:.5g} train {seconds:.1f}s")

    def on_evaluation(epoch, m, stats, seconds):
        improved = rec.data["best"] is None or m > rec.data["best"]["map"]
        rec.add_evaluation({"epoch": epoch, "map": m, "loss": stats.loss, "train_seconds": round(seconds, 3),
                            "lr": optimizer.param_groups[0]["lr"], "components": stats.components})
        if improved and config.save:
            save_checkpoint(files.checkpoint, model_state=model.state_dict(), loss_state=loss_fn.state_dict(),
                            config=config.to_dict(),
                            meta={**{k: v for k, v in header(config, data, topk).items() if k != "config"},
                                  "epoch": epoch, "map": m, "image_size": config.image_size})
        best = rec.data["best"]
        rec.log(f"epoch {epoch}: map {m:.4f} (best {best['map']:.4f} at epoch {best['epoch']})"
                + (" -> saved" if improved and config.save else ""))

    fit(model, loss_fn, train_loader, optimizer=optimizer, scheduler=scheduler, device=device,
        epochs=config.epochs, eval_every=config.eval_every, evaluate=evaluate,
        on_epoch=on_epoch, on_evaluation=on_evaluation)
    best = rec.data["best"]
    if config.save:
        rec.log(f"best checkpoint: {files.checkpoint} (epoch {best['epoch']})")
    rec.log(f"map: {best['map']:.4f}", echo=False)
    print(f"map: {best['map']}")
    return best["map"]


def run_test(config: Config) -> float:
    files = RunFiles(config.result_dir, config.run_name)
    device = torch.device(config.device)
    ckpt = load_checkpoint(files.checkpoint, map_location="cpu")
    meta = ckpt.get("meta", {})
    check_compatible(files.checkpoint, meta, {"dataset": config.dataset, "backbone": config.backbone,
                                              "hash_bit": config.hash_bit, "loss": config.loss})
    data = load_data(config)
    check_compatible(files.checkpoint, meta, {"num_classes": data.num_classes})
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
    pin = device.type == "cuda"
    query = encode(model, make_loader(data.query, config.batch_size, train=False, workers=config.workers,
                                      pin_memory=pin), device, "encode query")
    database = encode(model, make_loader(data.database, config.batch_size, train=False,
                                         workers=config.workers, pin_memory=pin), device, "encode database")
    results = full_evaluation(query, database, topk)
    rec = RunRecorder.for_test(files, header(config, data, topk), save=config.save)
    if config.save:
        sample = files.path("_sample.npz")
        _save_codes_sample(sample, query, database, seed=config.seed)
        results["codes_sample"] = sample.name
    rec.set("test", results)
    rec.log(f"test: map@{topk} {results['map']:.4f}, precision within radius 2 "
            f"{results['precision_radius2']:.4f} (checkpoint from epoch {meta.get('epoch')})")
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
