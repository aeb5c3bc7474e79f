"""Tests of hyp2.report (results.md beside the paper, figures, CLI) and hyp2.paper (the data).

Run JSONs are generated here (docs/run-json.md); results.md is checked by parsing its table.
"""
from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from demo_run import shared_demo_run
from PIL import Image

from hyp2 import gallery, paper, plots, report
from hyp2.codes import load_codes
from hyp2.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DASH = "—"


def make_run(dataset, backbone, bits, loss="hyp2", *, test_map=None, best_map=None, topk=1000,
             curves=True, sample=None) -> dict:
    """A run JSON object; ``test_map`` None means no --test section."""
    name = f"{dataset}_{backbone}_{bits}" + ("" if loss == "hyp2" else f"_{loss}")
    run = {"schema": 1, "run": name, "dataset": dataset, "backbone": backbone, "hash_bit": bits,
           "loss": loss, "classes": ["a", "b", "c"], "num_classes": 3, "topk": topk,
           "config": {}, "history": [], "best": None}
    if best_map is not None:
        run["history"] = [{"epoch": 5, "map": best_map - 0.1, "train_seconds": 3.0},
                          {"epoch": 10, "map": best_map, "train_seconds": 6.5}]
        run["best"] = {"epoch": 10, "map": best_map}
    if test_map is not None:
        run["test"] = {"map": test_map, "topk": topk, "precision_radius2": 0.5}
        if curves:
            run["test"]["precision_at_n"] = {"n": [100, 200, 300], "precision": [0.9, 0.8, 0.7]}
            run["test"]["pr_curve"] = {"radius": [0, 1, 2], "precision": [1.0, 0.9, 0.5],
                                       "recall": [0.1, 0.4, 1.0]}
        if sample is not None:
            run["test"]["codes_sample"] = sample
    return run


def write(folder: Path, run: dict) -> Path:
    path = folder / f"{run['run']}.json"
    path.write_text(json.dumps(run), encoding="utf-8")
    return path


def tiny_sample(folder: Path, name: str, bits: int = 12) -> str:
    rng = np.random.default_rng(0)
    labels = np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 40)]
    protos = rng.choice([-1, 1], (3, bits))
    flips = np.where(rng.random((40, bits)) < 0.1, -1, 1)
    codes = (protos[labels.argmax(1)] * flips).astype(np.int8)
    np.savez(folder / name, db_codes=codes[:36], db_labels=labels[:36],
             query_codes=codes[36:], query_labels=labels[36:])
    return name


