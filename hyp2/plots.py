"""Figures of training runs, drawn from their results JSON alone (docs/run-json.md).

Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval",
ACM MM 2022, show (§4) Top-N precision curves (N = 100 … 1,000 returned images, precision
0 … 1), the convergence of mAP against training time in seconds, and a t-SNE of VOC-2007 codes
at 48 bits where red circles mark retrieved samples that are irrelevant to their query. The
official code draws none of them; here every run can draw them, plus precision–recall over Hamming
radii (the usual companion figure of deep hashing papers, e.g. Cao et al., "HashNet", ICCV 2017).

Relevance is the paper's multi-label rule: a database item is relevant to a query when they share
at least one label. Hash codes are K-dimensional ±1 vectors, so their Hamming distance is
(K − ⟨q, d⟩) / 2 and their squared Euclidean distance 4 × Hamming: t-SNE on the codes with the
Euclidean metric sees exactly the Hamming geometry.

Figures are :class:`matplotlib.figure.Figure` objects drawn without pyplot (no GUI backend, no
global state), so they are safe in worker processes and tests; :func:`save_figure` renders them
to memory and publishes each file atomically.
"""
from __future__ import annotations

import io
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .errors import UserError
from .io import atomic_write_bytes
from .paper import PAPER_HYP2

#: the run-JSON schema this module reads
SCHEMA = 1
#: resolution of the PNG files (the PDFs are vector)
DPI = 200
#: file formats written for every figure
FORMATS = ("png", "pdf")

#: labels of the t-SNE figure's artists (tests and callers find them by these)
TSNE_DATABASE = "database items"
TSNE_QUERIES = "queries"
TSNE_LINKS = "link to a top neighbour"
TSNE_IRRELEVANT = "irrelevant neighbour (no label shared with its query)"
#: how a multi-label item gets its one colour (also printed in the figure and the report)
TSNE_COLOUR_RULE = ("colour: the item's rarest label in this sample "
                    "(ties: the lower class index); grey: no label")

# Marker and dash cycles so that lines stay distinct in greyscale print.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
_DASHES = ("-", "--", "-.", ":")
_BACKBONES = {"alexnet": "AlexNet", "googlenet": "GoogLeNet", "resnet": "ResNet",
              "vgg": "VGG", "small": "small CNN"}


class _Missing(Exception):
    """A run lacks the data of one figure; the message says which and how to get it."""


# --------------------------------------------------------------------------------------------
# Loading and validating a run JSON


def _invalid(path: Path, what: str) -> UserError:
    return UserError(f"{path}: invalid run JSON: {what}; rewrite it by rerunning that run "
                     f"with --test (format: docs/run-json.md)")


def _is_number(x: Any) -> bool:
    # bool is an int subclass, but true/false where a number belongs is a broken file
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_numbers(path: Path, where: str, values: Any) -> None:
    if not isinstance(values, list) or not all(_is_number(v) for v in values):
        raise _invalid(path, f"{where} must be a list of numbers")


def _check_curve(path: Path, where: str, section: Any, keys: Sequence[str]) -> None:
    if not isinstance(section, dict):
        raise _invalid(path, f"{where} must be an object with keys {', '.join(keys)}")
    for key in keys:
        if key not in section:
            raise _invalid(path, f"{where}.{key} is missing")
        _check_numbers(path, f"{where}.{key}", section[key])
    lengths = {len(section[key]) for key in keys}
    if len(lengths) > 1:
        raise _invalid(path, f"{where}: lists {', '.join(keys)} differ in length")


