"""Command line: ``python retrieval.py [flags]``.

The official code's flags keep their names and defaults (``--dataset --backbone --hash_bit
--batch_size --epochs --cuda --beta --retrieve --no_save --seed --rate --test``); ours sit beside
them. Defaults that depend on the dataset (the demo trains a small CNN on 32×32 images) or on the
backbone (image size, learning rate) are resolved here, then everything is validated and frozen
into one :class:`hyp2.config.Config`. Every user error ends in one ``error: ...`` line and exit 2.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from .config import Config
from .errors import ArgumentParser, UserError, resolve_device, run_command

#: Official defaults of the flags whose default a dataset may change (``DatasetInfo.defaults``).
GLOBAL_DEFAULTS = {"backbone": "googlenet", "epochs": 100, "batch_size": 100, "eval_every": 5,
                   "pretrained": True, "workers": 4, "hash_bit": 48}


class _Help(argparse.HelpFormatter):
    # Show a default only where it is a value and the help does not state it already
    # (defaults that depend on the dataset or backbone are spelled out in the help text).
    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        shown = default is not None and default is not False and default != argparse.SUPPRESS
        if shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="retrieval.py", description="HyP² deep hashing for multi-label image retrieval: "
                "train (default) or evaluate a saved checkpoint (--test).",
                formatter_class=_Help)
    off = p.add_argument_group("official flags")
    off.add_argument("--dataset", default="voc2007", help="voc2007, voc2012, flickr, nuswide, custom or demo")
    off.add_argument("--backbone", default=None,
                     help="googlenet (Inception-v3, as the official code), alexnet, resnet (ResNet-50), "
                          "or small (demo CNN); default googlenet (demo: small)")
    off.add_argument("--hash_bit", type=int, default=None, help="code length K, 1..256; default 48")
    off.add_argument("--batch_size", type=int, default=None, help="default 100 (demo: 50)")
    off.add_argument("--epochs", type=int, default=None, help="default 100 (demo: 15)")
    off.add_argument("--cuda", type=int, default=0, help="CUDA device index (see --device)")
    off.add_argument("--beta", type=float, default=0.5, help="weight of HyP²'s pair term")
    off.add_argument("--retrieve", type=int, default=0, help="K of mAP@K; 0 = the dataset's protocol")
    off.add_argument("--no_save", action="store_true", help="write nothing to --result_dir")
    off.add_argument("--seed", type=int, default=0, help="seed for proxies, data order and augmentation")
    off.add_argument("--rate", type=float, default=0.02, help="learning rate of the loss's proxies")
    off.add_argument("--test", action="store_true", help="evaluate the saved checkpoint instead of training")

    ours = p.add_argument_group("added flags")
    ours.add_argument("--data_root", type=Path, default=Path("data"), help="where datasets live")
    ours.add_argument("--result_dir", type=Path, default=Path("result"), help="checkpoints, logs, JSON")
    ours.add_argument("--image_size", type=int, default=None,
                      help="input side; default per backbone: googlenet 448, alexnet/resnet 224, small 32")
    ours.add_argument("--workers", type=int, default=None, help="DataLoader workers; default 4 (demo: 0)")
    ours.add_argument("--device", default=None, help="e.g. cpu, cuda:1; default cuda:<--cuda> if available, else cpu")
    ours.add_argument("--no_pretrained", action="store_true", help="start from random weights")
    ours.add_argument("--weights", type=Path, default=None,
                      help="local torchvision ImageNet state dict of the backbone (offline machines)")
    ours.add_argument("--zeta", type=float, default=None, help="override ζ; default from the code table")
    ours.add_argument("--eval_every", type=int, default=None,
                      help="evaluate every N epochs (and after the last); default 5 (demo: 1)")
    ours.add_argument("--subset", type=int, default=0,
                      help="use only the first N images of each split (quick smoke tests); 0 = all")
    ours.add_argument("--loss", default="hyp2",
                      help="hyp2, or a baseline: dhn, hashnet, csq, idhn, dpsh, proxy_anchor, orthohash")
    ours.add_argument("--lr", type=float, default=None,
                      help="network learning rate; default per backbone: googlenet 0.02, alexnet 0.01, "
                           "resnet 0.02, small 0.02")

    data = p.add_argument_group("dataset flags")
    data.add_argument("--voc_url", default=None,
                      help="base URL of a VOC mirror (also env HYP2_VOC_URL); same file names as the official host")
    data.add_argument("--no_md5", action="store_true",
                      help="do not check archives against their published checksum (VOC's MD5, COCO's size)")
    data.add_argument("--split_file", type=Path, default=None,
                      help="flickr: JSON list of indices into img.txt fixing the split (instead of the authors' "
                           "flickr.txt)")
    data.add_argument("--no_download", action="store_true",
                      help="never use the network for datasets: fail with where to put the files instead")
    data.add_argument("--cache", action="store_true",
                      help="keep resized images in a memory-mapped file under --data_root (faster epochs)")

    tr = p.add_argument_group("training speed and safety")
    tr.add_argument("--amp", action="store_true",
                    help="bf16 autocast on CUDA (faster; not the official numerics)")
    tr.add_argument("--compile", action="store_true", help="torch.compile the network")
    tr.add_argument("--resume", action="store_true",
                    help="continue from result/{run}_last.ckpt (written every epoch); starts fresh if absent")
    tr.add_argument("--overwrite", action="store_true",
                    help="start a fresh run even if this run's checkpoints exist (they are replaced)")

    ev = p.add_argument_group("evaluation flags")
    ev.add_argument("--export_codes", action="store_true",
                    help="with --test: write the database's packed codes to result/{run}_codes.npz")
    ev.add_argument("--plots", action="store_true", help="with --test: draw the run's figures beside it")
    return p


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """Parse, fill dataset/backbone defaults, validate, and freeze. Raises :class:`UserError`."""
    from .data import dataset_info
    from .losses import loss_names
    from .models import BACKBONES

    args = build_parser().parse_args(argv)
    try:
        info = dataset_info(args.dataset)
    except ValueError as e:
        raise UserError(f"--dataset: {e}") from None
    defaults = {**GLOBAL_DEFAULTS, **info.defaults}

    def pick(name: str):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    backbone = pick("backbone")
    if backbone not in BACKBONES:
        raise UserError(f"--backbone {backbone!r} is unknown; choose one of: {', '.join(BACKBONES)}")
    if args.loss not in loss_names():
        raise UserError(f"--loss {args.loss!r} is unknown; choose one of: {', '.join(loss_names())}")
    hash_bit = pick("hash_bit")
    if not 1 <= hash_bit <= 256:
        raise UserError(f"--hash_bit {hash_bit}: must be between 1 and 256 (the code table's range)")
    spec = BACKBONES[backbone]
    image_size = spec.image_size if args.image_size is None else args.image_size
    for name, value, low in (("batch_size", pick("batch_size"), 1), ("epochs", pick("epochs"), 1),
                             ("eval_every", pick("eval_every"), 1), ("workers", pick("workers"), 0),
                             ("retrieve", args.retrieve, 0), ("subset", args.subset, 0),
                             ("image_size", image_size, spec.min_size)):
        if value < low:
            raise UserError(f"--{name} {value}: must be at least {low}"
                            + (f" for --backbone {backbone}" if name == "image_size" else ""))
    for name in ("beta", "rate", "lr"):
        value = getattr(args, name)
        if value is not None and not (value >= 0 and value != float("inf")):
            raise UserError(f"--{name} {value}: must be a finite number ≥ 0")
    if args.zeta is not None and not -1.0 <= args.zeta <= 1.0:
        raise UserError(f"--zeta {args.zeta}: must lie in [-1, 1] (it is a cosine)")

    device = str(resolve_device(args.device, cuda_index=args.cuda))

    pretrained = not args.no_pretrained and defaults["pretrained"] and backbone != "small"
    if args.weights is not None:
        pretrained = True
    return Config(
        dataset=args.dataset, backbone=backbone, hash_bit=hash_bit, batch_size=pick("batch_size"),
        epochs=pick("epochs"), cuda=args.cuda, beta=args.beta, retrieve=args.retrieve,
        save=not args.no_save, seed=args.seed, rate=args.rate, test=args.test,
        data_root=args.data_root, result_dir=args.result_dir, image_size=image_size,
        workers=pick("workers"), device=device, pretrained=pretrained, weights=args.weights,
        zeta=args.zeta, eval_every=pick("eval_every"), subset=args.subset, loss=args.loss,
        lr=spec.lr if args.lr is None else args.lr,
        voc_url=args.voc_url or os.environ.get("HYP2_VOC_URL") or None, check_md5=not args.no_md5,
        split_file=args.split_file, cache=args.cache, download=not args.no_download,
        amp=args.amp, compile=args.compile, resume=args.resume, overwrite=args.overwrite,
        export_codes=args.export_codes, plots=args.plots,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the process exit status (0 ok, 2 user error, 130 interrupted)."""

    def body():
        config = parse_config(argv)
        from .experiment import run
        run(config)

    return run_command(body)
