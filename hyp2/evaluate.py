"""Encoding images into hash codes and scoring retrieval (query vs database), as in HyP²'s
protocol (Xu et al., ACM MM 2022, Sec. 4.1): codes are the signs of the network's outputs, the
database is ranked by Hamming distance to each query, and mAP@K is averaged over queries."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import metrics


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
        for images, labels, _ in tqdm(loader, desc=desc, leave=False, disable=None):
            outs.append(model(images.to(device, non_blocking=True)).float())
            labs.append(labels.to(device, non_blocking=True))
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError(f"{desc}: the split is empty")
    return torch.cat(outs), torch.cat(labs)


def full_evaluation(query: tuple[torch.Tensor, torch.Tensor], database: tuple[torch.Tensor, torch.Tensor],
                    topk: int | None) -> dict[str, Any]:
    """Every metric of the run JSON's ``test`` section, from encoded (outputs, labels) pairs."""
    (q, ql), (d, dl) = query, database
    return metrics.evaluate_all(q, d, ql, dl, topk=topk)