def parse_table(markdown: str, heading: str) -> list[dict]:
    """The rows of the first table after ``heading``, as {column: cell} dicts."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    table = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    header, rows = table[0], table[2:]
    assert all(len(r) == len(header) for r in rows)
    return [dict(zip(header, r)) for r in rows]


def section(markdown: str, heading: str) -> list[str]:
    lines = markdown.splitlines()
    out = []
    for line in lines[lines.index(heading) + 1:]:
        if line.startswith("## "):
            break
        out.append(line)
    return out


# ---------------------------------------------------------------------------- paper data


def test_paper_numbers_are_the_reported_ones():
    expected = {"flickr": ("alexnet", 1000, {12: 0.845, 24: 0.881, 36: 0.893, 48: 0.901}),
                "nuswide": ("alexnet", 5000, {12: 0.794, 24: 0.822, 36: 0.831, 48: 0.843}),
                "voc2007": ("googlenet", 5011, {16: 0.862, 32: 0.917, 48: 0.932, 64: 0.937}),
                "voc2012": ("googlenet", 5717, {16: 0.841, 32: 0.903, 48: 0.917, 64: 0.925})}
    assert list(paper.PAPER_HYP2) == list(expected)
    for name, (backbone, topk, maps) in expected.items():
        result = paper.paper_result(name)
        assert (result.dataset, result.backbone, result.topk) == (name, backbone, topk)
        assert dict(result.maps) == maps and result.bits == tuple(sorted(maps))
        assert "ACM MM 2022" in result.source
    assert paper.paper_map("voc2012", 48) == 0.917
    assert paper.paper_map("voc2012", 12) is None and paper.paper_map("demo", 48) is None
    assert paper.paper_result("demo") is None
    with pytest.raises(TypeError):
        paper.PAPER_HYP2["flickr"].maps[12] = 1.0  # the paper's numbers are read-only


# ---------------------------------------------------------------------------- rows


def _load(folder, *runs):
    from hyp2.runfile import load_run
    return [load_run(write(folder, r)) for r in runs]


def test_compare_rows_numbers_and_comparability(tmp_path):
    runs = _load(tmp_path,
                 make_run("demo", "small", 16, test_map=0.7),
                 make_run("voc2007", "alexnet", 16, test_map=0.8, topk=5011),
                 make_run("flickr", "alexnet", 48, test_map=0.8954),
                 make_run("flickr", "alexnet", 24, "dhn", test_map=0.85),
                 make_run("flickr", "alexnet", 20, test_map=0.8),
                 make_run("nuswide", "alexnet", 48, test_map=0.81, topk=1000),
                 make_run("voc2012", "googlenet", 64, best_map=0.93),
                 make_run("voc2012", "googlenet", 32))
    rows = {r.run: r for r in report.compare_rows(runs)}
    assert [r.run for r in report.compare_rows(runs)] == [
        "flickr_alexnet_20", "flickr_alexnet_24_dhn", "flickr_alexnet_48",
        "nuswide_alexnet_48", "voc2007_alexnet_16", "voc2012_googlenet_32",
        "voc2012_googlenet_64", "demo_small_16"]
    r = rows["flickr_alexnet_48"]
    assert (r.ours, r.paper, r.topk, r.notes) == (0.8954, 0.901, 1000, ())
    assert r.diff == pytest.approx(0.8954 - 0.901)
    assert rows["flickr_alexnet_24_dhn"].notes == (
        "this run trained with the dhn loss; the paper's number is HyP²",)
    assert rows["flickr_alexnet_20"].paper is None and rows["flickr_alexnet_20"].diff is None
    assert rows["flickr_alexnet_20"].notes == ("the paper reports Flickr-25k at 12/24/36/48 "
                                               "bits only",)
    assert rows["voc2007_alexnet_16"].notes == (
        "the paper's number is for GoogLeNet; this run used AlexNet",)
    assert rows["voc2007_alexnet_16"].diff == pytest.approx(0.8 - 0.862)
    assert rows["nuswide_alexnet_48"].notes == ("ours is mAP@1000, the paper's mAP@5000",)
    best = rows["voc2012_googlenet_64"]
    assert best.ours == 0.93 and best.diff == pytest.approx(0.93 - 0.925)
    assert "best mAP during training" in best.notes[0]
    none = rows["voc2012_googlenet_32"]
    assert none.ours is None and none.diff is None and none.paper == 0.903
    assert "no mAP measured" in none.notes[0]
    demo = rows["demo_small_16"]
    assert demo.paper is None and demo.notes == ("the paper reports no demo results",)


def test_best_map_falls_back_to_the_history(tmp_path):
    run = make_run("flickr", "alexnet", 12, best_map=0.8)
    run["best"] = None
    (row,) = report.compare_rows(_load(tmp_path, run))
    assert row.ours == 0.8 and "best mAP during training" in row.notes[0]


# ---------------------------------------------------------------------------- build_report


def test_report_writes_figures_and_a_parsable_table(tmp_path):
    runs = [make_run("flickr", "alexnet", 48, test_map=0.8954, best_map=0.89,
                     sample=tiny_sample(tmp_path, "flickr_alexnet_48_sample.npz")),
            make_run("voc2007", "resnet", 32, test_map=0.95, topk=5011),
            make_run("demo", "small", 48, test_map=0.6, best_map=0.6),
            make_run("nuswide", "alexnet", 12, topk=5000)]  # nothing measured
    paths = [write(tmp_path, r) for r in runs]
    out = tmp_path / "out"
    result = report.build_report(paths, out, num_queries=2, neighbours=4, formats=("png",))
    names = sorted(p.name for p in result.files)
    assert names == ["convergence.png", "index.html", "pr.png", "results.md", "topn.png",
                     "tsne_flickr_alexnet_48.png"]
    assert all((out / n).stat().st_size > 0 for n in names)
    for n in names:
        if n.endswith(".png"):
            assert (out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # none of these runs has a codes file: one note each, and no gallery
    assert sum("gallery skipped" in n for n in result.notes) == 4

    text = (out / "results.md").read_text(encoding="utf-8")
    rows = {r["Run"]: r for r in parse_table(text, "## mAP beside the paper")}
    assert list(rows) == ["flickr_alexnet_48", "nuswide_alexnet_12", "voc2007_resnet_32",
                          "demo_small_48"]
    flickr = rows["flickr_alexnet_48"]
    assert (flickr["Dataset"], flickr["Backbone"], flickr["Bits"], flickr["Loss"],
            flickr["mAP@K"]) == ("flickr", "alexnet", "48", "hyp2", "1000")
    assert float(flickr["Ours"]) == 0.8954 and float(flickr["Paper (HyP²)"]) == 0.901
    assert flickr["Ours − paper"] == "-0.0056"
    assert flickr["Comparability"] == "same protocol as the paper"
    voc = rows["voc2007_resnet_32"]
    assert (float(voc["Ours"]), float(voc["Paper (HyP²)"])) == (0.95, 0.917)
    assert voc["Ours − paper"] == "+0.0330"
    assert "GoogLeNet" in voc["Comparability"] and "ResNet" in voc["Comparability"]
    nus = rows["nuswide_alexnet_12"]
    assert (nus["Ours"], nus["Paper (HyP²)"], nus["Ours − paper"]) == (DASH, "0.794", DASH)
    demo = rows["demo_small_48"]
    assert (demo["Paper (HyP²)"], demo["Ours − paper"]) == (DASH, DASH)
    assert "no demo results" in demo["Comparability"]
    for row in rows.values():  # each difference is its row's ours − paper
        if row["Ours − paper"] != DASH:
            assert float(row["Ours − paper"]) == pytest.approx(
                float(row["Ours"]) - float(row["Paper (HyP²)"]), abs=1e-4)

    paper_rows = parse_table(text, "## The paper's HyP² mAP")
    assert [r["Dataset"] for r in paper_rows] == ["flickr", "nuswide", "voc2007", "voc2012"]
    assert "48: 0.901" in paper_rows[0]["mAP by hash bits"]

    notes = [line for line in section(text, "## Notes") if line.startswith("- ")]
    assert notes == [f"- {n}" for n in result.notes]
    nus_path, voc_path, demo_path = str(paths[3]), str(paths[1]), str(paths[2])
    assert any(n.startswith(nus_path) and "Top-N" in n for n in result.notes)
    assert any(n.startswith(demo_path) and "convergence" not in n and "t-SNE" in n
               for n in result.notes)
    assert any(n.startswith(voc_path) and "convergence" in n for n in result.notes)
    assert any(n.startswith("nuswide_alexnet_12") and "no mAP measured" in n
               for n in result.notes)
    assert "rarest label" in text and "![Top-N precision](topn.png)" in text


def test_report_skips_a_figure_no_run_has_data_for(tmp_path):
    paths = [write(tmp_path, make_run("flickr", "alexnet", 12, test_map=0.8, curves=False))]
    out = tmp_path / "out"
    result = report.build_report(paths + paths, out, tsne=False)
    assert [p.name for p in result.files] == ["results.md", "index.html"]
    text = (out / "results.md").read_text(encoding="utf-8")
    assert "given more than once" in result.notes[0]
    assert any("Top-N precision figure skipped" in n for n in result.notes)
    assert "No figure" in text
    assert float(parse_table(text, "## mAP beside the paper")[0]["Ours"]) == 0.8


def test_report_errors_are_user_errors(tmp_path):
    good = write(tmp_path, make_run("flickr", "alexnet", 12, test_map=0.8))
    with pytest.raises(UserError, match="no run JSON"):
        report.build_report([], tmp_path / "out")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write the report"):
        report.build_report([good], blocker / "out", tsne=False)


def test_main_prints_notes_and_the_files(tmp_path, capsys):
    path = write(tmp_path, make_run("flickr", "alexnet", 12, test_map=0.8, curves=False))
    assert report.main([str(path), "--out", str(tmp_path / "r"), "--no-pdf"]) == 0
    out = capsys.readouterr().out
    assert "note: " in out and "results.md" in out


def test_main_rejects_bad_numbers(capsys):
    assert report.main(["x.json", "--tsne-neighbours", "0"]) == 2
    err = capsys.readouterr().err
    assert "at least 1" in err and err.startswith("error: python -m hyp2.report: ") and err.count("\n") == 1


# ---------------------------------------------------------------------------- the CLI


def _cli(capsys, *args):
    """``python -m hyp2.report ARGS`` in this process (tests/test_errors.py runs the module itself)."""
    capsys.readouterr()
    try:
        code = report.main([str(a) for a in args])
    except SystemExit as e:  # --help
        code = e.code
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def test_cli_broken_json_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.json"
    bad.write_text('{"schema": 1, "dataset": ')
    done = _cli(capsys, bad, "--out", tmp_path / "out")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_help_and_a_good_run(tmp_path, capsys):
    done = _cli(capsys, "--help")
    assert done.returncode == 0
    for text in ("--out", "--no-tsne", "results.md", "topn.png", "docs/report.md", "index.html", "gallery.png",
                 "--query", "--data_root", "--no-gallery"):
        assert text in done.stdout
    path = write(tmp_path, make_run("voc2007", "googlenet", 48, test_map=0.9, best_map=0.9))
    done = _cli(capsys, path, "--out", tmp_path / "out", "--no-tsne")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "topn.pdf").read_bytes()[:5] == b"%PDF-"
    assert "results.md" in done.stdout


# ---------------------------------------------------------------------------- gallery and index.html


class PageParser(HTMLParser):
    """The parts of a page a reader (or a browser) depends on."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict]:
        return [attrs for t, attrs in self.tags if t == tag]


