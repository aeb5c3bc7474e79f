"""Tests of hyp2.gallery: query choice, ranking against a naive loop, images of the listed ids only,
galleries of one and several runs, the notes when codes or images are missing, and the figure."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from demo_run import shared_demo_run
from matplotlib.colors import to_rgba
from PIL import Image

from hyp2 import gallery
from hyp2.codes import CodeDatabase, load_codes
from hyp2.data import DataOptions, build_dataset
from hyp2.errors import UserError
from hyp2.index import CodeIndex
from hyp2.metrics import pack_codes
from hyp2.runfile import load_run


@pytest.fixture(scope="module")
def run16(tmp_path_factory):
    return shared_demo_run(tmp_path_factory)


@pytest.fixture(scope="module")
def run32(tmp_path_factory):
    return shared_demo_run(tmp_path_factory, bits=32, seed=1)


def hand_db() -> CodeDatabase:
    """6 database codes of 4 bits with ties, 3 classes, and 2 queries."""
    bits = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 0, 0]])
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 1]], dtype=np.uint8)
    q_bits = np.array([[1, 1, 1, 1], [0, 0, 0, 1]])
    q_labels = np.array([[0, 0, 1], [0, 1, 0]], dtype=np.uint8)
    from hyp2.codes import CodeSplit

    queries = CodeSplit(pack_codes(q_bits * 2 - 1), q_labels, np.array(["q0", "q1"]))
    return CodeDatabase(pack_codes(bits * 2 - 1), labels, np.array([f"d{i}" for i in range(6)]), 4,
                        ("a", "b", "c"), {}, queries)


def naive(db_bits, q_bits, top):
    dist = [sum(int(a != b) for a, b in zip(q_bits, row)) for row in db_bits]
    return sorted(range(len(dist)), key=lambda j: (dist[j], j))[:top], dist


def test_retrieve_ranks_like_a_naive_stable_loop_and_marks_relevance():
    db = hand_db()
    found = gallery.retrieve(db, ["q0", "q1", "d5"], top=4)
    # q0 = 1111 (label c): distances 0,4,1,0,1,2 -> d0, d3 (ties in database order), d2, d4
    assert [h.id for h in found[0].hits] == ["d0", "d3", "d2", "d4"]
    assert [h.distance for h in found[0].hits] == [0, 0, 1, 1]
    assert [h.relevant for h in found[0].hits] == [False, False, True, False]  # only d2 has c
    assert found[0].query_labels == ("c",) and found[0].hits[1].labels == ("a", "b")
    # q1 = 0001 (label b): 3,1,4,3,2,3 -> d1 (b), d4 (none), d0, d3 (a, b)
    assert [(h.id, h.distance, h.relevant) for h in found[1].hits] == [
        ("d1", 1, True), ("d4", 2, False), ("d0", 3, False), ("d3", 3, True)]
    # a database id ranks with its own code: itself first
    assert found[2].hits[0].id == "d5" and found[2].hits[0].distance == 0
    with pytest.raises(KeyError):
        gallery.retrieve(db, ["nope"], top=2)
    with pytest.raises(ValueError, match="must be an integer >= 1, got 0"):
        gallery.retrieve(db, ["q0"], top=0)
    assert gallery.retrieve(db, [], top=3) == []


def test_retrieve_on_real_codes_matches_a_naive_loop(run16):
    db = load_codes(run16.codes)
    unpack = np.unpackbits(db.codes, axis=1)[:, :db.num_bits]
    q_unpack = np.unpackbits(db.queries.codes, axis=1)[:, :db.num_bits]
    found = gallery.retrieve(db, db.queries.ids[:5].tolist(), top=30)
    for q in range(5):
        order, dist = naive(unpack, q_unpack[q], 30)
        assert [h.id for h in found[q].hits] == [str(db.ids[j]) for j in order]
        assert [h.distance for h in found[q].hits] == [dist[j] for j in order]
        shared = [bool((db.labels[j] & db.queries.labels[q]).any()) for j in order]
        assert [h.relevant for h in found[q].hits] == shared
    # a random model retrieves both kinds: the figure's two colours are exercised
    kinds = {h.relevant for r in found for h in r.hits}
    assert kinds == {True, False}


def test_uploads_rank_without_labels():
    db = hand_db()
    (hits,) = CodeIndex.from_database(db).hits(pack_codes(np.array([[1.0, 1.0, 1.0, 1.0]])), 2)
    assert [(h.id, h.relevant) for h in hits] == [("d0", None), ("d3", None)]


def test_choose_queries_is_seeded_names_first_never_repeats():
    ids = [f"q{i}" for i in range(50)]
    a = gallery.choose_queries(ids, 4, seed=0)
    assert a == gallery.choose_queries(ids, 4, seed=0) and len(set(a)) == 4
    assert a != gallery.choose_queries(ids, 4, seed=1)
    assert a == sorted(a, key=ids.index)  # in the candidates' order
    named = gallery.choose_queries(ids, 3, seed=0, named=["q7", "q7", "x"])
    assert named[:2] == ["q7", "x"] and len(named) == 5 and named.count("q7") == 1
    assert gallery.choose_queries(ids[:2], 5, seed=0) == ids[:2]
    assert gallery.choose_queries([], 3, seed=0) == []


def test_thumbnails_keep_aspect_and_small_images_grow_crisply():
    big = Image.new("RGB", (500, 250), (10, 20, 30))
    assert gallery.thumbnail(big, 128).size == (128, 64)
    small = Image.fromarray(np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3))
    grown = gallery.thumbnail(small, 128)
    assert grown.size == (128, 128)
    assert np.array_equal(np.asarray(grown)[::4, ::4], np.asarray(small))  # nearest: each pixel a 4×4 block
    mime, data = gallery.encode_image(grown)
    assert mime == "image/png" and data.startswith(b"\x89PNG")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    assert gallery.encode_image(photo)[0] == "image/jpeg"


def test_image_source_serves_exactly_the_listed_ids(run16):
    db = load_codes(run16.codes)
    images = gallery.ImageSource.for_codes(db)
    data = build_dataset("demo", DataOptions(image_size=32))
    assert len(images) == len(db.ids) + len(db.queries.ids)
    assert np.array_equal(np.asarray(images.load("demo/00007")), np.asarray(data.database.load(7)))
    first_query = str(db.queries.ids[0])
    assert np.array_equal(np.asarray(images.load(first_query)), np.asarray(data.query.load(0)))
    unlisted = data.database.ids[len(db.ids)]  # in the dataset, not in the codes file
    for ident in (unlisted, "../../etc/passwd", "/etc/passwd", ""):
        assert ident not in images
        with pytest.raises(UserError, match="not in the dataset"):
            images.load(ident)


def test_image_source_says_when_the_dataset_cannot_be_rebuilt(run16, tmp_path):
    db = load_codes(run16.codes)
    custom = CodeDatabase(db.codes, db.labels, db.ids, db.num_bits, db.classes,
                          {**db.meta, "dataset": "custom"}, db.queries)
    with pytest.raises(UserError, match=f"custom images under {tmp_path}"):
        gallery.ImageSource.for_codes(custom, tmp_path)
    with pytest.raises(UserError, match="does not name its dataset"):
        gallery.ImageSource.for_codes(CodeDatabase(db.codes, db.labels, db.ids, db.num_bits, db.classes, {}))


def test_one_run_gallery(run16):
    notes = []
    (g,) = gallery.build_galleries([load_run(run16.json)], queries=3, top=5, seed=0, named=["demo/02010"],
                                   notes=notes)
    assert notes == [] and g.dataset == "demo" and g.top == 5
    assert g.queries[0] == "demo/02010" and len(g.queries) == 4
    db = load_codes(run16.codes)
    expected = gallery.retrieve(db, g.queries, 5)
    assert [rows[0][1] for rows in g.rows] == expected
    shown = {r.query for r in expected} | {h.id for r in expected for h in r.hits}
    assert set(g.thumbs) == shown


def test_several_runs_show_the_same_queries_one_row_each(run16, run32):
    runs = [load_run(run16.json), load_run(run32.json)]
    (g,) = gallery.build_galleries(runs, queries=2, top=4, seed=3)
    assert all(len(rows) == 2 for rows in g.rows)
    for q, rows in enumerate(g.rows):
        assert [label for label, _ in rows] == ["demo · small · 16 bits · hyp2", "demo · small · 32 bits · hyp2"]
        assert {r.query for _, r in rows} == {g.queries[q]}
    # each run ranks with its own codes
    assert g.rows[0][1][1] == gallery.retrieve(load_codes(run32.codes), [g.queries[0]], 4)[0]


def test_runs_of_two_datasets_get_a_gallery_each(run16, tmp_path):
    other = copy_run(run16, tmp_path, lambda data: data.update(dataset="demo_copy"))
    galleries = gallery.build_galleries([load_run(run16.json), other], queries=1, top=2)
    assert [g.dataset for g in galleries] == ["demo", "demo_copy"]
    assert [gallery.gallery_stem(galleries, g, "r_") for g in galleries] == ["r_gallery_demo", "r_gallery_demo_copy"]
    assert gallery.gallery_stem(galleries[:1], galleries[0]) == "gallery"


def test_named_query_no_run_lists_is_one_line(run16):
    with pytest.raises(UserError, match="--query demo/99999: no run's codes file lists this id; query ids look "
                                        "like demo/02000"):
        gallery.build_galleries([load_run(run16.json)], named=["demo/99999"])


def copy_run(run, folder, edit=None, keep_codes=True):
    """A copy of ``run``'s JSON (and codes) in ``folder``, its JSON changed by ``edit``."""
    data = json.loads(run.json.read_text())
    if edit:
        edit(data)
    if keep_codes:
        shutil.copy(run.codes, folder / run.codes.name)
    path = folder / run.json.name
    path.write_text(json.dumps(data))
    return load_run(path)


