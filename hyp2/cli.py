"""Command line: ``python retrieval.py [flags]``.

The official code's flags keep their names and defaults (``--dataset --backbone --hash_bit
--batch_size --epochs --cuda --beta --retrieve --no_save --seed --rate --test``); ours sit beside
them. A flag's value comes from the first layer that sets it: the command line, then (``--test
--checkpoint PATH``) the checkpoint's own training config, then the dataset's defaults (the demo
trains a small CNN on 32×32 images), then the official defaults; values that depend on the backbone
(image size, learning rate) are resolved last. Everything is then validated, whichever layer it came
from, and frozen into one :class:`hyp2.config.Config`. Every user error ends in one ``error: ...``
line and exit 2.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

from ._plugins import add_plugin_flag
from .config import GLOBAL_DEFAULTS, MAX_BITS, MAX_EPOCHS, MAX_IMAGE_SIZE, MAX_SEED, MAX_WORKERS, Config
from .errors import ArgumentParser, UserError, resolve_device, run_command

#: what ``--test --checkpoint PATH`` takes from the checkpoint's training config, unless given
FROM_CHECKPOINT = ("dataset", "backbone", "hash_bit", "loss", "seed", "subset", "split_file", "data_root",
                   "retrieve", "batch_size")


def build_parser() -> argparse.ArgumentParser:
    """The parser. Every flag's default is None (or False), so that the layers of the module
    docstring can tell a given flag from an absent one. The choices of --dataset, --backbone and
    --loss come from their registries, so a plugin's entries appear here too."""
    from .data import DATASETS
    from .losses import LOSSES
    from .models import BACKBONES

    p = ArgumentParser(prog="retrieval.py", description="HyP² deep hashing for multi-label image retrieval: "
                       "train (default) or evaluate a saved checkpoint (--test).")
    _official_flags(p.add_argument_group("official flags"), DATASETS.describe(), BACKBONES.describe())
    _added_flags(p.add_argument_group("added flags"), LOSSES.describe())
    _dataset_flags(p.add_argument_group("dataset flags"))
    _run_flags(p)
    p.add_argument("--config", type=Path, metavar="FILE.yaml",
                   help="read flags from a YAML file (keys: the flags without dashes); flags typed after it win; "
                        "result/{run}.yaml repeats a run")
    return p


def _official_flags(off, datasets: str, backbones: str) -> None:
    off.add_argument("--dataset", help="default voc2007; one of: " + datasets)
    off.add_argument("--backbone", help="default googlenet (demo: small); one of: " + backbones)
    off.add_argument("--hash_bit", type=int, help=f"code length K, 1..{MAX_BITS}; default 48")
    off.add_argument("--batch_size", type=int, help="default 100 (demo: 50)")
    off.add_argument("--epochs", type=int, help="default 100 (demo: 15)")
    off.add_argument("--cuda", type=int, help="CUDA device index, default 0 when CUDA is available (see --device)")
    off.add_argument("--beta", type=float, help="weight of HyP²'s pair term (--loss hyp2); default 0.5")
    off.add_argument("--retrieve", type=int, help="K of mAP@K; default 0 = the dataset's protocol")
    off.add_argument("--no_save", action="store_true", help="write nothing to --result_dir")
    off.add_argument("--seed", type=int, help=f"seed for proxies, data order and augmentation, 0..{MAX_SEED}; "
                                              f"default 0")
    off.add_argument("--rate", type=float, help="learning rate of the loss's proxies; default 0.02")
    off.add_argument("--test", action="store_true", help="evaluate the saved checkpoint instead of training")


