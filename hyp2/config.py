"""The run's configuration: one frozen dataclass built and validated by :mod:`hyp2.cli`, and the
bounds every value has, whether it comes from a flag or from a file (a checkpoint, a YAML)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .codetable import MAX_BITS

MAX_SEED = 2**32 - 1  # NumPy's seed range
MAX_IMAGE_SIZE = 1024  # 2.3x the official 448 px; larger inputs exhaust memory before they help
MAX_WORKERS = 64
MAX_EPOCHS = 100_000
#: the official defaults of the flags whose default a dataset may change (``DatasetInfo.defaults``)
GLOBAL_DEFAULTS = {"dataset": "voc2007", "backbone": "googlenet", "epochs": 100, "batch_size": 100, "eval_every": 5,
                   "pretrained": True, "workers": 4, "hash_bit": 48}

__all__ = ["Config", "GLOBAL_DEFAULTS", "MAX_BITS", "MAX_EPOCHS", "MAX_IMAGE_SIZE", "MAX_SEED", "MAX_WORKERS"]


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Field names follow the official command line where it has them."""

    # The official flags (names and defaults of the official code).
    dataset: str = "voc2007"
    backbone: str = "googlenet"
    hash_bit: int = 48
    batch_size: int = 100
    epochs: int = 100
    cuda: int = 0
    beta: float = 0.5
    retrieve: int = 0
    save: bool = True  # --no_save
    seed: int = 0
    rate: float = 0.02
    test: bool = False
    # Added beside them.
    data_root: Path = Path("data")
    result_dir: Path = Path("result")
    #: the input side; ``None`` only under ``--test`` without ``--image_size``: the checkpoint's
    image_size: int | None = 448
    workers: int = 4
    device: str = "cpu"
    pretrained: bool = True
    weights: Path | None = None
    zeta: float | None = None
    eval_every: int = 5
    subset: int = 0  # use at most this many images per split (0 = all): smoke tests
    loss: str = "hyp2"
    #: the loss's options given (``--loss_opt KEY=VALUE``, ``--beta``/``--zeta``), typed and checked
    loss_options: tuple[tuple[str, Any], ...] = ()
    lr: float = 0.02  # the network's learning rate (per backbone unless --lr)
    # Datasets.
    voc_url: str | None = None
    check_md5: bool = True
    split_file: Path | None = None
    cache: bool = False
    download: bool = True
    # Speed and safety of training.
    amp: bool = False
    compile: bool = False
    resume: bool = False
    overwrite: bool = False
    # Evaluation and reports.
    export_codes: bool = False
    plots: bool = False
    #: ``--test --checkpoint PATH``: the checkpoint to evaluate, which names the run itself
    checkpoint: Path | None = None
    # Output.
    tensorboard: bool = False
    verbosity: int = 0  # -1 --quiet, 0 normal, 1 -v
    # Modules imported first for the datasets, backbones, losses and metrics they register.
    plugins: tuple[str, ...] = ()

    @property
    def run_name(self) -> str:
        """``{dataset}_{backbone}_{hash_bit}``, plus ``_{loss}`` for losses other than HyP²; under
        ``--test --checkpoint PATH``, the checkpoint's file name without ``.ckpt``."""
        if self.checkpoint is not None:
            return self.checkpoint.name.removesuffix(".ckpt")
        name = f"{self.dataset}_{self.backbone}_{self.hash_bit}"
        return name if self.loss == "hyp2" else f"{name}_{self.loss}"

    @property
    def run_dir(self) -> Path:
        """Where the run's files are: ``--result_dir``, or the folder of ``--checkpoint``."""
        return self.checkpoint.parent if self.checkpoint is not None else self.result_dir

    def to_dict(self) -> dict[str, Any]:
        """JSON- and ``torch.load(weights_only=True)``-friendly: paths become strings, the loss's
        options a mapping."""
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
        out["loss_options"] = dict(self.loss_options)
        out["plugins"] = list(self.plugins)
        return out
