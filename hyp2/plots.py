"""Figures of training runs, drawn from their results JSON alone (docs/run-json.md).

Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval",
ACM MM 2022, show (§4) Top-N precision curves (N = 100 … 1,000 returned images, precision
0 … 1), the convergence of mAP against training time in seconds, and a t-SNE of VOC-2007 codes
(:mod:`hyp2.tsne`). The official code draws none of them; here every run can draw them, plus
precision–recall over Hamming radii (the usual companion figure of deep hashing papers, e.g. Cao
et al., "HashNet", ICCV 2017) and a retrieval gallery of real images (:mod:`hyp2.gallery`).

Relevance is the paper's multi-label rule: a database item is relevant to a query when they share
at least one label. The run JSON is read and checked by :mod:`hyp2.runfile` (its schema number is
:data:`hyp2.runfile.JSON_SCHEMA`); this module re-exports that API and the t-SNE's.

Figures are :class:`matplotlib.figure.Figure` objects drawn without pyplot (no GUI backend, no
global state), so they are safe in worker processes and tests; :func:`save_figure` renders them
to memory and publishes each file atomically.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .gallery import GALLERY_QUERIES, GALLERY_TOP, build_galleries, gallery_stem, plot_gallery
from .io import atomic_write_bytes
from .paper import PAPER_HYP2
from .runfile import (MissingData, backbone_title, from_test, load_run, note, run_label, run_labels, run_name,
                      run_topk)
from .tsne import (TSNE_COLOUR_RULE, TSNE_DATABASE, TSNE_IRRELEVANT, TSNE_LINKS, TSNE_QUERIES, CodesSample,
                   Neighbours, _palette, hamming_neighbours, load_codes_sample, plot_tsne, rarest_label,
                   tsne_embedding)

__all__ = ["DPI", "FORMATS", "GALLERY_DPI", "CodesSample", "Neighbours", "TSNE_COLOUR_RULE", "TSNE_DATABASE",
           "TSNE_IRRELEVANT", "TSNE_LINKS", "TSNE_QUERIES", "backbone_title", "hamming_neighbours",
           "load_codes_sample", "load_run", "plot_convergence", "plot_pr", "plot_run", "plot_topn", "plot_tsne",
           "rarest_label", "run_label", "run_labels", "run_topk", "save_figure", "tsne_embedding", "_palette"]

#: resolution of the PNG files (the PDFs are vector)
DPI = 200
#: resolution of the gallery's PNG (its pixels are thumbnails; more would only weigh more)
GALLERY_DPI = 120
#: file formats written for every figure
FORMATS = ("png", "pdf")

# Marker and dash cycles so that lines stay distinct in greyscale print.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
_DASHES = ("-", "--", "-.", ":")


def _style(i: int) -> dict:
    return {"marker": _MARKERS[i % len(_MARKERS)], "linestyle": _DASHES[(i // 10) % len(_DASHES)],
            "color": colormaps["tab10"](i % 10), "linewidth": 1.4, "markersize": 4}


def _collect(runs: Sequence[dict], extract, figure: str, notes: list[str] | None):
    labels = run_labels(runs)
    found = []
    for i, run in enumerate(runs):
        try:
            found.append((i, labels[i], extract(run)))
        except MissingData as missing:
            if len(runs) == 1:
                note(notes, f"{run_name(run)}: {figure} figure skipped ({missing})")
            else:
                note(notes, f"{run_name(run)}: left out of the {figure} figure ({missing})")
    if not found and len(runs) != 1:
        note(notes, f"{figure} figure skipped: none of the {len(runs)} runs has its data")
    return found


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


# --------------------------------------------------------------------------------------------
# Curves


def _topn_series(run: dict) -> tuple[np.ndarray, np.ndarray]:
    section = from_test(run, "precision_at_n")
    n = np.asarray(section["n"], dtype=float)
    if n.size == 0:
        raise MissingData("test.precision_at_n is empty (database smaller than 100 items?)")
    return n, np.asarray(section["precision"], dtype=float)


def _pr_series(run: dict) -> tuple[np.ndarray, np.ndarray]:
    section = from_test(run, "pr_curve")
    recall = np.asarray(section["recall"], dtype=float)
    if recall.size == 0:
        raise MissingData("test.pr_curve is empty")
    return recall, np.asarray(section["precision"], dtype=float)


def _convergence_series(run: dict) -> tuple[np.ndarray, np.ndarray]:
    points = [(h["train_seconds"], h["map"]) for h in run.get("history") or []
              if h.get("train_seconds") is not None and h.get("map") is not None]
    if not points:
        raise MissingData("its history has no evaluation with both train_seconds and map; "
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
# Saving


def save_figure(fig: Figure, stem: str | Path, formats: Iterable[str] = FORMATS, dpi: int = DPI) -> list[Path]:
    """Write ``fig`` as ``{stem}.{fmt}`` for each format (PNG at ``dpi``), each rendered to memory
    and published atomically; returns the paths written."""
    stem = Path(stem)
    written = []
    for fmt in formats:
        buffer = io.BytesIO()
        # no creation date in PDFs: the same run gives byte-identical files
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
        path = stem.parent / f"{stem.name}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def plot_run(run_json_path: str | Path, out_dir: str | Path, *, seed: int = 0,
             notes: list[str] | None = None, formats: Iterable[str] = FORMATS,
             gallery_queries: int = GALLERY_QUERIES, gallery_top: int = GALLERY_TOP,
             query_ids: Sequence[str] = (), data_root: str | Path | None = None) -> list[Path]:
    """Draw one run's figures into ``out_dir`` as
    ``{stem}_{topn,pr,convergence,tsne,gallery}.{png,pdf}`` (``stem``: the JSON's file name
    without ``.json``, i.e. the run name).

    The gallery (:mod:`hyp2.gallery`) shows ``query_ids`` and ``gallery_queries`` queries drawn
    with ``seed``, each with its ``gallery_top`` nearest database images, from the codes file the
    JSON names and the images under ``data_root`` (default: the folder the run used). Figures the
    run has no data for are skipped, each with a line in ``notes``. Returns the files written.
    A missing or malformed JSON raises :class:`~hyp2.errors.UserError`.
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
    galleries = build_galleries([run], queries=gallery_queries, top=gallery_top, seed=seed, named=query_ids,
                                data_root=data_root, notes=notes)
    for gallery in galleries:
        name = gallery_stem(galleries, gallery, f"{stem}_")
        written += save_figure(plot_gallery(gallery), out_dir / name, formats, dpi=GALLERY_DPI)
    return written
