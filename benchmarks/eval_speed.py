"""Speed and memory of hyp2.metrics' mAP@K at NUS-WIDE scale, against faiss and the official loop.

The HyP² Loss evaluation (Xu et al., ACM MM 2022, Sec. 4.1; NUS-WIDE: 2,100 queries, 193,734
database items, 21 classes, mAP@5000) ranks the database by Hamming distance for every query.
This script builds random ±1 codes and random multi-label labels of that size and prints, for each
code length:

* hyp2: ``hyp2.metrics.mean_average_precision`` (best of ``--repeats`` runs after a warm-up);
* faiss: ``IndexBinaryFlat`` exact k-NN search for the same K (best of 2), plus the AP of its
  result (faiss breaks distance ties in its own order, so its mAP may differ in the last digits);
* loop: the official-style evaluation (``np.dot`` similarity, ``np.argsort``, then a python loop
  over the top K of each query) on ``--loop-queries`` queries, extrapolated to all queries;
* exactness: hyp2's mAP on the loop's queries equals a stable-tie python reference, and hyp2's
  top-K distances equal faiss's (the distances of a top-K do not depend on the tie order);
* graded: ``hyp2.metrics.graded_metrics`` (mAP, ACG, NDCG and WAP in one pass) and mAP alone,
  run alternately ``--repeats`` times, and the ratio of their best times (target: at most 1.5);
* peak extra memory of ``mean_average_precision`` and ``evaluate_all``: the peak resident set
  size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before each call; ``ru_maxrss``
  elsewhere) minus the resident size before the call, in a fresh subprocess that has already
  loaded the data and warmed torch up, so it counts numpy and torch allocations alike.

Usage::

    python benchmarks/eval_speed.py            # full NUS-WIDE scale, 12/32/48/64/128 bits
    python benchmarks/eval_speed.py --quick    # 400 queries, 40,000 items, K = 1,000
    python benchmarks/eval_speed.py --bits 48 --json result/eval_speed.json
    python benchmarks/eval_speed.py --scaling  # N = 0.2M ... 10M side by side with faiss
    python benchmarks/eval_speed.py --scaling --sizes 200000 1000000 --no-whole   # a shorter run
    python benchmarks/eval_speed.py --graded   # graded metrics against mAP alone, N = 193,734 and 1M

``--scaling`` grows the database from 200,000 to 10,000,000 codes (2,100 queries, 48 bits, 21
classes, mAP@5000) and prints, for each N: hyp2's ``mean_average_precision`` and faiss's
``IndexBinaryFlat`` search (k = 5000) run alternately in this process (``--repeats`` pairs: the
best and the range of each, and the ratio of each pair), hyp2's peak extra memory, its
``evaluate_all``, its whole-ranking mAP (``topk=None``), the official-style loop (measured on a
few queries up to ``--loop-max`` codes, then extrapolated as N log N) and the load average. A
second table compares hyp2 and faiss at other code lengths (``--sweep-bits``) at the largest N.
``--plot FILE`` draws the log-log figure of docs/evaluation.md from the table (``--json`` keeps it).

``--graded`` times, at each of ``--graded-sizes`` (2,100 queries, 48 bits, K = 5,000): mAP@K
alone and ``graded_metrics`` (mAP, ACG, NDCG and WAP@K in one pass), alternately, best of
``--repeats``, in wall and CPU seconds; then ``tie_aware_map`` and ``evaluate_all`` (which now
computes all of them) once each.

faiss is a benchmark-only dependency (``pip install faiss-cpu``); without it those columns are
skipped. The metrics figures in docs/evaluation.md come from this script (the CodeIndex search
figures from benchmarks/index_speed.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hyp2 import metrics  # noqa: E402
from hyp2.io import atomic_write_json  # noqa: E402

# NUS-WIDE-21-like class frequencies: a few very common concepts (sky, clouds, person, water)
# and a long tail; every image has at least one label (about 2 on average).
CLASS_FREQ = np.geomspace(0.36, 0.02, 21)


def make_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 21) uint8 multi-hot labels with NUS-WIDE-like density, at least one label per row."""
    labels = rng.random((n, len(CLASS_FREQ))) < CLASS_FREQ
    empty = ~labels.any(1)
    labels[empty, rng.choice(len(CLASS_FREQ), empty.sum(), p=CLASS_FREQ / CLASS_FREQ.sum())] = True
    return labels.astype(np.uint8)


