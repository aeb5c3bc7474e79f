"""Training speed: the network alone versus the full training step fed by the real DataLoader.

HyP² (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval", ACM
MM 2022, Sec. 4.1) trains Inception-v3 at 448 px (or AlexNet at 224 px) with SGD, batch 100, for 100
epochs. This measures, in one run, how fast one training step goes and how much of that speed the
data pipeline keeps:

* ``model``: the network alone on synthetic tensors already on the device (forward, HyP² loss,
  backward, SGD step), the ceiling any data pipeline can reach;
* ``lazy``: the same step (:func:`hyp2.train.train_one_epoch`) fed by the real DataLoader over a
  JPEG dataset in the custom list format (:mod:`hyp2.data.custom`), every image decoded and resized
  in the workers;
* ``cache build``: the one-off pass ``--cache`` makes (:mod:`hyp2.data._cache`), timed apart;
* ``cached``: the same step served from the memory-mapped uint8 cache;
* ``official``: the official code's design on the same files: every image decoded into a list of
  PIL images first, then torchvision's ``Resize``, ``RandomHorizontalFlip``, ``ToTensor`` and
  ``Normalize`` per step.

For each: images/s over ``--steps`` timed steps after ``--warmup`` untimed ones (CUDA synchronised
around the timed window), the ratio to ``model``, the share of the timed window spent waiting for
data, the time from the start of dataset construction to the end of the first step, and peak
memory sampled from ``/proc/<pid>/smaps_rollup`` every 0.1 s: the training process's RSS (also
checked against ``getrusage``), the DataLoader workers' private pages (what they add beyond what
they share with it), RSS and PSS summed over the process tree, and the CUDA peak
(``torch.cuda.max_memory_allocated``). Every variant runs in a fresh subprocess, so each peak is its
own (``--in_process`` runs them in this process instead: quicker, but peaks then carry over).

Without ``--root`` a dataset of random-content 500x375 JPEGs with 20 labels is generated in a
temporary folder (the generator of ``benchmarks/data_speed.py``) and removed afterwards; ``--root``
keeps it there, or uses a custom-format dataset already in that folder. The cache is built in a
temporary folder, never in ``--root``. Networks start from random weights (speed does not depend on
them; nothing is downloaded). Usage::

    python benchmarks/train_speed.py                                  # small CNN, 32 px, batch 50
    python benchmarks/train_speed.py --backbone alexnet --image_size 224 --batch_size 32
    python benchmarks/train_speed.py --backbone googlenet --batch_size 100 --amp --json out.json
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from torchvision import transforms as T  # noqa: E402

import data_speed  # noqa: E402  (the JPEG generator and the /proc memory sampler)
from hyp2.data.base import IMAGENET_MEAN, IMAGENET_STD, DataOptions  # noqa: E402
from hyp2.data._cache import cache_paths, cached_split  # noqa: E402
from hyp2.data._lists import read_list  # noqa: E402
from hyp2.data.custom import build_custom  # noqa: E402
from hyp2.errors import UserError  # noqa: E402
from hyp2.io import atomic_write_json  # noqa: E402
from hyp2.losses import build_loss  # noqa: E402
from hyp2.models import BACKBONES, build_model  # noqa: E402
from hyp2.train import StepOptions, make_loader, make_optimizer, seed_everything, train_one_epoch  # noqa: E402

VARIANTS = ("model", "lazy", "cache_build", "cached", "official")
LABELS = {"model": "model alone", "lazy": "lazy", "cache_build": "cache build", "cached": "--cache",
          "official": "official"}
RATE = 0.02  # the official --rate (proxies' learning rate)
MIB = 2**20


# ------------------------------------------------------------------------------------ arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backbone", default="small", choices=list(BACKBONES))
    p.add_argument("--image_size", type=int, default=None, help="input side; default per backbone (small 32, "
                   "alexnet/resnet 224, googlenet 448)")
    p.add_argument("--batch_size", type=int, default=50)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them (the first included)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--device", default=None, help="default cuda if available, else cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA, as retrieval.py --amp")
    p.add_argument("--compile", action="store_true", help="torch.compile the network, as retrieval.py --compile")
    p.add_argument("--hash_bit", type=int, default=48)
    p.add_argument("--images", type=int, default=None,
                   help="images to generate; default max(500, batch x (warmup + steps)), a whole number of batches")
    p.add_argument("--root", type=Path, default=None,
                   help="dataset folder: used if it holds train.txt, else generated there and kept "
                        "(default: a temporary folder, removed)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated subset of: " + ", ".join(VARIANTS) + " (cached needs cache_build)")
    p.add_argument("--in_process", action="store_true",
                   help="run the variants in this process (quicker; peak memory then carries over)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    # Internal: a variant run as a subprocess of the main invocation.
    p.add_argument("--_variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_cache_root", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    spec = BACKBONES.get(args.backbone)
    if args.image_size is None:
        args.image_size = spec.image_size
    for name, low in (("batch_size", 1), ("steps", 1), ("warmup", 1), ("workers", 0), ("hash_bit", 1),
                      ("image_size", spec.min_size)):
        if getattr(args, name) < low:
            p.error(f"--{name} {getattr(args, name)}: must be at least {low}"
                    + (f" for --backbone {args.backbone}" if name == "image_size" else ""))
    if args.hash_bit > 256:
        p.error(f"--hash_bit {args.hash_bit}: must be at most 256 (the code table's range)")
    if args.images is not None and args.images < 1:
        p.error(f"--images {args.images}: must be at least 1")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        p.error(f"--variants {','.join(unknown) or '(empty)'}: choose from {', '.join(VARIANTS)}")
    if "cached" in args.variants and "cache_build" not in args.variants:
        p.error("--variants: cached needs cache_build before it (the cache is built in a temporary folder)")
    args.variants = [v for v in VARIANTS if v in args.variants]  # the documented order
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(args.device)
    except RuntimeError as e:
        p.error(f"--device {args.device!r}: {e}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    return args


def default_images(batch_size: int, warmup: int, steps: int) -> int:
    """Enough for every step of a variant without wrapping, at least 500, a whole number of batches
    (so no smaller last batch, which would also make ``--compile`` recompile)."""
    need = max(500, batch_size * (warmup + steps))
    return batch_size * math.ceil(need / batch_size)


# ------------------------------------------------------------------------------------- one step


class _Counted:
    """An endless stream of batches that counts the images handed out."""

    def __init__(self, batches):
        self._it = iter(batches)
        self.images = 0

    def take(self, n: int) -> "_Take":
        return _Take(self, n)

    def next(self):
        batch = next(self._it)
        self.images += len(batch[1])
        return batch


class _Take:
    """``n`` batches of a :class:`_Counted` stream, as a sized iterable for ``train_one_epoch``."""

    def __init__(self, source: _Counted, n: int):
        self.source, self.n = source, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.source.next()


def _forever(loader):
    # Epoch after epoch; persistent workers make a new pass cheap.
    while True:
        yield from loader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """The network, HyP² loss and SGD exactly as ``retrieval.py`` sets them up for one process:
    random weights, channels_last and cudnn.benchmark on CUDA, ``--amp``, ``--compile``."""

    def __init__(self, args: argparse.Namespace, num_classes: int):
        seed_everything(0)
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.args = args
        model = build_model(args.backbone, args.hash_bit, pretrained=False).to(self.device)
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            model = model.to(memory_format=torch.channels_last)
        self.net = torch.compile(model) if args.compile else model
        self.loss_fn = build_loss("hyp2", num_classes, args.hash_bit, seed=0).to(self.device)
        self.optimizer = make_optimizer(model, self.loss_fn, BACKBONES.get(args.backbone).lr, RATE)

    def _epoch(self, batches: _Take) -> float:
        stats = train_one_epoch(self.net, self.loss_fn, batches, self.optimizer, self.device, epoch=1,
                                desc="steps", options=StepOptions(amp=self.args.amp, channels_last=self.cuda))
        return stats.seconds

    def run(self, batches, t0: float) -> dict:
        """First step, the other warm-up steps, then ``--steps`` timed ones from ``batches`` (an
        endless iterable of ``(images, labels, indices)``). ``t0`` is when dataset construction began.

        Returns images/s, the timed window's seconds, the share of it spent waiting for data
        (window minus the steps' own time, which ``train_one_epoch`` measures from the batch's
        arrival), seconds from ``t0`` to the end of the first step, the main process's CPU
        seconds per second over the window, and the 1-minute load average at its end.
        """
        stream = _Counted(batches)
        self._epoch(stream.take(1))
        _sync(self.device)
        first = time.perf_counter() - t0
        if self.args.warmup > 1:
            self._epoch(stream.take(self.args.warmup - 1))
        _sync(self.device)
        seen, start, cpu = stream.images, time.perf_counter(), time.process_time()
        step_seconds = self._epoch(stream.take(self.args.steps))
        _sync(self.device)
        seconds = time.perf_counter() - start
        images = stream.images - seen
        # CPU seconds of this process (all its threads) per wall second: 2.0 is two cores busy.
        # Far below torch's thread count on a CPU run means other processes took the cores.
        cpu_use = (time.process_time() - cpu) / seconds
        return {"images": images, "seconds": seconds, "images_per_s": images / seconds,
                "data_wait": max(0.0, 1.0 - step_seconds / seconds), "first_step_s": first,
                "main_cpu_use": cpu_use, "load_average": os.getloadavg()[0]}


# ------------------------------------------------------------------------------------- variants


class InMemoryPIL(Dataset):
    """The official code's dataset design: every image opened and converted to RGB up front and
    kept as a PIL image in a list; torchvision transforms applied per item.

    ``__getitem__(i)`` -> ``(image (3, S, S) float32, labels (C,) float32, i)``, the layout
    :func:`hyp2.train.train_one_epoch` expects.
    """

    def __init__(self, paths: list[Path], labels: np.ndarray, size: int):
        self.images = [Image.open(p).convert("RGB") for p in paths]
        self.labels = torch.from_numpy(labels.astype(np.float32))
        self.transform = T.Compose([T.Resize((size, size)), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i], i


def dataset_facts(root: Path) -> tuple[int, int]:
    """(training images, classes) of the custom-format dataset under ``root``."""
    paths, labels = read_list(root / "train.txt", what="train list")
    return len(paths), labels.shape[1]


class TreeMemory:
    """Samples, every ``interval`` s in a thread, the memory of this process and its descendants
    (the DataLoader workers) from ``/proc/<pid>/smaps_rollup``; keeps the peaks (bytes) of:
    ``rss_sum`` (shared pages counted once per process), ``pss_sum`` (shared pages divided among
    the processes mapping them), ``main_rss`` and ``workers_uss`` (the workers' private pages:
    what they add beyond what they share with the main process)."""

    FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty")

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.rss_sum = self.pss_sum = self.main_rss = self.workers_uss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def read(cls, pid: int) -> dict[str, int]:
        out = dict.fromkeys(cls.FIELDS, 0)
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in out:
                        out[key] = int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            pass  # a worker that just exited
        return out

    def sample(self) -> None:
        me = os.getpid()
        rss = pss = uss = 0
        for pid in data_speed._tree(me):
            m = self.read(pid)
            rss, pss = rss + m["Rss"], pss + m["Pss"]
            if pid == me:
                self.main_rss = max(self.main_rss, m["Rss"])
            else:
                uss += m["Private_Clean"] + m["Private_Dirty"]
        self.rss_sum, self.pss_sum = max(self.rss_sum, rss), max(self.pss_sum, pss)
        self.workers_uss = max(self.workers_uss, uss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_variant(name: str, args: argparse.Namespace, root: Path, cache_root: Path) -> dict:
    """Run one variant in this process; returns its figures (memory included)."""
    _, num_classes = dataset_facts(root)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with TreeMemory() as mem:
        out = _VARIANTS[name](args, root, cache_root, num_classes)
    gc.collect()  # the variant's DataLoader workers are gone before the next one starts
    out["peak_rss_sum_mib"] = mem.rss_sum / MIB
    out["peak_pss_sum_mib"] = mem.pss_sum / MIB
    out["peak_workers_private_mib"] = mem.workers_uss / MIB
    # Exact, not sampled (ru_maxrss is in KiB on Linux); covers the whole process's life.
    out["peak_main_rss_mib"] = max(mem.main_rss / MIB, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else None
    return out


def _model(args, root, cache_root, num_classes) -> dict:
    trainer = Trainer(args, num_classes)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(trainer.device)
    if trainer.cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(args.batch_size, num_classes, generator=g) < 0.1).float()
    y[:, 0] += y.sum(1) == 0  # every sample has a label
    batch = (x, y.to(trainer.device), torch.arange(args.batch_size))
    out = trainer.run(itertools.repeat(batch), t0)
    out["dataset_s"] = 0.0
    return out


def _loader_variant(args, trainer: Trainer, split, t0: float, dataset_s: float) -> dict:
    loader = make_loader(split, args.batch_size, train=True, workers=args.workers, seed=0,
                         pin_memory=trainer.cuda)
    out = trainer.run(_forever(loader), t0)
    out["dataset_s"] = dataset_s
    return out


def _lazy(args, root, cache_root, num_classes) -> dict:
    trainer = Trainer(args, num_classes)
    t0 = time.perf_counter()
    split = build_custom(DataOptions(root=root, image_size=args.image_size)).train
    return _loader_variant(args, trainer, split, t0, time.perf_counter() - t0)


def _cache_build(args, root, cache_root, num_classes) -> dict:
    split = build_custom(DataOptions(root=root, image_size=args.image_size)).train
    data, _ = cache_paths(cache_root, "custom", "train", args.image_size, split.ids)
    t0 = time.perf_counter()
    cached_split(split, cache_root, "custom", "train", args.image_size, progress=False)
    seconds = time.perf_counter() - t0
    return {"images": len(split), "seconds": seconds, "images_per_s": len(split) / seconds,
            "file_mib": data.stat().st_size / MIB, "threads": min(8, os.cpu_count() or 1)}


def _cached(args, root, cache_root, num_classes) -> dict:
    trainer = Trainer(args, num_classes)
    t0 = time.perf_counter()
    split = build_custom(DataOptions(root=root, image_size=args.image_size)).train
    data, _ = cache_paths(cache_root, "custom", "train", args.image_size, split.ids)
    if not data.is_file():
        raise UserError(f"no cache at {data}; run the cache_build variant first")
    mtime = data.stat().st_mtime_ns
    split = cached_split(split, cache_root, "custom", "train", args.image_size, progress=False)
    if data.stat().st_mtime_ns != mtime:  # would mean the timed phase included a rebuild
        raise RuntimeError(f"the cache {data} was rebuilt instead of reused")
    return _loader_variant(args, trainer, split, t0, time.perf_counter() - t0)


def _official(args, root, cache_root, num_classes) -> dict:
    trainer = Trainer(args, num_classes)
    t0 = time.perf_counter()
    rel, labels = read_list(root / "train.txt", what="train list")
    split = InMemoryPIL([root / p for p in rel], labels, args.image_size)
    return _loader_variant(args, trainer, split, t0, time.perf_counter() - t0)


_VARIANTS = {"model": _model, "lazy": _lazy, "cache_build": _cache_build, "cached": _cached,
             "official": _official}


def run_in_subprocess(name: str, argv: list[str], root: Path, cache_root: Path, scratch: Path) -> dict:
    """Run one variant in a fresh interpreter (its own peak memory); returns its figures."""
    result = scratch / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--root", str(root), "--_variant", name,
           "--_result", str(result), "--_cache_root", str(cache_root)]
    rc = subprocess.call(cmd)
    if rc != 0 or not result.is_file():
        raise RuntimeError(f"variant {name} failed (exit status {rc}); its error is printed above")
    return json.loads(result.read_text())


# ---------------------------------------------------------------------------------------- report


def machine_info(device: str) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_table(results: dict[str, dict]) -> list[str]:
    head = (f"{'variant':<12} {'images/s':>9} {'vs model':>9} {'data wait':>9} {'dataset s':>9} "
            f"{'1st step s':>10} {'CPU use':>7} {'main RSS':>8} {'+workers':>8} {'RSS sum':>8} "
            f"{'PSS sum':>8} {'GPU':>7}")
    lines = [head]
    for name, r in results.items():
        if name == "cache_build":
            continue
        lines.append(f"{LABELS[name]:<12} {r['images_per_s']:>9.1f} {_fmt(r.get('vs_model'), '.2f'):>9} "
                     f"{r['data_wait'] * 100:>8.0f}% {r['dataset_s']:>9.2f} {r['first_step_s']:>10.2f} "
                     f"{r['main_cpu_use']:>7.2f} {r['peak_main_rss_mib']:>8.0f} "
                     f"{r['peak_workers_private_mib']:>8.0f} {r['peak_rss_sum_mib']:>8.0f} "
                     f"{r['peak_pss_sum_mib']:>8.0f} {_fmt(r['gpu_peak_mib'], '.0f'):>7}")
    if "cache_build" in results:
        c = results["cache_build"]
        lines.append(f"cache build: {c['seconds']:.2f} s for {c['images']} images ({c['images_per_s']:.0f} "
                     f"images/s, {c['threads']} threads), {c['file_mib']:.1f} MiB file; peak main RSS "
                     f"{c['peak_main_rss_mib']:.0f} MiB")
    return lines


# ------------------------------------------------------------------------------------------ main


def _child(args: argparse.Namespace) -> int:
    out = run_variant(args._variant, args, args.root, args._cache_root)
    atomic_write_json(args._result, out)
    return 0


def child_argv(args: argparse.Namespace) -> list[str]:
    """The settings a variant's subprocess needs, rebuilt from the parsed ``args``."""
    out = []
    for name in ("backbone", "image_size", "batch_size", "steps", "warmup", "workers", "device", "hash_bit"):
        out += [f"--{name}", str(getattr(args, name))]
    return out + ["--amp"] * args.amp + ["--compile"] * args.compile


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a variant failed, 2 bad input)."""
    args = parse_args(argv)
    try:
        if args._variant is not None:
            return _child(args)
        return _main(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _main(args: argparse.Namespace) -> int:
    temporary = args.root is None
    root = Path(tempfile.mkdtemp(prefix="hyp2-train-speed-")) if temporary else args.root
    scratch = Path(tempfile.mkdtemp(prefix="hyp2-train-speed-run-"))
    cache_root = scratch / "cache"
    load = [os.getloadavg()[0]]
    try:
        generated = not (root / "train.txt").exists()
        dataset = {"root": None if temporary else str(root), "generated": generated}
        if generated:
            n = args.images or default_images(args.batch_size, args.warmup, args.steps)
            t = time.perf_counter()
            size = data_speed.generate(root, n)
            dataset.update(generate_s=time.perf_counter() - t, jpeg_mib=size / MIB)
            print(f"generated {n} random-content JPEGs (500x375 or 375x500, {size / n / 1024:.0f} KiB each, "
                  f"20 labels) in {dataset['generate_s']:.1f} s")
        data = build_custom(DataOptions(root=root, image_size=args.image_size))  # checks every file
        dataset["images"], dataset["classes"] = len(data.train), data.num_classes
        if args.workers and args.steps < 10 * args.workers:
            print(f"note: the DataLoader has up to {2 * args.workers} batches ready before the timed window "
                  f"starts; with --steps {args.steps} that flatters the data-fed variants, so prefer --steps "
                  f"{10 * args.workers} or more for a steady-state figure")
        amp = " bf16 autocast" if args.amp and torch.device(args.device).type == "cuda" else ""
        if args.amp and not amp:
            print("note: --amp only acts on CUDA; this run is float32")
        print(f"{args.backbone} at {args.image_size} px, batch {args.batch_size}, {args.steps} timed steps after "
              f"{args.warmup} warm-up, {args.workers} worker(s), {args.device}{amp}"
              + (", compiled" if args.compile else "") + f"; {dataset['images']} training images")

        results: dict[str, dict] = {}
        for name in args.variants:
            print(f"running {LABELS[name]} ...", flush=True)
            if args.in_process:
                results[name] = run_variant(name, args, root, cache_root)
            else:
                results[name] = run_in_subprocess(name, child_argv(args), root, cache_root, scratch)
        load.append(os.getloadavg()[0])
        if "model" in results:
            base = results["model"]["images_per_s"]
            for name, r in results.items():
                if name != "cache_build":
                    r["vs_model"] = r["images_per_s"] / base

        machine = machine_info(args.device)
        print(f"\n{machine['cpu']} ({machine['cpus']} CPUs, torch {machine['torch']}, {machine['torch_threads']} "
              f"threads)" + (f", {machine['gpu']}" if "gpu" in machine else "")
              + f"; 1-min load average {load[0]:.1f} before, {load[-1]:.1f} after")
        for line in format_table(results):
            print(line)
        print("images/s over the timed steps; vs model = images/s / model alone; data wait = share of the timed "
              "window spent waiting for the loader; dataset s = dataset construction (official: decoding every "
              "image); 1st step s = from dataset construction to the end of the first step; "
              "CPU use = CPU seconds of the "
              "training process per second of the timed window (on a CPU run, well under its thread count means "
              "the cores were busy elsewhere); memory, peak MiB: "
              "main RSS = the training process; +workers = the DataLoader workers' private pages; RSS/PSS sum = "
              "over the process and its workers (sampled every 0.1 s); GPU = torch.cuda.max_memory_allocated"
              + (" (in-process: peaks carry over from earlier variants)" if args.in_process else ""))
        if args.json:
            settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                        if not k.startswith("_") and k not in ("json", "root")}
            atomic_write_json(args.json, {"settings": settings, "isolation": "in-process" if args.in_process
                                          else "subprocess", "machine": machine, "load_average": load,
                                          "dataset": dataset, "results": results})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
