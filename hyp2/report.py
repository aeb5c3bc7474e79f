"""``python -m hyp2.report RUN.json [RUN.json ...] --out DIR``: figures, a gallery, a results
table and one web page of it all.

Sets the mAP of our runs beside the HyP² numbers that Xu et al., "HyP² Loss: Beyond Hypersphere
Metric Space for Multi-label Image Retrieval", ACM MM 2022, report (§4, :mod:`hyp2.paper`), and
draws for the given runs the kinds of figure the paper shows (Top-N precision, convergence of mAP
against training seconds, t-SNE of codes) plus precision–recall over Hamming radii
(:mod:`hyp2.plots`), and a retrieval gallery of real images (:mod:`hyp2.gallery`). Everything is
read from the runs' JSON files (docs/run-json.md), the codes files they name and the dataset's
images; no model is needed. ``index.html`` (:mod:`hyp2.htmlpage`) puts it all on one page. The
user guide is docs/report.md.
"""
from __future__ import annotations

import logging
import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ._plugins import add_plugin_flag, load_plugins
from .config import MAX_SEED
from .errors import ArgumentParser, UserError, run_command
from .io import atomic_write_text
from .paper import PAPER_HYP2, paper_result
from .papergrid import GridTable, grid_html, grid_markdown, paper_grid
from .gallery import GALLERY_QUERIES, GALLERY_TOP
from .htmlpage import report_page
from .plots import FORMATS, FigureOptions, GalleryOptions, draw_figures
from .runfile import backbone_title, load_run, run_labels, run_topk

log = logging.getLogger("hyp2")

DASH = "—"  # a cell the paper or the run has no number for
RESULTS_FILE = "results.md"
INDEX_FILE = "index.html"


@dataclass(frozen=True)
class Row:
    """One run's line of the results table.

    ``ours`` is ``test.map`` (else the best mAP in the training history, with a note); ``paper``
    the paper's HyP² mAP for the same dataset and bits; ``diff`` = ours − paper. ``graded`` holds
    the run's graded multi-label metrics and tie-aware mAP at the same K (:data:`GRADED`), None
    where the run has not measured them. ``notes`` say why the two are not like for like
    (backbone, loss, mAP@K) or why a number is missing.
    """

    run: str
    dataset: str
    backbone: str
    bits: int
    loss: str
    topk: int | None
    ours: float | None
    paper: float | None
    diff: float | None
    precision_radius2: float | None
    notes: tuple[str, ...] = ()
    graded: tuple[float | None, ...] = (None, None, None, None)


#: the graded multi-label metrics and tie-aware mAP of a run's ``test`` section, as the report
#: heads them: (JSON key, column, number format)
GRADED = (("ndcg", "NDCG@K", ".4f"), ("weighted_map", "WAP@K", ".4f"), ("acg", "ACG@K", ".3f"),
          ("tie_aware_map", "Tie-aware mAP@K", ".4f"))


@dataclass
class Report:
    """What :func:`build_report` wrote (``files``) and its one-line ``notes`` on missing data."""

    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _stem(run: dict) -> str:
    return Path(run["_path"]).name.removesuffix(".json")


def _our_map(run: dict) -> tuple[float | None, str | None]:
    test = run.get("test") or {}
    if test.get("map") is not None:
        return float(test["map"]), None
    best = (run.get("best") or {}).get("map")
    history = [h["map"] for h in run.get("history") or [] if h.get("map") is not None]
    if best is None and history:
        best = max(history)
    if best is not None:
        return float(best), "best mAP during training (the run has no --test result)"
    return None, "no mAP measured (no --test result and no evaluation in its history)"