def make_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, bits))


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------


def ap_from_ranking(indices: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray) -> float:
    """mAP of given rankings ((Q, k) database indices), vectorised numpy."""
    total = 0.0
    for lo in range(0, len(indices), 256):
        idx = indices[lo: lo + 256]
        rel = (db_labels[idx] & q_labels[lo: lo + 256, None, :]).any(-1)
        cum = np.cumsum(rel, axis=1)
        hits = (cum / np.arange(1, idx.shape[1] + 1) * rel).sum(1)
        total += np.divide(hits, cum[:, -1], out=np.zeros(len(idx)), where=cum[:, -1] > 0).sum()
    return total / len(indices)


def official_style_loop(q, d, ql, dl, topk: int, stable: bool) -> float:
    """The official evaluation's structure (our own code): a dense similarity, an argsort, and
    a python loop over the top K of each query. ``stable`` ranks ties by database order."""
    # Dtypes of the official training-time path: float32 network outputs, int64 NUS-WIDE labels.
    qs, ds = np.sign(q.astype(np.float32)), np.sign(d.astype(np.float32))
    ql, dl = ql.astype(np.int64), dl.astype(np.int64)
    sim = 1 - qs @ ds.T / q.shape[1]
    order = np.argsort(sim, axis=1, kind="stable" if stable else "quicksort")
    aps = []
    for i in range(len(q)):
        hits, score = 0, 0.0
        for j in range(topk):
            if np.dot(ql[i], dl[order[i, j]]) > 0:
                hits += 1
                score += hits / (j + 1)
        aps.append(score / hits if hits else 0.0)
    return float(np.mean(aps))


# ----------------------------------------------------------------------------------------------
# Peak memory (subprocess)
# ----------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark if possible; return the current RSS (bytes) as baseline.

    Linux resets the peak resident set size (VmHWM) on ``echo 5 > /proc/self/clear_refs``; where
    that is unavailable, the baseline is the peak so far (``ru_maxrss``), which can only hide
    growth that stays below an earlier peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kib("VmRSS") * 1024
    except (OSError, TypeError):
        return peak_rss()


def peak_rss() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


def timed_memory(fn) -> tuple[float, float, int, object]:
    """Wall seconds, CPU seconds (all threads), peak extra resident memory (bytes) and result of one call."""
    base = reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    cpu = time.process_time() - c0
    return time.perf_counter() - t0, cpu, peak_rss() - base, result


def call_memory(q, d, ql, dl, topk: int) -> dict:
    """Peak extra memory (bytes) of mAP@topk and of evaluate_all, after a warm-up call that loads
    the kernels and thread pools. Meant for a fresh process (see :func:`run_child`)."""
    metrics.evaluate_all(q[:64], d[:50_000], ql[:64], dl[:50_000], topk=100)
    return {name: timed_memory(lambda fn=fn: fn(q, d, ql, dl, topk=topk))[2]
            for name, fn in (("map_bytes", metrics.mean_average_precision),
                             ("evaluate_all_bytes", metrics.evaluate_all))}


