"""The run's configuration: one frozen dataclass built and validated by :mod:`hyp2.cli`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    image_size: int = 448
    workers: int = 4
    device: str = "cpu"
    pretrained: bool = True
    weights: Path | None = None
    zeta: float | None = None
    eval_every: int = 5
    subset: int = 0  # use at most this many images per split (0 = all): smoke tests
    loss: str = "hyp2"
    # The loss's options: --loss_opt KEY=VALUE pairs (and --beta/--zeta for HyP²), typed and checked.
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
    # Modules imported first for the datasets, backbones, losses and metrics they register.
    plugins: tuple[str, ...] = ()
    # The flags given on the command line (``--test`` refuses those that disagree with the
    # checkpoint; the others are taken from it).
    given: tuple[str, ...] = ()

    @property
    def run_name(self) -> str:
        """``{dataset}_{backbone}_{hash_bit}``, plus ``_{loss}`` for losses other than HyP²."""
        name = f"{self.dataset}_{self.backbone}_{self.hash_bit}"
        return name if self.loss == "hyp2" else f"{name}_{self.loss}"

    def to_dict(self) -> dict[str, Any]:
        """JSON- and ``torch.load(weights_only=True)``-friendly: paths become strings, the loss's
        options a mapping."""
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
        out["loss_options"] = dict(self.loss_options)
        out["given"] = list(self.given)
        out["plugins"] = list(self.plugins)
        return out