def compare_rows(runs: Sequence[dict]) -> list[Row]:
    """The results table's rows: one per run, in the paper's dataset order, then by bits,
    backbone, loss and run name. Pure: the runs are not modified."""
    order = {name: i for i, name in enumerate(PAPER_HYP2)}
    rows = []
    for run in runs:
        dataset, bits = run["dataset"], run["hash_bit"]
        backbone, loss = run["backbone"], run.get("loss", "hyp2")
        ours, note = _our_map(run)
        notes = [note] if note else []
        topk = run_topk(run)
        paper = paper_result(dataset)
        paper_map = paper.maps.get(bits) if paper else None
        if paper is None:
            notes.append(f"the paper reports no {dataset} results")
        elif paper_map is None:
            notes.append(f"the paper reports {paper.title} at "
                         f"{'/'.join(str(b) for b in paper.bits)} bits only")
        else:
            if backbone != paper.backbone:
                notes.append(f"the paper's number is for {backbone_title(paper.backbone)}; "
                             f"this run used {backbone_title(backbone)}")
            if loss != "hyp2":
                notes.append(f"this run trained with the {loss} loss; the paper's number is HyP²")
            if topk is None:
                notes.append(f"the run JSON does not say K of its mAP@K; the paper's is "
                             f"mAP@{paper.topk}")
            elif topk != paper.topk:
                notes.append(f"ours is mAP@{topk}, the paper's mAP@{paper.topk}")
        radius2 = (run.get("test") or {}).get("precision_radius2")
        rows.append(Row(
            run=_stem(run), dataset=dataset, backbone=backbone, bits=bits, loss=loss, topk=topk,
            ours=ours, paper=paper_map,
            diff=None if ours is None or paper_map is None else ours - paper_map,
            precision_radius2=None if radius2 is None else float(radius2), notes=tuple(notes),
            graded=tuple(_float((run.get("test") or {}).get(key)) for key, _, _ in GRADED)))
    rows.sort(key=lambda r: (order.get(r.dataset, len(order)), r.dataset, r.bits, r.backbone,
                             r.loss, r.run))
    return rows


def _float(value) -> float | None:
    return None if value is None else float(value)


def _cell(text: object) -> str:
    # a '|' inside a cell would split it
    return str(text).replace("|", "\\|")


def _num(value: float | None, fmt: str) -> str:
    return DASH if value is None else format(value, fmt)


RESULT_HEADERS = ("Run", "Dataset", "Backbone", "Bits", "Loss", "mAP@K", "Ours", "Paper (HyP²)", "Ours − paper",
                  "Precision (r ≤ 2)", *(column for _, column, _ in GRADED), "Comparability")
PAPER_HEADERS = ("Dataset", "Paper's name", "Backbone", "mAP@K", "mAP by hash bits", "Source")


