"""Backbones with a hash layer: an image batch (B, 3, S, S) -> real-valued hash outputs (B, K).

A registry of backbones, each entry knowing how to build its torchvision network, load its ImageNet
weights, attach the K-bit hash layer, its default image size and learning rate, and its input
convention. As in the official HyP² code (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space
for Multi-label Image Retrieval", ACM MM 2022):

* ``googlenet`` is torchvision's **Inception-v3** (the paper says GoogLeNet; the official code
  builds ``inception_v3(pretrained=True)``) at 448×448 with ``fc`` replaced by Linear(2048, K).
  Training uses the main output; the auxiliary head is removed since no loss uses it. Its input
  convention depends on the weights: torchvision builds the pretrained network with
  ``transform_input=True`` (it converts ImageNet-normalised input to the (x − 0.5) / 0.5 input
  its weights expect), a randomly initialised one without. That flag is not in the state dict, so
  it is part of the :class:`ModelRecipe` every checkpoint records.
* ``alexnet`` reuses the pretrained features and fc6/fc7 (with their dropouts) and adds a new
  Linear(4096, K), at 224×224.
* ``resnet`` is ResNet-50 with ``fc`` replaced by Linear(2048, K), at 224×224.
* ``small`` (ours) is a compact CNN trained from scratch for the CPU demo; no pretrained weights.

Beside them, the backbones users of other hashing code bases expect (DeepHash-pytorch, OrthoHash):
``resnet18/34/101/152``, ``vgg16`` (features and fc6/fc7 reused as for AlexNet, as DeepHash-pytorch
does), and two modern ones, ``convnext_tiny`` and ``efficientnet_b0`` (classifier's last Linear
replaced). Their learning rates follow the official recipe's family (0.02 for batch-normalised
ResNets, 0.01 where fully connected ImageNet layers are reused or for LayerNorm/SiLU networks);
they are untuned. Adding a backbone is one ``BACKBONES.register`` call (docs/extending.md).

Pretrained weights are torchvision's ImageNet ``IMAGENET1K_V1`` (what ``pretrained=True`` meant in
the official code), fetched through torchvision's weights API into ``$TORCH_HOME/hub/checkpoints``,
or read from a local file (``--weights``).
"""
from __future__ import annotations

import hashlib
import math
import os
import importlib
import operator
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .data.base import IMAGENET_MEAN, IMAGENET_STD
from .config import MAX_BITS, MAX_IMAGE_SIZE
from .errors import UserError, reason
from .registry import Registry
from .validate import check_int, is_int, is_real


@dataclass(frozen=True)
class Backbone:
    """A registry entry.

    Attributes:
        name: the ``--backbone`` value.
        description: one line for ``--help``.
        arch: builds the ImageNet network with random weights, ``arch(**arch_options)``.
        attach: ``attach(net, num_bits) -> model`` replaces the ImageNet head by the hash layer;
            the model maps (B, 3, S, S) to (B, K) in train and eval mode.
        weights: torchvision's ImageNet weights, or ``None`` (no pretrained start).
        image_size: default input side; ``min_size`` the smallest that runs.
        lr: default network learning rate.
        input_options: ``input_options(pretrained) -> dict`` of ``arch`` keyword arguments that
            define the input convention (Inception's ``transform_input``); recorded in checkpoints.

    Every backbone reads images normalised as the data pipeline does (ImageNet mean and std,
    :func:`hyp2.data.image_transform`), as the official code feeds all of them.
    """

    name: str
    description: str
    arch: Callable[..., nn.Module]
    attach: Callable[[nn.Module, int], nn.Module]
    weights: Any = None
    image_size: int = 224
    lr: float = 0.02
    min_size: int = 32
    input_options: Callable[[bool], dict[str, Any]] = field(default=lambda pretrained: {})


def _entry(name: str, arch: Callable[..., nn.Module], description: str, **fields: Any) -> Backbone:
    return Backbone(name, description, arch, **fields)


#: every backbone, by its ``--backbone`` name
BACKBONES: Registry[Backbone] = Registry("backbone", _entry)


# ---------------------------------------------------------------------------------------- recipe


