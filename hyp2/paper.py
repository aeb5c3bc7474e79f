"""The HyP² mAP that the paper reports, as data, so a report can set our numbers beside them.

Source: Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval",
ACM MM 2022 (arXiv:2208.06866), §4 (experiments), the "HyP² (ours)" rows of its two mAP tables:

* "mAP performance by Hamming Ranking for different hash bits (K ∈ {12, 24, 36, 48}) in
  Flickr-25k (mAP@1,000) and NUS-WIDE (mAP@5,000) with AlexNet";
* "mAP performance by Hamming Ranking for different hash bits (K ∈ {16, 32, 48, 64}) in
  VOC-2007 (mAP@5,011) and VOC-2012 (mAP@5,717) with GoogLeNet".

The paper's figures are not tabulated here (they are curves, not numbers): its Top-N precision
curves (Flickr-25k and NUS-WIDE, N = 100 … 1,000, precision 0 … 1), its convergence figure
(mAP against training time in seconds, Flickr-25k and NUS-WIDE, 48 bits, AlexNet) and its t-SNE
of VOC-2007 codes at 48 bits, where red circles mark retrieved samples irrelevant to the query.
``hyp2.plots`` draws the same kinds of figure for our runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

_TABLE_FLICKR_NUS = ("Xu et al., ACM MM 2022, §4, mAP table for Flickr-25k (mAP@1,000) and "
                     "NUS-WIDE (mAP@5,000) with AlexNet, row HyP²")
_TABLE_VOC = ("Xu et al., ACM MM 2022, §4, mAP table for VOC-2007 (mAP@5,011) and "
              "VOC-2012 (mAP@5,717) with GoogLeNet, row HyP²")


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


def _result(dataset: str, title: str, backbone: str, topk: int, maps: dict[int, float],
            source: str) -> PaperResult:
    # read-only mapping: these are the paper's numbers, no caller may edit them
    return PaperResult(dataset, title, backbone, topk, MappingProxyType(dict(maps)), source)


#: The paper's HyP² results, by our dataset name, in the paper's order.
PAPER_HYP2: Mapping[str, PaperResult] = MappingProxyType({
    "flickr": _result("flickr", "Flickr-25k", "alexnet", 1000,
                      {12: 0.845, 24: 0.881, 36: 0.893, 48: 0.901}, _TABLE_FLICKR_NUS),
    "nuswide": _result("nuswide", "NUS-WIDE", "alexnet", 5000,
                       {12: 0.794, 24: 0.822, 36: 0.831, 48: 0.843}, _TABLE_FLICKR_NUS),
    "voc2007": _result("voc2007", "VOC-2007", "googlenet", 5011,
                       {16: 0.862, 32: 0.917, 48: 0.932, 64: 0.937}, _TABLE_VOC),
    "voc2012": _result("voc2012", "VOC-2012", "googlenet", 5717,
                       {16: 0.841, 32: 0.903, 48: 0.917, 64: 0.925}, _TABLE_VOC),
})



def paper_result(dataset: str) -> PaperResult | None:
    """The paper's HyP² results for ``dataset`` (our name), or None when the paper has none."""
    return PAPER_HYP2.get(dataset)


def paper_map(dataset: str, hash_bit: int) -> float | None:
    """The paper's HyP² mAP for ``dataset`` at ``hash_bit`` bits, or None when not reported."""
    result = PAPER_HYP2.get(dataset)
    return None if result is None else result.maps.get(hash_bit)