def result_cells(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    """The results table's cells (columns :data:`RESULT_HEADERS`), as results.md and index.html
    show them."""
    return [(r.run, r.dataset, r.backbone, str(r.bits), r.loss, DASH if r.topk is None else str(r.topk),
             _num(r.ours, ".4f"), _num(r.paper, ".3f"), _num(r.diff, "+.4f"), _num(r.precision_radius2, ".4f"),
             *(_num(value, fmt) for value, (_, _, fmt) in zip(r.graded, GRADED)),
             "; ".join(r.notes) if r.notes else "same protocol as the paper") for r in rows]


def paper_cells() -> list[tuple[str, ...]]:
    """The paper's HyP² table (columns :data:`PAPER_HEADERS`)."""
    return [(p.dataset, p.title, backbone_title(p.backbone), str(p.topk),
             ", ".join(f"{b}: {p.maps[b]:.3f}" for b in p.bits), p.source) for p in PAPER_HYP2.values()]


def _markdown_table(headers: Sequence[str], cells: Sequence[Sequence[str]], align: str) -> list[str]:
    return (["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
            + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in cells])


def results_markdown(paths: Sequence[Path], rows: Sequence[Row],
                     figures: Sequence[tuple[str, Sequence[Path], str]],
                     notes: Sequence[str], grid: Sequence[GridTable] = ()) -> str:
    """The text of ``results.md``: the mAP table beside the paper, the paper's tables with our runs
    set in (:mod:`hyp2.papergrid`), the paper's full HyP² table, the figures (name, files, caption)
    and the notes."""
    lines = ["# HyP² reproduction report", "",
             f"Made by `python -m hyp2.report` from {len(paths)} run file(s): "
             + ", ".join(f"`{p}`" for p in paths) + ".", "",
             "## mAP beside the paper", "",
             "Ours: the run's test mAP@K (Hamming ranking; relevant = at least one shared label). "
             "Paper: HyP² as reported by Xu et al., ACM MM 2022 (§4 tables; see below). "
             "NDCG@K, WAP@K and ACG@K grade each retrieved item by the labels it shares with the query (DSRH, "
             "Zhao et al., CVPR 2015); tie-aware mAP@K is mAP's expectation over every order of items at equal "
             "Hamming distance (He et al., CVPR 2018); all at the run's K (docs/evaluation.md). "
             f"Ours − paper is positive where we do better. {DASH}: no number.", ""]
    lines += _markdown_table(RESULT_HEADERS, result_cells(rows),
                             ("---", "---", "---", "---:", "---", "---:", "---:", "---:", "---:", "---:",
                              *("---:" for _ in GRADED), "---"))
    lines += [""] + grid_markdown(grid)
    lines += ["## The paper's HyP² mAP", ""]
    lines += _markdown_table(PAPER_HEADERS, paper_cells(), ("---", "---", "---", "---:", "---", "---"))
    lines += ["", "## Figures", ""]
    if not figures:
        lines.append("No figure: no run has the data of any (see Notes).")
    for title, files, caption in figures:
        names = ", ".join(f"`{f.name}`" for f in files)
        lines += [f"### {title}", "", f"{caption} Files: {names}.", ""]
        png = next((f for f in files if f.suffix == ".png"), None)
        if png is not None:
            lines += [f"![{title}]({png.name})", ""]
    lines += ["## Notes", ""]
    lines += ([f"- {_cell(n)}" for n in notes] if notes
              else ["None: every run had every figure's data."])
    return "\n".join(lines).rstrip("\n") + "\n"


def _unique_paths(paths: Iterable[str | Path], notes: list[str]) -> list[Path]:
    unique: list[Path] = []
    for p in map(Path, paths):
        if any(p.resolve() == q.resolve() for q in unique):
            notes.append(f"{p}: given more than once; used once")
        else:
            unique.append(p)
    if not unique:
        raise UserError("no run JSON given; pass one or more result/{run}.json files")
    return unique


def build_report(paths: Iterable[str | Path], out_dir: str | Path, *, tsne: bool = True,
                 num_queries: int = 3, neighbours: int = 10, seed: int = 0,
                 formats: Iterable[str] = FORMATS, gallery: GalleryOptions | None = None,
                 paper_datasets: Sequence[str] = ()) -> Report:
    """Read the run JSONs, write the figures, ``results.md`` and ``index.html`` into ``out_dir``.

    The paper's tables (:mod:`hyp2.papergrid`) cover the runs' datasets and ``paper_datasets``
    (a sweep's planned ones, so that cells not run yet show).

    Figures: ``topn``, ``pr``, ``convergence`` over all runs, ``tsne_{run}`` per run with a
    codes sample (unless ``tsne`` is False), and ``gallery`` (``gallery_{dataset}`` when the runs
    span several datasets) for the runs whose codes file and images are found, each in every
    format of ``formats``. A figure no run has data for is skipped; each gap is one line in
    ``Report.notes``, results.md and index.html. A missing or malformed JSON, a ``--query`` id
    no codes file lists, or an unwritable ``out_dir`` raises :class:`~hyp2.errors.UserError`.
    """
    report = Report()
    unique = _unique_paths(paths, report.notes)
    runs = [load_run(p) for p in unique]
    out_dir = Path(out_dir)
    formats = tuple(formats)
    options = FigureOptions(tuple(formats), tsne=tsne, tsne_queries=num_queries, tsne_neighbours=neighbours,
                            seed=seed, gallery=gallery or GalleryOptions())
    try:
        drawn = draw_figures(runs, out_dir, options, notes=report.notes)
        figures = [(d.title, d.files, d.caption) for d in drawn]
        rows = compare_rows(runs)
        report.notes += [f"{row.run}: {row.notes[0]}" for row in rows if row.ours is None]
        grid = paper_grid(runs, _our_map, paper_datasets)
        text = results_markdown(unique, rows, figures, report.notes, grid)
        atomic_write_text(out_dir / RESULTS_FILE, text)
        page = report_page(sources=unique, results=(RESULT_HEADERS, result_cells(rows)),
                           paper=(PAPER_HEADERS, paper_cells()),
                           figures=[f for d, f in zip(drawn, figures) if d.gallery is None],
                           galleries=[(d.gallery, _png(d.files)) for d in drawn if d.gallery is not None],
                           runs=list(zip(runs, run_labels(runs))), notes=report.notes, grid=grid_html(grid))
        atomic_write_text(out_dir / INDEX_FILE, page)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot write the report ({exc.strerror or exc}); choose a "
                        f"writable folder with --out") from None
    report.files = [f for d in drawn for f in d.files] + [out_dir / RESULTS_FILE, out_dir / INDEX_FILE]
    return report


