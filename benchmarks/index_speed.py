"""Search speed of ``hyp2.index.CodeIndex`` over random codes, without faiss and with it.

``CodeIndex.search`` answers a few queries at a time with the exact top k by Hamming distance
(the ranking of HyP² Loss, Xu et al., ACM MM 2022, Sec. 4.1; ties in database order). This script
packs ``--size`` random ±1 codes of ``--bits`` bits (the generator of benchmarks/eval_speed.py)
and times ``search`` for 1 and 10 queries and k = 10, 100 and 1,000: hyp2's engine
(``use_faiss=False``) and faiss's ``IndexBinaryFlat`` (``use_faiss=True``, when faiss is
installed), best of ``--repeats`` after a warm-up search, with the load average before each.

Usage::

    python benchmarks/index_speed.py                   # 10,000,000 codes of 48 bits
    python benchmarks/index_speed.py --size 1000000 --json result/index_speed.json

The CodeIndex figures in docs/evaluation.md come from this script.
"""
from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import eval_speed  # noqa: E402  (the code generator, best_of, import_faiss)
from hyp2.index import CodeIndex  # noqa: E402
from hyp2.io import atomic_write_json  # noqa: E402
from hyp2.metrics import pack_codes  # noqa: E402


def run(size: int, bits: int, repeats: int, faiss) -> list[dict]:
    """One row per (engine, k, number of queries): seconds (best of ``repeats``) and load average."""
    packed = pack_codes(eval_speed.make_database(1, size, bits)[0])
    q = eval_speed.make_codes(np.random.default_rng(2), 10, bits)
    print(f"CodeIndex.search over {size:,} codes of {bits} bits; seconds, best of {repeats}")
    rows = []
    for use_faiss in [False] + ([True] if faiss is not None else []):
        index = CodeIndex(packed, bits, use_faiss=use_faiss)
        index.search(q[:1], 10)  # warm-up (and faiss's index is built on the first search)
        for k in (10, 100, 1000):
            for nq in (1, 10):
                load = round(os.getloadavg()[0], 2)
                seconds, _ = eval_speed.best_of(partial(index.search, q[:nq], k), repeats)
                rows.append({"faiss": use_faiss, "k": k, "queries": nq, "s": seconds, "load": load})
                engine = "faiss" if use_faiss else "hyp2"
                print(f"{engine:>5} k={k:<5} {nq:>2} queries: {seconds:.3f} s (load {load:.1f})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000_000, help="database codes")
    parser.add_argument("--bits", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many searches")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.size, args.bits, args.repeats, eval_speed.import_faiss())
    if args.json:
        atomic_write_json(args.json, {"size": args.size, "bits": args.bits, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
