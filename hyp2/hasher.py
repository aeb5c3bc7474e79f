"""A trained model from its checkpoint alone: rebuild it exactly, and hash images with it.

:func:`rebuild_model` is the one function that turns a checkpoint back into the network that was
trained — same architecture, input convention (Inception-v3's ``transform_input``), weights — and
``--test``, ``python -m hyp2.search`` and :func:`load_hasher` all go through it; none rebuilds
from command-line defaults. :class:`Hasher` applies the run's own test transform (resize to the
trained square, no flip, the recorded normalisation) and returns codes as HyP² defines them
(Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM
2022): the signs of the network's K outputs, with 0 counted as +1.

Example::

    import hyp2
    hasher = hyp2.load_hasher("result/voc2007_googlenet_48.ckpt", device="cuda")
    codes = hasher.encode(["query.jpg"])          # (1, 48) int8 ±1
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .errors import UserError, reason
from .checkpoint import Checkpoint, load_checkpoint
from .metrics import binarize
from .validate import check_int

#: images encoded per forward pass by default
ENCODE_BATCH = 32


def rebuild_model(ckpt: Checkpoint, device: torch.device | str = "cpu") -> nn.Module:
    """The checkpoint's network in eval mode on ``device``, exactly as it was trained.

    Raises:
        UserError: the state dict does not fit the recorded recipe (a hand-edited file).
    """
    model = ckpt.recipe.build()
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as e:
        raise UserError(f"checkpoint {ckpt.path} does not hold the {ckpt.backbone} model with {ckpt.num_bits} bits "
                        f"its recipe describes ({reason(e)}); retrain with this code") from None
    return model.to(device).eval()


def read_image(path: str | os.PathLike):
    """Open ``path`` as an RGB PIL image; a :class:`UserError` naming the path and the reason."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        why = "no such file"
    except IsADirectoryError:
        why = "it is a directory"
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
        why = reason(e)
    raise UserError(f"cannot read image {path} ({why}); pass an image file PIL can open (JPEG, PNG, ...)")


