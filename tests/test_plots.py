"""Tests of hyp2.plots: run-JSON loading, the plotted data, t-SNE neighbours, files written.

Run JSONs are generated here (docs/run-json.md), no training. Figures are checked through their
matplotlib objects (line data, collections, legend texts), never by pixels.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from demo_run import shared_demo_run

from hyp2 import plots, runfile, tsne
from hyp2.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(dataset="flickr", backbone="alexnet", bits=48, loss="hyp2", *, test=True,
             history=True, sample=None, seed=0) -> dict:
    """A run JSON object as training writes it, with simple made-up numbers."""
    rng = np.random.default_rng(seed)
    name = f"{dataset}_{backbone}_{bits}" + ("" if loss == "hyp2" else f"_{loss}")
    run = {"schema": 1, "run": name, "dataset": dataset, "backbone": backbone,
           "hash_bit": bits, "loss": loss, "classes": ["cat", "dog", "car", "sky"],
           "num_classes": 4, "topk": 1000, "config": {"seed": seed}, "history": [], "best": None}
    if history:
        run["history"] = [{"epoch": e, "map": round(0.5 + 0.05 * i + 0.01 * rng.random(), 4),
                           "loss": 1.0 - 0.1 * i, "train_seconds": 12.5 * (i + 1), "lr": 0.01}
                          for i, e in enumerate((5, 10, 15))]
        run["best"] = {"epoch": 15, "map": run["history"][-1]["map"]}
    if test:
        n = list(range(100, 1001, 100))
        run["test"] = {
            "map": round(0.6 + 0.3 * rng.random(), 4), "topk": 1000,
            "precision_at_n": {"n": n, "precision": sorted(rng.random(10).round(4).tolist(),
                                                           reverse=True)},
            "recall_at_n": {"n": n, "recall": sorted(rng.random(10).round(4).tolist())},
            "pr_curve": {"radius": list(range(bits + 1)),
                         "precision": sorted(rng.random(bits + 1).round(4).tolist(), reverse=True),
                         "recall": sorted(rng.random(bits + 1).round(4).tolist())},
            "precision_radius2": 0.75}
        if sample is not None:
            run["test"]["codes_sample"] = sample
    return run


def write_run(folder: Path, run: dict, name: str | None = None) -> Path:
    path = Path(folder) / f"{name or run['run']}.json"
    path.write_text(json.dumps(run), encoding="utf-8")
    return path


def hand_sample():
    """60 database codes of 16 bits, 4 classes, 2 queries, with known nearest neighbours.

    Query 0 is all +1 with label {0}; query 1 is all -1 with label {1}. Database item i has its
    first d_i bits at -1, so its Hamming distance is d_i to query 0 and 16 - d_i to query 1.
    Items 10..14 sit at distances 1..5 from query 0, items 20..24 at 1..5 from query 1; every
    other item has exactly 8 bits at -1 (distance 8 to both). Irrelevant among the top 5:
    query 0 -> 11 {1}, 13 {3}, 14 {1, 2}; query 1 -> 21 {0}, 23 {2}.
    """
    rng = np.random.default_rng(1)
    n, k = 60, 16
    db = np.ones((n, k), dtype=np.int8)
    labels = np.zeros((n, 4), dtype=np.uint8)
    for i in range(n):
        db[i, rng.choice(k, 8, replace=False)] = -1
        labels[i, i % 2] = 1  # classes 0 and 1 common, 2 and 3 rare
    for i, d in zip(range(10, 15), range(1, 6)):
        db[i] = 1
        db[i, :d] = -1
    for i, d in zip(range(20, 25), range(15, 10, -1)):
        db[i] = 1
        db[i, :d] = -1
    for i, classes in {10: [0], 11: [1], 12: [0, 2], 13: [3], 14: [1, 2],
                       20: [1], 21: [0], 22: [1, 3], 23: [2], 24: [1]}.items():
        labels[i] = 0
        labels[i, classes] = 1
    queries = np.stack([np.ones(k), -np.ones(k)]).astype(np.int8)
    q_labels = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.uint8)
    return db, labels, queries, q_labels


def save_sample(folder: Path, name: str, arrays) -> str:
    db, labels, queries, q_labels = arrays
    np.savez(Path(folder) / name, db_codes=db, db_labels=labels, query_codes=queries,
             query_labels=q_labels)
    return name


# ---------------------------------------------------------------------------- load_run


def test_load_run_adds_its_path(tmp_path):
    path = write_run(tmp_path, make_run())
    run = runfile.load_run(path)
    assert run["_path"] == path
    assert run["test"]["precision_at_n"]["n"][0] == 100


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r.update(hash_bit="48"), "hash_bit"),
    (lambda r: r.update(hash_bit=True), "hash_bit"),
    (lambda r: r.pop("dataset"), "dataset"),
    (lambda r: r.update(schema=2), "schema 2"),
    (lambda r: r["test"]["precision_at_n"]["precision"].pop(), "differ in length"),
    (lambda r: r["test"]["pr_curve"].pop("recall"), "pr_curve.recall"),
    (lambda r: r["test"].update(map="high"), "test.map"),
    (lambda r: r["history"][1].update(train_seconds="12"), "history[1].train_seconds"),
    (lambda r: r.update(history={"epoch": 5}), "history"),
    (lambda r: r.update(test=[1, 2]), "'test'"),
])
def test_load_run_rejects_malformed_runs_in_one_line(tmp_path, edit, expected):
    run = make_run()
    edit(run)
    path = write_run(tmp_path, run, "broken")
    with pytest.raises(UserError) as info:
        runfile.load_run(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


@pytest.mark.parametrize("text, expected", [
    ('{"dataset": "flickr", ', "not JSON (line 1"),
    ("[1, 2, 3]", "top level must be an object"),
    ("", "not JSON"),
])
def test_load_run_rejects_broken_files(tmp_path, text, expected):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        runfile.load_run(path)
    assert expected in str(info.value)


def test_load_run_missing_file_and_folder(tmp_path):
    with pytest.raises(UserError, match="no such run JSON"):
        runfile.load_run(tmp_path / "nope.json")
    with pytest.raises(UserError, match="is a folder"):
        runfile.load_run(tmp_path)


def test_load_run_accepts_a_run_with_nothing_measured(tmp_path):
    run = make_run(test=False, history=False)
    assert runfile.load_run(write_run(tmp_path, run))["history"] == []


# ---------------------------------------------------------------------------- labels


def test_run_label_names_dataset_backbone_bits_loss():
    assert runfile.run_label(make_run("voc2007", "googlenet", 16, "dhn")) == \
        "voc2007 · googlenet · 16 bits · dhn"


def test_run_labels_are_made_unique():
    a, b = make_run(), make_run()
    a["_path"], b["_path"] = Path("x/one.json"), Path("y/two.json")
    labels = runfile.run_labels([a, b, make_run(bits=12)])
    assert labels == ["flickr · alexnet · 48 bits · hyp2 (one.json)",
                      "flickr · alexnet · 48 bits · hyp2 (two.json)",
                      "flickr · alexnet · 12 bits · hyp2"]
    c, d = make_run(), make_run()
    c["_path"] = d["_path"] = Path("same.json")
    assert len(set(runfile.run_labels([c, d]))) == 2


# ---------------------------------------------------------------------------- curves


def _runs(tmp_path, *runs):
    return [runfile.load_run(write_run(tmp_path, r)) for r in runs]


def test_topn_plots_the_json_data(tmp_path):
    runs = _runs(tmp_path, make_run(bits=12, seed=1), make_run(bits=48, seed=2))
    notes: list[str] = []
    fig = plots.plot_topn(runs, notes)
    (ax,) = fig.axes
    assert notes == [] and len(ax.lines) == 2
    for line, run in zip(ax.lines, runs):
        np.testing.assert_array_equal(line.get_xdata(), run["test"]["precision_at_n"]["n"])
        np.testing.assert_array_equal(line.get_ydata(),
                                      run["test"]["precision_at_n"]["precision"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == \
        ["flickr · alexnet · 12 bits · hyp2", "flickr · alexnet · 48 bits · hyp2"]
    assert ax.get_xlim() == (100.0, 1000.0) and ax.get_ylim() == (0.0, 1.0)
    assert ax.get_xlabel() == "Number of top returned images N"
    assert ax.get_ylabel() == "Precision"


def test_pr_plots_recall_against_precision(tmp_path):
    runs = _runs(tmp_path, make_run(bits=16, seed=3))
    (ax,) = plots.plot_pr(runs).axes
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), runs[0]["test"]["pr_curve"]["recall"])
    np.testing.assert_array_equal(line.get_ydata(), runs[0]["test"]["pr_curve"]["precision"])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Recall", "Precision")
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)


def test_convergence_has_one_panel_per_dataset_and_skips_incomplete_entries(tmp_path):
    flickr = make_run(seed=4)
    # an evaluation without its time cannot be placed on the time axis
    flickr["history"].append({"epoch": 20, "map": 0.99})
    flickr["history"].insert(0, flickr["history"].pop(1))  # out of order on purpose
    voc = make_run("voc2007", "googlenet", 48, seed=5)
    voc["topk"] = 5011
    runs = _runs(tmp_path, flickr, voc, make_run(bits=12, seed=6))
    fig = plots.plot_convergence(runs)
    assert [ax.get_title() for ax in fig.axes] == ["Flickr-25k", "VOC-2007"]
    flickr_ax, voc_ax = fig.axes
    assert len(flickr_ax.lines) == 2 and len(voc_ax.lines) == 1
    expected = sorted((h["train_seconds"], h["map"]) for h in flickr["history"]
                      if "train_seconds" in h)
    np.testing.assert_array_equal(flickr_ax.lines[0].get_xdata(), [s for s, _ in expected])
    np.testing.assert_array_equal(flickr_ax.lines[0].get_ydata(), [m for _, m in expected])
    np.testing.assert_array_equal(voc_ax.lines[0].get_ydata(),
                                  [h["map"] for h in voc["history"]])
    assert flickr_ax.get_xlabel() == "Training time (s)"
    assert (flickr_ax.get_ylabel(), voc_ax.get_ylabel()) == ("mAP@1000", "mAP@5011")
    low, high = flickr_ax.get_ylim()
    assert 0.0 <= low and high <= 1.0


def test_a_run_without_data_is_noted_not_fatal(tmp_path):
    full, bare = _runs(tmp_path, make_run(bits=12), make_run(bits=24, test=False, history=False))
    for plot in (plots.plot_topn, plots.plot_pr, plots.plot_convergence):
        notes: list[str] = []
        fig = plot([full, bare], notes)
        assert sum(len(ax.lines) for ax in fig.axes) == 1
        assert len(notes) == 1 and notes[0].startswith(str(bare["_path"]))
        assert "left out" in notes[0] and "\n" not in notes[0]


def test_a_figure_no_run_has_data_for_is_skipped_with_a_note(tmp_path):
    bare = _runs(tmp_path, make_run(bits=12, test=False, history=False),
                 make_run(bits=24, test=False, history=False))
    for plot in (plots.plot_topn, plots.plot_pr, plots.plot_convergence):
        notes: list[str] = []
        assert plot(bare, notes) is None
        assert len(notes) == 3 and "figure skipped" in notes[-1]
    notes = []
    assert plots.plot_topn(bare[:1], notes) is None
    assert len(notes) == 1 and "skipped" in notes[0] and "--test" in notes[0]


def test_empty_precision_list_counts_as_missing(tmp_path):
    run = make_run()
    run["test"]["precision_at_n"] = {"n": [], "precision": []}
    notes: list[str] = []
    assert plots.plot_topn(_runs(tmp_path, run), notes) is None
    assert "empty" in notes[0]


# ---------------------------------------------------------------------------- neighbours


def _naive_neighbours(db, db_labels, queries, q_labels, k):
    out = []
    for q in range(len(queries)):
        dists = [sum(int(a != b) for a, b in zip(queries[q], db[i])) for i in range(len(db))]
        order = sorted(range(len(db)), key=lambda i: (dists[i], i))[:k]
        irrelevant = [not any(db_labels[i][c] and q_labels[q][c] for c in range(len(q_labels[q])))
                      for i in order]
        out.append((order, [dists[i] for i in order], irrelevant))
    return out


def test_hamming_neighbours_matches_a_naive_loop_with_ties():
    rng = np.random.default_rng(7)
    db = rng.choice([-1, 1], (40, 6)).astype(np.int8)  # 6 bits: many ties
    db_labels = (rng.random((40, 5)) < 0.3).astype(np.uint8)
    queries = rng.choice([-1, 1], (4, 6)).astype(np.int8)
    q_labels = (rng.random((4, 5)) < 0.3).astype(np.uint8)
    copies = [a.copy() for a in (db, db_labels, queries, q_labels)]
    got = tsne.hamming_neighbours(db, db_labels, queries, q_labels, 12)
    for nb, (order, dists, irrelevant) in zip(got, _naive_neighbours(db, db_labels, queries,
                                                                     q_labels, 12)):
        assert nb.indices.tolist() == order
        assert nb.distances.tolist() == dists
        assert nb.irrelevant.tolist() == irrelevant
    for a, b in zip(copies, (db, db_labels, queries, q_labels)):
        np.testing.assert_array_equal(a, b)


def test_hamming_neighbours_on_the_hand_sample():
    got = tsne.hamming_neighbours(*hand_sample(), 5)
    assert got[0].indices.tolist() == [10, 11, 12, 13, 14]
    assert got[0].distances.tolist() == [1, 2, 3, 4, 5]
    assert got[0].indices[got[0].irrelevant].tolist() == [11, 13, 14]
    assert got[1].indices.tolist() == [20, 21, 22, 23, 24]
    assert got[1].indices[got[1].irrelevant].tolist() == [21, 23]


def test_hamming_neighbours_edge_cases():
    db = np.array([[1, 1], [-1, -1]], dtype=np.int8)
    labels = np.array([[1], [0]], dtype=np.uint8)
    (nb,) = tsne.hamming_neighbours(db, labels, db[:1], np.array([[0]]), 5)
    assert nb.indices.tolist() == [0, 1]  # k beyond n: all of them
    assert nb.irrelevant.tolist() == [True, True]  # a query with no label shares none
    assert tsne.hamming_neighbours(db, labels, db[:0], labels[:0], 1) == []
    for k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="k >= 1"):
            tsne.hamming_neighbours(db, labels, db, labels, k)
    with pytest.raises(ValueError, match="codes"):
        tsne.hamming_neighbours(db, labels, np.ones((1, 3)), labels[:1], 1)


def test_rarest_label_by_hand():
    labels = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0]])
    # counts: class 0 -> 2, class 1 -> 3, class 2 -> 2
    assert tsne.rarest_label(labels).tolist() == [0, 2, -1, 0, 1]
    assert tsne.rarest_label(labels, counts=np.array([5, 1, 9])).tolist() == [1, 1, -1, 0, 1]


def test_tsne_embedding_is_seeded_and_copes_with_degenerate_points():
    rng = np.random.default_rng(0)
    points = rng.choice([-1.0, 1.0], (30, 8))
    a, b = tsne.tsne_embedding(points, seed=3), tsne.tsne_embedding(points, seed=3)
    assert a.shape == (30, 2)
    np.testing.assert_array_equal(a, b)
    same = tsne.tsne_embedding(np.ones((5, 8)))  # no spread: PCA init impossible
    assert same.shape == (5, 2) and np.isfinite(same).all()
    with pytest.raises(ValueError, match="at least 3"):
        tsne.tsne_embedding(points[:2])


# ---------------------------------------------------------------------------- t-SNE figure


def _collection(ax, label):
    found = [c for c in ax.collections if c.get_label() == label]
    assert len(found) <= 1
    return found[0] if found else None


def test_tsne_marks_exactly_the_irrelevant_neighbours(tmp_path):
    arrays = hand_sample()
    name = save_sample(tmp_path, "flickr_alexnet_16_sample.npz", arrays)
    (run,) = _runs(tmp_path, make_run(bits=16, sample=name))
    fig = tsne.plot_tsne(run, num_queries=2, neighbours=5, seed=0)
    (ax,) = fig.axes
    db_xy = _collection(ax, tsne.TSNE_DATABASE).get_offsets()
    q_xy = _collection(ax, tsne.TSNE_QUERIES).get_offsets()
    assert db_xy.shape == (60, 2) and q_xy.shape == (2, 2)
    bad = _collection(ax, tsne.TSNE_IRRELEVANT).get_offsets()
    np.testing.assert_array_equal(bad, db_xy[[11, 13, 14, 21, 23]])
    segments = _collection(ax, tsne.TSNE_LINKS).get_segments()
    expected = [(0, j) for j in range(10, 15)] + [(1, j) for j in range(20, 25)]
    assert len(segments) == len(expected)
    for seg, (q, j) in zip(segments, expected):
        np.testing.assert_array_equal(seg, [q_xy[q], db_xy[j]])
    # colours follow the rarest-label rule: item 12 {0, 2} takes class 2, as item 23 {2} does
    colours = _collection(ax, tsne.TSNE_DATABASE).get_facecolors()
    np.testing.assert_array_equal(colours[12], colours[23])
    assert not np.array_equal(colours[12], colours[10])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:4] == ["cat", "dog", "car", "sky"]
    assert "irrelevant (no shared label)" in legend
    assert "rarest label" in ax.get_xlabel() and "red circles" in ax.get_xlabel()


def test_tsne_without_irrelevant_neighbours_or_queries(tmp_path):
    db, labels, queries, q_labels = hand_sample()
    name = save_sample(tmp_path, "s.npz", (db, labels, queries, q_labels))
    (run,) = _runs(tmp_path, make_run(bits=16, sample=name))
    (ax,) = tsne.plot_tsne(run, num_queries=1, neighbours=1).axes  # nearest of Q1 is relevant
    assert _collection(ax, tsne.TSNE_IRRELEVANT) is None
    assert len(_collection(ax, tsne.TSNE_LINKS).get_segments()) == 1
    (ax,) = tsne.plot_tsne(run, num_queries=0).axes
    assert _collection(ax, tsne.TSNE_QUERIES) is None
    assert _collection(ax, tsne.TSNE_LINKS) is None
    with pytest.raises(ValueError, match="neighbours"):
        tsne.plot_tsne(run, neighbours=0)


def test_tsne_colours_unlabelled_items_grey(tmp_path):
    db, labels, queries, q_labels = hand_sample()
    labels = labels.copy()
    labels[5] = 0
    name = save_sample(tmp_path, "s.npz", (db, labels, queries, q_labels))
    (run,) = _runs(tmp_path, make_run(bits=16, sample=name))
    (ax,) = tsne.plot_tsne(run, num_queries=0).axes
    colours = _collection(ax, tsne.TSNE_DATABASE).get_facecolors()
    np.testing.assert_allclose(colours[5], to_rgba((0.6, 0.6, 0.6)))
    assert "no label" in [t.get_text() for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("problem, expected", [
    ("absent", "not found"),
    ("garbage", "unreadable"),
    ("zeros", "only -1 and +1"),
    ("no_queries_key", "lacks query_codes"),
    ("rows", "differ in number of rows"),
    ("npy", "not an .npz archive"),
])
def test_tsne_with_a_bad_sample_is_noted_and_load_raises(tmp_path, problem, expected):
    db, labels, queries, q_labels = hand_sample()
    path = tmp_path / "s.npz"
    if problem == "garbage":
        path.write_bytes(b"PK\x03\x04 not a zip")
    elif problem == "zeros":
        save_sample(tmp_path, "s.npz", (np.zeros_like(db), labels, queries, q_labels))
    elif problem == "no_queries_key":
        np.savez(path, db_codes=db, db_labels=labels, query_labels=q_labels)
    elif problem == "npy":
        with open(path, "wb") as fh:
            np.save(fh, db)
    elif problem == "rows":
        save_sample(tmp_path, "s.npz", (db, labels[:-1], queries, q_labels))
    (run,) = _runs(tmp_path, make_run(bits=16, sample="s.npz"))
    notes: list[str] = []
    assert tsne.plot_tsne(run, notes=notes) is None
    assert len(notes) == 1 and "t-SNE skipped" in notes[0] and expected in notes[0]
    with pytest.raises(UserError) as info:
        tsne.load_codes_sample(run)
    assert expected in str(info.value) and str(info.value).startswith(str(run["_path"]))


def test_tsne_without_a_sample_is_noted(tmp_path):
    run = runfile.load_run(write_run(tmp_path, make_run(test=False)))
    notes: list[str] = []
    assert tsne.plot_tsne(run, notes=notes) is None
    assert "--test" in notes[0]
    db, labels, queries, q_labels = hand_sample()
    name = save_sample(tmp_path, "two.npz", (db[:2], labels[:2], queries, q_labels))
    (run,) = _runs(tmp_path, make_run(bits=16, sample=name))
    assert tsne.plot_tsne(run, notes=notes) is None and "at least 3" in notes[-1]


# ---------------------------------------------------------------------------- files


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    with Image.open(path) as image:
        width, height = image.size
    assert 600 <= width <= 4000 and 400 <= height <= 3000


def test_plot_run_writes_every_figure(tmp_path):
    name = save_sample(tmp_path, "flickr_alexnet_16_sample.npz", hand_sample())
    path = write_run(tmp_path, make_run(bits=16, sample=name))
    out = tmp_path / "figures"
    notes: list[str] = []
    written = plots.plot_run(path, out, notes=notes)
    # no codes file: every figure but the gallery, which says why it is missing
    assert notes == [f"{path}: gallery skipped (test.codes is missing; write it with --test --plots (or "
                     f"--export_codes))"]
    assert sorted(p.name for p in written) == sorted(
        f"flickr_alexnet_16_{kind}.{fmt}" for kind in ("topn", "pr", "convergence", "tsne")
        for fmt in ("png", "pdf"))
    for p in written:
        assert p.parent == out
        if p.suffix == ".png":
            _check_png(p)
        else:
            assert p.read_bytes()[:5] == b"%PDF-"
    assert sorted(out.iterdir()) == sorted(written)  # no temporary files left behind


def test_plot_run_with_missing_data_writes_what_it_can(tmp_path):
    path = write_run(tmp_path, make_run(test=False))
    notes: list[str] = []
    written = plots.plot_run(path, tmp_path, notes=notes, formats=("png",))
    assert [p.name for p in written] == ["flickr_alexnet_48_convergence.png"]
    assert len(notes) == 4 and all(n.startswith(str(path)) for n in notes)
    assert "gallery skipped (the run has no test results" in notes[-1]


def test_plot_run_draws_the_gallery_from_the_runs_codes(tmp_path_factory, tmp_path):
    run = shared_demo_run(tmp_path_factory)
    notes: list[str] = []
    written = plots.plot_run(run.json, tmp_path, notes=notes, formats=("png",), gallery_queries=2, gallery_top=3)
    assert notes == ["%s: t-SNE skipped (test.codes_sample is missing; evaluate the model with --test)" % run.json]
    assert [p.name for p in written] == [f"{run.name}_{kind}.png" for kind in ("topn", "pr", "convergence",
                                                                                "gallery")]
    with Image.open(written[-1]) as image:  # 2 query rows of 1 + 3 thumbnails
        assert image.size[0] > image.size[1] > 200


def test_plot_run_on_a_broken_json_raises_user_error(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{")
    with pytest.raises(UserError, match="bad.json"):
        plots.plot_run(path, tmp_path)


@pytest.mark.parametrize("num_classes", [4, 9, 20, 24, 38])
def test_palette_has_distinct_non_grey_colours(num_classes):
    # grey is reserved for items without a label
    palette = [tuple(c) for c in tsne._palette(num_classes)]
    assert len(set(palette[:num_classes])) == num_classes
    assert not any(r == g == b for r, g, b in palette)