def _added_flags(ours, losses: str) -> None:
    ours.add_argument("--data_root", type=Path, help="where datasets live; default data")
    ours.add_argument("--result_dir", type=Path, help="checkpoints, logs, JSON; default result")
    ours.add_argument("--image_size", type=int,
                      help=f"input side, at most {MAX_IMAGE_SIZE}; default per backbone (googlenet 448, small 32, "
                           f"others 224); with --test, the checkpoint's")
    ours.add_argument("--workers", type=int, help=f"DataLoader workers, 0..{MAX_WORKERS}; default 4 (demo: 0)")
    ours.add_argument("--device", help="cpu, cuda or cuda:N; default cuda:<--cuda> if available, else cpu")
    ours.add_argument("--no_pretrained", action="store_true", help="start from random weights")
    ours.add_argument("--weights", type=Path,
                      help="local torchvision ImageNet state dict of the backbone (offline machines)")
    ours.add_argument("--zeta", type=float, help="override HyP²'s ζ (--loss hyp2); default from the code table")
    ours.add_argument("--eval_every", type=int, help="evaluate every N epochs (and after the last); default 5 "
                                                     "(demo: 1)")
    ours.add_argument("--subset", type=int,
                      help="use only the first N images of each split (quick smoke tests); default 0 = all")
    ours.add_argument("--loss", help="default hyp2; one of: " + losses)
    ours.add_argument("--loss_opt", action="append", default=[], metavar="KEY=VALUE",
                      help="a hyper-parameter of the --loss (repeatable); its keys and defaults: docs/losses.md, or "
                           "any wrong key, which lists them")
    ours.add_argument("--lr", type=float,
                      help="network learning rate; default per backbone (googlenet 0.02, alexnet 0.01, ...)")
    add_plugin_flag(ours)


def _dataset_flags(data) -> None:
    data.add_argument("--voc_url", help="base URL of a VOC mirror (also env HYP2_VOC_URL); same file names as the "
                                        "official host")
    data.add_argument("--no_md5", action="store_true",
                      help="do not check archives against their published checksum (VOC's MD5, COCO's size)")
    data.add_argument("--split_file", type=Path,
                      help="flickr: JSON list of indices into img.txt fixing the split (instead of the authors' "
                           "flickr.txt)")
    data.add_argument("--no_download", action="store_true",
                      help="never use the network for datasets: fail with where to put the files instead")
    data.add_argument("--cache", action="store_true",
                      help="keep resized images in a memory-mapped file under --data_root (faster epochs)")


def _run_flags(p) -> None:
    tr = p.add_argument_group("training speed and safety")
    tr.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (faster; not the official numerics)")
    tr.add_argument("--compile", action="store_true", help="torch.compile the network")
    tr.add_argument("--resume", action="store_true",
                    help="continue from result/{run}_last.ckpt (written every epoch); starts fresh if absent")
    tr.add_argument("--overwrite", action="store_true",
                    help="start a fresh run even if this run's files exist (they are moved aside, and deleted once "
                         "the fresh run's first epoch is saved)")

    ev = p.add_argument_group("evaluation flags")
    ev.add_argument("--checkpoint", type=Path,
                    help="with --test: evaluate this checkpoint (result/{run}.ckpt); it says what to rebuild, and its "
                         "results go beside it")
    ev.add_argument("--export_codes", action="store_true",
                    help="with --test: write the database's packed codes to result/{run}_codes.npz")
    ev.add_argument("--plots", action="store_true", help="with --test: draw the run's figures beside it")

    out = p.add_argument_group("output")
    out.add_argument("--tensorboard", action="store_true",
                     help="write loss, its terms, learning rates and mAP per epoch to result/{run}.tb/ (needs the "
                          "tensorboard package)")
    out.add_argument("--quiet", action="store_true", help="print warnings and errors only")
    out.add_argument("-v", "--verbose", action="store_true", help="print debug lines too")


class _Layers:
    """A flag's value from the first layer that has it; remembers where each came from."""

    def __init__(self, *layers: tuple[str, dict[str, Any]]):
        self.layers = [(name, values) for name, values in layers if values]

    def add(self, name: str, values: dict[str, Any]) -> None:
        self.layers.append((name, values))

    def get(self, key: str, default: Any = None) -> Any:
        return next((values[key] for _, values in self.layers if values.get(key) is not None), default)

    def source(self, key: str) -> str:
        where = next((name for name, values in self.layers if values.get(key) is not None), "")
        return f" (from {where})" if where and where != "command line" else ""


def parse_config(argv: Sequence[str] | None = None) -> Config:
    """Parse (``--config FILE`` read first, :mod:`hyp2.configfile`), fill dataset/backbone defaults,
    validate, and freeze. Raises :class:`UserError`."""
    from .configfile import with_config_file

    return with_config_file(argv, _parse_config)


