"""Train every hashing loss with the same data, backbone, budget and seed, then compare them.

    python benchmarks/compare_losses.py --dataset demo [--epochs N] [--out result/compare_demo]

Each loss runs ``retrieval.py``'s own code path (train, then ``--test``) into ``OUT/runs``, so the
comparison differs in the loss alone. Writes ``OUT/comparison.md`` (mAP@K, P@N at N = 100 and
1000, training seconds) and, through ``hyp2.report``, the Top-N, PR and convergence figures with
one line per loss. Extra flags after ``--`` go to every run (e.g. ``-- --backbone alexnet``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyp2.cli import main as retrieval  # noqa: E402
from hyp2.io import atomic_write_text  # noqa: E402
from hyp2.losses import LOSSES  # noqa: E402
from hyp2.report import build_report  # noqa: E402


def at_n(test: dict, n: int) -> float | None:
    p = test.get("precision_at_n", {})
    return dict(zip(p.get("n", []), p.get("precision", []))).get(n)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="demo")
    p.add_argument("--epochs", type=int, default=None, help="default: the dataset's")
    p.add_argument("--hash_bit", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--losses", default=",".join(LOSSES.names()), help="comma-separated")
    p.add_argument("--out", type=Path, default=None, help="default result/compare_{dataset}")
    args = p.parse_args(argv)
    out = args.out or Path("result") / f"compare_{args.dataset}"
    runs = out / "runs"
    common = ["--dataset", args.dataset, "--hash_bit", str(args.hash_bit), "--seed", str(args.seed),
              "--result_dir", str(runs), *extra]
    if args.epochs:
        common += ["--epochs", str(args.epochs)]
    rows, jsons = [], []
    for loss in args.losses.split(","):
        start = time.perf_counter()
        print(f"== {loss}", flush=True)
        trained = retrieval(common + ["--loss", loss, "--overwrite"]) == 0
        if not trained or retrieval(common + ["--loss", loss, "--test"]) != 0:
            print(f"{loss}: failed, see above", file=sys.stderr)
            return 1
        found = sorted(runs.glob(f"{args.dataset}_*_{args.hash_bit}{'' if loss == 'hyp2' else '_' + loss}.json"))
        path = found[0]
        run = json.loads(path.read_text())
        test = run["test"]
        rows.append((loss, test["map"], at_n(test, 100), at_n(test, 1000),
                     run["history"][-1]["train_seconds"], time.perf_counter() - start))
        jsons.append(path)
    topk = json.loads(jsons[0].read_text())["topk"]
    lines = [f"| loss | mAP@{topk} | P@100 | P@1000 | training s |", "|---|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    for loss, m, p100, p1000, secs, _ in sorted(rows, key=lambda r: -r[1]):
        lines.append(f"| {loss} | {m:.4f} | {fmt(p100)} | {fmt(p1000)} | {secs:.1f} |")
    table = "\n".join(lines)
    atomic_write_text(out / "comparison.md", f"# Losses compared on {args.dataset} ({args.hash_bit} bits, "
                      f"seed {args.seed}, same budget)\n\n{table}\n")
    report = build_report(jsons, out, tsne=False)
    print(table)
    print(f"wrote {out / 'comparison.md'} and {len(report.files)} figure files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
