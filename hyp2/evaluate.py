"""Encoding images into hash codes and scoring retrieval (query vs database), as in HyP²'s
protocol (Xu et al., ACM MM 2022, Sec. 4.1): codes are the signs of the network's outputs, the
database is ranked by Hamming distance to each query, and mAP@K is averaged over queries.

Beside the metrics of :func:`hyp2.metrics.evaluate_all`, any metric registered in :data:`METRICS`
(``@METRICS.register(name, description)``) is computed by ``--test`` and written into the run
JSON's ``test`` section under its name (docs/extending.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import metrics
from .registry import Registry
from .progress import bar
from .train import batches_of

#: keys of the ``test`` section that ``--test`` itself writes; no registered metric may take one
RESERVED = ("map", "topk", "acg", "ndcg", "weighted_map", "tie_aware_map", "precision_at_n", "recall_at_n",
            "pr_curve", "precision_radius2", "codes_sample", "codes", "checkpoint_epoch", "model_digest")


@torch.no_grad()
def encode(model: nn.Module, loader: DataLoader, device: torch.device | str,
           desc: str = "encode") -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` in eval mode over ``loader``.

    Returns:
        outputs (N, K) float32 — the real-valued hash outputs, in dataset order (the loader must
        not shuffle) — and labels (N, C) float32, both on ``device``.
    """
    was_training = model.training
    model.eval()
    outs, labs = [], []
    try:
        with batches_of(loader) as batches:
            for images, labels, _ in bar(batches, desc=desc, total=len(loader)):
                outs.append(model(images.to(device, non_blocking=True)).float())
                labs.append(labels.to(device, non_blocking=True))
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError(f"{desc}: the split is empty")
    return torch.cat(outs), torch.cat(labs)


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: ``compute(query_codes (Q, K), db_codes (N, K), query_labels (Q, C),
    db_labels (N, C), topk=k) -> JSON-able value`` (a number, or lists/dicts of numbers), with the
    conventions of :mod:`hyp2.metrics` (codes real or ±1, taken by sign with 0 -> +1; labels 0/1;
    ``topk`` the protocol's K, at most N)."""

    name: str
    description: str
    compute: Callable[..., Any]


def _entry(name: str, compute: Callable[..., Any], description: str) -> MetricSpec:
    if name in RESERVED:
        raise ValueError(f"metric name {name!r} is taken by --test's own results; choose another (taken: "
                         f"{', '.join(RESERVED)})")
    if not callable(compute):
        raise TypeError(f"metric {name!r}: expected a function, got {compute!r}")
    return MetricSpec(name, description, compute)


#: the metrics ``--test`` computes beside :func:`hyp2.metrics.evaluate_all`'s, by name
METRICS: Registry[MetricSpec] = Registry("metric", _entry)


def full_evaluation(query: tuple[torch.Tensor, torch.Tensor], database: tuple[torch.Tensor, torch.Tensor],
                    topk: int | None) -> dict[str, Any]:
    """Every metric of the run JSON's ``test`` section, from encoded (outputs, labels) pairs: the
    paper's (:func:`hyp2.metrics.evaluate_all`) and each registered one under its name."""
    (q, ql), (d, dl) = query, database
    results = metrics.evaluate_all(q, d, ql, dl, topk=topk)
    for spec in (METRICS.get(n) for n in METRICS.names()):
        results[spec.name] = spec.compute(q, d, ql, dl, topk=results["topk"])
    return results
