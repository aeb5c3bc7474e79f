"""Helpers shared by tests across the package."""
from __future__ import annotations

import torch
from torch import nn


def imagenet_like(net: nn.Module, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for an ImageNet state dict of ``net``'s torchvision architecture: its random
    initialisation, with the BatchNorm running statistics calibrated on random images of side
    ``size`` (as trained weights have them). Without that, eval-mode BatchNorm networks map every
    input to nearly one output, and tests of their input pipeline could not fail."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batch
    aux = getattr(net, "AuxLogits", None)  # Inception's aux head needs 299 px inputs in train mode
    if aux is not None:
        net.AuxLogits = None
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 3, size, size))
    if aux is not None:
        net.AuxLogits = aux
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return net.eval().state_dict()
