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

from ._plugins import add_plugin_flag
from .config import Config
from .errors import ArgumentParser, UserError, resolve_device, run_command

MAX_BITS = 256  # the code table's longest codes
MAX_SEED = 2**32 - 1  # NumPy's seed range
MAX_IMAGE_SIZE = 1024  # 2.3x the official 448 px; larger inputs exhaust memory before they help
MAX_WORKERS = 64
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


def _choices(names, describe) -> str:
    return "; ".join(f"{n}: {describe(n)}" for n in names)


def build_parser() -> argparse.ArgumentParser:
    """The parser; the choices of --dataset, --backbone and --loss come from their registries, so a
    registered dataset, backbone or loss (a plugin's too) appears here without touching this file."""
    from .data import dataset_info, dataset_names
    from .losses import loss_names, loss_spec
    from .models import backbone_names, get_backbone

    p = ArgumentParser(prog="retrieval.py", description="HyP² deep hashing for multi-label image retrieval: "
                       "train (default) or evaluate a saved checkpoint (--test).", formatter_class=_Help)
    _official_flags(p.add_argument_group("official flags"), _choices(
        dataset_names(), lambda n: dataset_info(n).description), _choices(
        backbone_names(), lambda n: get_backbone(n).description))
    _added_flags(p.add_argument_group("added flags"), _choices(loss_names(), lambda n: loss_spec(n).description))
    _dataset_flags(p.add_argument_group("dataset flags"))
    _run_flags(p)
    p.add_argument("--config", type=Path, metavar="FILE.yaml",
                   help="read flags from a YAML file (keys: the flags without dashes); flags typed after it win; "
                        "result/{run}.yaml repeats a run")
    return p


def _official_flags(off, datasets: str, backbones: str) -> None:
    off.add_argument("--dataset", default="voc2007", help="one of: " + datasets)
    off.add_argument("--backbone", default=None, help="default googlenet (demo: small); one of: " + backbones)
    off.add_argument("--hash_bit", type=int, default=None, help=f"code length K, 1..{MAX_BITS}; default 48")
    off.add_argument("--batch_size", type=int, default=None, help="default 100 (demo: 50)")
    off.add_argument("--epochs", type=int, default=None, help="default 100 (demo: 15)")
    off.add_argument("--cuda", type=int, default=0, help="CUDA device index (see --device)")
    off.add_argument("--beta", type=float, default=None, help="weight of HyP²'s pair term (--loss hyp2); default 0.5")
    off.add_argument("--retrieve", type=int, default=0, help="K of mAP@K; 0 = the dataset's protocol")
    off.add_argument("--no_save", action="store_true", help="write nothing to --result_dir")
    off.add_argument("--seed", type=int, default=0,
                     help=f"seed for proxies, data order and augmentation, 0..{MAX_SEED}")
    off.add_argument("--rate", type=float, default=0.02, help="learning rate of the loss's proxies")
    off.add_argument("--test", action="store_true", help="evaluate the saved checkpoint instead of training")


def _added_flags(ours, losses: str) -> None:
    ours.add_argument("--data_root", type=Path, default=Path("data"), help="where datasets live")
    ours.add_argument("--result_dir", type=Path, default=Path("result"), help="checkpoints, logs, JSON")
    ours.add_argument("--image_size", type=int, default=None,
                      help=f"input side, at most {MAX_IMAGE_SIZE}; default per backbone (googlenet 448, small 32, "
                           f"others 224); with --test, the checkpoint's")
    ours.add_argument("--workers", type=int, default=None,
                      help=f"DataLoader workers, 0..{MAX_WORKERS}; default 4 (demo: 0)")
    ours.add_argument("--device", default=None, help="cpu, cuda or cuda:N; default cuda:<--cuda> if available, "
                                                     "else cpu")
    ours.add_argument("--no_pretrained", action="store_true", help="start from random weights")
    ours.add_argument("--weights", type=Path, default=None,
                      help="local torchvision ImageNet state dict of the backbone (offline machines)")
    ours.add_argument("--zeta", type=float, default=None,
                      help="override HyP²'s ζ (--loss hyp2); default from the code table")
    ours.add_argument("--eval_every", type=int, default=None,
                      help="evaluate every N epochs (and after the last); default 5 (demo: 1)")
    ours.add_argument("--subset", type=int, default=0,
                      help="use only the first N images of each split (quick smoke tests); 0 = all")
    ours.add_argument("--loss", default="hyp2", help="default hyp2; one of: " + losses)
    ours.add_argument("--loss_opt", action="append", default=[], metavar="KEY=VALUE",
                      help="a hyper-parameter of the --loss (repeatable); its keys and defaults: docs/losses.md, or "
                           "any wrong key, which lists them")
    ours.add_argument("--lr", type=float, default=None,
                      help="network learning rate; default per backbone (googlenet 0.02, alexnet 0.01, ...)")
    add_plugin_flag(ours)


