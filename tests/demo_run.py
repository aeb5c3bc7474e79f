"""A small run of the demo dataset as ``--test --plots`` leaves it, made in seconds without training.

A random-weight small CNN (its hash layer centred on the images' mean feature, so that codes
spread and rankings have many distinct distances, relevant and irrelevant items alike) is saved
as a best checkpoint; the first ``n_db`` database and ``n_query`` query images of the generated
demo dataset are encoded and exported as the codes file (hyp2.codes, with the queries); the run
JSON names it in ``test.codes`` as ``--test --plots`` does. Tests read these files, never modify
them; :func:`shared_demo_run` builds each variant once per test session.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from hyp2.codes import export_codes
from hyp2.data import DataOptions, build_dataset
from hyp2.evaluate import encode
from hyp2.models import ModelRecipe, build_model
from hyp2.checkpoint import save_checkpoint
from hyp2.runfile import JSON_SCHEMA

IMAGE_SIZE = 32


@dataclass(frozen=True)
class DemoRun:
    folder: Path
    name: str
    checkpoint: Path
    codes: Path
    json: Path
    digest: str
    classes: tuple[str, ...]


def _model(bits: int, seed: int, images: torch.Tensor) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("small", bits, pretrained=False).eval()
    with torch.no_grad():
        feats = model.features(images).mean(dim=(2, 3))
        model.hash_layer.bias.copy_(-model.hash_layer.weight @ feats.mean(0))
    return model


def demo_run(folder: Path, *, bits: int = 16, loss: str = "hyp2", seed: int = 0, n_db: int = 200,
             n_query: int = 40) -> DemoRun:
    """Write ``{run}.ckpt``, ``{run}_codes.npz`` and ``{run}.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = build_dataset("demo", DataOptions(image_size=IMAGE_SIZE))
    db, queries = data.database.head(n_db), data.query.head(n_query)
    model = _model(bits, seed, torch.stack([db[i][0] for i in range(n_db)]))
    name = f"demo_small_{bits}" + ("" if loss == "hyp2" else f"_{loss}")
    meta = {"dataset": "demo", "epoch": 1, "map": 0.5, "data_root": "data", "subset": 0, "topk": n_db}
    digest = save_checkpoint(folder / f"{name}.ckpt", recipe=ModelRecipe.for_training("small", bits, IMAGE_SIZE),
                             model_state=model.state_dict(), loss={"name": loss, "hparams": {}, "state": {}},
                             classes=list(data.classes), config={}, meta=meta)
    db_out, db_labels = encode(model, DataLoader(db, batch_size=100), "cpu")
    q_out, q_labels = encode(model, DataLoader(queries, batch_size=100), "cpu")
    codes = folder / f"{name}_codes.npz"
    export_codes(codes, db_out, db_labels, db.ids, bits, data.classes,
                 {**meta, "backbone": "small", "hash_bit": bits, "image_size": IMAGE_SIZE, "model_digest": digest},
                 queries=(q_out, q_labels, queries.ids))
    history = [{"epoch": e, "map": 0.4 + 0.02 * e, "loss": 1.0 / e, "train_seconds": 2.0 * e, "lr": 0.02,
                "components": {"proxy_pos": 0.5 / e, "pair": 0.1}} for e in (1, 2, 3)]
    run = {"schema": JSON_SCHEMA, "run": name, "dataset": "demo", "backbone": "small", "hash_bit": bits,
           "loss": loss, "classes": list(data.classes), "num_classes": len(data.classes), "topk": n_db,
           "data": {"lists": "generated in memory"}, "config": {"dataset": "demo", "hash_bit": bits, "seed": seed},
           "history": history, "best": {"epoch": 3, "map": 0.46},
           "test": {"map": 0.5, "topk": n_db, "precision_radius2": 0.6, "model_digest": digest,
                    "precision_at_n": {"n": [100, 200], "precision": [0.6, 0.5]},
                    "pr_curve": {"radius": list(range(bits + 1)),
                                 "precision": np.linspace(1, 0.3, bits + 1).round(3).tolist(),
                                 "recall": np.linspace(0, 1, bits + 1).round(3).tolist()},
                    "codes": codes.name}}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(run), encoding="utf-8")
    return DemoRun(folder, name, folder / f"{name}.ckpt", codes, path, digest, tuple(data.classes))


_BUILT: dict[tuple, DemoRun] = {}


def shared_demo_run(tmp_path_factory, **options) -> DemoRun:
    """:func:`demo_run` with ``options``, built once per test session (read-only for tests)."""
    key = tuple(sorted(options.items()))
    if key not in _BUILT:
        _BUILT[key] = demo_run(tmp_path_factory.mktemp("demo_run"), **options)
    return _BUILT[key]
