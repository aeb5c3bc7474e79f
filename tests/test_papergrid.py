"""The paper's tables with our runs set in, cell by cell (hyp2.papergrid), and the report's section."""
from __future__ import annotations

import pytest
from browser import WIDTH, Browser, chromium_path, is_blank
from test_report import make_run, write

from hyp2 import paper, papergrid, report
from hyp2.runfile import load_run


def our_map(run):
    return report._our_map(run)


def grid_of(tmp_path, *runs, datasets=()):
    loaded = [load_run(write(tmp_path, r)) for r in runs]
    return papergrid.paper_grid(loaded, our_map, datasets)


def md_table(text: str, title: str) -> dict[str, dict[str, str]]:
    """The table under ``### title``, as {method cell: {column: cell}}."""
    lines = text.splitlines()
    rows = []
    for line in lines[lines.index(f"### {title}") + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    header = rows[0]
    return {r[0]: dict(zip(header, r)) for r in rows[2:]}


def test_cells_hold_the_paper_ours_and_the_difference(tmp_path):
    grid = grid_of(tmp_path, make_run("flickr", "alexnet", 12, test_map=0.85),
                   make_run("flickr", "alexnet", 48, "dhn", best_map=0.86),
                   make_run("flickr", "resnet", 24, test_map=0.99),  # not the paper's backbone: no cell
                   make_run("demo", "small", 16, test_map=0.9))
    (table,) = grid  # flickr only: the paper has no demo
    assert table.dataset == "flickr" and table.bits == (12, 24, 36, 48)
    assert [r.row.method for r in table.rows] == [r.method for r in paper.paper_rows("flickr")]
    hyp2 = next(r for r in table.rows if r.row.method == "HyP2")
    cell = hyp2.cells[0]
    assert (cell.paper, cell.ours, cell.run) == (0.845, 0.85, "flickr_alexnet_12")
    assert cell.diff == pytest.approx(0.85 - 0.845)
    assert hyp2.cells[1].ours is None  # the resnet run is not the paper's protocol
    dhn = next(r for r in table.rows if r.row.method == "DHN")
    assert dhn.cells[3].ours == 0.86 and "best mAP during training" in dhn.cells[3].note
    dlbhc = next(r for r in table.rows if r.row.method == "DLBHC")
    assert not dlbhc.rerunnable and all(c.ours is None for c in dlbhc.cells)


def test_text_of_cells_and_rows():
    assert papergrid.cell_text(papergrid.Cell(0.845, 0.8512, "r"), True) == "paper 0.845 · ours 0.8512 (+0.0062)"
    assert papergrid.cell_text(papergrid.Cell(0.845, 0.8, "r", "a note"), True) == \
        "paper 0.845 · ours 0.8000 (-0.0450) (see note)"
    assert papergrid.cell_text(papergrid.Cell(0.845), True) == "paper 0.845 · not run yet"
    assert papergrid.cell_text(papergrid.Cell(0.845, None, "r"), True) == "paper 0.845 · r: no mAP yet"
    assert papergrid.cell_text(papergrid.Cell(0.724), False) == "0.724"


def test_planned_datasets_show_without_runs_and_topk_differences_are_noted(tmp_path):
    grid = grid_of(tmp_path, make_run("nuswide", "alexnet", 12, test_map=0.8, topk=1000),
                   make_run("nuswide", "alexnet", 12, test_map=0.7, topk=5000) | {"run": "other"},
                   datasets=["voc2012", "demo"])
    assert [t.dataset for t in grid] == ["nuswide", "voc2012"]
    cell = next(r for r in grid[0].rows if r.row.loss == "hyp2").cells[0]
    assert "ours is mAP@1000" in cell.note and "2 runs fit this cell" in cell.note
    assert all(c.ours is None for r in grid[1].rows for c in r.cells)


def test_the_report_sets_every_row_beside_ours(tmp_path):
    paths = [write(tmp_path, make_run("voc2007", "googlenet", 32, "orthohash", test_map=0.9, topk=5011)),
             write(tmp_path, make_run("voc2007", "googlenet", 16, test_map=0.85, topk=5011))]
    out = tmp_path / "out"
    report.build_report(paths, out, tsne=False, formats=("png",), paper_datasets=["flickr"])
    text = (out / "results.md").read_text(encoding="utf-8")
    assert "## The paper's tables beside ours" in text
    voc = md_table(text, "VOC-2007 (GoogLeNet, mAP@5,011)")
    assert list(voc) == ["DHN †", "NINH * (not re-runnable here)", "DSH * (not re-runnable here)",
                         "IAH * (not re-runnable here)", "OLAH * (not re-runnable here)", "IDHN †", "Proxy Anchor †",
                         "OrthoHash †", "HyP² (ours)"]
    assert voc["OrthoHash †"]["32 bits"] == "paper 0.876 · ours 0.9000 (+0.0240)"
    assert voc["OrthoHash †"]["16 bits"] == "paper 0.831 · not run yet"
    assert voc["HyP² (ours)"]["16 bits"] == "paper 0.862 · ours 0.8500 (-0.0120)"
    assert voc["NINH * (not re-runnable here)"]["64 bits"] == "0.851"
    assert voc["DHN †"]["Our --loss"] == "dhn" and voc["IAH * (not re-runnable here)"]["Our --loss"] == "—"
    flickr = md_table(text, "Flickr-25k (AlexNet, mAP@1,000)")
    assert flickr["DCILH †"]["48 bits"] == "paper 0.888 · not run yet"
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "id=\"paper-grid\"" in page and "paper 0.876 · ours 0.9000 (+0.0240)" in page
    assert "href=\"#paper-grid\"" in page


def test_no_section_without_a_dataset_of_the_paper(tmp_path):
    out = tmp_path / "out"
    report.build_report([write(tmp_path, make_run("demo", "small", 16, test_map=0.9))], out, tsne=False,
                        formats=("png",))
    assert "beside ours" not in (out / "results.md").read_text(encoding="utf-8")
    assert "paper-grid" not in (out / "index.html").read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(chromium_path() is None,
                    reason="chromium is not installed (apt-get install -y chromium; .ci/run does)")
def test_the_grid_in_a_real_browser_fits_a_laptop(tmp_path):
    paths = [write(tmp_path, make_run(d, b, k, test_map=0.8, topk=t)) for d, b, k, t in
             (("flickr", "alexnet", 12, 1000), ("voc2012", "googlenet", 64, 5717))]
    out = tmp_path / "out"
    report.build_report(paths, out, tsne=False, formats=("png",), paper_datasets=["nuswide", "voc2007"])
    with Browser() as browser:
        page = browser.open((out / "index.html").as_uri())
        assert page.problems == []
        assert browser.evaluate("document.querySelectorAll('#paper-grid ~ h3').length") >= 4
        assert browser.evaluate("document.documentElement.scrollWidth") <= WIDTH  # wide tables scroll in a box
        assert not is_blank(browser.screenshot(full_page=False))
