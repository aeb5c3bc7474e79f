"""Image search with a trained model: rank the exported database codes for new images.

Retrieval as in HyP² Loss (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label
Image Retrieval", ACM MM 2022, Sec. 4.1): an image's K-bit code is the sign of the network's K
outputs (0 counts as +1), and the database is ranked by Hamming distance to the query's code, ties
in database order (a stable ranking, see :mod:`hyp2.metrics`).

Two steps:

1. ``python retrieval.py ... --test --export_codes`` writes ``{run}_codes.npz`` beside the
   checkpoint (format: :mod:`hyp2.codes`).
2. ``python -m hyp2.search --checkpoint result/{run}.ckpt --codes result/{run}_codes.npz IMAGE ...``
   encodes each image with the checkpoint's model (:func:`hyp2.load_hasher`) and prints its
   nearest database images. Codes exported from another model are refused: their model digest
   differs from the checkpoint's. ``python -m hyp2.search serve --checkpoint ... --codes ...``
   serves the same search as a local web page (:mod:`hyp2.serve`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence


from ._plugins import add_plugin_flag, load_plugins
from .codes import CodeDatabase, check_same_model, load_codes
from .errors import ArgumentParser, UserError, resolve_device, run_command
from .hasher import load_hasher
from .index import CodeIndex
from .metrics import pack_codes

__all__ = ["search", "main"]


# ----------------------------------------------------------------------------------------------
# Search
# ----------------------------------------------------------------------------------------------


def search(query_outputs: Any, db: CodeDatabase, top: int,
           index: CodeIndex | None = None) -> list[list[dict[str, Any]]]:
    """Rank the database for each query by Hamming distance (stable: ties in database order).

    Args:
        query_outputs: ``(Q, K)`` real-valued outputs (or ±1 codes) with K = ``db.num_bits``.
        db: the database. top: how many results per query (at most N are returned).
        index: ``db``'s :class:`~hyp2.index.CodeIndex` when the caller keeps one (faiss when
            installed; the same ranking either way).
    Returns:
        For each query, its results in rank order: ``{"rank", "distance", "id", "labels"}``
        (rank from 1; labels are class names).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    # the index checks the codes' width against K (ValueError otherwise)
    hits = (index or CodeIndex.from_database(db)).hits(query_outputs, top)
    return [[{"rank": r + 1, "distance": h.distance, "id": h.id, "labels": list(h.labels)} for r, h in enumerate(row)]
            for row in hits]


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m hyp2.search",
                description="Find the database images nearest (in Hamming distance) to each query image, "
                            "with a trained checkpoint and the database codes it exported "
                            "(python retrieval.py <flags> --test --export_codes). "
                            "'python -m hyp2.search serve --help': the same in a browser page.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="the run's best checkpoint, result/{run}.ckpt")
    p.add_argument("--codes", type=Path, required=True, help="the exported codes, result/{run}_codes.npz")
    p.add_argument("images", nargs="+", help="query image file(s)")
    p.add_argument("--top", type=int, default=10, help="results per query")
    p.add_argument("--device", default="cpu", help="where to run the model, e.g. cpu or cuda:0")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_plugin_flag(p)
    return p


def _print_table(images: Sequence[str], results: list[list[dict[str, Any]]]) -> None:
    for q, (image, rows) in enumerate(zip(images, results)):
        if q:
            print()
        print(f"query {q + 1}/{len(images)}: {image}")
        table = [("rank", "distance", "id", "labels")] + [
            (str(r["rank"]), str(r["distance"]), r["id"], ", ".join(r["labels"]) or "-") for r in rows]
        widths = [max(len(row[c]) for row in table) for c in range(3)]
        for rank, dist, ident, labels in table:
            print(f"  {rank:>{widths[0]}}  {dist:>{widths[1]}}  {ident:<{widths[2]}}  {labels}")


def run(argv: Sequence[str] | None = None) -> None:
    """Parse, search and print (or serve the search page: ``serve ...``); raises :class:`UserError`
    on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    load_plugins(argv)  # a plugin backbone must be registered before its checkpoint is rebuilt
    if argv[:1] == ["serve"]:  # a query image named "serve" is passed as ./serve
        from .serve import serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top {args.top}: must be at least 1")
    hasher = load_hasher(args.checkpoint, resolve_device(args.device))
    db = load_codes(args.codes)
    check_same_model(hasher, db, args.codes)
    outputs = hasher.outputs(args.images)
    results = search(outputs, db, args.top)
    if args.json:
        packed = pack_codes(outputs)
        print(json.dumps({
            "checkpoint": str(args.checkpoint), "codes": str(args.codes), "num_bits": db.num_bits,
            "top": args.top,
            "queries": [{"image": image, "code": code.tobytes().hex(), "results": rows}
                        for image, code, rows in zip(args.images, packed, results)],
        }, indent=2))
    else:
        _print_table(args.images, results)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hyp2.search``: 0 ok, 2 user error (one ``error: ...`` line),
    130 interrupted."""
    return run_command(lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