def run_child(*flags) -> dict:
    """This script run with ``flags`` in a fresh process: the JSON object it prints last."""
    out = subprocess.run([sys.executable, __file__, *map(str, flags)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_child(folder: str, topk: int) -> None:
    """In a fresh process: the peak extra memory of mAP and evaluate_all on the arrays saved in folder."""
    q, d, ql, dl = (np.load(os.path.join(folder, f"{name}.npy")) for name in ("q", "d", "ql", "dl"))
    print(json.dumps(call_memory(q, d, ql, dl, topk)))


def measure_memory(q, d, ql, dl, topk: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        for name, arr in (("q", q), ("d", d), ("ql", ql), ("dl", dl)):
            np.save(os.path.join(folder, f"{name}.npy"), arr)
        return run_child("--memory-child", folder, "--topk", topk)


# ----------------------------------------------------------------------------------------------
# Graded metrics against mAP alone
# ----------------------------------------------------------------------------------------------


def graded_rows(q, d, ql, dl, topk: int, repeats: int) -> dict:
    """mAP@topk alone and ``graded_metrics`` (mAP, ACG, NDCG, WAP in one pass), run alternately so
    that both meet the same load: wall and CPU seconds (all threads) of every run, the load
    average before each pair, the ratios of the best times, and whether both give the same mAP."""
    out: dict = {"map_s": [], "graded_s": [], "map_cpu_s": [], "graded_cpu_s": [], "load": []}
    values: dict = {}
    for _ in range(repeats):
        out["load"].append(round(os.getloadavg()[0], 2))
        for key, fn in (("map", metrics.mean_average_precision), ("graded", metrics.graded_metrics)):
            t0, c0 = time.perf_counter(), time.process_time()
            values[key] = fn(q, d, ql, dl, topk=topk)
            out[f"{key}_cpu_s"].append(time.process_time() - c0)
            out[f"{key}_s"].append(time.perf_counter() - t0)
    out["ratio"] = min(out["graded_s"]) / min(out["map_s"])
    out["cpu_ratio"] = min(out["graded_cpu_s"]) / min(out["map_cpu_s"])
    out["same_map"] = abs(values["graded"]["map"] - values["map"]) < 1e-12
    out["values"] = values["graded"]
    return out


def graded_size(n: int, q, ql, d, dl, args) -> dict:
    """Every --graded measurement at database size n."""
    row = {"n": n, **graded_rows(q, d, ql, dl, args.topk, args.repeats)}
    row["tie_aware_s"], row["tie_aware_map"] = best_of(lambda: metrics.tie_aware_map(q, d, ql, dl, args.topk), 1)
    row["evaluate_all_s"], _ = best_of(lambda: metrics.evaluate_all(q, d, ql, dl, topk=args.topk), 1)
    row["load_after"] = round(os.getloadavg()[0], 2)
    return row


def run_graded(args) -> None:
    """--graded: graded metrics against mAP alone at each of --graded-sizes, then the tie-aware
    mAP and evaluate_all once."""
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"numpy {np.__version__}; 2100 queries, 48 bits, K={args.topk}, best of {args.repeats} alternating runs")
    rng = np.random.default_rng(0)
    q, ql = make_codes(rng, 2100, 48), make_labels(rng, 2100)
    d_all, dl_all = make_database(1, max(args.graded_sizes), 48)
    metrics.mean_average_precision(q[:64], d_all[:50_000], ql[:64], dl_all[:50_000], topk=100)  # warm-up
    print(f"{'N':>10} {'mAP s':>11} {'graded s':>11} {'graded/mAP':>10} {'CPU ratio':>9} {'tie-aware s':>11} "
          f"{'eval_all s':>10} {'same mAP':>8} {'load':>9}")
    rows = []
    for n in sorted(args.graded_sizes):
        rows.append(graded_size(n, q, ql, d_all[:n], dl_all[:n], args))
        row = rows[-1]
        print(f"{n:>10,} {fmt_range(row['map_s']):>11} {fmt_range(row['graded_s']):>11} {row['ratio']:>10.2f} "
              f"{row['cpu_ratio']:>9.2f} {row['tie_aware_s']:>11.2f} {row['evaluate_all_s']:>10.2f} "
              f"{'yes' if row['same_map'] else 'NO':>8} {min(row['load']):>4.1f}-{row['load_after']:<4.1f}",
              flush=True)
    print("target: graded metrics with mAP <= 1.5x mAP alone (best times): "
          + ("met" if all(r["ratio"] <= 1.5 for r in rows) else "missed"))
    if args.json:
        atomic_write_json(args.json, {"queries": 2100, "topk": args.topk, "rows": rows})


# ----------------------------------------------------------------------------------------------
# One code length
# ----------------------------------------------------------------------------------------------


def run_bits(bits: int, args, ql: np.ndarray, dl: np.ndarray, faiss) -> dict:
    rng = np.random.default_rng(1000 + bits)
    q, d = make_codes(rng, args.queries, bits), make_codes(rng, args.database, bits)
    topk = args.topk
    row: dict = {"bits": bits}

    metrics.mean_average_precision(q[:64], d, ql[:64], dl, topk=topk)  # warm-up
    row["hyp2_s"], row["hyp2_map"] = best_of(
        lambda: metrics.mean_average_precision(q, d, ql, dl, topk=topk), args.repeats)
    row["evaluate_all_s"], _ = best_of(lambda: metrics.evaluate_all(q, d, ql, dl, topk=topk), 1)
    row["graded"] = graded_rows(q, d, ql, dl, topk, args.repeats)

    # Exactness against a stable python reference, on the loop's queries.
    n_loop = min(args.loop_queries, args.queries)
    sub = (q[:n_loop], d, ql[:n_loop], dl)
    row["loop_s"], row["loop_map_subset"] = best_of(
        lambda: official_style_loop(*sub, topk, stable=False), 1)
    row["loop_s"] *= args.queries / n_loop
    stable_ref = official_style_loop(*sub, topk, stable=True)
    row["exact_vs_stable_reference"] = abs(
        metrics.mean_average_precision(*sub, topk=topk) - stable_ref) < 1e-12

    if faiss is not None:
        index, qp = faiss_index(faiss, d), metrics.pack_codes(q)
        row["faiss_search_s"], (dist, idx) = best_of(lambda: index.search(qp, topk), 2)
        t0 = time.perf_counter()
        row["faiss_map"] = ap_from_ranking(idx, ql.astype(bool), dl.astype(bool))
        row["faiss_total_s"] = row["faiss_search_s"] + time.perf_counter() - t0
        _, hyp2_dist = metrics.hamming_ranking(q, d, topk)
        row["same_topk_distances_as_faiss"] = bool(np.array_equal(hyp2_dist, dist))
    row.update(measure_memory(q, d, ql, dl, topk))
    return row


# ----------------------------------------------------------------------------------------------
# Scaling with N (--scaling)
# ----------------------------------------------------------------------------------------------


def make_database(seed: int, n: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, bits) int8 ±1 codes and (n, 21) uint8 labels, generated in blocks (bounded temporaries)."""
    rng = np.random.default_rng(seed)
    codes = np.empty((n, bits), np.int8)
    labels = np.empty((n, len(CLASS_FREQ)), np.uint8)
    for lo in range(0, n, 1 << 20):
        hi = min(n, lo + (1 << 20))
        codes[lo:hi] = make_codes(rng, hi - lo, bits)
        labels[lo:hi] = make_labels(rng, hi - lo)
    return codes, labels


def faiss_index(faiss, codes: np.ndarray):
    """faiss's exact IndexBinaryFlat over ±1 codes (whole bytes: the zero padding adds no distance)."""
    index = faiss.IndexBinaryFlat(8 * -(-codes.shape[1] // 8))
    index.add(metrics.pack_codes(codes))
    return index


def side_by_side(hyp2_fn, faiss_fn, repeats: int) -> dict:
    """hyp2 and faiss run alternately: wall seconds of each run, hyp2's CPU seconds (all threads:
    what other jobs on the machine do not change) and the load average before each pair."""
    out: dict = {"hyp2_s": [], "faiss_s": [], "hyp2_cpu_s": [], "load": []}
    for _ in range(repeats):
        out["load"].append(round(os.getloadavg()[0], 2))
        for key, fn in (("hyp2_s", hyp2_fn), ("faiss_s", faiss_fn)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            out[key].append(time.perf_counter() - t0)
            if key == "hyp2_s":
                out["hyp2_cpu_s"].append(time.process_time() - c0)
    out["ratio"] = [h / f for h, f in zip(out["hyp2_s"], out["faiss_s"])]
    return out


def scaling_row(n: int, data: tuple, faiss, args) -> dict:
    """Every measurement at database size n (a prefix of the generated database)."""
    q, d_all, ql, dl_all = data
    d, dl, topk = d_all[:n], dl_all[:n], args.topk
    row: dict = {"n": n, "bits": q.shape[1], "load_before": round(os.getloadavg()[0], 2)}
    row["hyp2_first_s"], _, row["map_bytes"], row["map"] = timed_memory(
        lambda: metrics.mean_average_precision(q, d, ql, dl, topk=topk))
    if faiss is not None:
        index, qp = faiss_index(faiss, d), metrics.pack_codes(q)
        row.update(side_by_side(lambda: metrics.mean_average_precision(q, d, ql, dl, topk=topk),
                                lambda: index.search(qp, topk), args.repeats))
        del index
    row["evaluate_all_s"], row["evaluate_all_cpu_s"], row["evaluate_all_bytes"], _ = timed_memory(
        lambda: metrics.evaluate_all(q, d, ql, dl, topk=topk))
    if args.whole:
        row["whole_s"], row["whole_cpu_s"], row["whole_bytes"], _ = timed_memory(
            lambda: metrics.mean_average_precision(q, d, ql, dl, topk=None))
    if n <= args.loop_max:
        m = args.loop_queries
        row["loop_s"], _ = best_of(lambda: official_style_loop(q[:m], d, ql[:m], dl, topk, stable=False), 1)
        row["loop_s"] *= len(q) / m
    row["load_after"] = round(os.getloadavg()[0], 2)
    return row


def scaling_memory_child(n: int, bits: int, topk: int) -> None:
    """In a fresh process: the peak extra memory of mAP@topk and evaluate_all at database size n."""
    rng = np.random.default_rng(0)
    q, ql = make_codes(rng, 2100, bits), make_labels(rng, 2100)
    d, dl = make_database(1, n, bits)
    print(json.dumps({"n": n, **call_memory(q, d, ql, dl, topk)}))


def scaling_memory(n: int, bits: int, topk: int) -> dict:
    return run_child("--scaling-memory-child", n, "--scaling-bits", bits, "--topk", topk)


def run_scaling_memory(args) -> None:
    """--memory-only: each size in a fresh process (the in-run figures reuse freed memory)."""
    print(f"peak extra memory in a fresh process, {args.scaling_bits} bits, mAP@{args.topk}")
    for n in sorted(args.sizes):
        r = scaling_memory(n, args.scaling_bits, args.topk)
        print(f"{n:>10,}: mAP {r['map_bytes'] / 2**20:.0f} MiB, evaluate_all {r['evaluate_all_bytes'] / 2**20:.0f} MiB",
              flush=True)


def extrapolate_loop(rows: list[dict]) -> None:
    """Past the last measured size the loop's time is extrapolated as N log N (its argsort)."""
    measured = [r for r in rows if "loop_s" in r]
    if not measured:
        return
    last = measured[-1]
    for r in rows:
        if "loop_s" not in r and r["n"] > last["n"]:
            r["loop_extrapolated_s"] = last["loop_s"] * r["n"] * np.log(r["n"]) / (last["n"] * np.log(last["n"]))


def fmt_range(values: list[float], digits: int = 2) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if len(values) == 1 or round(lo, digits) == round(hi, digits) else \
        f"{lo:.{digits}f}-{hi:.{digits}f}"


SCALING_HEADER = (f"{'N':>10} {'hyp2 mAP s':>11} {'faiss s':>11} {'hyp2/faiss':>11} {'extra MB':>8} "
                  f"{'eval_all s':>10} {'topk=None s':>11} {'loop s':>8} {'load':>9}")


def print_scaling(rows: list[dict]) -> None:
    for r in rows:
        faiss_cols = (fmt_range(r["hyp2_s"]), fmt_range(r["faiss_s"]), fmt_range(r["ratio"]) if "ratio" in r
                      else "-") if "faiss_s" in r else (f"{r['hyp2_first_s']:.2f}", "-", "-")
        loop = (f"{r['loop_s']:.0f}" if "loop_s" in r else
                f"~{r['loop_extrapolated_s']:.0f}" if "loop_extrapolated_s" in r else "-")
        whole = f"{r['whole_s']:.1f}" if "whole_s" in r else "-"
        print(f"{r['n']:>10,} {faiss_cols[0]:>11} {faiss_cols[1]:>11} {faiss_cols[2]:>11} "
              f"{r['map_bytes'] / 2**20:>8.0f} {r['evaluate_all_s']:>10.2f} {whole:>11} {loop:>8} "
              f"{r['load_before']:>4.1f}-{r['load_after']:<4.1f}", flush=True)


def linearity(rows: list[dict], key: str) -> float | None:
    """time(N_max) / time(N_min) divided by N_max / N_min (1 = linear), from the best times."""
    pts = [(r["n"], min(r[key]) if isinstance(r.get(key), list) else r.get(key)) for r in rows]
    pts = [(n, t) for n, t in pts if t]
    if len(pts) < 2:
        return None
    (n0, t0), (n1, t1) = pts[0], pts[-1]
    return (t1 / t0) / (n1 / n0)


def sweep_one(bits: int, n: int, topk: int, faiss) -> dict:
    """hyp2 and faiss side by side at one code length."""
    q, ql = make_codes(np.random.default_rng(bits), 2100, bits), make_labels(np.random.default_rng(1), 2100)
    d, dl = make_database(bits + 1, n, bits)
    index, qp = faiss_index(faiss, d), metrics.pack_codes(q)
    row = {"n": n, "bits": bits}
    row.update(side_by_side(lambda: metrics.mean_average_precision(q, d, ql, dl, topk=topk),
                            lambda: index.search(qp, topk), 2))
    return row


def sweep_bits(args, faiss) -> list[dict]:
    """hyp2 and faiss side by side at the largest N for other code lengths."""
    rows = []
    for bits in args.sweep_bits:
        rows.append(sweep_one(bits, max(args.sizes), args.topk, faiss))
        r = rows[-1]
        print(f"{bits:>4} bits, N={r['n']:,}: hyp2 {fmt_range(r['hyp2_s'])} s, faiss {fmt_range(r['faiss_s'])} s, "
              f"ratio {fmt_range(r['ratio'])}, load {fmt_range(r['load'])}", flush=True)
    return rows


def plot_scaling(rows: list[dict], path: Path) -> None:
    """Log-log time against N for each method, with a linear-growth guide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([r["n"] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    series = [("hyp2 mAP@5000", [min(r.get("hyp2_s") or [r["hyp2_first_s"]]) for r in rows], "o-"),
              ("hyp2 evaluate_all@5000", [r["evaluate_all_s"] for r in rows], "s-"),
              ("hyp2 mAP, whole ranking", [r.get("whole_s") for r in rows], "^-"),
              ("faiss IndexBinaryFlat search, k=5000", [min(r["faiss_s"]) if "faiss_s" in r else None
                                                        for r in rows], "D-"),
              ("official-style loop (measured)", [r.get("loop_s") for r in rows], "x-")]
    for label, ys, style in series:
        pts = [(x, y) for x, y in zip(n, ys) if y]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    extra = [(r["n"], r["loop_extrapolated_s"]) for r in rows if "loop_extrapolated_s" in r]
    last = [(r["n"], r["loop_s"]) for r in rows if "loop_s" in r][-1:]
    if extra:
        ax.plot(*zip(*(last + extra)), "x--", color="C4", label="official-style loop (extrapolated)")
    t0 = min(rows[0].get("hyp2_s") or [rows[0]["hyp2_first_s"]])
    ax.plot(n, t0 * n / n[0], ":", color="gray", label="linear in N")
    ax.set(xscale="log", yscale="log", xlabel="database codes N", ylabel="seconds",
           title="2,100 queries, 48 bits (2-core CPU)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def combine_runs(paths: list[Path]) -> list[dict]:
    """Rows of several --scaling --json runs merged per N: every repeat of every run, the best
    single times (the runs least slowed by other jobs), the largest memory, the load range."""
    pick = {"load_before": min, "load_after": max}
    by_n: dict[int, dict] = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            row = by_n.setdefault(r["n"], {})
            for key, value in r.items():
                if isinstance(value, list):
                    row[key] = row.get(key, []) + value
                elif key in row and key != "loop_extrapolated_s":
                    how = pick.get(key, min if key.endswith("_s") else max if key.endswith("_bytes") else None)
                    row[key] = how(row[key], value) if how else row[key]
                else:
                    row[key] = value
    rows = [by_n[n] for n in sorted(by_n)]
    for r in rows:
        r.pop("loop_extrapolated_s", None)
    extrapolate_loop(rows)
    return rows


def run_scaling(args, faiss) -> None:
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"numpy {np.__version__}" + (f", faiss {faiss.__version__}" if faiss else ""))
    rng = np.random.default_rng(0)
    q, ql = make_codes(rng, 2100, args.scaling_bits), make_labels(rng, 2100)
    d, dl = make_database(1, max(args.sizes), args.scaling_bits)
    print(f"2100 queries, up to {max(args.sizes):,} codes, {args.scaling_bits} bits, 21 classes, mAP@{args.topk}; "
          f"times: best (range) of {args.repeats} alternating hyp2/faiss runs after a first hyp2 run")
    metrics.mean_average_precision(q[:64], d[:50_000], ql[:64], dl[:50_000], topk=100)  # warm-up
    print(SCALING_HEADER)
    rows = []
    for n in sorted(args.sizes):
        rows.append(scaling_row(n, (q, d, ql, dl), faiss, args))
        extrapolate_loop(rows)
        print_scaling(rows[-1:])
    extrapolate_loop(rows)
    lin = {key: linearity(rows, key) for key in ("hyp2_s", "evaluate_all_s", "whole_s", "faiss_s", "hyp2_cpu_s",
                                                 "evaluate_all_cpu_s", "whole_cpu_s")}
    print("growth / linear growth, smallest to largest N (wall, then hyp2's CPU seconds): " + ", ".join(
        f"{k.removesuffix('_s')} {v:.2f}" for k, v in lin.items() if v))
    del d, dl
    sweep = sweep_bits(args, faiss) if faiss is not None and args.sweep_bits else []
    if args.json:
        atomic_write_json(args.json, {"queries": 2100, "topk": args.topk, "rows": rows, "sweep": sweep,
                                      "linearity": lin})
    if args.plot:
        plot_scaling(rows, args.plot)
        print(f"figure: {args.plot}")


def import_faiss():
    try:
        import faiss
    except ImportError:
        print("faiss is not installed: its columns are skipped (pip install faiss-cpu)")
        return None
    return faiss


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 queries, 40,000 items, K=1,000")
    parser.add_argument("--bits", type=int, nargs="+", default=[48, 12, 32, 64, 128])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many hyp2 runs")
    parser.add_argument("--loop-queries", type=int, default=None,
                        help="queries the official-style loop runs on (then extrapolated)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--scaling", action="store_true", help="time against N, 0.2M to 10M codes")
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[200_000, 1_000_000, 2_000_000, 4_000_000, 10_000_000])
    parser.add_argument("--scaling-bits", type=int, default=48)
    parser.add_argument("--sweep-bits", type=int, nargs="*", default=[16, 32, 64, 128],
                        help="code lengths compared with faiss at the largest N (--scaling)")
    parser.add_argument("--no-whole", dest="whole", action="store_false",
                        help="skip the whole-ranking mAP (topk=None) in --scaling")
    parser.add_argument("--loop-max", type=int, default=2_000_000,
                        help="largest N the official-style loop runs at in --scaling (then extrapolated)")
    parser.add_argument("--plot", type=Path, default=None, help="--scaling: draw the log-log figure here")
    parser.add_argument("--plot-from", type=Path, nargs="+", default=None,
                        help="draw --plot from these --scaling --json files (best figure of each N)")
    parser.add_argument("--graded", action="store_true",
                        help="graded metrics (graded_metrics) against mAP alone, at --graded-sizes")
    parser.add_argument("--graded-sizes", type=int, nargs="+", default=[193_734, 1_000_000])
    parser.add_argument("--memory-only", action="store_true",
                        help="--scaling: only the peak extra memory, each size in a fresh process")
    parser.add_argument("--scaling-memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--topk", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.topk)
        return
    if args.scaling_memory_child:
        scaling_memory_child(args.scaling_memory_child, args.scaling_bits, args.topk)
        return
    if args.plot_from:
        rows = combine_runs(args.plot_from)
        print(SCALING_HEADER)
        print_scaling(rows)
        plot_scaling(rows, args.plot or Path("eval_scaling.png"))
        return
    if args.graded:
        args.topk = args.topk or 5000
        run_graded(args)
        return
    if args.scaling and args.memory_only:
        args.topk = args.topk or 5000
        run_scaling_memory(args)
        return
    if args.scaling:
        args.topk = args.topk or 5000
        args.repeats = min(args.repeats, 2)
        args.loop_queries = args.loop_queries or 10
        run_scaling(args, import_faiss())
        return
    run_nuswide(args)


def run_nuswide(args) -> None:
    """The NUS-WIDE-scale table: one row per code length."""
    sizes = (400, 40_000, 1000) if args.quick else (2100, 193_734, 5000)
    args.queries, args.database, args.topk = sizes
    if args.loop_queries is None:
        args.loop_queries = 20 if args.quick else 40
    faiss = import_faiss()

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}"
          + (f", faiss {faiss.__version__} ({faiss.omp_get_max_threads()} threads)"
             if faiss else ""))
    print(f"{args.queries} queries, {args.database} database items, 21 classes, mAP@{args.topk}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    rng = np.random.default_rng(0)
    ql, dl = make_labels(rng, args.queries), make_labels(rng, args.database)
    print(f"labels per item {dl.sum(1).mean():.2f}; relevant fraction "
          f"{(((ql[:200, None, :] & dl[None, :5000, :]).any(-1)).mean()):.2f}")

    rows = []
    header = (f"{'bits':>4} {'hyp2 s':>7} {'eval_all s':>10} {'graded/mAP':>10} {'faiss s':>8} {'hyp2/faiss':>10} "
              f"{'loop s':>7} {'loop/hyp2':>9} {'mem MB':>7} {'all MB':>7} {'exact':>5}  mAP")
    print(header)
    for bits in args.bits:
        r = run_bits(bits, args, ql, dl, faiss)
        rows.append(r)
        fs, nan = r.get("faiss_search_s"), float("nan")
        exact = r["exact_vs_stable_reference"] and r.get("same_topk_distances_as_faiss", True) \
            and r["graded"]["same_map"]
        print(f"{bits:>4} {r['hyp2_s']:>7.3f} {r['evaluate_all_s']:>10.3f} {r['graded']['ratio']:>10.2f} "
              f"{fs if fs else nan:>8.3f} {r['hyp2_s'] / fs if fs else nan:>10.3f} "
              f"{r['loop_s']:>7.1f} {r['loop_s'] / r['hyp2_s']:>9.0f} "
              f"{r['map_bytes'] / 2**20:>7.0f} {r['evaluate_all_bytes'] / 2**20:>7.0f} "
              f"{'yes' if exact else 'NO':>5}  {r['hyp2_map']:.6f}"
              + (f" (faiss {r['faiss_map']:.6f})" if fs else ""), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("targets: hyp2 <= 0.5x faiss search, >= 50x faster than the loop, peak extra memory "
          "<= 1 GB, exact stable ties, graded metrics with mAP <= 1.5x mAP alone")
    ok = all(r["exact_vs_stable_reference"] and r.get("same_topk_distances_as_faiss", True)
             and r["graded"]["same_map"] and r["graded"]["ratio"] <= 1.5
             and r["hyp2_s"] * 50 <= r["loop_s"] and r["map_bytes"] <= 2**30
             and r["evaluate_all_bytes"] <= 2**30
             and ("faiss_search_s" not in r or r["hyp2_s"] <= 0.5 * r["faiss_search_s"])
             for r in rows)
    if args.quick:
        print("(the targets are for the full NUS-WIDE-scale run, without --quick)")
    print("all targets met" if ok else "some target missed")
    if args.json:
        atomic_write_json(args.json, {"queries": args.queries, "database": args.database,
                                      "topk": args.topk, "rows": rows})


if __name__ == "__main__":
    main()