def parse_page(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.mark.slow
def test_report_with_codes_draws_the_gallery_and_one_offline_page(tmp_path_factory, tmp_path):
    r16, r32 = shared_demo_run(tmp_path_factory), shared_demo_run(tmp_path_factory, bits=32, seed=1)
    out = tmp_path / "out"
    options = plots.GalleryOptions(queries=2, top=4, named=("demo/02010",))
    result = report.build_report([r16.json, r32.json], out, tsne=False, formats=("png",), gallery=options)
    assert [p.name for p in result.files] == ["topn.png", "pr.png", "convergence.png", "gallery.png", "results.md",
                                              "index.html"]
    assert result.notes == []
    assert "![Retrieval gallery: demo](gallery.png)" in (out / "results.md").read_text(encoding="utf-8")

    page = parse_page(out / "index.html")
    assert page.all("script") == [] and not any(a.get("rel") == "stylesheet" for a in page.all("link"))
    urls = [a["src"] for a in page.all("img")] + [a["href"] for a in page.all("a") if "href" in a]
    assert not [u for u in urls if u.startswith(("http:", "https:", "//"))]  # offline: nothing fetched
    files = [u for u in urls if not u.startswith(("data:", "#"))]
    assert sorted(set(files)) == ["convergence.png", "gallery.png", "pr.png", "topn.png"]
    thumbs = [a for a in page.all("img") if a["src"].startswith("data:")]
    for attrs in thumbs:  # each embedded thumbnail is a real image
        mime, data = attrs["src"][5:].split(";base64,")
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert img.format.lower() == mime.split("/")[1] and min(img.size) >= 32

    # 3 queries (the named one first) x 2 runs x (query + 4 results), framed by relevance
    frames = [a["class"] for a in page.all("figure") if "thumb" in a.get("class", "")]
    assert len(thumbs) == len(frames) == 3 * 2 * 5
    codes = {16: load_codes(r16.codes), 32: load_codes(r32.codes)}
    queries = [a["alt"] for a in thumbs[::5]]
    assert queries[0] == queries[1] == "demo/02010" and queries[::2] == queries[1::2]
    expected = []
    for q in queries[::2]:
        for bits in (16, 32):
            hits = gallery.retrieve(codes[bits], [q], 4)[0].hits
            expected += ["thumb query"] + [f"thumb {'ok' if h.relevant else 'bad'}" for h in hits]
    assert frames == expected

    text = " ".join(page.text)
    assert "demo_small_16" in text and "demo_small_32" in text and "0.5000" in text
    assert text.count("History (3 evaluations)") == 2 and "proxy_pos" in text
    assert "Configuration (3 settings)" in text


def test_report_page_escapes_what_runs_wrote(tmp_path):
    run = make_run("flickr", "alexnet", 12, test_map=0.8)
    run["config"] = {"note": "<script>alert(1)</script>", "path": 'a"b'}
    run["test"]["mrr"] = 0.9321  # a registered metric shows up under its JSON name
    out = tmp_path / "out"
    report.build_report([write(tmp_path, run)], out, tsne=False, formats=("png",))
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert parse_page(out / "index.html").all("script") == []
    assert "<td>test: mrr</td><td>0.9321</td>" in html and "<td>test: map</td><td>0.8000</td>" in html


def test_cli_names_an_unknown_query_in_one_line(tmp_path_factory, tmp_path, capsys):
    run = shared_demo_run(tmp_path_factory)
    done = _cli(capsys, run.json, "--out", tmp_path / "out", "--no-tsne", "--query", "demo/nope")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["error: --query demo/nope: no run's codes file lists this id; query ids "
                                        "look like demo/02000, demo/02001, demo/02002"]


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_out_of_range_is_one_line(seed, tmp_path_factory, capsys):
    """A seed sklearn's t-SNE cannot take was a traceback (InvalidParameterError)."""
    run = shared_demo_run(tmp_path_factory)
    assert report.main([str(run.json), "--out", "unused", "--seed", seed]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seed" in err and ("at least 0" in err or "at most 4294967295" in err), err