def _check_run(run: Any, path: Path) -> None:
    if not isinstance(run, dict):
        raise _invalid(path, "the top level must be an object")
    schema = run.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise UserError(f"{path}: run JSON schema {schema!r} is not supported (this hyp2 reads "
                        f"schema {SCHEMA}); use the hyp2 version that wrote it")
    for key in ("dataset", "backbone"):
        if not isinstance(run.get(key), str) or not run[key]:
            raise _invalid(path, f"'{key}' must be a non-empty string")
    bits = run.get("hash_bit")
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
        raise _invalid(path, "'hash_bit' must be a positive integer")
    for key in ("loss", "run"):
        if key in run and (not isinstance(run[key], str) or not run[key]):
            raise _invalid(path, f"'{key}' must be a non-empty string")
    if "classes" in run and not (isinstance(run["classes"], list)
                                 and all(isinstance(c, str) for c in run["classes"])):
        raise _invalid(path, "'classes' must be a list of strings")
    if run.get("topk") is not None and not _is_number(run["topk"]):
        raise _invalid(path, "'topk' must be a number")
    history = run.get("history", [])
    if history is not None:
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise _invalid(path, "'history' must be a list of objects")
        for i, entry in enumerate(history):
            for key in ("epoch", "map", "train_seconds", "loss"):
                if entry.get(key) is not None and not _is_number(entry[key]):
                    raise _invalid(path, f"history[{i}].{key} must be a number")
    best = run.get("best")
    if best is not None and (not isinstance(best, dict)
                             or (best.get("map") is not None and not _is_number(best["map"]))):
        raise _invalid(path, "'best' must be an object whose 'map' is a number")
    test = run.get("test")
    if test is None:
        return
    if not isinstance(test, dict):
        raise _invalid(path, "'test' must be an object")
    for key in ("map", "topk", "precision_radius2"):
        if test.get(key) is not None and not _is_number(test[key]):
            raise _invalid(path, f"test.{key} must be a number")
    if test.get("precision_at_n") is not None:
        _check_curve(path, "test.precision_at_n", test["precision_at_n"], ("n", "precision"))
    if test.get("pr_curve") is not None:
        _check_curve(path, "test.pr_curve", test["pr_curve"], ("radius", "precision", "recall"))
    if test.get("codes_sample") is not None and not isinstance(test["codes_sample"], str):
        raise _invalid(path, "test.codes_sample must be a file name (string)")


def load_run(path: str | Path) -> dict:
    """Read and check one run JSON (docs/run-json.md).

    Returns the JSON's object with one key added, ``"_path"``: the :class:`~pathlib.Path` it was
    read from (``test.codes_sample`` is relative to its folder). Sections may be absent (not
    measured); present sections must be well formed. A missing, unreadable or malformed file
    raises :class:`~hyp2.errors.UserError` naming the file and the problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such run JSON; pass the result/{{run}}.json a training "
                        f"run wrote") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a run JSON; pass result/{{run}}.json "
                        f"files") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"{path}: cannot read the run JSON ({reason}); check the path and "
                        f"its permissions") from None
    try:
        run = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid(path, f"not JSON (line {exc.lineno}, column {exc.colno}: "
                             f"{exc.msg})") from None
    _check_run(run, path)
    run = dict(run)
    run["_path"] = path
    return run


# --------------------------------------------------------------------------------------------
# Names and styles


def run_label(run: dict) -> str:
    """The legend name of a run: ``"dataset · backbone · K bits · loss"``."""
    return (f"{run['dataset']} · {run['backbone']} · {run['hash_bit']} bits · "
            f"{run.get('loss', 'hyp2')}")


def run_labels(runs: Sequence[dict]) -> list[str]:
    """:func:`run_label` of each run, made unique: repeats get the run's file name appended."""
    labels = [run_label(r) for r in runs]
    for level in (1, 2):
        seen: dict[str, int] = {}
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
        for i, run in enumerate(runs):
            if seen[labels[i]] > 1:
                where = Path(run.get("_path", f"run {i + 1}"))
                labels[i] += f" ({where.name})" if level == 1 else f" [{i + 1}]"
    return labels


def _run_name(run: dict) -> str:
    # where a note comes from: the file as the user named it
    return str(run.get("_path", run.get("run", "run")))


def backbone_title(name: str) -> str:
    """A backbone as papers write it (``"googlenet"`` -> ``"GoogLeNet"``)."""
    return _BACKBONES.get(name, name)


