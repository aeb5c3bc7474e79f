"""Code export and the image-search command line, against a naive stable Hamming ranking."""
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hyp2.data import DataOptions, build_dataset, image_transform
from hyp2.errors import UserError
from hyp2.evaluate import encode
from hyp2.metrics import pack_codes
from hyp2.models import ModelRecipe, build_model
from hyp2.checkpoint import save_checkpoint
from hyp2.codes import export_codes, load_codes
from hyp2.search import main, search

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["red_square", "green_disc", "blue_triangle", "yellow_cross", "magenta_ring",
           "cyan_bar", "stripes", "checker"]
META = {"dataset": "demo", "backbone": "small", "hash_bit": 16, "loss": "hyp2", "classes": CLASSES,
        "num_classes": 8, "epoch": 1, "map": 0.5, "image_size": 32}
N_DB = 200
TOP = 60


def save_small(path: Path, model: torch.nn.Module, bits: int = 16) -> str:
    """A best checkpoint of a small-CNN ``model`` whose recipe says ``bits``; returns its digest."""
    return save_checkpoint(path, recipe=ModelRecipe.for_training("small", bits, 32), model_state=model.state_dict(),
                           loss={"name": "hyp2", "hparams": {}, "state": {}}, classes=CLASSES, config={},
                           meta=META)


def naive_bits(packed: np.ndarray, num_bits: int) -> np.ndarray:
    """(N, B) uint8 -> (N, num_bits) list of 0/1, most significant bit of byte 0 first."""
    rows = []
    for row in packed:
        bits = []
        for byte in row:
            bits += [(int(byte) >> (7 - k)) & 1 for k in range(8)]
        rows.append(bits[:num_bits])
    return np.array(rows)


