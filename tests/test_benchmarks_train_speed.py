"""Smoke test of benchmarks/train_speed.py: tiny settings, every variant, the JSON it writes."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hyp2.data.base import image_transform

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"
_spec = importlib.util.spec_from_file_location("train_speed", SCRIPT)
ts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ts)

TINY = ["--backbone", "small", "--image_size", "16", "--batch_size", "8", "--steps", "2", "--warmup", "1",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("jpegs")
    ts.data_speed.generate(path, 20)  # 20 images: the 3 steps of 8 wrap into a second epoch
    return path


@pytest.mark.slow
def test_every_variant_in_process(root, tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert ts.main([*TINY, "--workers", "1", "--root", str(root), "--in_process", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    res = report["results"]
    assert list(res) == list(ts.VARIANTS)
    assert report["dataset"] == {"root": str(root), "generated": False, "images": 20, "classes": 20}
    assert report["isolation"] == "in-process" and report["settings"]["batch_size"] == 8
    for name in ("model", "lazy", "cached", "official"):
        r = res[name]
        # 2 timed steps: 8 + 8 synthetic; from 20 images after a warm-up batch of 8, 8 + the epoch's last 4
        assert r["images"] == (16 if name == "model" else 12)
        assert math.isclose(r["images_per_s"], r["images"] / r["seconds"])
        assert math.isclose(r["vs_model"], r["images_per_s"] / res["model"]["images_per_s"])
        assert 0.0 <= r["data_wait"] <= 1.0 and r["first_step_s"] > 0
        assert r["peak_main_rss_mib"] > 50 and r["peak_rss_sum_mib"] > 50 and r["peak_pss_sum_mib"] > 0
        assert r["gpu_peak_mib"] is None
    assert res["model"]["peak_workers_private_mib"] == 0  # no DataLoader, no workers
    assert res["official"]["dataset_s"] > 0
    c = res["cache_build"]
    assert c["images"] == 20 and math.isclose(c["file_mib"] * 2**20, 20 * 16 * 16 * 3)
    assert not (root / ".cache").exists()  # the cache is built outside the user's folder
    text = capsys.readouterr().out
    for label in ("model alone", "lazy", "--cache", "official", "cache build:"):
        assert label in text


@pytest.mark.slow
def test_a_variant_in_its_own_process(root, tmp_path):
    out = tmp_path / "speed.json"
    assert ts.main([*TINY, "--workers", "0", "--root", str(root), "--variants", "model", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["isolation"] == "subprocess" and list(report["results"]) == ["model"]
    assert report["results"]["model"]["images"] == 16 and report["results"]["model"]["peak_main_rss_mib"] > 50


def test_official_design_sees_the_same_pixels_as_ours(tmp_path):
    # Official: torchvision Resize/Flip/ToTensor/Normalize on a decoded PIL image; ours: image_transform.
    rng = np.random.default_rng(0)
    path = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    ds = ts.InMemoryPIL([path], np.array([[1, 0, 1]]), 16)
    torch.manual_seed(0)
    ref = image_transform(16, train=False)(Image.open(path).convert("RGB"))
    flips = set()
    for _ in range(20):
        x, y, i = ds[0]
        assert y.tolist() == [1.0, 0.0, 1.0] and i == 0 and x.shape == (3, 16, 16)
        flipped = torch.allclose(x, ref.flip(-1), atol=1e-5)
        assert flipped or torch.allclose(x, ref, atol=1e-5)
        flips.add(flipped)
    assert flips == {True, False}


def test_counted_stream_counts_partial_batches_across_epochs():
    batches = [(None, torch.zeros(3, 2), None), (None, torch.zeros(3, 2), None), (None, torch.zeros(2, 2), None)]
    stream = ts._Counted(ts._forever(batches))
    assert len(stream.take(4)) == 4
    assert sum(len(b[1]) for b in stream.take(4)) == 3 + 3 + 2 + 3
    assert stream.images == 11


def test_default_images_are_whole_batches_enough_for_every_step():
    assert ts.default_images(50, 2, 10) == 600
    assert ts.default_images(32, 2, 10) == 512  # at least 500, rounded up to whole batches
    assert ts.default_images(100, 2, 30) == 3200


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--warmup", "0"], ["--workers", "-1"],
                                  ["--image_size", "8"], ["--images", "0"], ["--variants", "cached"],
                                  ["--variants", "bogus"], ["--backbone", "vgg"], ["--hash_bit", "257"]])
def test_bad_arguments_stop_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as e:
        ts.parse_args(["--device", "cpu", *argv])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_broken_dataset_folder_is_one_error_line(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("images/missing.jpg 0 1\n")
    (tmp_path / "test.txt").write_text("images/missing.jpg 0 1\n")
    (tmp_path / "database.txt").write_text("images/missing.jpg 0 1\n")
    assert ts.main([*TINY, "--root", str(tmp_path), "--in_process"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.jpg does not exist" in err
