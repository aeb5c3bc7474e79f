"""The exported codes file, ``{run}_codes.npz``: the packed hash codes a model gave a dataset.

Codes as in HyP² Loss (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image
Retrieval", ACM MM 2022, Sec. 4.1): an image's K-bit code is the sign of the network's K outputs,
0 counted as +1. ``python retrieval.py ... --test --export_codes`` (and ``--plots``) writes the
database's codes — and the queries', so that reports and galleries show exactly what the run
evaluated — for :mod:`hyp2.search` and :class:`hyp2.index.CodeIndex`.

The ``.npz`` (loads with ``np.load(path, allow_pickle=False)``; no pickle is ever read):

* ``format``: ``"hyp2-codes"``; ``version``: 2;
* ``codes``: ``(N, ceil(K/8))`` uint8, the bit-packed database codes (:func:`hyp2.metrics.pack_codes`:
  bit 1 is +1, the first code bit is the most significant bit of byte 0);
* ``labels``: ``(N, C)`` uint8 0/1; ``ids``: ``(N,)`` unicode image identifiers;
* ``query_codes``, ``query_labels``, ``query_ids``: the same for the Q queries (optional, together);
* ``num_bits``: K (0-d int64); ``classes``: ``(C,)`` unicode class names;
* ``meta``: a 0-d unicode array holding a JSON object: the checkpoint's metadata (dataset, backbone,
  hash_bit, loss, epoch, map, image_size, ``model_digest`` — the identity of the model that made
  the codes, which :mod:`hyp2.search` compares with the checkpoint's) and ``topk``.

A ``{run}_codes.faissbin`` beside it holds a faiss ``IndexBinaryFlat`` of the database codes when
faiss is installed (optional).
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import UserError, reason
from .io import atomic_write_bytes, write_atomic
from .metrics import pack_codes
from .validate import check_int

CODES_FORMAT = "hyp2-codes"
CODES_VERSION = 2
FAISS_SUFFIX = ".faissbin"
_KEYS = ("format", "version", "codes", "labels", "ids", "num_bits", "classes", "meta")
_QUERY_KEYS = ("query_codes", "query_labels", "query_ids")
_HOW = "export them with: python retrieval.py <the run's flags> --test --export_codes"


@dataclass(frozen=True)
class CodeSplit:
    """Packed codes of one split. codes: ``(N, ceil(K/8))`` uint8; labels: ``(N, C)`` uint8 0/1;
    ids: ``(N,)`` unicode identifiers."""

    codes: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(frozen=True)
class CodeDatabase:
    """The contents of a codes ``.npz``.

    Attributes:
        codes, labels, ids: the database split (see :class:`CodeSplit`).
        num_bits: K. classes: the C class names. meta: the metadata (module docstring).
        queries: the query split, when the file holds it.
    """

    codes: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    num_bits: int
    classes: tuple[str, ...]
    meta: dict[str, Any]
    queries: CodeSplit | None = None

    def label_names(self, i: int) -> list[str]:
        """Names of the classes of database item ``i``."""
        return [self.classes[c] for c in np.flatnonzero(self.labels[i])]


def _split_arrays(outputs: Any, labels: Any, ids: Sequence[str], num_bits: int, num_classes: int,
                  what: str) -> CodeSplit:
    shape = tuple(outputs.shape) if hasattr(outputs, "shape") else np.shape(outputs)
    if len(shape) != 2 or shape[1] != num_bits:
        raise ValueError(f"{what} outputs must be (N, num_bits={num_bits}), got shape {shape}")
    n = shape[0]
    if n == 0:
        raise ValueError(f"{what} outputs are empty: there is nothing to export")
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.shape != (n, num_classes):
        raise ValueError(f"{what} labels must be (N={n}, C={num_classes}) to match the outputs and classes, got "
                         f"shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{what} labels must be 0/1 (multi-hot), found other values")
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{len(ids)} {what} ids but {n} {what} codes")
    # pack_codes raises ValueError on NaN
    return CodeSplit(pack_codes(outputs), labels.astype(np.uint8), np.array(ids, dtype=np.str_))


def export_codes(path: str | Path, db_outputs: Any, db_labels: Any, ids: Sequence[str], num_bits: int,
                 classes: Sequence[str], meta: dict[str, Any],
                 queries: tuple[Any, Any, Sequence[str]] | None = None) -> list[Path]:
    """Write packed codes (format in the module docstring), atomically.

    Args:
        path: the ``.npz`` to write (``result/{run}_codes.npz``).
        db_outputs: ``(N, K)`` real-valued network outputs (torch tensor, any device, or numpy);
            codes are their signs with 0 -> +1. db_labels: ``(N, C)`` 0/1. ids: N identifiers.
        num_bits: K. classes: C class names, in label-column order.
        meta: JSON-able metadata (the checkpoint's ``meta``); other values are stored as ``str``.
        queries: ``(outputs (Q, K), labels (Q, C), ids)`` of the queries, to store beside them.

    Returns:
        The paths written: the ``.npz``, then ``path.with_suffix(".faissbin")`` when faiss is
        importable (a faiss ``IndexBinaryFlat`` of dimension ``8 * ceil(K/8)`` of the database
        codes; the zero padding bits add nothing to any distance). Without faiss, a ``.faissbin``
        left by an earlier export is removed, since it no longer matches the codes.

    Raises:
        ValueError: inconsistent shapes or lengths, labels other than 0/1, an empty split, NaN.
    """
    path = Path(path)
    num_bits = check_int("export_codes", "num_bits", num_bits, 1)
    classes = [str(c) for c in classes]
    db = _split_arrays(db_outputs, db_labels, ids, num_bits, len(classes), "database")
    arrays = {"format": np.array(CODES_FORMAT), "version": np.array(CODES_VERSION, dtype=np.int64),
              "codes": db.codes, "labels": db.labels, "ids": db.ids,
              "num_bits": np.array(num_bits, dtype=np.int64), "classes": np.array(classes, dtype=np.str_),
              "meta": np.array(json.dumps(meta, sort_keys=True, default=str))}
    if queries is not None:
        q = _split_arrays(*queries, num_bits, len(classes), "query")
        arrays.update(query_codes=q.codes, query_labels=q.labels, query_ids=q.ids)
    need = sum(a.nbytes for a in arrays.values())
    write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays), "codes file", need=need)
    return [path, *_write_faiss_index(path.with_suffix(FAISS_SUFFIX), db.codes)]


def _write_faiss_index(index_path: Path, codes: np.ndarray) -> list[Path]:
    try:
        import faiss  # optional: only for users who search the codes with faiss
    except ImportError:
        index_path.unlink(missing_ok=True)
        return []
    index = faiss.IndexBinaryFlat(8 * codes.shape[1])
    index.add(np.ascontiguousarray(codes))
    # serialize_index_binary gives the bytes faiss.write_index_binary would write; publishing them
    # through hyp2.io keeps the file atomic (temporary sibling, fsync, os.replace).
    atomic_write_bytes(index_path, faiss.serialize_index_binary(index).tobytes())
    return [index_path]


def load_codes(path: str | Path) -> CodeDatabase:
    """Read and check a codes file written by :func:`export_codes` (no pickle is ever loaded).

    Raises:
        UserError: the file is missing, unreadable, not a hyp2 codes file, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no codes file at {path}; {_HOW}")
    if not zipfile.is_zipfile(path):  # np.load would read anything else as a pickle, and refuse it as one
        raise UserError(f"{path} is not a codes file (an exported .npz archive); {_HOW}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _KEYS if k not in npz.files]
            if missing:
                raise UserError(f"{path} is not a hyp2 codes file (no {', '.join(missing)}); {_HOW}")
            arrays = {k: npz[k] for k in _KEYS + _QUERY_KEYS if k in npz.files}
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated, foreign or pickled files all get one line
        raise UserError(f"cannot read codes file {path} ({reason(e)}); it may be truncated or not a hyp2 codes "
                        f"file: {_HOW}") from None
    if str(arrays["format"]) != CODES_FORMAT:
        raise UserError(f"{path} is not a hyp2 codes file (format {str(arrays['format'])!r}); {_HOW}")
    if arrays["version"].ndim != 0 or int(arrays["version"]) != CODES_VERSION:
        raise UserError(f"codes file {path} has version {arrays['version']}, this code reads version "
                        f"{CODES_VERSION}; {_HOW}")
    return _checked(path, arrays)


def _checked(path: Path, arrays: dict[str, np.ndarray]) -> CodeDatabase:
    def bad(what: str) -> UserError:
        return UserError(f"codes file {path} is inconsistent ({what}); {_HOW}")

    nb, classes = arrays["num_bits"], arrays["classes"]
    if nb.ndim != 0 or nb.dtype.kind not in "iu" or int(nb) < 1:
        raise bad(f"num_bits {nb!r}")
    num_bits = int(nb)
    if classes.ndim != 1 or classes.dtype.kind != "U":
        raise bad(f"classes {classes.dtype} {classes.shape}")

    def split(codes: np.ndarray, labels: np.ndarray, ids: np.ndarray, what: str) -> CodeSplit:
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != math.ceil(num_bits / 8):
            raise bad(f"{what} codes {codes.dtype} {codes.shape} for {num_bits} bits")
        n = codes.shape[0]
        if n == 0:
            raise bad(f"no {what} item")
        if labels.ndim != 2 or labels.shape != (n, classes.shape[0]):
            raise bad(f"{what} labels {labels.shape} for {n} codes and {classes.shape[0]} classes")
        if ids.shape != (n,) or ids.dtype.kind != "U":
            raise bad(f"{what} ids {ids.dtype} {ids.shape} for {n} codes")
        return CodeSplit(codes, labels, ids)

    db = split(arrays["codes"], arrays["labels"], arrays["ids"], "database")
    present = [k for k in _QUERY_KEYS if k in arrays]
    if present and len(present) != len(_QUERY_KEYS):
        raise bad(f"query arrays {', '.join(present)} without the others")
    queries = split(*(arrays[k] for k in _QUERY_KEYS), "query") if present else None
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as e:
        raise bad(f"meta is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise bad("meta is not a JSON object")
    return CodeDatabase(db.codes, db.labels, db.ids, num_bits, tuple(str(c) for c in classes), meta, queries)


def check_same_model(hasher, db: CodeDatabase, codes_path) -> None:
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