def naive_ranking(query_bits: np.ndarray, db_bits: np.ndarray, top: int) -> list[tuple[int, int]]:
    """Stable ranking: (index, distance) by ascending distance, ties by database order."""
    dist = [int(sum(a != b for a, b in zip(query_bits, row))) for row in db_bits]
    order = sorted(range(len(dist)), key=lambda j: (dist[j], j))
    return [(j, dist[j]) for j in order[:top]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random-weight small model saved as a checkpoint, 200 demo database images encoded and
    exported, and two query PNGs: a database image (chosen with no output near 0, so its code
    cannot flip between batch sizes) and a query-split image."""
    tmp = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    model = build_model("small", 16, pretrained=False).eval()
    data = build_dataset("demo", DataOptions(image_size=32))
    db = data.database.head(N_DB)
    # A random network maps every image to nearly the same output (pooled ReLU features are all
    # positive), hence one code for all; centring the hash layer on these images' mean feature
    # spreads the codes, so the ranking checks below see many distinct distances.
    with torch.no_grad():
        feats = model.features(torch.stack([db[i][0] for i in range(N_DB)])).mean(dim=(2, 3))
        model.hash_layer.bias.copy_(-model.hash_layer.weight @ feats.mean(0))
    ckpt = tmp / "demo_small_16.ckpt"
    digest = save_small(ckpt, model)
    outputs, labels = encode(model, DataLoader(db, batch_size=100, shuffle=False), "cpu")
    npz = tmp / "demo_small_16_codes.npz"
    written = export_codes(npz, outputs, labels, db.ids, 16, CLASSES, {**META, "topk": N_DB, "model_digest": digest})
    qi = next(i for i in range(5, N_DB) if outputs[i].abs().min() > 1e-3)
    in_db = tmp / "in_db.png"
    db.load(qi).save(in_db)
    other = tmp / "other.png"
    data.query.load(0).save(other)
    return {"tmp": tmp, "ckpt": ckpt, "npz": npz, "written": written, "outputs": outputs,
            "labels": labels, "ids": db.ids, "qi": qi, "in_db": in_db, "other": other,
            "model": model, "query_image": data.query.load(0), "digest": digest}


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_npz_holds_packed_signs_labels_ids_and_meta(setup):
    assert setup["written"][0] == setup["npz"]
    with np.load(setup["npz"], allow_pickle=False) as z:
        codes, labels, ids = z["codes"], z["labels"], z["ids"]
        assert codes.dtype == np.uint8 and codes.shape == (N_DB, 2)
        assert np.array_equal(codes, pack_codes(setup["outputs"]))
        signs = np.where(setup["outputs"].numpy() >= 0, 1, 0)
        assert np.array_equal(naive_bits(codes, 16), signs)
        assert labels.dtype == np.uint8 and np.array_equal(labels, setup["labels"].numpy())
        assert ids.dtype.kind == "U" and list(ids) == setup["ids"]
        assert int(z["num_bits"]) == 16 and list(z["classes"]) == CLASSES
        meta = json.loads(str(z["meta"]))
        assert meta == {**META, "topk": N_DB, "model_digest": setup["digest"]}


def test_zero_output_is_plus_one_and_odd_bit_counts_pad_with_zeros(tmp_path):
    out = torch.tensor([[0.0, -0.0, -1.0, 2.0, -3.0], [-1.0, -1.0, -1.0, -1.0, 1e-9]])
    paths = export_codes(tmp_path / "c.npz", out, np.array([[1, 0], [0, 1]]), ["a", "b"], 5,
                         ["x", "y"], {})
    db = load_codes(paths[0])
    # bits 1,1,0,1,0 + three zero pad bits = 0b11010000; 0,0,0,0,1 -> 0b00001000
    assert db.codes.tolist() == [[0b11010000], [0b00001000]]
    assert db.num_bits == 5 and db.ids.tolist() == ["a", "b"] and db.label_names(1) == ["y"]


def test_search_cli_ranks_like_a_naive_stable_ranking(setup, capsys):
    code, out, err = run_main(capsys, "--checkpoint", setup["ckpt"], "--codes", setup["npz"],
                              "--json", "--top", TOP, setup["in_db"], setup["other"])
    assert code == 0, err
    res = json.loads(out)
    assert res["num_bits"] == 16 and res["top"] == TOP and len(res["queries"]) == 2
    db = load_codes(setup["npz"])
    db_bits = naive_bits(db.codes, 16)

    own = res["queries"][0]
    qi = setup["qi"]
    assert own["code"] == db.codes[qi].tobytes().hex()  # the same image gives the same code
    want = naive_ranking(db_bits[qi], db_bits, TOP)
    assert [(r["id"], r["distance"]) for r in own["results"]] == [(setup["ids"][j], d) for j, d in want]
    assert [r["rank"] for r in own["results"]] == list(range(1, TOP + 1))
    assert len({d for _, d in want}) >= 3  # the codes are spread: the check has teeth
    zero = [r["id"] for r in own["results"] if r["distance"] == 0]
    assert own["results"][0]["distance"] == 0 and setup["ids"][qi] in zero
    first = own["results"][0]
    j0 = setup["ids"].index(first["id"])
    assert first["labels"] == [CLASSES[c] for c in range(8) if setup["labels"][j0, c]]

    # A query outside the database: its code from the model, ranked naively.
    other = res["queries"][1]
    x = image_transform(32, False)(setup["query_image"]).unsqueeze(0)
    with torch.no_grad():
        qbits = (setup["model"](x)[0] >= 0).int().numpy()
    want = naive_ranking(qbits, db_bits, TOP)
    assert [(r["id"], r["distance"]) for r in other["results"]] == [(setup["ids"][j], d) for j, d in want]


def test_search_table_output_and_top_above_database_size(setup, capsys):
    code, out, err = run_main(capsys, "--checkpoint", setup["ckpt"], "--codes", setup["npz"],
                              "--top", 3, setup["in_db"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"query 1/1: {setup['in_db']}"
    assert lines[1].split() == ["rank", "distance", "id", "labels"]
    assert len(lines) == 2 + 3
    rank, dist, ident = lines[2].split()[:3]
    assert (rank, dist) == ("1", "0") and ident in setup["ids"]

    db = load_codes(setup["npz"])
    res = search(torch.ones(1, 16), db, 10 ** 6)
    assert len(res[0]) == N_DB  # top is capped at the database size


@pytest.mark.slow
def test_search_runs_as_a_module(setup):
    proc = subprocess.run([sys.executable, "-m", "hyp2.search", "--checkpoint", str(setup["ckpt"]),
                           "--codes", str(setup["npz"]), "--top", "4", "--json", str(setup["in_db"])],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["queries"][0]["results"]
    assert len(results) == 4 and results[0]["distance"] == 0  # (its errors: test_error_paths_are_one_line_exit_2)


def test_faiss_index_matches_the_codes(setup):
    faiss = pytest.importorskip("faiss")
    index_path = setup["npz"].with_suffix(".faissbin")
    assert setup["written"] == [setup["npz"], index_path]
    index = faiss.read_index_binary(str(index_path))
    db = load_codes(setup["npz"])
    assert index.d == 16 and index.ntotal == N_DB
    stored = faiss.vector_to_array(index.xb).reshape(N_DB, 2)
    assert np.array_equal(stored, db.codes)
    dist, _ = index.search(db.codes[:3], N_DB)
    bits = naive_bits(db.codes, 16)
    for q in range(3):
        want = sorted(int((bits[q] != row).sum()) for row in bits)
        assert dist[q].tolist() == want


def test_without_faiss_only_the_npz_is_written_and_a_stale_index_goes(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    stale = tmp_path / "r_codes.faissbin"
    stale.write_bytes(b"old index")
    paths = export_codes(tmp_path / "r_codes.npz", torch.randn(4, 9), np.eye(4, 2), list("abcd"), 9,
                         ["x", "y"], {"epoch": 3})
    assert paths == [tmp_path / "r_codes.npz"] and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r_codes.npz"]  # no temporary left


@pytest.mark.parametrize("kwargs, match", [
    ({"db_outputs": torch.randn(3, 8)}, r"num_bits=16"),
    ({"db_labels": np.zeros((3, 8))}, r"database labels must be \(N=4, C=8\)"),
    ({"db_labels": np.full((4, 8), 2)}, r"0/1"),
    ({"ids": ["a"]}, r"1 database ids but 4"),
    ({"num_bits": 0, "db_outputs": torch.randn(4, 0)}, r"num_bits must be an integer >= 1"),
    ({"queries": (torch.randn(2, 16), np.zeros((2, 7)), ["q", "r"])}, r"query labels must be \(N=2, C=8\)"),
    ({"db_outputs": torch.randn(0, 16), "db_labels": np.zeros((0, 8)), "ids": []}, r"empty"),
    ({"db_outputs": torch.full((4, 16), float("nan"))}, r"NaN"),
])
def test_export_rejects_inconsistent_inputs(tmp_path, kwargs, match):
    args = {"path": tmp_path / "c.npz", "db_outputs": torch.randn(4, 16), "db_labels": np.zeros((4, 8)),
            "ids": list("abcd"), "num_bits": 16, "classes": CLASSES, "meta": {}}
    with pytest.raises(ValueError, match=match):
        export_codes(**{**args, **kwargs})
    assert not (tmp_path / "c.npz").exists()


def _error(capsys, *args) -> str:
    code, out, err = run_main(capsys, *args)
    assert code == 2 and out == "", (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_error_paths_are_one_line_exit_2(setup, capsys, tmp_path):
    ck, npz, img = setup["ckpt"], setup["npz"], setup["in_db"]

    err = _error(capsys, "--checkpoint", tmp_path / "none.ckpt", "--codes", npz, img)
    assert "no checkpoint at" in err and "none.ckpt" in err
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    assert "cannot read checkpoint" in _error(capsys, "--checkpoint", garbage, "--codes", npz, img)

    err = _error(capsys, "--checkpoint", ck, "--codes", tmp_path / "none.npz", img)
    assert "no codes file at" in err and "--export_codes" in err
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"PK\x03\x04 truncated")
    assert "is not a codes file" in _error(capsys, "--checkpoint", ck, "--codes", bad_npz, img)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    err = _error(capsys, "--checkpoint", ck, "--codes", foreign, img)
    assert "not a hyp2 codes file" in err
    pickled = tmp_path / "pickled.npz"
    with zipfile.ZipFile(setup["npz"]) as src, zipfile.ZipFile(pickled, "w") as dst:
        for name in src.namelist():
            if name != "ids.npy":
                dst.writestr(name, src.read(name))
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        dst.writestr("ids.npy", buf.getvalue())
    assert "cannot read codes file" in _error(capsys, "--checkpoint", ck, "--codes", pickled, img)

    npz32 = tmp_path / "c32.npz"
    export_codes(npz32, torch.randn(5, 32), np.zeros((5, 8)), list("abcde"), 32, CLASSES, META)
    err = _error(capsys, "--checkpoint", ck, "--codes", npz32, img)
    assert "32-bit codes" in err and "has 16 bits" in err

    older = tmp_path / "older.npz"  # same dataset, backbone, bits and loss: another model all the same
    export_codes(older, setup["outputs"][:5], setup["labels"][:5], setup["ids"][:5], 16, CLASSES,
                 {**META, "epoch": 7, "model_digest": "0123456789abcdef"})
    err = _error(capsys, "--checkpoint", ck, "--codes", older, img)
    assert "another model" in err and "0123456789abcdef" in err and setup["digest"] in err
    anonymous = tmp_path / "anonymous.npz"
    export_codes(anonymous, setup["outputs"][:5], setup["labels"][:5], setup["ids"][:5], 16, CLASSES, META)
    assert "does not say which model" in _error(capsys, "--checkpoint", ck, "--codes", anonymous, img)

    err = _error(capsys, "--checkpoint", ck, "--codes", npz, tmp_path / "missing.png")
    assert "cannot read image" in err and "missing.png" in err and "no such file" in err
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    err = _error(capsys, "--checkpoint", ck, "--codes", npz, img, text)
    assert f"cannot read image {text}" in err and "UnidentifiedImageError" in err

    assert _error(capsys, "--checkpoint", ck, "--codes", npz, "--top", 0, img) == \
        "error: --top 0: must be at least 1"
    assert "must be at least 1" in _error(capsys, "--checkpoint", ck, "--codes", npz, "--top", -3, img)
    assert "--top" in _error(capsys, "--checkpoint", ck, "--codes", npz, "--top", "x", img)
    assert "--device" in _error(capsys, "--checkpoint", ck, "--codes", npz, "--device", "nonsense", img)
    assert "required" in _error(capsys, "--codes", npz, img)

    wrong = tmp_path / "wrong.ckpt"
    save_small(wrong, build_model("small", 8, pretrained=False), bits=16)
    err = _error(capsys, "--checkpoint", wrong, "--codes", npz, img)
    assert "does not hold the small model with 16 bits" in err


def test_load_codes_rejects_inconsistent_files(setup, tmp_path):
    with np.load(setup["npz"], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    broken = tmp_path / "broken.npz"
    np.savez(broken, **{**arrays, "labels": arrays["labels"][:3]})
    with pytest.raises(UserError, match="inconsistent .*labels"):
        load_codes(broken)
    np.savez(broken, **{**arrays, "version": np.array(99)})
    with pytest.raises(UserError, match="version 99"):
        load_codes(broken)