@dataclass(frozen=True)
class ModelRecipe:
    """Everything that rebuilds a trained network and its input pipeline exactly, beside its state
    dict: backbone, K, the input side, the architecture's input-convention options and the input
    normalisation. Stored in every checkpoint (:meth:`to_dict`)."""

    backbone: str
    num_bits: int
    image_size: int
    arch_options: tuple[tuple[str, Any], ...] = ()
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def for_training(cls, backbone: str, num_bits: int, image_size: int | None = None,
                     pretrained: bool = False) -> "ModelRecipe":
        """The recipe of a new network; ``pretrained`` selects the input convention its ImageNet
        weights expect."""
        entry = BACKBONES.get(backbone)
        check_int("model", "num_bits", num_bits, 1)
        size = entry.image_size if image_size is None else check_int("model", "image_size", image_size, 1)
        options = entry.input_options(bool(pretrained))
        return cls(backbone, int(num_bits), size, tuple(sorted(options.items())))

    def build(self, imagenet_state: Mapping[str, torch.Tensor] | None = None, source: str = "") -> nn.Module:
        """The network: ``arch`` with random weights (or ``imagenet_state`` loaded), then the hash
        layer. ``source`` names the weights in error messages."""
        entry = BACKBONES.get(self.backbone)
        net = entry.arch(**dict(self.arch_options))
        if imagenet_state is not None:
            try:
                net.load_state_dict(imagenet_state)
            except RuntimeError as e:
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                first = lines[1] if len(lines) > 1 else lines[0] if lines else type(e).__name__
                raise UserError(f"weights {source} do not fit backbone {self.backbone!r} ({first}); pass the "
                                f"torchvision ImageNet state dict of {_arch_name(entry)}") from None
        return entry.attach(net, self.num_bits)

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "num_bits": self.num_bits, "image_size": self.image_size,
                "arch_options": dict(self.arch_options), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Any) -> "ModelRecipe":
        """Inverse of :meth:`to_dict`, every value checked as its flag is (bits, image size) and
        the architecture options only those the backbone's weights can ask for; ``ValueError``
        saying which field is missing, malformed or out of range."""
        if not isinstance(d, Mapping):
            raise ValueError(f"the model recipe is a {type(d).__name__}, not a mapping")
        for key, ok in (("backbone", lambda v: isinstance(v, str)), ("num_bits", is_int),
                        ("image_size", is_int), ("arch_options", lambda v: isinstance(v, Mapping)),
                        ("mean", _triple), ("std", _triple)):
            if key not in d or not ok(d[key]):
                raise ValueError(f"the model recipe's {key} is missing or malformed ({d.get(key)!r})")
        entry = BACKBONES.get(d["backbone"])
        check_int("the model recipe", "num_bits", d["num_bits"], 1, MAX_BITS)
        check_int("the model recipe", "image_size", d["image_size"], entry.min_size, MAX_IMAGE_SIZE)
        options = dict(d["arch_options"])
        allowed = [entry.input_options(p) for p in (False, True)]
        if options not in allowed:
            raise ValueError(f"the model recipe's arch_options {options} are not the {d['backbone']} backbone's "
                             f"(one of {' or '.join(map(str, allowed))})")
        if not all(v > 0 for v in d["std"]):
            raise ValueError(f"the model recipe's std {d['std']} must be positive")
        return cls(d["backbone"], int(d["num_bits"]), int(d["image_size"]), tuple(sorted(options.items())),
                   tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))


