"""Image search with a trained model: export the database's hash codes, then rank them for new images.

Retrieval as in HyP² Loss (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label
Image Retrieval", ACM MM 2022, Sec. 4.1): an image's K-bit code is the sign of the network's K
outputs (0 counts as +1), and the database is ranked by Hamming distance to the query's code, ties
in database order (a stable ranking, see :mod:`hyp2.metrics`).

Two steps:

1. ``python retrieval.py ... --test --export_codes`` calls :func:`export_codes`, which writes
   ``{run}_codes.npz`` beside the checkpoint (and ``{run}_codes.faissbin``, a faiss
   ``IndexBinaryFlat`` of the same codes, when faiss is installed; faiss is optional).
2. ``python -m hyp2.search --checkpoint result/{run}.ckpt --codes result/{run}_codes.npz IMAGE ...``
   encodes each image with the checkpoint's model and prints its nearest database images.

The ``.npz`` file (loads with ``np.load(path, allow_pickle=False)``):

* ``format``: ``"hyp2-codes"``; ``version``: 1;
* ``codes``: ``(N, ceil(K/8))`` uint8, the bit-packed codes (:func:`hyp2.metrics.pack_codes`: bit
  1 is +1, the first code bit is the most significant bit of byte 0);
* ``labels``: ``(N, C)`` uint8 0/1; ``ids``: ``(N,)`` unicode image identifiers;
* ``num_bits``: K (0-d int64); ``classes``: ``(C,)`` unicode class names;
* ``meta``: a 0-d unicode array holding a JSON object (the checkpoint's metadata: dataset,
  backbone, hash_bit, loss, epoch, map, image_size, ...).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import ArgumentParser, UserError, resolve_device, run_command
from .hasher import encode_paths, load_hasher
from .io import atomic_write_bytes
from .results import write_atomic
from .metrics import hamming_ranking, pack_codes

__all__ = ["CODES_FORMAT", "CODES_VERSION", "CodeDatabase", "export_codes", "load_codes", "check_same_model",
           "search", "main"]

CODES_FORMAT = "hyp2-codes"
CODES_VERSION = 1
FAISS_SUFFIX = ".faissbin"
_KEYS = ("format", "version", "codes", "labels", "ids", "num_bits", "classes", "meta")


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def export_codes(path: str | Path, db_outputs: Any, db_labels: Any, ids: Sequence[str], num_bits: int,
                 classes: Sequence[str], meta: dict[str, Any]) -> list[Path]:
    """Write the database's packed codes for :mod:`hyp2.search` (format in the module docstring).

    Args:
        path: the ``.npz`` to write (``result/{run}_codes.npz``); written atomically.
        db_outputs: ``(N, K)`` real-valued network outputs (torch tensor, any device, or numpy);
            codes are their signs with 0 -> +1.
        db_labels: ``(N, C)`` 0/1 labels.
        ids: N image identifiers, in the same order.
        num_bits: K.
        classes: C class names, in label-column order.
        meta: JSON-able metadata (the checkpoint's ``meta``); values JSON cannot hold are stored
            as their ``str``.

    Returns:
        The paths written: the ``.npz``, then ``path.with_suffix(".faissbin")`` when faiss is
        importable (a faiss ``IndexBinaryFlat`` of dimension ``8 * ceil(K/8)`` holding the packed
        codes; the zero padding bits add nothing to any distance). Without faiss, a
        ``.faissbin`` left by an earlier export is removed, since it no longer matches the codes.

    Raises:
        ValueError: inconsistent shapes or lengths, labels other than 0/1, an empty database, or
            NaN outputs.
    """
    path = Path(path)
    if isinstance(num_bits, bool) or not isinstance(num_bits, (int, np.integer)) or num_bits < 1:
        raise ValueError(f"num_bits must be a positive int, got {num_bits!r}")
    num_bits = int(num_bits)
    shape = tuple(db_outputs.shape) if hasattr(db_outputs, "shape") else np.shape(db_outputs)
    if len(shape) != 2 or shape[1] != num_bits:
        raise ValueError(f"db_outputs must be (N, num_bits={num_bits}), got shape {shape}")
    n = shape[0]
    if n == 0:
        raise ValueError("db_outputs is empty: there is no database to export")
    labels = _to_numpy(db_labels)
    classes = [str(c) for c in classes]
    if labels.shape != (n, len(classes)):
        raise ValueError(f"db_labels must be (N={n}, C={len(classes)}) to match db_outputs and "
                         f"classes, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("db_labels must be 0/1 (multi-hot), found other values")
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids but {n} database codes")

    codes = pack_codes(db_outputs)  # (N, ceil(K/8)) uint8; raises ValueError on NaN
    arrays = {
        "format": np.array(CODES_FORMAT),
        "version": np.array(CODES_VERSION, dtype=np.int64),
        "codes": codes,
        "labels": labels.astype(np.uint8),
        "ids": np.array(ids, dtype=np.str_),
        "num_bits": np.array(num_bits, dtype=np.int64),
        "classes": np.array(classes, dtype=np.str_),
        "meta": np.array(json.dumps(meta, sort_keys=True, default=str)),
    }
    write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays), "codes file", need=codes.nbytes + labels.nbytes)
    written = [path]

    index_path = path.with_suffix(FAISS_SUFFIX)
    try:
        import faiss  # optional: only for users who search the codes with faiss
    except ImportError:
        index_path.unlink(missing_ok=True)
        return written
    index = faiss.IndexBinaryFlat(8 * codes.shape[1])
    index.add(np.ascontiguousarray(codes))
    # serialize_index_binary gives the bytes faiss.write_index_binary would write; publishing them
    # through hyp2.io keeps the file atomic (temporary sibling, fsync, os.replace).
    atomic_write_bytes(index_path, faiss.serialize_index_binary(index).tobytes())
    written.append(index_path)
    return written


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeDatabase:
    """The contents of a codes ``.npz``.

    Attributes:
        codes: ``(N, ceil(K/8))`` uint8 packed codes. labels: ``(N, C)`` uint8 0/1.
        ids: ``(N,)`` unicode identifiers. num_bits: K. classes: C names. meta: the metadata.
    """

    codes: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    num_bits: int
    classes: tuple[str, ...]
    meta: dict[str, Any]

    def label_names(self, i: int) -> list[str]:
        """Names of the classes of database item ``i``."""
        return [self.classes[c] for c in np.flatnonzero(self.labels[i])]


def load_codes(path: str | Path) -> CodeDatabase:
    """Read and check a codes file written by :func:`export_codes` (no pickle is ever loaded).

    Raises:
        UserError: the file is missing, unreadable, not a hyp2 codes file, or inconsistent.
    """
    path = Path(path)
    how = "export them with: python retrieval.py <the run's flags> --test --export_codes"
    if not path.is_file():
        raise UserError(f"no codes file at {path}; {how}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise UserError(f"{path} is not a hyp2 codes file (no {', '.join(missing)}); {how}")
            arrays = {k: npz[k] for k in _KEYS}
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated, foreign or pickled files all get one line
        first = (str(e).splitlines() or [""])[0]
        raise UserError(f"cannot read codes file {path} ({type(e).__name__}: {first}); it may be "
                        f"truncated or not a hyp2 codes file: {how}") from None

    def bad(what: str) -> UserError:
        return UserError(f"codes file {path} is inconsistent ({what}); {how}")

    if str(arrays["format"]) != CODES_FORMAT:
        raise UserError(f"{path} is not a hyp2 codes file (format {str(arrays['format'])!r}); {how}")
    if arrays["version"].ndim != 0 or int(arrays["version"]) != CODES_VERSION:
        raise UserError(f"codes file {path} has version {arrays['version']}, this code reads version "
                        f"{CODES_VERSION}; {how}")
    nb = arrays["num_bits"]
    if nb.ndim != 0 or nb.dtype.kind not in "iu" or int(nb) < 1:
        raise bad(f"num_bits {nb!r}")
    num_bits = int(nb)
    codes, labels, ids, classes = arrays["codes"], arrays["labels"], arrays["ids"], arrays["classes"]
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != math.ceil(num_bits / 8):
        raise bad(f"codes {codes.dtype} {codes.shape} for {num_bits} bits")
    n = codes.shape[0]
    if n == 0:
        raise bad("no database item")
    if classes.ndim != 1 or classes.dtype.kind != "U":
        raise bad(f"classes {classes.dtype} {classes.shape}")
    if labels.ndim != 2 or labels.shape != (n, classes.shape[0]):
        raise bad(f"labels {labels.shape} for {n} codes and {classes.shape[0]} classes")
    if ids.shape != (n,) or ids.dtype.kind != "U":
        raise bad(f"ids {ids.dtype} {ids.shape} for {n} codes")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as e:
        raise bad(f"meta is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise bad("meta is not a JSON object")
    return CodeDatabase(codes, labels, ids, num_bits, tuple(str(c) for c in classes), meta)


# ----------------------------------------------------------------------------------------------
# Search
# ----------------------------------------------------------------------------------------------


def search(query_outputs: Any, db: CodeDatabase, top: int) -> list[list[dict[str, Any]]]:
    """Rank the database for each query by Hamming distance (stable: ties in database order).

    Args:
        query_outputs: ``(Q, K)`` real-valued outputs (or ±1 codes) with K = ``db.num_bits``.
        db: the database. top: how many results per query (at most N are returned).
    Returns:
        For each query, its results in rank order: ``{"rank", "distance", "id", "labels"}``
        (rank from 1; labels are class names).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    packed = pack_codes(query_outputs)
    if packed.shape[1] != db.codes.shape[1]:
        raise ValueError(f"query codes have {packed.shape[1]} bytes but the database's {db.num_bits}-bit "
                         f"codes have {db.codes.shape[1]}")
    indices, dists = hamming_ranking(packed, db.codes, topk=top, num_bits=db.num_bits)
    return [[{"rank": r + 1, "distance": int(d), "id": str(db.ids[j]), "labels": db.label_names(j)}
             for r, (j, d) in enumerate(zip(row_i, row_d))]
            for row_i, row_d in zip(indices, dists)]


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m hyp2.search",
                description="Find the database images nearest (in Hamming distance) to each query image, "
                            "with a trained checkpoint and the database codes it exported "
                            "(python retrieval.py <flags> --test --export_codes).",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="the run's best checkpoint, result/{run}.ckpt")
    p.add_argument("--codes", type=Path, required=True, help="the exported codes, result/{run}_codes.npz")
    p.add_argument("images", nargs="+", help="query image file(s)")
    p.add_argument("--top", type=int, default=10, help="results per query")
    p.add_argument("--device", default="cpu", help="where to run the model, e.g. cpu or cuda:0")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def check_same_model(hasher, db: CodeDatabase, codes_path: Path) -> None:
    """Refuse codes exported from another model than ``hasher``'s: the same bits are not enough
    (another seed or epoch of the same run ranks meaninglessly), so both must carry one identity,
    the digest of the model's weights."""
    ckpt_path = hasher.checkpoint.path
    if hasher.num_bits != db.num_bits:
        raise UserError(f"codes file {codes_path} holds {db.num_bits}-bit codes but checkpoint {ckpt_path} has "
                        f"{hasher.num_bits} bits; pass the codes exported with this checkpoint")
    exported_from = db.meta.get("model_digest")
    if exported_from != hasher.digest:
        what = (f"was exported from another model (digest {exported_from}, checkpoint {ckpt_path} has "
                f"{hasher.digest})" if exported_from else "does not say which model it was exported from")
        raise UserError(f"codes file {codes_path} {what}; re-export with: python retrieval.py <the run's flags> "
                        f"--test --export_codes")


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
    """Parse, search and print; raises :class:`UserError` on bad input."""
    args = build_parser().parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top {args.top}: must be at least 1")
    hasher = load_hasher(args.checkpoint, resolve_device(args.device))
    db = load_codes(args.codes)
    check_same_model(hasher, db, args.codes)
    outputs = encode_paths(hasher, args.images)
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