def _dataset_flags(data) -> None:
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


def _run_flags(p) -> None:
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


def given_flags(argv: Sequence[str] | None) -> tuple[str, ...]:
    """The destinations of the flags present on the command line (defaults suppressed)."""
    parser = build_parser()
    for action in parser._actions:  # argparse has no public way to list them
        action.default = argparse.SUPPRESS
    return tuple(sorted(vars(parser.parse_args(argv))))


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """Parse (``--config FILE`` read first, :mod:`hyp2.configfile`), fill dataset/backbone defaults,
    validate, and freeze. Raises :class:`UserError`."""
    from .configfile import with_config_file

    return with_config_file(argv, _parse_config)


def _parse_config(argv: list[str]) -> Config:
    from ._plugins import load_plugins
    from .data import dataset_info
    from .models import get_backbone

    plugins = load_plugins(argv)  # before the parser, so their entries are among the choices
    args = build_parser().parse_args(argv)
    given = given_flags(argv)
    try:
        info = dataset_info(args.dataset)
    except ValueError as e:
        raise UserError(f"--dataset: {e}") from None
    defaults = {**GLOBAL_DEFAULTS, **info.defaults}
    for name in ("backbone", "hash_bit", "batch_size", "epochs", "eval_every", "workers"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    try:
        spec = get_backbone(args.backbone)
    except ValueError as e:
        raise UserError(f"--backbone: {e}") from None
    loss_options = _loss_options(args, given)
    args.image_size = spec.image_size if args.image_size is None else args.image_size
    _check_ranges(args, spec.min_size)
    _refuse_contradictions(args, given, has_weights=spec.weights is not None)
    for flag in ("split_file", "voc_url", "no_md5"):
        if flag in given and flag not in info.flags:
            from .data import dataset_names
            users = [n for n in dataset_names() if flag in dataset_info(n).flags]
            raise UserError(f"--{flag}: --dataset {args.dataset} does not use it (it applies to "
                            f"{', '.join(users) or 'no dataset'}); drop it")
    pretrained = args.weights is not None or (not args.no_pretrained and defaults["pretrained"]
                                              and spec.weights is not None)
    return Config(
        dataset=args.dataset, backbone=args.backbone, hash_bit=args.hash_bit, batch_size=args.batch_size,
        epochs=args.epochs, cuda=args.cuda, beta=0.5 if args.beta is None else args.beta, retrieve=args.retrieve,
        save=not args.no_save, seed=args.seed, rate=args.rate, test=args.test,
        data_root=args.data_root, result_dir=args.result_dir, image_size=args.image_size,
        workers=args.workers, device=str(resolve_device(args.device, cuda_index=args.cuda)), pretrained=pretrained,
        weights=args.weights, zeta=args.zeta, eval_every=args.eval_every, subset=args.subset, loss=args.loss,
        lr=spec.lr if args.lr is None else args.lr,
        voc_url=args.voc_url or os.environ.get("HYP2_VOC_URL") or None, check_md5=not args.no_md5,
        split_file=args.split_file, cache=args.cache, download=not args.no_download,
        amp=args.amp, compile=args.compile, resume=args.resume, overwrite=args.overwrite,
        export_codes=args.export_codes, plots=args.plots, loss_options=loss_options, plugins=tuple(plugins),
        given=given,
    )


def _check_ranges(args: argparse.Namespace, min_size: int) -> None:
    """Every numeric flag within the range where it means something (one line otherwise)."""
    bounds = (("hash_bit", 1, MAX_BITS, "the code table's range"), ("batch_size", 1, None, ""),
              ("epochs", 1, None, ""), ("eval_every", 1, None, ""), ("workers", 0, MAX_WORKERS, ""),
              ("retrieve", 0, None, ""), ("subset", 0, None, ""), ("seed", 0, MAX_SEED, "NumPy's seed range"),
              ("cuda", 0, None, ""),
              ("image_size", min_size, MAX_IMAGE_SIZE, f"the smallest --backbone {args.backbone} runs at, "
                                                       f"and what fits a GPU"))
    for name, low, high, why in bounds:
        value = getattr(args, name)
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise UserError(f"--{name} {value}: must be {span}" + (f" ({why})" if why else ""))
    for name in ("rate", "lr"):
        value = getattr(args, name)
        if value is not None and not (value >= 0 and value != float("inf")):
            raise UserError(f"--{name} {value}: must be a finite number ≥ 0")


def _loss_options(args: argparse.Namespace, given: Sequence[str]) -> tuple[tuple[str, object], ...]:
    """``--loss_opt KEY=VALUE`` pairs, with HyP²'s own flags --beta and --zeta, as the loss's typed,
    checked options (sorted items); one line naming the valid keys otherwise."""
    from .losses import loss_spec

    try:
        spec = loss_spec(args.loss)
        options = spec.parse(args.loss_opt)
    except ValueError as e:
        flag = "--loss_opt" if "unknown loss" not in str(e) else "--loss"
        raise UserError(f"{flag}: {e}") from None
    for flag in ("beta", "zeta"):
        if flag not in given:
            continue
        if flag not in {o.name for o in spec.options}:
            raise UserError(f"--{flag} is HyP²'s; --loss {args.loss} does not use it: drop --{flag}")
        if flag in options:
            raise UserError(f"--{flag} and --loss_opt {flag}=... both set {flag}: pass one")
        try:
            options.update(spec.parse([f"{flag}={getattr(args, flag)}"]))
        except ValueError as e:
            raise UserError(f"--{flag}: {e}") from None
    return tuple(sorted(options.items()))


def _refuse_contradictions(args: argparse.Namespace, given: Sequence[str], has_weights: bool) -> None:
    """Flags that contradict each other, or mean nothing in this combination, stop with one line
    instead of one silently winning or being ignored."""
    pairs = (("resume", "overwrite", "--resume continues the earlier run, --overwrite replaces it: pass one"),
             ("resume", "no_save", "--resume continues from saved state, which --no_save never writes"),
             ("resume", "test", "--resume applies to training; --test evaluates the saved checkpoint"),
             ("overwrite", "test", "--overwrite applies to training; --test only adds to the run's files"),
             ("weights", "no_pretrained", "--weights starts from those ImageNet weights, --no_pretrained from "
                                          "random ones: pass one"),
             ("device", "cuda", "--device names the device; --cuda N is the same as --device cuda:N: pass one"))
    for a, b, why in pairs:
        if a in given and b in given:
            raise UserError(f"--{a} and --{b} together: {why}")
    if args.weights is not None and not has_weights:
        raise UserError(f"--weights {args.weights}: --backbone {args.backbone} has no ImageNet weights to replace "
                        f"(it trains from scratch); drop --weights")
    for flag in ("export_codes", "plots"):
        if flag in given and not args.test:
            raise UserError(f"--{flag} applies to --test (it evaluates the saved checkpoint); add --test")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the process exit status (0 ok, 2 user error, 130 interrupted)."""

    def body():
        config = parse_config(argv)
        from .experiment import run
        run(config)

    return run_command(body)


if __name__ == "__main__":  # python -m hyp2.cli, as retrieval.py (how torchrun and sweeps start a run)
    import sys

    sys.exit(main())