def _style(i: int) -> dict:
    return {"marker": _MARKERS[i % len(_MARKERS)], "linestyle": _DASHES[(i // 10) % len(_DASHES)],
            "color": colormaps["tab10"](i % 10), "linewidth": 1.4, "markersize": 4}


def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None:
        notes.append(text)


def _collect(runs: Sequence[dict], extract, figure: str, notes: list[str] | None):
    labels = run_labels(runs)
    found = []
    for i, run in enumerate(runs):
        try:
            found.append((i, labels[i], extract(run)))
        except _Missing as missing:
            if len(runs) == 1:
                _note(notes, f"{_run_name(run)}: {figure} figure skipped ({missing})")
            else:
                _note(notes, f"{_run_name(run)}: left out of the {figure} figure ({missing})")
    if not found and len(runs) != 1:
        _note(notes, f"{figure} figure skipped: none of the {len(runs)} runs has its data")
    return found


def _test_section(run: dict, key: str, hint: str = "evaluate the model with --test"):
    test = run.get("test")
    if not isinstance(test, dict):
        raise _Missing(f"the run has no test results; {hint}")
    value = test.get(key)
    if value is None:
        raise _Missing(f"test.{key} is missing; {hint}")
    return value


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


# --------------------------------------------------------------------------------------------
# Curves


def _topn_series(run: dict) -> tuple[np.ndarray, np.ndarray]:
    section = _test_section(run, "precision_at_n")
    n = np.asarray(section["n"], dtype=float)
    if n.size == 0:
        raise _Missing("test.precision_at_n is empty (database smaller than 100 items?)")
    return n, np.asarray(section["precision"], dtype=float)


def _pr_series(run: dict) -> tuple[np.ndarray, np.ndarray]:
    section = _test_section(run, "pr_curve")
    recall = np.asarray(section["recall"], dtype=float)
    if recall.size == 0:
        raise _Missing("test.pr_curve is empty")
    return recall, np.asarray(section["precision"], dtype=float)


def _convergence_series(run: dict) -> tuple[np.ndarray, np.ndarray]:
    points = [(h["train_seconds"], h["map"]) for h in run.get("history") or []
              if h.get("train_seconds") is not None and h.get("map") is not None]
    if not points:
        raise _Missing("its history has no evaluation with both train_seconds and map; "
                       "train with evaluation enabled")
    points.sort()
    seconds, maps = zip(*points)
    return np.asarray(seconds, dtype=float), np.asarray(maps, dtype=float)


def plot_topn(runs: Sequence[dict], notes: list[str] | None = None) -> Figure | None:
    """Top-N precision (``test.precision_at_n``) of each run: one line per run, as the paper's
    Top-N figure (x: N = 100 … 1,000 returned images, y: precision in [0, 1]).

    Runs without the data are skipped with a line appended to ``notes``; returns None (and a
    note) when no run has it.
    """
    series = _collect(runs, _topn_series, "Top-N precision", notes)
    if not series:
        return None
    fig = _new_figure(5.6, 4.0)
    ax = fig.add_subplot()
    for i, label, (n, precision) in series:
        ax.plot(n, precision, label=label, **_style(i))
    lo = min(100.0, min(float(n.min()) for _, _, (n, _) in series))
    hi = max(1000.0, max(float(n.max()) for _, _, (n, _) in series))
    ax.set_xlim(lo, hi)
    if (lo, hi) == (100.0, 1000.0):
        ax.set_xticks(range(100, 1001, 100))
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("Number of top returned images N")
    ax.set_ylabel("Precision")
    ax.set_title("Top-N precision (Hamming ranking)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return fig


def plot_pr(runs: Sequence[dict], notes: list[str] | None = None) -> Figure | None:
    """Precision against recall over Hamming radii r = 0 … K (``test.pr_curve``), one line per
    run; both axes in [0, 1]. Missing data is handled as in :func:`plot_topn`."""
    series = _collect(runs, _pr_series, "precision–recall curve", notes)
    if not series:
        return None
    fig = _new_figure(5.6, 4.0)
    ax = fig.add_subplot()
    for i, label, (recall, precision) in series:
        style = _style(i)
        # one marker per radius would hide the line at K = 64; mark about a dozen
        ax.plot(recall, precision, label=label, markevery=max(1, len(recall) // 12), **style)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title("Precision–recall over Hamming radius r = 0 … K")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return fig


def run_topk(run: dict) -> int | None:
    """K of the run's mAP@K (``topk``, else ``test.topk``), or None when the JSON lacks it."""
    for value in (run.get("topk"), (run.get("test") or {}).get("topk")):
        if value is not None:
            return int(value)
    return None


def plot_convergence(runs: Sequence[dict], notes: list[str] | None = None) -> Figure | None:
    """mAP at each evaluation against cumulative training seconds (``history``), one line per
    run and one panel per dataset (mAP@K differs between datasets), as the paper's convergence
    figure (Flickr-25k and NUS-WIDE, 48 bits). Missing data is handled as in :func:`plot_topn`.
    """
    series = _collect(runs, _convergence_series, "convergence curve", notes)
    if not series:
        return None
    datasets: list[str] = []
    for i, _, _ in series:
        if runs[i]["dataset"] not in datasets:
            datasets.append(runs[i]["dataset"])
    fig = _new_figure(4.8 * len(datasets) + 0.8, 4.0)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        mine = [s for s in series if runs[s[0]]["dataset"] == dataset]
        for i, label, (seconds, maps) in mine:
            ax.plot(seconds, maps, label=label, **_style(i))
        topks = {run_topk(runs[i]) for i, _, _ in mine}
        topk = topks.pop() if len(topks) == 1 else None
        ys = np.concatenate([maps for _, _, (_, maps) in mine])
        ys = ys[np.isfinite(ys)]
        if ys.size:
            # zoom on the curves as the paper does, but never beyond the [0, 1] range of mAP
            low, high = max(0.0, float(ys.min()) - 0.05), min(1.0, float(ys.max()) + 0.05)
            if high > low:
                ax.set_ylim(low, high)
        ax.set_xlim(left=0.0)
        ax.set_xlabel("Training time (s)")
        ax.set_ylabel(f"mAP@{topk}" if topk is not None else "mAP")
        paper = PAPER_HYP2.get(dataset)
        ax.set_title(paper.title if paper else dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    fig.suptitle("Convergence: mAP on the query set during training")
    return fig


# --------------------------------------------------------------------------------------------
# t-SNE of hash codes


@dataclass(frozen=True)
class CodesSample:
    """A run's seeded sample of codes (``test.codes_sample``).

    Attributes:
        db_codes: (n, K) int8 in {-1, +1}, database codes.
        db_labels: (n, C) bool, database labels.
        query_codes: (q, K) int8 in {-1, +1}, query codes.
        query_labels: (q, C) bool, query labels.
    """

    db_codes: np.ndarray
    db_labels: np.ndarray
    query_codes: np.ndarray
    query_labels: np.ndarray


def load_codes_sample(run: dict) -> CodesSample:
    """Read the ``.npz`` that ``run['test']['codes_sample']`` names (relative to the run JSON's
    folder). A missing entry or file, or arrays of the wrong shape or values, raise
    :class:`~hyp2.errors.UserError` naming the run and the problem."""
    try:
        return _read_codes_sample(run)
    except _Missing as missing:
        raise UserError(f"{_run_name(run)}: {missing}") from None


_SAMPLE_KEYS = ("db_codes", "db_labels", "query_codes", "query_labels")


def _read_codes_sample(run: dict) -> CodesSample:
    name = _test_section(run, "codes_sample")
    path = Path(run.get("_path", ".")).parent / name
    again = "rerun that run with --test to rewrite it"
    try:
        # our own file handle: np.load leaks the one it opens when a corrupt .npz fails to parse
        with open(path, "rb") as fh:
            npz = np.load(fh, allow_pickle=False)
            if not hasattr(npz, "files"):
                raise _Missing(f"codes sample {path} is a single array, not an .npz archive; "
                               f"{again}")
            with npz:
                missing = [key for key in _SAMPLE_KEYS if key not in npz.files]
                if missing:
                    raise _Missing(f"codes sample {path} lacks {', '.join(missing)}; {again}")
                arrays = {key: np.asarray(npz[key]) for key in _SAMPLE_KEYS}
    except FileNotFoundError:
        raise _Missing(f"codes sample {path} not found; {again}") from None
    except _Missing:
        raise
    except Exception as exc:  # noqa: BLE001 - np.load fails in many ways (zip, pickle, EOF)
        raise _Missing(f"codes sample {path} is unreadable ({type(exc).__name__}: {exc}); "
                       f"{again}") from None
    for key, value in arrays.items():
        if value.ndim != 2:
            raise _Missing(f"codes sample {path}: {key} must be 2-D, got shape {value.shape}; "
                           f"{again}")
    db, dl, qc, ql = (arrays[k] for k in _SAMPLE_KEYS)
    if db.shape[0] != dl.shape[0] or qc.shape[0] != ql.shape[0]:
        raise _Missing(f"codes sample {path}: codes and labels differ in number of rows; {again}")
    if db.shape[1] != qc.shape[1] or dl.shape[1] != ql.shape[1]:
        raise _Missing(f"codes sample {path}: database and query arrays differ in number of "
                       f"columns; {again}")
    for key in ("db_codes", "query_codes"):
        if not np.isin(arrays[key], (-1, 1)).all():
            raise _Missing(f"codes sample {path}: {key} must hold only -1 and +1; {again}")
    return CodesSample(db.astype(np.int8), dl.astype(bool), qc.astype(np.int8), ql.astype(bool))


@dataclass(frozen=True)
class Neighbours:
    """A query's top database items by Hamming distance.

    Attributes:
        query: index of the query in the sample.
        indices: (k,) database indices, nearest first (ties: the lower index first).
        distances: (k,) their Hamming distances to the query.
        irrelevant: (k,) bool, True where the item shares no label with the query.
    """

    query: int
    indices: np.ndarray
    distances: np.ndarray
    irrelevant: np.ndarray


def hamming_neighbours(db_codes: np.ndarray, db_labels: np.ndarray, query_codes: np.ndarray,
                       query_labels: np.ndarray, k: int) -> list[Neighbours]:
    """Each query's ``k`` nearest database codes by Hamming distance, with their relevance.

    Args:
        db_codes: (n, K) ±1 codes; db_labels: (n, C) 0/1 labels.
        query_codes: (q, K) ±1 codes; query_labels: (q, C) 0/1 labels.
        k: neighbours per query, ≥ 1 (at most n are returned).
    Returns one :class:`Neighbours` per query, in query order. Pure: inputs are not modified.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"hamming_neighbours needs an integer k >= 1, got k={k!r}")
    db = np.asarray(db_codes, dtype=np.int64)
    queries = np.asarray(query_codes, dtype=np.int64)
    if db.ndim != 2 or queries.ndim != 2 or db.shape[1] != queries.shape[1]:
        raise ValueError(f"hamming_neighbours needs (n, K) and (q, K) codes, got "
                         f"{db.shape} and {queries.shape}")
    db_lab = np.asarray(db_labels).astype(bool)
    q_lab = np.asarray(query_labels).astype(bool)
    # for ±1 codes, <q, d> = K - 2 * hamming
    distances = (db.shape[1] - queries @ db.T) // 2
    out = []
    for qi in range(queries.shape[0]):
        order = np.argsort(distances[qi], kind="stable")[:k]
        irrelevant = ~np.any(db_lab[order] & q_lab[qi], axis=1)
        out.append(Neighbours(qi, order, distances[qi, order], irrelevant))
    return out


def rarest_label(labels: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """The colour class of each item: of its labels, the one rarest in ``counts``.

    Args:
        labels: (n, C) 0/1 labels.
        counts: (C,) class frequencies deciding rarity; default: column sums of ``labels``.
    Returns (n,) int64 class indices; ties go to the lower class index; -1 for an item with no
    label. A multi-label item thus takes its most specific class (the paper does not say how it
    colours multi-label points).
    """
    labels = np.asarray(labels).astype(bool)
    counts = labels.sum(axis=0) if counts is None else np.asarray(counts)
    big = np.iinfo(np.int64).max
    key = np.where(labels, counts[None, :].astype(np.int64), big)
    cls = np.argmin(key, axis=1) if labels.shape[1] else np.zeros(len(labels), dtype=np.int64)
    return np.where(labels.any(axis=1), cls, -1).astype(np.int64)


def tsne_embedding(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn, Barnes–Hut) of (m, D) points, m ≥ 3; returns (m, 2).

    Seeded; PCA initialisation (stable layouts across runs) unless the points have no spread;
    perplexity min(30, (m − 1) / 3) so that small samples stay valid (it must be below m).
    For ±1 codes the Euclidean metric ranks pairs exactly as Hamming distance does.
    """
    # imported here: they take a second and only t-SNE needs them
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    x = np.asarray(points, dtype=np.float64)
    m = x.shape[0]
    if m < 3:
        raise ValueError(f"tsne_embedding needs at least 3 points, got {m}")
    perplexity = max(1.0, min(30.0, (m - 1) / 3.0))
    spread = x.shape[1] >= 2 and float(np.ptp(x, axis=0).max()) > 0
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca" if spread else "random",
                learning_rate="auto", random_state=seed)
    # One OpenMP thread: Barnes–Hut's threads spin-wait, and on a busy machine (tests running
    # beside it) that made 300 points take 30 s instead of 0.6 s; 2,000 points take ~9 s.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x)


def _palette(num_classes: int) -> list:
    # Qualitative colours without the greys of the tab maps: grey means "no label".
    def colours(name: str, greys: Sequence[int]) -> list:
        return [c for i, c in enumerate(colormaps[name].colors) if i not in greys]

    if num_classes <= 9:
        return colours("tab10", (7,))
    palette = colours("tab20", (14, 15))
    if num_classes > len(palette):
        palette += colours("tab20b", ()) + colours("tab20c", (16, 17, 18, 19))
    return palette


def plot_tsne(run: dict, *, num_queries: int = 3, neighbours: int = 10, seed: int = 0,
              notes: list[str] | None = None) -> Figure | None:
    """t-SNE of a run's sampled database codes with a few queries and their top neighbours.

    Database items are dots coloured by :func:`rarest_label`; the first ``num_queries`` queries
    of the sample are stars, joined by thin lines to their ``neighbours`` nearest database items
    (Hamming distance within the sample, ties to the lower index); neighbours sharing no label
    with their query get a red circle, as the paper marks irrelevant samples. Queries and
    database are embedded together. Returns None, with a note, when the run has no usable sample.
    """
    for name, value, least in (("num_queries", num_queries, 0), ("neighbours", neighbours, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ValueError(f"plot_tsne needs an integer {name} >= {least}, got {value!r}")
    try:
        sample = _read_codes_sample(run)
    except _Missing as missing:
        _note(notes, f"{_run_name(run)}: t-SNE skipped ({missing})")
        return None
    n = sample.db_codes.shape[0]
    if n < 3:
        _note(notes, f"{_run_name(run)}: t-SNE skipped (the codes sample has {n} database "
                     f"items; at least 3 are needed)")
        return None
    nq = min(num_queries, sample.query_codes.shape[0])
    points = np.concatenate([sample.db_codes, sample.query_codes[:nq]]).astype(np.float64)
    xy = tsne_embedding(points, seed)
    db_xy, q_xy = xy[:n], xy[n:]

    num_classes = sample.db_labels.shape[1]
    palette = _palette(num_classes)
    grey = (0.6, 0.6, 0.6, 1.0)
    counts = sample.db_labels.sum(axis=0)
    db_cls = rarest_label(sample.db_labels, counts)
    q_cls = rarest_label(sample.query_labels[:nq], counts)

    def colour(c: int):
        return grey if c < 0 else palette[c % len(palette)]

    fig = _new_figure(8.0, 5.6)
    ax = fig.add_subplot()
    size = 14 if n > 500 else 24
    ax.scatter(db_xy[:, 0], db_xy[:, 1], c=[colour(c) for c in db_cls], s=size, linewidths=0,
               label=TSNE_DATABASE, zorder=1)
    found = hamming_neighbours(sample.db_codes, sample.db_labels, sample.query_codes[:nq],
                               sample.query_labels[:nq], min(neighbours, n)) if nq else []
    links = [(q_xy[nb.query], db_xy[j]) for nb in found for j in nb.indices]
    if links:
        ax.add_collection(LineCollection(links, colors="0.25", linewidths=0.6, zorder=2,
                                         label=TSNE_LINKS))
    bad = np.array([j for nb in found for j in nb.indices[nb.irrelevant]], dtype=np.int64)
    if bad.size:
        ax.scatter(db_xy[bad, 0], db_xy[bad, 1], s=size * 7, facecolors="none",
                   edgecolors="red", linewidths=1.4, label=TSNE_IRRELEVANT, zorder=3)
    if nq:
        ax.scatter(q_xy[:, 0], q_xy[:, 1], marker="*", s=260, c=[colour(c) for c in q_cls],
                   edgecolors="black", linewidths=0.9, label=TSNE_QUERIES, zorder=4)
        for i, (x, y) in enumerate(q_xy):
            ax.annotate(f"Q{i + 1}", (x, y), xytext=(6, 6), textcoords="offset points",
                        fontsize=8, fontweight="bold", zorder=5)

    classes = run.get("classes") or []
    handles = [Line2D([], [], linestyle="none", marker="o", markersize=5, color=colour(c),
                      label=classes[c] if c < len(classes) else f"class {c}")
               for c in sorted(set(int(c) for c in db_cls) - {-1})]
    if (db_cls < 0).any():
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=5, color=grey,
                              label="no label"))
    if nq:
        handles.append(Line2D([], [], linestyle="none", marker="*", markersize=11,
                              markerfacecolor="white", markeredgecolor="black",
                              label="query (Q1, Q2, …)"))
        handles.append(Line2D([], [], color="0.25", linewidth=0.8,
                              label=f"to its top {min(neighbours, n)} by Hamming distance"))
    if bad.size:
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=9,
                              markerfacecolor="none", markeredgecolor="red",
                              markeredgewidth=1.4, label="irrelevant (no shared label)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
              ncol=2 if len(handles) > 24 else 1, title="rarest label", title_fontsize=7,
              frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {n} database codes: {run_label(run)}", fontsize=10)
    caption = (f"{TSNE_COLOUR_RULE}. Stars: {nq} queries, lines to their "
               f"{min(neighbours, n)} nearest database codes (Hamming distance, within this "
               f"sample); red circles: neighbours sharing no label with their query.")
    ax.set_xlabel("\n".join(textwrap.wrap(caption, 110)), fontsize=7)
    return fig


# --------------------------------------------------------------------------------------------
# Saving


def save_figure(fig: Figure, stem: str | Path, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``{stem}.{fmt}`` for each format, each rendered to memory and published
    atomically; returns the paths written."""
    stem = Path(stem)
    written = []
    for fmt in formats:
        buffer = io.BytesIO()
        # no creation date in PDFs: the same run gives byte-identical files
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
        path = stem.parent / f"{stem.name}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def plot_run(run_json_path: str | Path, out_dir: str | Path, *, seed: int = 0,
             notes: list[str] | None = None, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Draw one run's figures into ``out_dir`` as ``{stem}_{topn,pr,convergence,tsne}.{png,pdf}``
    (``stem``: the JSON's file name without ``.json``, i.e. the run name).

    Figures the run has no data for are skipped, each with a line in ``notes``. Returns the
    files written. A missing or malformed JSON raises :class:`~hyp2.errors.UserError`.
    """
    run = load_run(run_json_path)
    out_dir = Path(out_dir)
    stem = Path(run_json_path).name.removesuffix(".json")
    formats = tuple(formats)
    figures = (("topn", plot_topn([run], notes)), ("pr", plot_pr([run], notes)),
               ("convergence", plot_convergence([run], notes)),
               ("tsne", plot_tsne(run, seed=seed, notes=notes)))
    written: list[Path] = []
    for name, fig in figures:
        if fig is not None:
            written += save_figure(fig, out_dir / f"{stem}_{name}", formats)
    return written
