"""The paper's two mAP tables, as data, so a report can set our numbers beside them.

Source: Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval",
ACM MM 2022 (arXiv:2208.06866), §4 (experiments), every row of its two mAP tables:

* "mAP performance by Hamming Ranking for different hash bits (K ∈ {12, 24, 36, 48}) in
  Flickr-25k (mAP@1,000) and NUS-WIDE (mAP@5,000) with AlexNet";
* "mAP performance by Hamming Ranking for different hash bits (K ∈ {16, 32, 48, 64}) in
  VOC-2007 (mAP@5,011) and VOC-2012 (mAP@5,717) with GoogLeNet".

The numbers live in ``hyp2/paper_tables.csv`` (its header says where they were transcribed from);
each row keeps the paper's own mark: ``*`` reported by the method's own paper, ``†`` re-run by the
HyP² authors with public code, ``ours`` HyP² itself. :data:`METHOD_LOSS` maps the paper's method
names to our ``--loss`` names where this project implements the method.

The paper's figures are not tabulated here (they are curves, not numbers): its Top-N precision
curves (Flickr-25k and NUS-WIDE, N = 100 … 1,000, precision 0 … 1), its convergence figure
(mAP against training time in seconds, Flickr-25k and NUS-WIDE, 48 bits, AlexNet) and its t-SNE
of VOC-2007 codes at 48 bits, where red circles mark retrieved samples irrelevant to the query.
``hyp2.plots`` draws the same kinds of figure for our runs.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

TABLES_FILE = Path(__file__).with_name("paper_tables.csv")
_HEADER = ["dataset", "method", "mark", "venue", "bits", "map"]
_AVG = "avg_delta"

#: The paper's marks and what they mean.
MARKS: Mapping[str, str] = MappingProxyType({
    "*": "reported by the method's own paper under the same settings",
    "†": "re-run by the HyP² authors with public code",
    "ours": "the paper's own method, HyP²",
})

#: The paper's method names -> our ``--loss`` names (methods absent here are not implemented).
METHOD_LOSS: Mapping[str, str] = MappingProxyType({
    "HyP2": "hyp2", "DHN": "dhn", "HashNet": "hashnet", "IDHN": "idhn", "Proxy Anchor": "proxy_anchor",
    "CSQ": "csq", "OrthoHash": "orthohash", "DCILH": "dcilh",
})


@dataclass(frozen=True)
class _Dataset:
    title: str
    backbone: str
    topk: int
    bits: tuple[int, ...]
    table: str


_FLICKR_NUS = ("Xu et al., ACM MM 2022, §4, mAP table for Flickr-25k (mAP@1,000) and "
               "NUS-WIDE (mAP@5,000) with AlexNet")
_VOC = ("Xu et al., ACM MM 2022, §4, mAP table for VOC-2007 (mAP@5,011) and "
        "VOC-2012 (mAP@5,717) with GoogLeNet")
#: Our dataset names, in the paper's order, with the paper's protocol for each.
DATASETS: Mapping[str, _Dataset] = MappingProxyType({
    "flickr": _Dataset("Flickr-25k", "alexnet", 1000, (12, 24, 36, 48), _FLICKR_NUS),
    "nuswide": _Dataset("NUS-WIDE", "alexnet", 5000, (12, 24, 36, 48), _FLICKR_NUS),
    "voc2007": _Dataset("VOC-2007", "googlenet", 5011, (16, 32, 48, 64), _VOC),
    "voc2012": _Dataset("VOC-2012", "googlenet", 5717, (16, 32, 48, 64), _VOC),
})


@dataclass(frozen=True)
class PaperRow:
    """One method's row of one dataset in the paper's tables.

    Attributes:
        dataset: our dataset name (``--dataset``).
        method: the method as the paper names it (``"Proxy Anchor"``, ``"HyP2"``).
        mark: ``*``, ``†`` or ``ours`` (see :data:`MARKS`).
        venue: where the method was published, as the paper writes it (``"CVPR'20"``).
        maps: hash bits -> the paper's mAP (fractions in [0, 1], three decimals).
        avg_delta: the paper's mean gain over the table's first row (None for that row).
    """

    dataset: str
    method: str
    mark: str
    venue: str
    maps: Mapping[int, float]
    avg_delta: float | None = None

    @property
    def title(self) -> str:
        """The method as printed (``HyP²``)."""
        return "HyP²" if self.method == "HyP2" else self.method

    @property
    def loss(self) -> str | None:
        """Our ``--loss`` name for the method, or None when this project does not implement it."""
        return METHOD_LOSS.get(self.method)

    @property
    def bits(self) -> tuple[int, ...]:
        return tuple(sorted(self.maps))


@dataclass(frozen=True)
class PaperResult:
    """The paper's HyP² mAP on one dataset, under its protocol.

    Attributes:
        dataset: our dataset name (``--dataset``), e.g. ``"flickr"``.
        title: the dataset as the paper names it, e.g. ``"Flickr-25k"``.
        backbone: our name of the backbone the paper used (``--backbone``).
        topk: K of the paper's mAP@K for this dataset.
        maps: hash bits -> reported mAP (fractions in [0, 1], as printed: three decimals).
        source: where in the paper the numbers are.
    """

    dataset: str
    title: str
    backbone: str
    topk: int
    maps: Mapping[int, float] = field(default_factory=dict)
    source: str = ""

    @property
    def bits(self) -> tuple[int, ...]:
        """The hash-bit lengths the paper reports for this dataset, ascending."""
        return tuple(sorted(self.maps))


def _number(text: str, where: str, what: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} {text!r} is not a number") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{where}: {what} {value} is outside [{low:g}, {high:g}]")
    return value


def _cell(entry: dict, values: dict, where: str) -> None:
    """Check one CSV line and add it to ``entry`` (one method on one dataset)."""
    key = values["bits"]
    if key == _AVG:
        if entry.get("avg_seen"):
            raise ValueError(f"{where}: a second avg_delta for {values['method']} on {values['dataset']}")
        entry["avg_seen"] = True
        text = values["map"]
        entry["avg_delta"] = None if text == "" else _number(text, where, "avg_delta", -1, 1)
        return
    if not key.isdigit() or int(key) not in DATASETS[values["dataset"]].bits:
        raise ValueError(f"{where}: bits {key!r} is not one of the table's "
                         f"{'/'.join(map(str, DATASETS[values['dataset']].bits))} (or avg_delta)")
    if int(key) in entry["maps"]:
        raise ValueError(f"{where}: {values['method']} on {values['dataset']} at {key} bits appears twice")
    entry["maps"][int(key)] = _number(values["map"], where, "mAP", 0, 1)


def read_tables(path: str | Path = TABLES_FILE) -> tuple[PaperRow, ...]:
    """The rows of the paper's tables file, in its order (a method's first line places it).

    Lines starting with ``#`` are comments. Raises ``ValueError`` naming the file and line on a
    wrong header, an unknown dataset or mark, a bits column outside the table's, a repeated cell,
    an mAP outside [0, 1], or a method missing some of its table's bit lengths.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    if not numbered:
        raise ValueError(f"{path}: no table in the file")
    reader = csv.reader([line for _, line in numbered])
    header = next(reader)
    if header != _HEADER:
        raise ValueError(f"{path}:{numbered[0][0]}: the header must be {','.join(_HEADER)}")
    entries: dict[tuple[str, str], dict] = {}
    for (number, _), cells in zip(numbered[1:], reader):
        where = f"{path}:{number}"
        if len(cells) != len(_HEADER):
            raise ValueError(f"{where}: {len(cells)} columns, expected {len(_HEADER)}")
        values = dict(zip(_HEADER, (c.strip() for c in cells)))
        if values["dataset"] not in DATASETS:
            raise ValueError(f"{where}: unknown dataset {values['dataset']!r} (one of {', '.join(DATASETS)})")
        if values["mark"] not in MARKS:
            raise ValueError(f"{where}: unknown mark {values['mark']!r} (one of {', '.join(MARKS)})")
        entry = entries.setdefault((values["dataset"], values["method"]),
                                   {"mark": values["mark"], "venue": values["venue"], "maps": {}})
        if (entry["mark"], entry["venue"]) != (values["mark"], values["venue"]):
            raise ValueError(f"{where}: {values['method']} on {values['dataset']} changes its mark or venue")
        _cell(entry, values, where)
    rows = []
    for (dataset, method), entry in entries.items():
        missing = sorted(set(DATASETS[dataset].bits) - set(entry["maps"]))
        if missing:
            raise ValueError(f"{path}: {method} on {dataset} lacks {'/'.join(map(str, missing))} bits")
        rows.append(PaperRow(dataset, method, entry["mark"], entry["venue"],
                             MappingProxyType(dict(sorted(entry["maps"].items()))), entry.get("avg_delta")))
    return tuple(rows)