def _triple(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(is_real(x) and math.isfinite(x) for x in v)


def _arch_name(entry: Backbone) -> str:
    return getattr(entry.arch, "__name__", entry.name)


# ---------------------------------------------------------------------------------------- build


def build_model(backbone: str, num_bits: int, pretrained: bool = True,
                weights_path: str | os.PathLike | None = None) -> nn.Module:
    """Build ``backbone`` with a K-bit hash layer.

    Args:
        backbone: a registered name (``BACKBONES.names()``).
        num_bits: K, the number of hash bits (≥ 1).
        pretrained: start from torchvision's ImageNet weights (downloaded if not cached).
        weights_path: a local torchvision state dict of the original ImageNet model to use instead
            of the download (for offline machines); implies pretrained.

    Returns:
        a module mapping (B, 3, S, S) float images to (B, K) in both train and eval mode.

    Raises:
        ValueError: unknown backbone or bad ``num_bits``.
        UserError: weights cannot be downloaded, do not exist or do not fit the architecture, or
            a backbone without ImageNet weights is asked for them.
    """
    pretrained = pretrained or weights_path is not None
    return initial_model(ModelRecipe.for_training(backbone, num_bits, pretrained=pretrained), pretrained,
                         weights_path)


def initial_model(recipe: ModelRecipe, pretrained: bool, weights_path: str | os.PathLike | None = None) -> nn.Module:
    """The network a training run starts from: ``recipe`` built from ImageNet weights (``weights_path``,
    else torchvision's download) when ``pretrained``, else from random weights."""
    state, source = imagenet_state(recipe.backbone, weights_path) if pretrained else (None, "")
    return recipe.build(state, source)


def imagenet_state(backbone: str, weights_path: str | os.PathLike | None = None) -> tuple[dict, str]:
    """The ImageNet state dict of ``backbone``'s torchvision network and where it came from: the
    local file ``weights_path`` or torchvision's cached download. ``UserError`` when unavailable."""
    entry = BACKBONES.get(backbone)
    if weights_path is not None:
        return _load_local_weights(backbone, Path(weights_path)), str(weights_path)
    if entry.weights is None:
        raise UserError(f"backbone {backbone!r} has no ImageNet weights; train it from scratch (--no_pretrained)")
    return _download_weights(backbone, entry.weights), entry.weights.url.rsplit("/", 1)[-1]


def _download_weights(backbone: str, weights) -> dict:
    filename = weights.url.rsplit("/", 1)[-1]
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        target = Path(torch.hub.get_dir()) / "checkpoints" / filename
        why = getattr(e, "reason", None) or reason(e)
        raise UserError(
            f"cannot download ImageNet weights for {backbone!r} ({why}); put {filename} at {target} "
            f"(set TORCH_HOME to move it), or pass --weights PATH to that file, or --no_pretrained"
        ) from None


def _load_local_weights(backbone: str, path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"--weights {path}: no such file; give the torchvision ImageNet state dict "
                        f"for {backbone!r}, or drop --weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise UserError(f"--weights {path}: not a readable PyTorch state dict ({reason(e)}); pass the .pth file "
                        f"of torchvision's ImageNet {backbone} weights") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"--weights {path}: expected a state dict (a mapping of names to tensors), got "
                        f"{type(state).__name__}; pass the .pth file of torchvision's ImageNet {backbone} weights")
    return state


# ---------------------------------------------------------------------------------------- heads


def replace_fc(net: nn.Module, num_bits: int) -> nn.Module:
    """Hash layer for networks whose head is ``net.fc`` (ResNets)."""
    net.fc = nn.Linear(net.fc.in_features, num_bits)
    return net


def _inception_head(net: nn.Module, num_bits: int) -> nn.Module:
    net = replace_fc(net, num_bits)
    # Drop the auxiliary classifier: no loss uses it, and it costs compute every step.
    net.aux_logits = False
    net.AuxLogits = None
    return net


def replace_last_linear(net: nn.Module, num_bits: int) -> nn.Module:
    """Hash layer for networks whose head ends ``net.classifier[-1]`` (ConvNeXt, EfficientNet)."""
    last = net.classifier[-1]
    net.classifier[-1] = nn.Linear(last.in_features, num_bits)
    return net


