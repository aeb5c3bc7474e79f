"""Data-loading speed and memory: lazy JPEG decoding versus ``--cache`` (memory-mapped uint8).

HyP² (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval", ACM
MM 2022) trains for 100 epochs on VOC2007's 5,011 training images; this measures what one epoch of
reading them costs. It generates a JPEG dataset of that size (about 500x375, smooth random content
with noise, so the files are about as large as VOC's) in the custom list format, then times one
epoch through a DataLoader over the real ``custom`` dataset code:

1. lazy: every image decoded and resized in the workers;
2. cache build: the one-off pass ``--cache`` makes (timed separately);
3. cached: the same epoch served from the memory-mapped cache.

("idle" is the baseline: this process with torch imported, before any of them.)

Peak memory is sampled every 50 ms over this process and all its children (the DataLoader
workers): the sum of RSS (counts the shared cache pages once per process) and the sum of PSS
(shares them out; the fairer total). Usage::

    python benchmarks/data_speed.py                  # 5,011 images, batch 100, 2 workers, 224 px
    python benchmarks/data_speed.py --images 500     # a quick run
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hyp2.data import DataOptions, load_dataset  # noqa: E402
from hyp2.data.custom import build_custom  # noqa: E402


# ------------------------------------------------------------------------------------ generation


def _make_image(args: tuple[Path, int]) -> int:
    path, seed = args
    rng = np.random.default_rng(seed)
    w, h = (500, 375) if rng.random() < 0.7 else (375, 500)  # VOC mixes landscape and portrait
    # Smooth colour fields (a small random image upsampled) plus pixel noise: JPEGs of VOC-like size.
    small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(small, dtype=np.int16) + rng.integers(-24, 25, (h, w, 3), dtype=np.int16)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return path.stat().st_size


def generate(root: Path, n: int) -> int:
    """``n`` JPEGs in ``root/images`` listed in train.txt (all), test.txt and database.txt (a few)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = [root / "images" / f"{i:06d}.jpg" for i in range(n)]
    with mp.Pool(os.cpu_count()) as pool:
        sizes = pool.map(_make_image, [(p, i) for i, p in enumerate(paths)], chunksize=32)
    rng = np.random.default_rng(0)
    labels = (rng.random((n, 20)) < 0.1).astype(np.uint8)
    lines = [f"images/{p.name} " + " ".join(map(str, labels[i])) for i, p in enumerate(paths)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "test.txt").write_text("\n".join(lines[:10]) + "\n")
    (root / "database.txt").write_text("\n".join(lines[:10]) + "\n")
    return sum(sizes)


# --------------------------------------------------------------------------------------- memory


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _rss_pss(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


class PeakMemory:
    """Samples the summed RSS and PSS of this process tree in a thread; ``peak_rss``, ``peak_pss``."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_rss, self.peak_pss = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            rss = pss = 0
            for pid in _tree(os.getpid()):
                r, p = _rss_pss(pid)
                rss, pss = rss + r, pss + p
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------ runs


def epoch(split, batch_size: int, workers: int) -> float:
    """Seconds for one shuffled pass over ``split``."""
    loader = torch.utils.data.DataLoader(split, batch_size=batch_size, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    seen = 0
    for x, _, _ in loader:
        seen += x.shape[0]
    assert seen == len(split)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=None, help="dataset folder (default: a temporary one, removed)")
    p.add_argument("--images", type=int, default=5011, help="number of images (default: VOC2007 trainval's 5011)")
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    root = args.root or Path(tempfile.mkdtemp(prefix="hyp2-data-speed-"))
    try:
        t = time.perf_counter()
        if not (root / "train.txt").exists():
            total = generate(root, args.images)
            print(f"generated {args.images} JPEGs ({total / 2**20:.0f} MiB, {total / args.images / 1024:.0f} KiB "
                  f"each) in {time.perf_counter() - t:.1f} s under {root}")
        lazy_opts = DataOptions(root=root, image_size=args.image_size)
        cache_opts = DataOptions(root=root, image_size=args.image_size, cache=True)
        n = len(build_custom(lazy_opts).train)
        results: dict[str, dict] = {}
        with PeakMemory() as mem:  # this process alone, torch imported, before any DataLoader
            time.sleep(0.3)
        results["idle"] = {"seconds": 0.0, "images_per_s": 0.0,
                           "peak_rss_mib": mem.peak_rss / 2**20, "peak_pss_mib": mem.peak_pss / 2**20}

        with PeakMemory() as mem:
            seconds = epoch(build_custom(lazy_opts).train, args.batch_size, args.workers)
        results["lazy"] = {"seconds": seconds, "images_per_s": n / seconds,
                           "peak_rss_mib": mem.peak_rss / 2**20, "peak_pss_mib": mem.peak_pss / 2**20}

        shutil.rmtree(root / ".cache", ignore_errors=True)
        with PeakMemory() as mem:
            t = time.perf_counter()
            cached = load_dataset("custom", cache_opts, progress=False)
            seconds = time.perf_counter() - t
        size = Path(cached.train.load.path).stat().st_size
        results["cache_build"] = {"seconds": seconds, "images_per_s": n / seconds, "file_mib": size / 2**20,
                                  "peak_rss_mib": mem.peak_rss / 2**20, "peak_pss_mib": mem.peak_pss / 2**20}

        with PeakMemory() as mem:
            seconds = epoch(load_dataset("custom", cache_opts).train, args.batch_size, args.workers)
        results["cached"] = {"seconds": seconds, "images_per_s": n / seconds,
                             "peak_rss_mib": mem.peak_rss / 2**20, "peak_pss_mib": mem.peak_pss / 2**20}

        print(f"{n} images, batch {args.batch_size}, {args.workers} workers, {args.image_size} px, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}")
        print(f"{'phase':<12} {'seconds':>8} {'images/s':>9} {'peak RSS MiB':>13} {'peak PSS MiB':>13}")
        for name, r in results.items():
            print(f"{name:<12} {r['seconds']:>8.1f} {r['images_per_s']:>9.0f} {r['peak_rss_mib']:>13.0f} "
                  f"{r['peak_pss_mib']:>13.0f}")
        print(f"cache file: {results['cache_build']['file_mib']:.0f} MiB")
        if args.json:
            args.json.write_text(json.dumps({"images": n, **vars(args), "json": None, "root": str(root),
                                             "results": results}, indent=2, default=str) + "\n")
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
