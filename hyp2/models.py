"""Backbones with a hash layer: an image batch (B, 3, S, S) -> real-valued hash outputs (B, K).

As in the official HyP² code (Xu et al., ACM MM 2022):

* ``googlenet`` is torchvision's **Inception-v3** (the paper says GoogLeNet; the official code
  builds ``inception_v3(pretrained=True)``) at 448×448 with ``fc`` replaced by Linear(2048, K).
  Training uses the main output; the auxiliary head is removed since no loss uses it.
* ``alexnet`` reuses the pretrained features and fc6/fc7 (with their dropouts) and adds a new
  Linear(4096, K), at 224×224.
* ``resnet`` is ResNet-50 with ``fc`` replaced by Linear(2048, K), at 224×224.
* ``small`` (ours) is a compact CNN trained from scratch for the CPU demo; it has no pretrained
  weights.

Pretrained weights are torchvision's ImageNet ``IMAGENET1K_V1`` (what ``pretrained=True`` meant in
the official code), fetched through torchvision's weights API into ``$TORCH_HOME/hub/checkpoints``.
"""
from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

from .errors import UserError


@dataclass(frozen=True)
class BackboneSpec:
    """Per-backbone facts: default input size (and the smallest that runs), the official network
    learning rate, and the torchvision architecture and weights (``None`` for ``small``)."""

    image_size: int
    lr: float
    arch: Callable[..., nn.Module] | None
    weights: tvm.WeightsEnum | None
    min_size: int = 32


BACKBONES: dict[str, BackboneSpec] = {
    "googlenet": BackboneSpec(448, 0.02, tvm.inception_v3, tvm.Inception_V3_Weights.IMAGENET1K_V1,
                              min_size=75),
    "alexnet": BackboneSpec(224, 0.01, tvm.alexnet, tvm.AlexNet_Weights.IMAGENET1K_V1, min_size=63),
    # The official code never sets resnet's lr (it crashes). We use googlenet's 0.02: both are
    # batch-normalised ImageNet backbones trained with the same SGD recipe.
    "resnet": BackboneSpec(224, 0.02, tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
    "small": BackboneSpec(32, 0.02, None, None, min_size=16),  # ours, for the CPU demo
}


def backbone_spec(backbone: str) -> BackboneSpec:
    try:
        return BACKBONES[backbone]
    except KeyError:
        raise ValueError(f"unknown backbone {backbone!r}; known backbones: {', '.join(BACKBONES)}") from None


def build_model(backbone: str, num_bits: int, pretrained: bool = True,
                weights_path: str | os.PathLike | None = None) -> nn.Module:
    """Build ``backbone`` with a K-bit hash layer.

    Args:
        backbone: one of :data:`BACKBONES`.
        num_bits: K, the number of hash bits (≥ 1).
        pretrained: start from torchvision's ImageNet weights (downloaded if not cached).
        weights_path: a local torchvision state dict of the original ImageNet model to use instead
            of the download (for offline machines); implies pretrained.

    Returns:
        a module mapping (B, 3, S, S) float images to (B, K) in both train and eval mode.

    Raises:
        ValueError: unknown backbone or bad ``num_bits``.
        UserError: weights cannot be downloaded or do not fit the architecture.
    """
    spec = backbone_spec(backbone)
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or num_bits < 1:
        raise ValueError(f"num_bits must be a positive integer, got {num_bits!r}")
    if backbone == "small":
        return SmallNet(num_bits)
    state = None
    if weights_path is not None:
        state = _load_local_weights(backbone, Path(weights_path))
    elif pretrained:
        state = _download_weights(backbone, spec.weights)
    net = _torchvision_arch(backbone, spec, with_weights=state is not None)
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            where = weights_path or spec.weights.url.rsplit("/", 1)[-1]
            first = str(e).strip().splitlines()[1].strip() if "\n" in str(e) else str(e)
            raise UserError(f"weights {where} do not fit backbone {backbone!r} ({first}); "
                            f"pass the torchvision ImageNet state dict of {spec.arch.__name__}") from None
    return _attach_hash_layer(backbone, net, num_bits)


def _torchvision_arch(backbone: str, spec: BackboneSpec, with_weights: bool) -> nn.Module:
    if backbone == "googlenet":
        # torchvision builds pretrained Inception-v3 with transform_input=True (its weights expect
        # the (x - 0.5) / 0.5 input; it converts from ImageNet normalisation) and with the aux head,
        # whose weights are in the state dict; the official code inherits both.
        return spec.arch(weights=None, aux_logits=True, transform_input=with_weights,
                         init_weights=not with_weights)
    return spec.arch(weights=None)


def _attach_hash_layer(backbone: str, net: nn.Module, num_bits: int) -> nn.Module:
    if backbone == "googlenet":
        net.fc = nn.Linear(net.fc.in_features, num_bits)
        # Drop the auxiliary classifier: no loss uses it, and it costs compute every step.
        net.aux_logits = False
        net.AuxLogits = None
        return net
    if backbone == "resnet":
        net.fc = nn.Linear(net.fc.in_features, num_bits)
        return net
    return AlexNetHash(net, num_bits)


def _download_weights(backbone: str, weights: tvm.WeightsEnum) -> dict:
    filename = weights.url.rsplit("/", 1)[-1]
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        target = Path(torch.hub.get_dir()) / "checkpoints" / filename
        reason = getattr(e, "reason", None) or e
        raise UserError(
            f"cannot download ImageNet weights for {backbone!r} ({reason}); put {filename} at {target} "
            f"(set TORCH_HOME to move it), or pass --weights PATH to that file, or --no_pretrained"
        ) from None


def _load_local_weights(backbone: str, path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file; give the torchvision ImageNet state dict "
                        f"for {backbone!r}, or drop --weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise UserError(f"--weights {path}: not a readable PyTorch state dict ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise UserError(f"--weights {path}: expected a state dict (a mapping of tensors), got {type(state).__name__}")
    return state


class AlexNetHash(nn.Module):
    """AlexNet features + pretrained fc6/fc7 (with dropout) + a new Linear(4096, K).

    Input (B, 3, S, S); the adaptive pool makes 224×224 (6×6 feature maps) identical to the
    official flatten while letting other sizes run.
    """

    def __init__(self, alexnet: nn.Module, num_bits: int):
        super().__init__()
        self.features = alexnet.features
        self.avgpool = alexnet.avgpool
        cls = alexnet.classifier  # Dropout, fc6, ReLU, Dropout, fc7, ReLU, fc8
        self.hash_layer = nn.Sequential(cls[0], cls[1], cls[2], cls[3], cls[4], cls[5],
                                        nn.Linear(4096, num_bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.hash_layer(torch.flatten(x, 1))


class SmallNet(nn.Module):
    """A compact CNN for the CPU demo: four conv-BN-ReLU stages, global average pooling and a
    Linear(128, K). (B, 3, S, S) -> (B, K) for any S ≥ 16."""

    def __init__(self, num_bits: int, width: int = 32):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.hash_layer = nn.Linear(chans[-1], num_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))
        return self.hash_layer(x)