class ReusedClassifierHash(nn.Module):
    """Features + the pretrained fully connected layers fc6/fc7 (with their dropouts and ReLUs) + a
    new Linear(4096, K), as the official code builds AlexNet (and DeepHash-pytorch VGG-16).

    Input (B, 3, S, S); the adaptive pool makes 224×224 identical to the official flatten while
    letting other sizes run.
    """

    def __init__(self, net: nn.Module, num_bits: int):
        super().__init__()
        self.features = net.features
        self.avgpool = net.avgpool
        layers = list(net.classifier)[:-1]  # everything but the ImageNet classifier fc8
        self.hash_layer = nn.Sequential(*layers, nn.Linear(net.classifier[-1].in_features, num_bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.hash_layer(torch.flatten(x, 1))



class SmallNet(nn.Module):
    """A compact CNN for the CPU demo: four conv-BN-ReLU stages, global average pooling and a
    ``hash_layer`` Linear(128, K) (identity until :func:`replace_hash_layer` attaches it).
    (B, 3, S, S) -> (B, K) for any S ≥ 16."""

    def __init__(self, num_bits: int | None = None, width: int = 32):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.num_features = chans[-1]
        self.hash_layer = nn.Identity() if num_bits is None else nn.Linear(chans[-1], num_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))
        return self.hash_layer(x)


def replace_hash_layer(net: nn.Module, num_bits: int) -> nn.Module:
    """Hash layer for networks that name it ``hash_layer`` and know their ``num_features``."""
    net.hash_layer = nn.Linear(net.num_features, num_bits)
    return net


def _torchvision(name: str) -> Any:
    """``torchvision.models.{name}`` (dotted), imported on first use: listing the backbones (a
    flag's check, ``--help``, a sweep's plan) does not import torchvision."""
    return operator.attrgetter(name)(importlib.import_module("torchvision.models"))


class _TorchvisionWeights:
    """torchvision's weights enum member ``name`` (e.g. ``"AlexNet_Weights.IMAGENET1K_V1"``),
    looked up when one of its attributes (``url``, ``get_state_dict``) is first asked for."""

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        if attr == "name" or attr.startswith("__"):  # copy/pickle probes, or `name` not set yet: no lookup
            raise AttributeError(attr)
        return getattr(_torchvision(self.name), attr)

    def __repr__(self) -> str:
        return f"torchvision.models.{self.name}"


def _inception(**options) -> nn.Module:
    # With the aux head, whose weights are in torchvision's state dict; init_weights is skipped
    # when the weights will be replaced anyway (it is slow), as torchvision does.
    transform = bool(options.get("transform_input", False))
    return _torchvision("inception_v3")(weights=None, aux_logits=True, transform_input=transform,
                                        init_weights=not transform)


def _weights_free(arch: str) -> Callable[..., nn.Module]:
    def build(**options) -> nn.Module:
        return _torchvision(arch)(weights=None, **options)
    build.__name__ = arch
    return build


# ---------------------------------------------------------------------------------------- entries

BACKBONES.register(
    "googlenet", "Inception-v3 at 448 px, as the official code (the paper says GoogLeNet)", _inception,
    attach=_inception_head, weights=_TorchvisionWeights("Inception_V3_Weights.IMAGENET1K_V1"), image_size=448, lr=0.02,
    min_size=75, input_options=lambda pretrained: {"transform_input": pretrained})
BACKBONES.register(
    "alexnet", "AlexNet with its pretrained fc6/fc7 and a new 4096→K layer, 224 px", _weights_free("alexnet"),
    attach=ReusedClassifierHash, weights=_TorchvisionWeights("AlexNet_Weights.IMAGENET1K_V1"), lr=0.01, min_size=63)
# The official code never sets resnet's lr (it crashes). We use googlenet's 0.02: both are
# batch-normalised ImageNet backbones trained with the same SGD recipe.
BACKBONES.register("resnet", "ResNet-50, 224 px", _weights_free("resnet50"), attach=replace_fc,
                   weights=_TorchvisionWeights("ResNet50_Weights.IMAGENET1K_V1"))
BACKBONES.register("small", "compact CNN from scratch for the CPU demo, 32 px", SmallNet, attach=replace_hash_layer,
                   image_size=32, min_size=16)
for _depth in (18, 34, 101, 152):
    BACKBONES.register(f"resnet{_depth}", f"ResNet-{_depth}, 224 px", _weights_free(f"resnet{_depth}"),
                       attach=replace_fc, weights=_TorchvisionWeights(f"ResNet{_depth}_Weights.IMAGENET1K_V1"))
BACKBONES.register("vgg16", "VGG-16 with its pretrained fc6/fc7 and a new 4096→K layer, 224 px",
                   _weights_free("vgg16"), attach=ReusedClassifierHash,
                   weights=_TorchvisionWeights("VGG16_Weights.IMAGENET1K_V1"), lr=0.01)
BACKBONES.register("convnext_tiny", "ConvNeXt-T, classifier's last Linear replaced, 224 px",
                   _weights_free("convnext_tiny"), attach=replace_last_linear,
                   weights=_TorchvisionWeights("ConvNeXt_Tiny_Weights.IMAGENET1K_V1"), lr=0.01)
BACKBONES.register("efficientnet_b0", "EfficientNet-B0, classifier's last Linear replaced, 224 px",
                   _weights_free("efficientnet_b0"), attach=replace_last_linear,
                   weights=_TorchvisionWeights("EfficientNet_B0_Weights.IMAGENET1K_V1"), lr=0.01)


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """16 hex digits of SHA-256 over a state dict's names, dtypes, shapes and bytes: the identity
    of a trained model, shared by its checkpoint and the codes exported with it."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no copy
    return h.hexdigest()[:16]