class Hasher:
    """A trained model that maps images to K-bit codes (``InferenceModel``-style).

    Attributes:
        classes: the C class names it was trained on. num_bits: K. image_size: the input side.
        meta: the checkpoint's metadata (dataset, epoch, map, ...). digest: the model's identity,
        which codes exported from it carry. device: where it runs. model: the network (eval mode).
    """

    def __init__(self, ckpt: Checkpoint, device: torch.device | str = "cpu"):
        from .data.base import image_transform

        self.checkpoint = ckpt
        self.device = torch.device(device)
        self.model = rebuild_model(ckpt, self.device)
        self.classes = ckpt.classes
        self.num_bits = ckpt.num_bits
        self.image_size = ckpt.recipe.image_size
        self.meta = dict(ckpt.meta)
        self.digest = ckpt.digest
        self._transform = image_transform(self.image_size, train=False)
        self._mean = torch.tensor(ckpt.recipe.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(ckpt.recipe.std).view(1, 3, 1, 1)

    def __repr__(self) -> str:
        return (f"Hasher({self.checkpoint.path}, {self.checkpoint.backbone}, {self.num_bits} bits, "
                f"{len(self.classes)} classes, {self.image_size} px, on {self.device})")

    def preprocess(self, images: Any) -> torch.Tensor:
        """The run's test transform: ``images`` -> (B, 3, S, S) float32 normalised input.

        Accepts a sequence of PIL images and/or paths, one PIL image or path, or a (B, 3, H, W)
        tensor: uint8 in [0, 255] goes through exactly the PIL pipeline of ``--test``; float in
        [0, 1] (torchvision's ``ToTensor`` convention) is resized with antialiased bilinear
        interpolation when not already S×S (close to, not bit-identical with, PIL's resize).
        """
        from PIL import Image

        if torch.is_tensor(images):
            return self._preprocess_tensor(images)
        if isinstance(images, (str, os.PathLike, Image.Image)):
            images = [images]
        items = [read_image(x) if isinstance(x, (str, os.PathLike)) else x for x in images]
        for i, img in enumerate(items):
            if not isinstance(img, Image.Image):
                raise ValueError(f"image {i} is a {type(img).__name__}; pass PIL images, paths or a (B, 3, H, W) "
                                 f"tensor")
            if img.width < 1 or img.height < 1:
                raise ValueError(f"image {i} is {img.width}×{img.height} pixels; pass images of at least 1×1")
        if not items:
            return torch.empty(0, 3, self.image_size, self.image_size)
        # an RGB image is transformed as it is: a copy would double the memory of a large one
        return torch.stack([self._transform(img if img.mode == "RGB" else img.convert("RGB")) for img in items])

    def _preprocess_tensor(self, x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"an image batch must be (B, 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"an image batch must hold images of at least 1×1 pixels, got shape {tuple(x.shape)}")
        x = x.detach().cpu()
        if x.dtype == torch.uint8:
            return self.preprocess([Image.fromarray(img.permute(1, 2, 0).numpy()) for img in x])
        if not x.is_floating_point():
            raise ValueError(f"an image batch must be uint8 or float in [0, 1], got {x.dtype}")
        _check_finite(x)
        x = x.float()
        if tuple(x.shape[2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return (x - self._mean) / self._std

    @torch.no_grad()
    def outputs(self, images: Any, batch_size: int = ENCODE_BATCH) -> torch.Tensor:
        """(B, K) float32 real-valued network outputs on the CPU, in input order. Images given as
        PIL images or paths are read and transformed ``batch_size`` (>= 1) at a time (bounded memory).

        Raises:
            ValueError: a bad ``batch_size``, or images that are empty, of the wrong shape or type,
                or hold NaN or inf. UserError: an unreadable path, or a model that gives NaN for them.
        """
        from PIL import Image

        batch_size = check_int("Hasher.outputs", "batch_size", batch_size, minimum=1)
        if torch.is_tensor(images) or isinstance(images, (str, os.PathLike, Image.Image)):
            images = self.preprocess(images)  # one (B, 3, S, S) input tensor
        outs = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            outs.append(self.forward(batch if torch.is_tensor(batch) else self.preprocess(batch)))
        return torch.cat(outs) if outs else torch.empty(0, self.num_bits)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) float32 outputs on the CPU of a (B, 3, S, S) batch that :meth:`preprocess` made.

        Raises:
            ValueError: ``x`` holds NaN or inf (the input is to blame). UserError: finite input
                gives NaN outputs (the checkpoint is).
        """
        _check_finite(x)
        out = self.model(x.to(self.device)).float().cpu()
        if torch.isnan(out).any():
            raise UserError(f"the model of {self.checkpoint.path} gives NaN outputs for finite input; the checkpoint "
                            f"is broken: retrain")
        return out

    def encode(self, images: Any, batch_size: int = ENCODE_BATCH) -> torch.Tensor:
        """(B, K) int8 codes of ±1 on the CPU: the signs of :meth:`outputs`, 0 counted as +1."""
        batch_size = check_int("Hasher.encode", "batch_size", batch_size, minimum=1)
        out = self.outputs(images, batch_size)
        return binarize(out)


def _check_finite(x: torch.Tensor) -> None:
    """ValueError naming the first image of a (B, 3, H, W) batch that holds NaN or inf."""
    bad = ~torch.isfinite(x).flatten(1).all(dim=1)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"image {i} of the input holds NaN or inf values; pass finite pixel values (uint8, or "
                         f"float in [0, 1])")


def load_hasher(path: str | os.PathLike, device: torch.device | str = "cpu") -> Hasher:
    """A :class:`Hasher` for the checkpoint at ``path`` (``result/{run}.ckpt``), on ``device``.

    Raises:
        UserError: missing, unreadable or malformed checkpoint, or an unusable ``device``.
    """
    from .errors import resolve_device

    device = resolve_device(str(device), flag="device")
    return Hasher(load_checkpoint(Path(path)), device)