def _png(files: Sequence[Path]) -> Path | None:
    return next((f for f in files if f.suffix == ".png"), None)


def _seed(text: str) -> int:
    value = _count(0)(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SEED} (NumPy's seed range), got {value}")
    return value


def _count(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value
    return parse


_EPILOG = """\
outputs (in --out):
  topn.png, .pdf         Top-N precision, N = 100 ... 1000, one line per run
  pr.png, .pdf           precision-recall over Hamming radius r = 0 ... K, one line per run
  convergence.png, .pdf  mAP against training seconds, one panel per dataset
  tsne_{run}.png, .pdf   t-SNE of each run's codes sample, with queries and neighbours
  gallery.png, .pdf      queries and their top images, green/red by relevance, one row
                         per run (gallery_{dataset} when the runs span several datasets)
  results.md             our mAP beside the paper's HyP2 mAP, figures, notes
  index.html             all of it on one page that opens offline, with each run's
                         config and history

A run lacking a figure's data is left out of it with a note (printed and in results.md).
The gallery needs the codes file --test --plots (or --export_codes) writes and the
dataset's images (under --data_root, default: the folder the run used).

examples:
  python -m hyp2.report result/flickr_alexnet_*.json --out report/flickr
  python -m hyp2.report result/*.json --out report --no-tsne
  python -m hyp2.report result/demo_*.json --out report/demo --query demo/02003

guide: docs/report.md
"""


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m hyp2.report",
        description="Draw the HyP2 paper's kinds of figure for training runs, a gallery of\n"
                    "what they retrieve, and write results.md and index.html: their mAP\n"
                    "beside the mAP the paper reports. Reads the runs' JSON files\n"
                    "(result/{run}.json), the codes files they name and, for the gallery,\n"
                    "the dataset's images; no model or GPU needed.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN.json",
                        help="run results written by training or --test (result/{run}.json)")
    parser.add_argument("--out", metavar="DIR", default="report",
                        help="folder for the figures, results.md and index.html, created if "
                             "needed (default: report)")
    parser.add_argument("--no-tsne", dest="tsne", action="store_false",
                        help="skip the t-SNE figures (the slow part: up to ~10 s per run)")
    parser.add_argument("--tsne-queries", type=_count(0), default=3, metavar="N",
                        help="queries drawn in each t-SNE, with lines to their nearest "
                             "neighbours (default: 3)")
    parser.add_argument("--tsne-neighbours", type=_count(1), default=10, metavar="K",
                        help="nearest database codes by Hamming distance linked to each query "
                             "(default: 10)")
    parser.add_argument("--no-gallery", dest="gallery", action="store_false",
                        help="skip the retrieval gallery")
    parser.add_argument("--gallery-queries", type=_count(0), default=GALLERY_QUERIES, metavar="N",
                        help=f"queries drawn at random (--seed) for the gallery (default: {GALLERY_QUERIES})")
    parser.add_argument("--gallery-top", type=_count(1), default=GALLERY_TOP, metavar="K",
                        help=f"database images shown per query (default: {GALLERY_TOP})")
    parser.add_argument("--query", dest="queries", action="append", default=[], metavar="ID",
                        help="also show this query id in the gallery (repeatable), e.g. demo/02003")
    parser.add_argument("--data_root", metavar="DIR", default=None,
                        help="where the dataset's images are (default: the folder each run used)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the t-SNE and of the gallery's queries (default: 0)")
    parser.add_argument("--no-pdf", dest="pdf", action="store_false",
                        help="write PNG only (default: PNG and PDF of every figure)")
    add_plugin_flag(parser)  # a plugin dataset's images for the gallery
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0 done, 2 bad input)."""

    def body():
        load_plugins(argv)
        args = _parser().parse_args(argv)
        gallery = GalleryOptions(args.gallery, args.gallery_queries, args.gallery_top, tuple(args.queries),
                                 args.data_root)
        report = build_report(args.runs, args.out, tsne=args.tsne, num_queries=args.tsne_queries,
                              neighbours=args.tsne_neighbours, seed=args.seed,
                              formats=FORMATS if args.pdf else ("png",), gallery=gallery)
        for note in report.notes:
            log.info(f"note: {note}")
        log.info(f"wrote {len(report.files)} files to {args.out}: "
              + ", ".join(f.name for f in report.files))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