def _parse_config(argv: list[str]) -> Config:
    from ._plugins import load_plugins
    from .data import DATASETS
    from .models import BACKBONES

    plugins = load_plugins(argv)  # before the parser, so their entries are among the choices
    args = build_parser().parse_args(argv)
    given = _given(args)
    layers = _Layers(("command line", given))
    if args.checkpoint is not None:
        if not args.test:
            raise UserError("--checkpoint applies to --test (it names the checkpoint to evaluate); add --test")
        layers.add(f"checkpoint {args.checkpoint}", _checkpoint_config(args.checkpoint))
    try:
        info = DATASETS.get(layers.get("dataset", GLOBAL_DEFAULTS["dataset"]))
    except ValueError as e:
        raise UserError(f"--dataset: {e}") from None
    layers.add(f"--dataset {info.name}'s defaults", info.defaults)
    layers.add("defaults", GLOBAL_DEFAULTS)
    try:
        spec = BACKBONES.get(layers.get("backbone"))
    except ValueError as e:
        raise UserError(f"--backbone: {e}") from None
    values = {name: layers.get(name) for name in ("dataset", "backbone", "hash_bit", "batch_size", "epochs", "seed",
                                                  "eval_every", "workers", "retrieve", "subset", "rate", "lr")}
    values.update(retrieve=values["retrieve"] or 0, subset=values["subset"] or 0, seed=values["seed"] or 0,
                  rate=0.02 if values["rate"] is None else values["rate"],
                  lr=spec.lr if values["lr"] is None else values["lr"],
                  image_size=layers.get("image_size", None if args.test else spec.image_size))
    _check_ranges(values, layers, spec.min_size, args.cuda)
    _refuse_contradictions(args, given, values["backbone"], has_weights=spec.weights is not None)
    for flag in ("split_file", "voc_url", "no_md5"):
        if flag in given and flag not in info.flags:
            users = [n for n in DATASETS.names() if flag in DATASETS.get(n).flags]
            raise UserError(f"--{flag}: --dataset {info.name} does not use it (it applies to "
                            f"{', '.join(users) or 'no dataset'}); drop it")
    pretrained = args.weights is not None or (not args.no_pretrained and layers.get("pretrained")
                                              and spec.weights is not None)
    split_file = layers.get("split_file")
    return Config(
        **values, cuda=args.cuda or 0, beta=0.5 if args.beta is None else args.beta, save=not args.no_save,
        test=args.test, data_root=Path(layers.get("data_root", "data")), result_dir=args.result_dir or Path("result"),
        device=str(_device(args)), pretrained=bool(pretrained), weights=args.weights, zeta=args.zeta,
        loss=layers.get("loss", "hyp2"), loss_options=_loss_options(args, layers.get("loss", "hyp2")),
        voc_url=args.voc_url or os.environ.get("HYP2_VOC_URL") or None, check_md5=not args.no_md5,
        split_file=Path(split_file) if split_file else None, cache=args.cache, download=not args.no_download,
        amp=args.amp, compile=args.compile, resume=args.resume, overwrite=args.overwrite,
        export_codes=args.export_codes, plots=args.plots, checkpoint=args.checkpoint, tensorboard=args.tensorboard,
        verbosity=1 if args.verbose else -1 if args.quiet else 0, plugins=tuple(plugins),
    )


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The flags present: those not at their parser default (None, False for a switch, [])."""
    return {k: v for k, v in vars(args).items() if v is not None and v is not False and v != []}


def given_flags(argv: Sequence[str]) -> tuple[str, ...]:
    """The destinations of the flags present in ``argv`` (a config file's flags are merged with
    them, :mod:`hyp2.configfile`)."""
    return tuple(sorted(_given(build_parser().parse_args(list(argv)))))


def _checkpoint_config(path: Path) -> dict[str, Any]:
    """What ``--test --checkpoint PATH`` takes from the checkpoint (:data:`FROM_CHECKPOINT`)."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    config = {k: ckpt.config.get(k) for k in FROM_CHECKPOINT}
    config.update(backbone=ckpt.recipe.backbone, hash_bit=ckpt.recipe.num_bits, loss=ckpt.loss["name"])
    return {k: v for k, v in config.items() if v is not None}


def _device(args: argparse.Namespace):
    """``--device``, else ``cuda:<--cuda>``: an explicit --cuda on a machine without that GPU is
    refused rather than quietly run on the CPU."""
    if args.cuda is not None:
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--cuda {args.cuda}: this machine has no CUDA device; drop --cuda to run on the CPU")
        return resolve_device(f"cuda:{args.cuda}", flag="--cuda")
    return resolve_device(args.device)


