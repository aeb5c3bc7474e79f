"""Figures of training runs, drawn from their results JSON alone (docs/run-json.md).

Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval",
ACM MM 2022, show (§4) Top-N precision curves (N = 100 … 1,000 returned images, precision
0 … 1), the convergence of mAP against training time in seconds, and a t-SNE of VOC-2007 codes
(:mod:`hyp2.tsne`). The official code draws none of them; here every run can draw them, plus
precision–recall over Hamming radii (the usual companion figure of deep hashing papers, e.g. Cao
et al., "HashNet", ICCV 2017) and a retrieval gallery of real images (:mod:`hyp2.gallery`).

Relevance is the paper's multi-label rule: a database item is relevant to a query when they share
at least one label. The run JSON is read and checked by :mod:`hyp2.runfile`. :func:`draw_figures`
is the one pipeline that draws and saves them, for ``--test --plots`` (one run, :func:`plot_run`)
and for ``python -m hyp2.report`` (many runs).

Figures are :class:`matplotlib.figure.Figure` objects drawn without pyplot (no GUI backend, no
global state), so they are safe in worker processes and tests; :func:`save_figure` renders them
to memory and publishes each file atomically.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .gallery import GALLERY_QUERIES, GALLERY_TOP, Gallery, build_galleries, gallery_stem, plot_gallery
from .io import atomic_write_bytes
from .paper import PAPER_HYP2
from .runfile import MissingData, from_test, load_run, note, run_label, run_labels, run_name, run_topk
from .tsne import TSNE_COLOUR_RULE, plot_tsne

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


@dataclass(frozen=True)
class GalleryOptions:
    """What a retrieval gallery shows (:mod:`hyp2.gallery`): ``queries`` drawn with the seed plus
    the ``named`` query ids, each with its ``top`` nearest database images, read from
    ``data_root`` (default: the folder each run used); ``enabled=False`` skips it."""

    enabled: bool = True
    queries: int = GALLERY_QUERIES
    top: int = GALLERY_TOP
    named: tuple[str, ...] = ()
    data_root: str | Path | None = None


@dataclass(frozen=True)
class FigureOptions:
    """Which figures :func:`draw_figures` draws and how: file ``formats``, the t-SNE (``tsne``, its
    ``tsne_queries`` and their ``tsne_neighbours``), the gallery, and the ``seed`` of both."""

    formats: tuple[str, ...] = FORMATS
    tsne: bool = True
    tsne_queries: int = 3
    tsne_neighbours: int = 10
    seed: int = 0
    gallery: GalleryOptions = field(default_factory=GalleryOptions)


@dataclass(frozen=True)
class DrawnFigure:
    """A figure written to disk: its title, files (one per format), caption, and the gallery it
    shows when it is one."""

    title: str
    files: list[Path]
    caption: str
    gallery: Gallery | None = None


_CAPTIONS = {
    "topn": ("Top-N precision",
             "Precision of the top N = 100 … 1,000 database items by Hamming ranking, one line "
             "per run (the paper's Top-N figure: Flickr-25k and NUS-WIDE, precision 0 … 1)."),
    "pr": ("Precision–recall over Hamming radius",
           "Precision and recall of the database items within Hamming radius r of a query, "
           "r = 0 … K, averaged over queries, one line per run."),
    "convergence": ("Convergence",
                    "mAP on the query set at each evaluation against cumulative training "
                    "seconds (evaluation time excluded), one panel per dataset (the paper's "
                    "figure: Flickr-25k and NUS-WIDE, 48 bits, AlexNet)."),
}


def draw_figures(runs: Sequence[dict], out_dir: Path, options: FigureOptions = FigureOptions(), *,
                 prefix: str = "", notes: list[str] | None = None) -> list[DrawnFigure]:
    """Draw every figure the runs have data for into ``out_dir`` and save each in every format:
    ``{prefix}topn``, ``{prefix}pr``, ``{prefix}convergence`` (all runs in one), a t-SNE per run
    (``{prefix}tsne`` for a single run named by ``prefix``, else ``{prefix}tsne_{run}``) and the
    gallery (``{prefix}gallery``, ``..._{dataset}`` for several datasets). A figure no run has data
    for is skipped with a line in ``notes``."""
    out_dir, fmt = Path(out_dir), options.formats
    drawn = []
    for name, plot in (("topn", plot_topn), ("pr", plot_pr), ("convergence", plot_convergence)):
        fig = plot(runs, notes)
        if fig is not None:
            title, caption = _CAPTIONS[name]
            drawn.append(DrawnFigure(title, save_figure(fig, out_dir / f"{prefix}{name}", fmt), caption))
    if options.tsne:
        drawn += _tsne_figures(runs, out_dir, options, prefix, notes)
    if options.gallery.enabled:
        drawn += _gallery_figures(runs, out_dir, options, prefix, notes)
    return drawn


def _tsne_figures(runs: Sequence[dict], out_dir: Path, options: FigureOptions, prefix: str,
                  notes: list[str] | None) -> list[DrawnFigure]:
    drawn, used = [], set()
    for i, run in enumerate(runs):
        stem = f"{prefix}tsne" if prefix and len(runs) == 1 else \
            f"{prefix}tsne_{Path(run.get('_path', 'run')).name.removesuffix('.json')}"
        if stem in used:  # same file name from two folders
            stem = f"{stem}_{i + 1}"
        used.add(stem)
        fig = plot_tsne(run, num_queries=options.tsne_queries, neighbours=options.tsne_neighbours,
                        seed=options.seed, notes=notes)
        if fig is not None:
            caption = (f"t-SNE of the sampled database codes of {run_label(run)} (seed {options.seed}), as the "
                       f"paper's VOC-2007 48-bit figure. {TSNE_COLOUR_RULE[0].upper()}{TSNE_COLOUR_RULE[1:]}. Stars: "
                       f"the sample's first {options.tsne_queries} queries, with lines to their "
                       f"{options.tsne_neighbours} nearest database codes by Hamming distance within the sample; "
                       f"red circles, as in the paper, mark neighbours that share no label with their query.")
            drawn.append(DrawnFigure(f"t-SNE: {run_label(run)}", save_figure(fig, out_dir / stem, options.formats),
                                     caption))
    return drawn


def _gallery_figures(runs: Sequence[dict], out_dir: Path, options: FigureOptions, prefix: str,
                     notes: list[str] | None) -> list[DrawnFigure]:
    g = options.gallery
    galleries = build_galleries(runs, queries=g.queries, top=g.top, seed=options.seed, named=g.named,
                                data_root=g.data_root, notes=notes)
    drawn = []
    for gallery in galleries:
        files = save_figure(plot_gallery(gallery), out_dir / gallery_stem(galleries, gallery, prefix),
                            options.formats, dpi=GALLERY_DPI)
        caption = (f"Retrievals on {gallery.dataset} for {len(gallery.queries)} queries (seed {options.seed}): the "
                   f"query, then its {gallery.top} nearest database items by Hamming distance with the codes each "
                   f"run evaluated, one row per run; green frame (✓): shares a label with the query, red (✗): none.")
        drawn.append(DrawnFigure(f"Retrieval gallery: {gallery.dataset}", files, caption, gallery))
    return drawn


def plot_run(run_json_path: str | Path, out_dir: str | Path, *, seed: int = 0,
             notes: list[str] | None = None, formats: Iterable[str] = FORMATS,
             gallery_queries: int = GALLERY_QUERIES, gallery_top: int = GALLERY_TOP,
             query_ids: Sequence[str] = (), data_root: str | Path | None = None) -> list[Path]:
    """Draw one run's figures into ``out_dir`` as
    ``{stem}_{topn,pr,convergence,tsne,gallery}.{png,pdf}`` (``stem``: the JSON's file name
    without ``.json``, i.e. the run name), with :func:`draw_figures`.

    The gallery (:mod:`hyp2.gallery`) shows ``query_ids`` and ``gallery_queries`` queries drawn
    with ``seed``, each with its ``gallery_top`` nearest database images, from the codes file the
    JSON names and the images under ``data_root`` (default: the folder the run used). Figures the
    run has no data for are skipped, each with a line in ``notes``. Returns the files written.
    A missing or malformed JSON raises :class:`~hyp2.errors.UserError`.
    """
    run = load_run(run_json_path)
    stem = Path(run_json_path).name.removesuffix(".json")
    options = FigureOptions(tuple(formats), seed=seed, gallery=GalleryOptions(
        queries=gallery_queries, top=gallery_top, named=tuple(query_ids), data_root=data_root))
    return [f for figure in draw_figures([run], Path(out_dir), options, prefix=f"{stem}_", notes=notes)
            for f in figure.files]