@pytest.mark.parametrize("case, expected", [
    ("no codes entry", "test.codes is missing; write it with --test --plots (or --export_codes)"),
    ("missing file", "no codes file at"),
    ("other model", "holds the codes of another model than the one the run tested"),
])
def test_runs_without_usable_codes_are_noted_not_fatal(run16, tmp_path, case, expected):
    def edit(data):
        if case == "no codes entry":
            del data["test"]["codes"]
        elif case == "other model":
            data["test"]["model_digest"] = "0" * 16

    run = copy_run(run16, tmp_path, edit, keep_codes=case != "missing file")
    notes = []
    assert gallery.build_galleries([run], notes=notes) == []
    assert len(notes) == 1 and notes[0].startswith(f"{tmp_path / run16.json.name}: gallery skipped (")
    assert expected in notes[0]


def test_missing_images_skip_the_gallery_with_one_note(run16, tmp_path, monkeypatch):
    run = load_run(run16.json)
    notes = []
    monkeypatch.setattr(gallery.ImageSource, "load", lambda self, ident: (_ for _ in ()).throw(
        UserError(f"cannot read image {ident} (FileNotFoundError: no such file)")))
    assert gallery.build_galleries([run], notes=notes) == []
    assert len(notes) == 1 and "gallery skipped (cannot read image demo/" in notes[0]
    assert notes[0].endswith("pass --data_root DIR)")


def test_figure_frames_green_and_red_by_relevance(run16):
    (g,) = gallery.build_galleries([load_run(run16.json)], queries=3, top=6, seed=0)
    fig = gallery.plot_gallery(g)
    axes = np.array(fig.axes).reshape(3, 7)
    for q, rows in enumerate(g.rows):
        retrieval = rows[0][1]
        assert axes[q, 0].get_title() == f"query {q + 1}"
        for rank, hit in enumerate(retrieval.hits):
            ax = axes[q, rank + 1]
            colour = gallery.RELEVANT_COLOUR if hit.relevant else gallery.IRRELEVANT_COLOUR
            assert ax.spines["left"].get_edgecolor() == to_rgba(colour)
            mark = gallery.RELEVANT_MARK if hit.relevant else gallery.IRRELEVANT_MARK
            assert ax.get_title() == f"#{rank + 1} · d {hit.distance} {mark}"
            assert ax.get_xlabel().replace("\n", " ") == ", ".join(hit.labels)
            assert np.array_equal(ax.get_images()[0].get_array(), np.asarray(g.thumbs[hit.id]))
