"""The recipes of docs/extending.md: a loss, a dataset, a backbone and a metric, each one module
outside the package (docs/examples/), loaded with --plugin, listed by --help, meeting its kind's
contract, and training the demo for one epoch."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hyp2._plugins import load_plugin
from hyp2.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
DEMO = ["--dataset", "demo", "--subset", "40", "--epochs", "1", "--batch_size", "20", "--hash_bit", "12"]


def plugin(name: str) -> list[str]:
    return ["--plugin", str(EXAMPLES / name)]


def help_text(capsys, argv) -> str:
    with pytest.raises(SystemExit):
        main(argv + ["--help"])
    return " ".join(capsys.readouterr().out.split())


def trains(capsys, argv) -> float:
    assert main(argv) == 0, capsys.readouterr().err
    (value,) = re.findall(r"^map: (\S+)$", capsys.readouterr().out, re.M)
    return float(value)


def test_a_loss_in_one_module(tmp_path, capsys):
    assert "pair_cosine: example plugin" in help_text(capsys, plugin("my_loss.py"))
    from losses.test_contract import CHECKS  # the contract every registered loss keeps
    for check in CHECKS:
        check("pair_cosine")
    trains(capsys, plugin("my_loss.py") + DEMO + ["--loss", "pair_cosine", "--loss_opt", "margin=0.2",
                                                  "--result_dir", str(tmp_path)])
    record = json.loads((tmp_path / "demo_small_12_pair_cosine.json").read_text())
    assert record["loss_hparams"] == {"margin": 0.2, "push_weight": 1.0}


def test_a_dataset_in_one_module(tmp_path, capsys):
    assert "csv_folder: example plugin" in help_text(capsys, plugin("my_dataset.py"))
    rng = np.random.default_rng(0)
    rows = ["path,labels"]
    for i in range(30):
        name = f"images/{i:03d}.jpg"
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / name)
        rows.append(f"{name},{['cat', 'dog', 'cat;dog'][i % 3]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    argv = plugin("my_dataset.py") + ["--dataset", "csv_folder", "--data_root", str(tmp_path), "--backbone", "small",
                                      "--epochs", "1", "--batch_size", "8", "--hash_bit", "8", "--workers", "0",
                                      "--result_dir", str(tmp_path / "r")]
    trains(capsys, argv)
    record = json.loads((tmp_path / "r" / "csv_folder_small_8.json").read_text())
    assert record["classes"] == ["cat", "dog"] and record["topk"] == 24
    assert main(argv[:-2] + ["--data_root", str(tmp_path / "empty"), "--result_dir", str(tmp_path / "r2")]) == 2
    assert "labels.csv is missing" in capsys.readouterr().err


def test_a_backbone_in_one_module(tmp_path, capsys):
    assert "tiny_cnn: example plugin" in help_text(capsys, plugin("my_backbone.py"))
    from hyp2.models import build_model
    model = build_model("tiny_cnn", 10, pretrained=False)
    for mode in (model.train, model.eval):
        mode()
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    argv = plugin("my_backbone.py") + DEMO + ["--backbone", "tiny_cnn", "--result_dir", str(tmp_path)]
    best = trains(capsys, argv)
    assert trains(capsys, argv + ["--test", "--export_codes"]) == best  # rebuilt from the checkpoint's recipe
    from hyp2.data import DataOptions, build_dataset
    from hyp2.search import main as search_main
    build_dataset("demo", DataOptions()).query.load(0).save(tmp_path / "q.png")
    assert search_main(plugin("my_backbone.py") + ["--checkpoint", str(tmp_path / "demo_tiny_cnn_12.ckpt"),
                                                   "--codes", str(tmp_path / "demo_tiny_cnn_12_codes.npz"),
                                                   str(tmp_path / "q.png")]) == 0
    assert "query 1/1" in capsys.readouterr().out
    assert "no ImageNet weights" in (main(argv + ["--weights", "w.pth", "--overwrite"]) == 2
                                     and capsys.readouterr().err)


def test_a_metric_in_one_module(tmp_path, capsys):
    load_plugin(str(EXAMPLES / "my_metric.py"))
    from hyp2.evaluate import METRICS
    assert "mrr" in METRICS.names()
    with pytest.raises(ValueError, match="metric name 'map' is taken"):
        METRICS.register("map", "clash")(lambda *a, **k: 0.0)
    argv = plugin("my_metric.py") + DEMO + ["--result_dir", str(tmp_path)]
    trains(capsys, argv)
    trains(capsys, argv + ["--test", "--export_codes"])
    test = json.loads((tmp_path / "demo_small_12.json").read_text())["test"]
    # The reference, from the codes --test evaluated: a plain loop over a stable sort.
    from hyp2.codes import load_codes
    codes = load_codes(tmp_path / test["codes"])
    db_bits = np.unpackbits(codes.codes, axis=1)[:, :12]
    total = 0.0
    for q_bits, q_labels in zip(np.unpackbits(codes.queries.codes, axis=1)[:, :12], codes.queries.labels):
        dist = [int((q_bits != row).sum()) for row in db_bits]
        order = sorted(range(len(dist)), key=lambda j: (dist[j], j))[:test["topk"]]
        ranks = [r for r, j in enumerate(order, 1) if (codes.labels[j] & q_labels).any()]
        total += 1 / ranks[0] if ranks else 0.0
    assert test["mrr"] == pytest.approx(total / len(codes.queries))


def test_a_plugin_that_cannot_be_imported_is_one_line(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("raise RuntimeError('oops')\n")
    for name, fragment in ((str(tmp_path / "broken.py"), "importing it failed (RuntimeError: oops)"),
                           (str(tmp_path / "none.py"), "no such file"), ("no_such_module_xyz", "ModuleNotFoundError")):
        assert main(["--plugin", name, "--dataset", "demo"]) == 2
        err = capsys.readouterr().err
        assert f"--plugin {name}: " in err and fragment in err and err.count("\n") == 1
