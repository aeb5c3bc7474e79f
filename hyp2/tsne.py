"""The t-SNE figure of a run's hash codes, with queries, their neighbours and the irrelevant ones.

Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM
2022 (§4) show a t-SNE of VOC-2007 codes at 48 bits where red circles mark retrieved samples that
are irrelevant to their query (they share no label with it, the paper's multi-label rule). Hash
codes are K-dimensional ±1 vectors, so their Hamming distance is (K − ⟨q, d⟩) / 2 and their
squared Euclidean distance 4 × Hamming: t-SNE on the codes with the Euclidean metric sees exactly
the Hamming geometry. The codes come from the run's seeded sample (``test.codes_sample``).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .errors import UserError
from .metrics import hamming_ranking
from .runfile import MissingData, from_test, note, run_label, run_name

#: labels of the t-SNE figure's artists (tests and callers find them by these)
TSNE_DATABASE = "database items"
TSNE_QUERIES = "queries"
TSNE_LINKS = "link to a top neighbour"
TSNE_IRRELEVANT = "irrelevant neighbour (no label shared with its query)"
#: how a multi-label item gets its one colour (also printed in the figure and the report)
TSNE_COLOUR_RULE = ("colour: the item's rarest label in this sample "
                    "(ties: the lower class index); grey: no label")



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
    except MissingData as missing:
        raise UserError(f"{run_name(run)}: {missing}") from None


_SAMPLE_KEYS = ("db_codes", "db_labels", "query_codes", "query_labels")


def _read_codes_sample(run: dict) -> CodesSample:
    name = from_test(run, "codes_sample")
    path = Path(run.get("_path", ".")).parent / name
    again = "rerun that run with --test to rewrite it"
    try:
        # our own file handle: np.load leaks the one it opens when a corrupt .npz fails to parse
        with open(path, "rb") as fh:
            npz = np.load(fh, allow_pickle=False)
            if not hasattr(npz, "files"):
                raise MissingData(f"codes sample {path} is a single array, not an .npz archive; "
                               f"{again}")
            with npz:
                missing = [key for key in _SAMPLE_KEYS if key not in npz.files]
                if missing:
                    raise MissingData(f"codes sample {path} lacks {', '.join(missing)}; {again}")
                arrays = {key: np.asarray(npz[key]) for key in _SAMPLE_KEYS}
    except FileNotFoundError:
        raise MissingData(f"codes sample {path} not found; {again}") from None
    except MissingData:
        raise
    except Exception as exc:  # noqa: BLE001 - np.load fails in many ways (zip, pickle, EOF)
        raise MissingData(f"codes sample {path} is unreadable ({type(exc).__name__}: {exc}); "
                       f"{again}") from None
    for key, value in arrays.items():
        if value.ndim != 2:
            raise MissingData(f"codes sample {path}: {key} must be 2-D, got shape {value.shape}; "
                           f"{again}")
    db, dl, qc, ql = (arrays[k] for k in _SAMPLE_KEYS)
    if db.shape[0] != dl.shape[0] or qc.shape[0] != ql.shape[0]:
        raise MissingData(f"codes sample {path}: codes and labels differ in number of rows; {again}")
    if db.shape[1] != qc.shape[1] or dl.shape[1] != ql.shape[1]:
        raise MissingData(f"codes sample {path}: database and query arrays differ in number of "
                       f"columns; {again}")
    for key in ("db_codes", "query_codes"):
        if not np.isin(arrays[key], (-1, 1)).all():
            raise MissingData(f"codes sample {path}: {key} must hold only -1 and +1; {again}")
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
    db, queries = np.asarray(db_codes), np.asarray(query_codes)
    if db.ndim != 2 or queries.ndim != 2 or db.shape[1] != queries.shape[1]:
        raise ValueError(f"hamming_neighbours needs (n, K) and (q, K) codes, got "
                         f"{db.shape} and {queries.shape}")
    db_lab = np.asarray(db_labels).astype(bool)
    q_lab = np.asarray(query_labels).astype(bool)
    if len(db):  # the evaluation's stable ranking: (q, min(k, n)) indices and distances
        order, distances = hamming_ranking(queries, db, k)
    else:
        order = distances = np.zeros((len(queries), 0), np.int64)
    return [Neighbours(qi, order[qi], distances[qi], ~np.any(db_lab[order[qi]] & q_lab[qi], axis=1))
            for qi in range(queries.shape[0])]


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
    except MissingData as missing:
        note(notes, f"{run_name(run)}: t-SNE skipped ({missing})")
        return None
    n = sample.db_codes.shape[0]
    if n < 3:
        note(notes, f"{run_name(run)}: t-SNE skipped (the codes sample has {n} database "
                    f"items; at least 3 are needed)")
        return None
    nq = min(num_queries, sample.query_codes.shape[0])
    k = min(neighbours, n)
    points = np.concatenate([sample.db_codes, sample.query_codes[:nq]]).astype(np.float64)
    xy = tsne_embedding(points, seed)
    found = hamming_neighbours(sample.db_codes, sample.db_labels, sample.query_codes[:nq],
                               sample.query_labels[:nq], k) if nq else []
    colours = _Colours(sample.db_labels)
    fig = Figure(figsize=(8.0, 5.6), layout="constrained")
    ax = fig.add_subplot()
    bad = _draw_points(ax, xy[:n], xy[n:], found, colours, sample.query_labels[:nq])
    handles = colours.handles(run.get("classes") or [])
    if nq:
        handles.append(Line2D([], [], linestyle="none", marker="*", markersize=11,
                              markerfacecolor="white", markeredgecolor="black",
                              label="query (Q1, Q2, …)"))
        handles.append(Line2D([], [], color="0.25", linewidth=0.8,
                              label=f"to its top {k} by Hamming distance"))
    if bad:
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=9,
                              markerfacecolor="none", markeredgecolor="red",
                              markeredgewidth=1.4, label="irrelevant (no shared label)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
              ncol=2 if len(handles) > 24 else 1, title="rarest label", title_fontsize=7,
              frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {n} database codes: {run_label(run)}", fontsize=10)
    caption = (f"{TSNE_COLOUR_RULE}. Stars: {nq} queries, lines to their {k} nearest database "
               f"codes (Hamming distance, within this sample); red circles: neighbours sharing no "
               f"label with their query.")
    ax.set_xlabel("\n".join(textwrap.wrap(caption, 110)), fontsize=7)
    return fig


class _Colours:
    """Each item's colour: its :func:`rarest_label` in the database sample, grey for no label."""

    GREY = (0.6, 0.6, 0.6, 1.0)

    def __init__(self, db_labels: np.ndarray):
        self.palette = _palette(db_labels.shape[1])
        self.counts = db_labels.sum(axis=0)
        self.db_classes = rarest_label(db_labels, self.counts)

    def colour(self, c: int) -> tuple:
        return self.GREY if c < 0 else self.palette[c % len(self.palette)]

    def of(self, labels: np.ndarray) -> list:
        return [self.colour(c) for c in rarest_label(labels, self.counts)]

    def handles(self, classes: Sequence[str]) -> list[Line2D]:
        """Legend entries of the classes present in the database sample, then "no label"."""
        handles = [Line2D([], [], linestyle="none", marker="o", markersize=5, color=self.colour(c),
                          label=classes[c] if c < len(classes) else f"class {c}")
                   for c in sorted(set(int(c) for c in self.db_classes) - {-1})]
        if (self.db_classes < 0).any():
            handles.append(Line2D([], [], linestyle="none", marker="o", markersize=5,
                                  color=self.GREY, label="no label"))
        return handles