#: Every row of both tables, in the paper's order.
PAPER_ROWS: tuple[PaperRow, ...] = read_tables()


def paper_rows(dataset: str) -> tuple[PaperRow, ...]:
    """The paper's rows for ``dataset`` (our name), in the paper's order; empty when it has none."""
    return tuple(r for r in PAPER_ROWS if r.dataset == dataset)


def paper_row(dataset: str, loss: str) -> PaperRow | None:
    """The paper's row of the method our ``--loss`` ``loss`` implements, on ``dataset``, or None."""
    return next((r for r in PAPER_ROWS if r.dataset == dataset and r.loss == loss), None)


def _hyp2(dataset: str) -> PaperResult:
    info, row = DATASETS[dataset], paper_row(dataset, "hyp2")
    # read-only mapping: these are the paper's numbers, no caller may edit them
    return PaperResult(dataset, info.title, info.backbone, info.topk, row.maps, f"{info.table}, row HyP²")


#: The paper's HyP² results, by our dataset name, in the paper's order.
PAPER_HYP2: Mapping[str, PaperResult] = MappingProxyType({name: _hyp2(name) for name in DATASETS})


def paper_result(dataset: str) -> PaperResult | None:
    """The paper's HyP² results for ``dataset`` (our name), or None when the paper has none."""
    return PAPER_HYP2.get(dataset)


def paper_map(dataset: str, hash_bit: int) -> float | None:
    """The paper's HyP² mAP for ``dataset`` at ``hash_bit`` bits, or None when not reported."""
    result = PAPER_HYP2.get(dataset)
    return None if result is None else result.maps.get(hash_bit)