def _check_ranges(values: dict[str, Any], layers: _Layers, min_size: int, cuda: int | None) -> None:
    """Every numeric setting within the range where it means something, whichever layer set it
    (one line otherwise, naming the file a value came from)."""
    bounds = (("hash_bit", 1, MAX_BITS, "the code table's range"), ("batch_size", 1, None, ""),
              ("epochs", 1, MAX_EPOCHS, ""), ("eval_every", 1, None, ""), ("workers", 0, MAX_WORKERS, ""),
              ("retrieve", 0, None, ""), ("subset", 0, None, ""), ("seed", 0, MAX_SEED, "NumPy's seed range"),
              ("image_size", min_size, MAX_IMAGE_SIZE, f"the smallest --backbone {values['backbone']} runs at, "
                                                       f"and what fits a GPU"))
    for name, low, high, why in bounds:
        value = values[name]
        if value is None and name == "image_size":
            continue
        integer = isinstance(value, int) and not isinstance(value, bool)
        if not integer or value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise UserError(f"--{name} {value!r}{layers.source(name)}: must be {'' if integer else 'an integer '}{span}"
                            + (f" ({why})" if why else ""))
    if cuda is not None and cuda < 0:
        raise UserError(f"--cuda {cuda}: must be at least 0")
    for name in ("rate", "lr"):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
            raise UserError(f"--{name} {value!r}{layers.source(name)}: must be a finite number ≥ 0")


def _loss_options(args: argparse.Namespace, loss: str) -> tuple[tuple[str, object], ...]:
    """``--loss_opt KEY=VALUE`` pairs, with HyP²'s own flags --beta and --zeta, as the loss's typed,
    checked options (sorted items); one line naming the valid keys otherwise."""
    from .losses import LOSSES

    try:
        spec = LOSSES.get(loss)
    except ValueError as e:
        raise UserError(f"--loss: {e}") from None
    try:
        options = spec.parse(args.loss_opt)
    except ValueError as e:
        raise UserError(f"--loss_opt: {e}") from None
    for flag in ("beta", "zeta"):
        if getattr(args, flag) is None:
            continue
        if flag not in {o.name for o in spec.options}:
            raise UserError(f"--{flag} is HyP²'s; --loss {loss} does not use it: drop --{flag}")
        if flag in options:
            raise UserError(f"--{flag} and --loss_opt {flag}=... both set {flag}: pass one")
        try:
            options.update(spec.parse([f"{flag}={getattr(args, flag)}"]))
        except ValueError as e:
            raise UserError(f"--{flag}: {e}") from None
    return tuple(sorted(options.items()))


def _refuse_contradictions(args: argparse.Namespace, given: dict[str, Any], backbone: str, has_weights: bool) -> None:
    """Flags that contradict each other, or mean nothing in this combination, stop with one line
    instead of one silently winning or being ignored."""
    pairs = (("resume", "overwrite", "--resume continues the earlier run, --overwrite replaces it: pass one"),
             ("resume", "no_save", "--resume continues from saved state, which --no_save never writes"),
             ("resume", "test", "--resume applies to training; --test evaluates the saved checkpoint"),
             ("overwrite", "test", "--overwrite applies to training; --test only adds to the run's files"),
             ("weights", "no_pretrained", "--weights starts from those ImageNet weights, --no_pretrained from "
                                          "random ones: pass one"),
             ("device", "cuda", "--device names the device; --cuda N is the same as --device cuda:N: pass one"),
             ("quiet", "verbose", "--quiet prints warnings only, -v everything: pass one"),
             ("checkpoint", "result_dir", "--checkpoint's run writes beside it; --result_dir names another folder: "
                                          "pass one"))
    for a, b, why in pairs:
        if a in given and b in given:
            raise UserError(f"--{a} and --{b} together: {why}")
    if args.weights is not None and not has_weights:
        raise UserError(f"--weights {args.weights}: --backbone {backbone} has no ImageNet weights to replace "
                        f"(it trains from scratch); drop --weights")
    for flag in ("export_codes", "plots"):
        if flag in given and not args.test:
            raise UserError(f"--{flag} applies to --test (it evaluates the saved checkpoint); add --test")
    if args.tensorboard and args.test:
        raise UserError("--tensorboard records training; --test writes its metrics into the run JSON: drop one")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the process exit status (0 ok, 2 user error, 130 interrupted, 143
    terminated)."""

    def body():
        config = parse_config(argv)
        from .experiment import run
        run(config)

    return run_command(body)


if __name__ == "__main__":  # python -m hyp2.cli, as retrieval.py (how torchrun and sweeps start a run)
    import sys

    sys.exit(main())