def _draw_points(ax, db_xy: np.ndarray, q_xy: np.ndarray, found: Sequence[Neighbours],
                 colours: _Colours, query_labels: np.ndarray) -> bool:
    """Database dots, links to each query's neighbours, red circles on the irrelevant ones and
    the query stars; returns whether any neighbour is irrelevant."""
    n = len(db_xy)
    size = 14 if n > 500 else 24
    ax.scatter(db_xy[:, 0], db_xy[:, 1], c=[colours.colour(c) for c in colours.db_classes], s=size,
               linewidths=0, label=TSNE_DATABASE, zorder=1)
    links = [(q_xy[nb.query], db_xy[j]) for nb in found for j in nb.indices]
    if links:
        ax.add_collection(LineCollection(links, colors="0.25", linewidths=0.6, zorder=2,
                                         label=TSNE_LINKS))
    bad = np.array([j for nb in found for j in nb.indices[nb.irrelevant]], dtype=np.int64)
    if bad.size:
        ax.scatter(db_xy[bad, 0], db_xy[bad, 1], s=size * 7, facecolors="none",
                   edgecolors="red", linewidths=1.4, label=TSNE_IRRELEVANT, zorder=3)
    if len(q_xy):
        ax.scatter(q_xy[:, 0], q_xy[:, 1], marker="*", s=260, c=colours.of(query_labels),
                   edgecolors="black", linewidths=0.9, label=TSNE_QUERIES, zorder=4)
        for i, (x, y) in enumerate(q_xy):
            ax.annotate(f"Q{i + 1}", (x, y), xytext=(6, 6), textcoords="offset points",
                        fontsize=8, fontweight="bold", zorder=5)
    return bool(bad.size)
