"""Tests of hyp2.data.nuswide: the authors' lists fetched from a loopback server, or lists of the user's own."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hyp2.data import DataOptions, build_dataset
from hyp2.data import nuswide
from hyp2.data.nuswide import build_nuswide
from hyp2.errors import UserError

from .conftest import serve_pinned, write_jpeg

NAMES = {"train": "train.txt", "test": "test.txt", "database": "database.txt"}


def list_texts(root: Path, sizes=(("train", 4), ("test", 2), ("database", 6)), images: bool = True) -> dict:
    """Generate the three lists (and their images under root/nus_wide/images); returns name -> (text, labels)."""
    folder = root / "nus_wide"
    rng = np.random.default_rng(0)
    out = {}
    for k, (name, n) in enumerate(sizes):
        labels = (rng.random((n, 21)) < 0.2).astype(np.uint8)
        lines = []
        for i in range(n):
            rel = f"images/{k:04d}_{1000 + i}.jpg"
            if images:
                write_jpeg(folder / rel, seed=100 * k + i)
            lines.append(rel + " " + " ".join(map(str, labels[i])))
        out[name] = ("\n".join(lines) + "\n", labels)
    return out


def write_lists(root: Path, **kw) -> dict[str, np.ndarray]:
    folder = root / "nus_wide"
    out = {}
    for name, (text, labels) in list_texts(root, **kw).items():
        (folder / f"{name}.txt").write_text(text)
        out[name] = labels
    return out


@pytest.fixture
def official(server, monkeypatch, tmp_path):
    """The loopback server holds generated stand-ins of the authors' three lists (their images are written
    under tmp_path/nus_wide/images, the lists are not); returns their texts and labels."""
    texts = list_texts(tmp_path)
    served = serve_pinned(server, {f"data/nus_wide/{NAMES[k]}": v[0].encode() for k, v in texts.items()})
    monkeypatch.setattr(nuswide, "OFFICIAL", served)
    return texts


def test_build_reads_the_three_lists(tmp_path):
    labels = write_lists(tmp_path)
    data = build_dataset("nuswide", DataOptions(root=tmp_path, image_size=20))
    assert data.name == "nuswide" and data.num_classes == 21 and data.classes[0] == "class0"
    assert data.train.ids == [f"nus_wide/images/0000_{1000 + i}.jpg" for i in range(4)]
    assert data.query.ids == ["nus_wide/images/0001_1000.jpg", "nus_wide/images/0001_1001.jpg"]
    np.testing.assert_array_equal(data.database.labels, labels["database"])
    np.testing.assert_array_equal(data.query.labels, labels["test"])
    assert data.topk == 6  # mAP@5000 capped at the database size
    assert data.train.transform.train and not data.database.transform.train
    x, y, _ = data.database[5]
    assert x.shape == (3, 20, 20) and y.tolist() == labels["database"][5].tolist()
    # lists of the user's own: said so, with the files' git blob ids; each item knows its line
    assert "the user's own files" in data.provenance["lists"] and "git blob" in data.provenance["lists"]
    assert data.database.where(5) == f"{tmp_path / 'nus_wide' / 'database.txt'} line 6"


def test_official_lists_are_fetched_verified_and_reused(official, server, tmp_path, capsys):
    data = build_nuswide(DataOptions(root=tmp_path, image_size=20), progress=False)
    for name, role in (("train", "train"), ("test", "query"), ("database", "database")):
        assert (tmp_path / "nus_wide" / NAMES[name]).read_text() == official[name][0]
        np.testing.assert_array_equal(getattr(data, role).labels, official[name][1])
    assert sorted(p for p, _ in server.requests) == sorted(f"/repo/data/nus_wide/{n}" for n in NAMES.values())
    err = capsys.readouterr().err
    assert err.count("fetched ") == 3 and "third-party" in err and "JerryXu0129/HyP2-Loss" in err
    assert "verified by its git blob id and SHA-256" in err
    assert "the files of the HyP² authors' repository" in data.provenance["lists"]
    assert "commit e9c1c24" in data.provenance["lists"]
    server.requests.clear()
    build_nuswide(DataOptions(root=tmp_path, image_size=20), progress=False)
    assert server.requests == []  # found and recognised by their blob ids


def test_no_download_names_files_folder_and_urls(official, server, tmp_path):
    with pytest.raises(UserError) as e:
        build_nuswide(DataOptions(root=tmp_path, download=False), progress=False)
    msg = str(e.value)
    assert "train.txt, test.txt, database.txt missing in " + str(tmp_path / "nus_wide") in msg
    assert "--no_download" in msg and "third-party" in msg
    assert all(f.url in msg for f in nuswide.OFFICIAL)
    assert server.requests == [] and "\n" not in msg


def test_real_table_points_at_the_pinned_commit():
    urls = [f.url for f in nuswide.OFFICIAL]
    assert urls == [f"https://raw.githubusercontent.com/JerryXu0129/HyP2-Loss/e9c1c24c74d306d867f5d1d3505f5c791871534e/"
                    f"data/nus_wide/{n}" for n in ("train.txt", "test.txt", "database.txt")]
    assert [f.git_blob[:7] for f in nuswide.OFFICIAL] == ["20f16d4", "371be57", "1d8f3dd"]


def test_classes_txt_names_the_concepts(tmp_path):
    write_lists(tmp_path)
    (tmp_path / "nus_wide" / "classes.txt").write_text("".join(f"concept{i}\n" for i in range(21)))
    assert build_nuswide(DataOptions(root=tmp_path)).classes[20] == "concept20"


@pytest.mark.parametrize("missing", ["train", "test", "database"])
def test_missing_list_beside_own_lists_is_not_fetched(server, tmp_path, missing):
    write_lists(tmp_path)
    (tmp_path / "nus_wide" / f"{missing}.txt").unlink()
    with pytest.raises(UserError) as e:
        build_nuswide(DataOptions(root=tmp_path))
    msg = str(e.value)
    assert f"{missing}.txt missing in" in msg and "not the files of" in msg and "delete the others" in msg
    assert server.requests == []


def test_wrong_label_count_names_file_and_line(tmp_path):
    write_lists(tmp_path)
    path = tmp_path / "nus_wide" / "database.txt"
    lines = path.read_text().splitlines()
    lines[3] = lines[3] + " 0"
    path.write_text("\n".join(lines))
    with pytest.raises(UserError, match=r"database.txt line 4: expected an image path followed by 21 labels, found 22"):
        build_nuswide(DataOptions(root=tmp_path))


def test_missing_image_says_where_images_come_from(tmp_path):
    write_lists(tmp_path)
    (tmp_path / "nus_wide" / "images" / "0001_1001.jpg").unlink()
    with pytest.raises(UserError, match=r"test.txt: image .*0001_1001.jpg does not exist; .*DSDH.*images"):
        build_nuswide(DataOptions(root=tmp_path))
    assert len(build_nuswide(DataOptions(root=tmp_path), check_files=False).query) == 2


def test_a_path_that_leaves_the_data_root_is_refused(tmp_path):
    from .test_custom import inside_message

    root = tmp_path / "data"
    write_lists(root)
    write_jpeg(tmp_path / "outside.jpg", seed=5)
    write_jpeg(root / "beside.jpg", seed=6)
    listing = root / "nus_wide" / "test.txt"
    lines = listing.read_text().splitlines()
    labels = " ".join(["0"] * 21)
    (listing).write_text(f"{lines[0]}\n../beside.jpg {labels}\n")  # inside the data root: accepted
    assert build_nuswide(DataOptions(root=root)).query.ids[1] == "beside.jpg"
    (listing).write_text(f"{lines[0]}\n\n../../outside.jpg {labels}\n")
    with pytest.raises(UserError) as e:
        build_nuswide(DataOptions(root=root))
    assert str(e.value) == inside_message(listing, 3, "../../outside.jpg", root, root / "nus_wide")
