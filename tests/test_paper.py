"""The paper's two mAP tables as shipped (hyp2/paper_tables.csv, read by hyp2.paper): every row, the
paper's marks, our loss names, the HyP² API the report uses, and one-line errors on a bad file."""
from __future__ import annotations

import pytest

from hyp2 import paper
from hyp2.losses import LOSSES

FLICKR_NUS = ["DLBHC", "DQN", "DHN", "HashNet", "DMSSPH", "IDHN", "Proxy Anchor", "CSQ", "OrthoHash", "DCILH",
              "HyP2"]
VOC = ["DHN", "NINH", "DSH", "IAH", "OLAH", "IDHN", "Proxy Anchor", "OrthoHash", "HyP2"]
RERUN = {"DHN", "IDHN", "Proxy Anchor", "CSQ", "OrthoHash", "DCILH"}  # the paper's † rows
RERUN_LOSSES = {"hyp2", "dhn", "idhn", "proxy_anchor", "csq", "orthohash", "dcilh"}


def test_every_method_row_in_the_papers_order():
    for dataset in ("flickr", "nuswide"):
        assert [r.method for r in paper.paper_rows(dataset)] == FLICKR_NUS
    for dataset in ("voc2007", "voc2012"):
        assert [r.method for r in paper.paper_rows(dataset)] == VOC
    assert len(paper.PAPER_ROWS) == 2 * len(FLICKR_NUS) + 2 * len(VOC)
    assert paper.paper_rows("demo") == ()


def test_marks_venues_and_bits():
    for row in paper.PAPER_ROWS:
        expected = "ours" if row.method == "HyP2" else "†" if row.method in RERUN else "*"
        assert row.mark == expected, row
        assert row.bits == paper.DATASETS[row.dataset].bits
        assert all(0 < v < 1 for v in row.maps.values())
    assert paper.paper_row("flickr", "proxy_anchor").venue == "CVPR'20"
    assert paper.paper_row("voc2012", "orthohash").venue == "NeurIPS'21"
    assert paper.paper_row("voc2007", "csq") is None and paper.paper_row("voc2007", "dcilh") is None
    assert paper.paper_row("nuswide", "dcilh").mark == "†"


def test_cells_spot_checked_against_the_papers_images():
    # a few cells from each table, read off the paper's table images by hand
    cells = {("flickr", "DLBHC", 12): 0.724, ("flickr", "OrthoHash", 48): 0.891, ("nuswide", "DCILH", 48): 0.804,
             ("nuswide", "HashNet", 24): 0.694, ("voc2007", "OLAH", 16): 0.849, ("voc2007", "DHN", 64): 0.728,
             ("voc2012", "IAH", 48): 0.862, ("voc2012", "HyP2", 64): 0.925}
    for (dataset, method, bits), value in cells.items():
        row = next(r for r in paper.paper_rows(dataset) if r.method == method)
        assert row.maps[bits] == value


def test_each_avg_delta_is_the_mean_gain_over_the_first_row():
    # the paper prints its own summary column; recomputing it from the cells checks the transcription
    for dataset in paper.DATASETS:
        first, *rows = paper.paper_rows(dataset)
        assert first.avg_delta is None
        for row in rows:
            gains = [row.maps[b] - first.maps[b] for b in row.bits]
            assert abs(sum(gains) / len(gains) - row.avg_delta) <= 0.0005 + 1e-9, (dataset, row.method)


def test_method_names_map_to_our_losses():
    ours = set(LOSSES.names())
    assert {r.loss for r in paper.PAPER_ROWS if r.mark != "*"} == RERUN_LOSSES
    for loss in paper.METHOD_LOSS.values():
        assert loss in ours or loss == "dcilh"  # DCILH's loss is named before it lands
    assert paper.paper_row("flickr", "hashnet").mark == "*"  # implemented here, but the paper copied its number
    assert {r.title for r in paper.PAPER_ROWS if r.loss is None} == {"DLBHC", "DQN", "DMSSPH", "NINH", "DSH", "IAH",
                                                                      "OLAH"}
    assert paper.paper_row("voc2007", "hyp2").title == "HyP²"



def test_hyp2_api_comes_from_the_table():
    for dataset, result in paper.PAPER_HYP2.items():
        assert dict(result.maps) == dict(paper.paper_row(dataset, "hyp2").maps)
        assert result.topk == paper.DATASETS[dataset].topk and "row HyP²" in result.source
    assert paper.paper_map("nuswide", 36) == 0.831
    with pytest.raises(TypeError):
        paper.paper_row("flickr", "dhn").maps[12] = 1.0


GOOD = "dataset,method,mark,venue,bits,map\n" + "".join(
    f"voc2007,DHN,†,AAAI'16,{b},0.7\n" for b in (16, 32, 48, 64))


@pytest.mark.parametrize("text, message", [
    ("dataset,method,bits,map\n", "header"),
    (GOOD.replace("voc2007,DHN,†,AAAI'16,16", "coco,DHN,†,AAAI'16,16"), "unknown dataset 'coco'"),
    (GOOD.replace("†,AAAI'16,16", "‡,AAAI'16,16"), "unknown mark"),
    (GOOD.replace(",16,0.7", ",12,0.7"), "bits '12' is not one of the table's 16/32/48/64"),
    (GOOD + "voc2007,DHN,†,AAAI'16,64,0.7\n", "at 64 bits appears twice"),
    (GOOD.replace(",32,0.7", ",32,1.7"), "mAP 1.7 is outside"),
    (GOOD.replace(",32,0.7", ",32,high"), "is not a number"),
    (GOOD.replace("voc2007,DHN,†,AAAI'16,64,0.7\n", ""), "lacks 64 bits"),
    (GOOD.replace("†,AAAI'16,48", "*,AAAI'16,48"), "changes its mark or venue"),
    (GOOD + "voc2007,DHN,†,AAAI'16,avg_delta,\nvoc2007,DHN,†,AAAI'16,avg_delta,0.1\n", "a second avg_delta"),
    ("# only a comment\n", "no table"),
])
def test_a_bad_tables_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "tables.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        paper.read_tables(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_good_file(tmp_path):
    path = tmp_path / "tables.csv"
    path.write_text("# comment\n" + GOOD + "voc2007,DHN,†,AAAI'16,avg_delta,\n", encoding="utf-8")
    (row,) = paper.read_tables(path)
    assert (row.dataset, row.method, row.mark, row.avg_delta, dict(row.maps)) == (
        "voc2007", "DHN", "†", None, {16: 0.7, 32: 0.7, 48: 0.7, 64: 0.7})
