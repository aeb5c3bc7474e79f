"""The paper's two mAP tables with our runs set in, cell by cell.

For each dataset of the paper's tables that the report covers, every method row of the paper
(:mod:`hyp2.paper`: Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image
Retrieval", ACM MM 2022, §4) with, at each bit length, the paper's mAP, ours and ours − paper. Our
number for a cell is the run of that dataset, bit length and method (our ``--loss`` of the paper's
method) with the paper's backbone for the dataset; a cell without such a run says "not run yet".
Rows of methods this project does not implement (most of the paper's ``*`` rows, whose numbers the
paper copied from the methods' own papers) are marked "not re-runnable here".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .paper import DATASETS, MARKS, PaperRow, paper_rows
from .runfile import backbone_title

NOT_RUN = "not run yet"
NOT_HERE = "not re-runnable here"
#: our number of a run and a note on it (hyp2.report's rule: test mAP, else the best in training)
OurMap = Callable[[dict], "tuple[float | None, str | None]"]


@dataclass(frozen=True)
class Cell:
    """One (method, bits) cell: the paper's mAP, ours (None: no run), their difference, the run."""

    paper: float
    ours: float | None = None
    run: str | None = None
    note: str | None = None

    @property
    def diff(self) -> float | None:
        return None if self.ours is None else self.ours - self.paper


@dataclass(frozen=True)
class GridRow:
    row: PaperRow
    cells: tuple[Cell, ...]

    @property
    def rerunnable(self) -> bool:
        """Whether this project implements the method (our ``--loss`` for it exists, or is planned)."""
        return self.row.loss is not None


@dataclass(frozen=True)
class GridTable:
    """One dataset of the paper's tables: its protocol, bit lengths and every method row."""

    dataset: str
    bits: tuple[int, ...]
    rows: tuple[GridRow, ...]

    @property
    def title(self) -> str:
        info = DATASETS[self.dataset]
        return f"{info.title} ({backbone_title(info.backbone)}, mAP@{info.topk:,})"


def _stem(run: dict) -> str:
    return Path(str(run.get("_path", run.get("run", "run")))).name.removesuffix(".json")


def paper_grid(runs: Sequence[dict], our_map: OurMap, datasets: Sequence[str] = ()) -> list[GridTable]:
    """The paper's tables for the datasets of ``runs`` plus ``datasets`` (ours that the paper has,
    in the paper's order), with each run set in its cell. ``runs`` are run JSONs as
    :func:`hyp2.runfile.load_run` returns them."""
    wanted = {r.get("dataset") for r in runs} | set(datasets)
    tables = []
    for dataset, info in DATASETS.items():
        if dataset not in wanted:
            continue
        rows = []
        for row in paper_rows(dataset):
            cells = []
            for bits in info.bits:
                match = [r for r in runs if (r.get("dataset"), r.get("hash_bit"), r.get("loss", "hyp2"),
                                             r.get("backbone")) == (dataset, bits, row.loss, info.backbone)]
                cells.append(_cell(row.maps[bits], match, our_map, info.topk) if row.loss else Cell(row.maps[bits]))
            rows.append(GridRow(row, tuple(cells)))
        tables.append(GridTable(dataset, info.bits, tuple(rows)))
    return tables


def _cell(paper: float, match: Sequence[dict], our_map: OurMap, topk: int) -> Cell:
    if not match:
        return Cell(paper)
    run = match[0]
    ours, note = our_map(run)
    notes = [note] if note else []
    k = run.get("topk")
    if k is not None and k != topk:
        notes.append(f"ours is mAP@{k}")
    if len(match) > 1:
        notes.append(f"{len(match)} runs fit this cell; the first, {_stem(run)}, is shown")
    return Cell(paper, ours, _stem(run), "; ".join(notes) or None)


def method_label(row: GridRow) -> str:
    """``DHN †``; ``DLBHC * (not re-runnable here)``; ``HyP² (ours)``."""
    mark = "(ours)" if row.row.mark == "ours" else row.row.mark
    return f"{row.row.title} {mark}" + ("" if row.rerunnable else f" ({NOT_HERE})")


def cell_text(cell: Cell, rerunnable: bool) -> str:
    """``paper 0.845 · ours 0.8512 (+0.0062)``, ``paper 0.845 · not run yet`` or ``0.724`` (a row
    this project cannot run)."""
    if not rerunnable:
        return f"{cell.paper:.3f}"
    if cell.ours is None:
        return f"paper {cell.paper:.3f} · {NOT_RUN}" if cell.run is None else \
            f"paper {cell.paper:.3f} · {cell.run}: no mAP yet"
    text = f"paper {cell.paper:.3f} · ours {cell.ours:.4f} ({cell.diff:+.4f})"
    return text + (" (see note)" if cell.note else "")


def grid_cells(table: GridTable) -> tuple[list[str], list[list[str]], list[str]]:
    """``(headers, rows, notes)`` of one table, as results.md and index.html show it."""
    headers = ["Method", "Venue", "Our --loss"] + [f"{b} bits" for b in table.bits]
    rows, notes = [], []
    for row in table.rows:
        rows.append([method_label(row), row.row.venue, row.row.loss or "—"]
                    + [cell_text(c, row.rerunnable) for c in row.cells])
        notes += [f"{row.row.title} at {b} bits ({c.run}): {c.note}"
                  for b, c in zip(table.bits, row.cells) if c.note and c.ours is not None]
    return headers, rows, notes


LEGEND = ("The paper's marks: " + "; ".join(f"{'(ours)' if m == 'ours' else m} = {MARKS[m]}" for m in MARKS)
          + ". Each cell: the paper's mAP, ours and ours − paper (positive where we do better). Ours: the run of "
            "that method (its --loss), dataset and bit length with the paper's backbone; notes on a cell follow "
            "its table.")


def grid_markdown(tables: Sequence[GridTable]) -> list[str]:
    """The grid as results.md lines (nothing when no dataset of the paper is covered)."""
    if not tables:
        return []
    lines = ["## The paper's tables beside ours", "", LEGEND, ""]
    for table in tables:
        headers, rows, notes = grid_cells(table)
        lines += [f"### {table.title}", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join(["---"] * 3 + ["---:"] * len(table.bits)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    return lines


def grid_html(tables: Sequence[GridTable]) -> str:
    """The grid as an index.html section (empty when no dataset of the paper is covered)."""
    from .htmlpage import esc, table as html_table

    if not tables:
        return ""
    parts = ["<h2 id=\"paper-grid\">The paper's tables beside ours</h2>", f"<p>{esc(LEGEND)}</p>"]
    for one in tables:
        headers, rows, notes = grid_cells(one)
        parts += [f"<h3>{esc(one.title)}</h3>", html_table(headers, rows, numeric=range(3, 3 + len(one.bits)))]
        if notes:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)
