"""The command line end to end on a tiny demo, and every user error as one line."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyp2.cli import main, parse_config
from hyp2.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "demo", "--subset", "120", "--epochs", "2", "--eval_every", "1",
        "--batch_size", "40", "--hash_bit", "16"]


def printed_map(out: str) -> str:
    found = re.findall(r"^map: (\S+)$", out, re.M)
    assert len(found) == 1, out
    return found[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the tiny demo once; tests share its result folder (copying it before changing it)."""
    result = tmp_path_factory.mktemp("result")
    import io
    from contextlib import redirect_stdout
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(TINY + ["--result_dir", str(result)]) == 0
    return result, buf.getvalue()


@pytest.mark.slow
def test_train_writes_checkpoint_log_and_json_then_test_prints_the_same_map(trained, capsys, tmp_path):
    result, out = trained
    best = printed_map(out)
    run = "demo_small_16"
    assert {p.name for p in result.iterdir()} >= {f"{run}.ckpt", f"{run}.json", f"{run}.txt"}
    data = json.loads((result / f"{run}.json").read_text())
    assert [h["epoch"] for h in data["history"]] == [1, 2]
    assert data["best"]["map"] == max(h["map"] for h in data["history"]) == float(best)
    assert data["topk"] == 120 and data["num_classes"] == 8 and data["config"]["hash_bit"] == 16
    assert all(h["train_seconds"] > 0 and h["loss"] > 0 for h in data["history"])
    ckpt = torch.load(result / f"{run}.ckpt", weights_only=True)
    assert ckpt["meta"]["hash_bit"] == 16 and ckpt["meta"]["backbone"] == "small"
    assert ckpt["loss"]["state"]["proxies"].shape == (8, 16)

    work = tmp_path / "r"
    shutil.copytree(result, work)
    assert main(TINY + ["--result_dir", str(work), "--test"]) == 0
    assert printed_map(capsys.readouterr().out) == best
    data = json.loads((work / f"{run}.json").read_text())
    assert data["test"]["map"] == float(best)
    assert data["test"]["checkpoint_epoch"] == data["best"]["epoch"]
    assert len(data["history"]) == 2  # --test keeps the training history ...
    assert data["config"]["test"] is False  # ... and the training config


@pytest.mark.slow
def test_test_with_plots_and_export_writes_figures_and_codes(trained, tmp_path, capsys):
    import numpy as np
    result, out = trained
    work = tmp_path / "r"
    shutil.copytree(result, work)
    assert main(TINY + ["--result_dir", str(work), "--test", "--plots", "--export_codes"]) == 0
    assert printed_map(capsys.readouterr().out) == printed_map(out)
    for name in ("topn", "pr", "convergence", "tsne"):
        assert (work / f"demo_small_16_{name}.png").stat().st_size > 10_000
    codes = np.load(work / "demo_small_16_codes.npz", allow_pickle=False)
    assert codes["codes"].shape == (120, 2) and codes["labels"].shape == (120, 8)
    sample = np.load(work / "demo_small_16_sample.npz", allow_pickle=False)
    assert set(np.unique(sample["db_codes"])) <= {-1, 1}
    assert json.loads((work / "demo_small_16.json").read_text())["test"]["codes_sample"] == "demo_small_16_sample.npz"
    assert main(TINY + ["--result_dir", str(work), "--test", "--plots", "--no_save"]) == 2
    assert "--plots writes files beside the checkpoint; drop --no_save" in capsys.readouterr().err


def test_no_save_writes_nothing(tmp_path, capsys):
    out = tmp_path / "nothing"
    assert main(TINY[:-4] + ["--epochs", "1", "--result_dir", str(out), "--no_save", "--hash_bit", "8"]) == 0
    assert not out.exists()
    printed_map(capsys.readouterr().out)


def test_checkpoint_of_another_bit_length_is_refused(trained, tmp_path, capsys):
    result, _ = trained
    shutil.copy(result / "demo_small_16.ckpt", tmp_path / "demo_small_48.ckpt")
    assert main(["--dataset", "demo", "--subset", "50", "--result_dir", str(tmp_path), "--test"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--hash_bit 16" in err and "--hash_bit 48" in err and len(err.splitlines()) == 1


def test_test_without_checkpoint(tmp_path, capsys):
    assert main(["--dataset", "demo", "--result_dir", str(tmp_path), "--test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint at") and str(tmp_path / "demo_small_48.ckpt") in err


@pytest.mark.parametrize("argv,fragment", [
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'; known datasets:"),
    (["--dataset", "demo", "--backbone", "vgg"], "--backbone: unknown backbone 'vgg'; known backbones: googlenet"),
    (["--dataset", "demo", "--hash_bit", "0"], "--hash_bit 0: must be between 1 and 256"),
    (["--dataset", "demo", "--hash_bit", "300"], "--hash_bit 300: must be between 1 and 256"),
    (["--dataset", "demo", "--loss", "nope"], "--loss: unknown loss 'nope'; known losses: hyp2, csq, dcilh, dhn"),
    (["--dataset", "demo", "--batch_size", "0"], "--batch_size 0: must be at least 1"),
    (["--dataset", "demo", "--backbone", "alexnet", "--image_size", "32"],
     "--image_size 32: must be between 63 and 1024"),
    (["--dataset", "demo", "--zeta", "2"], "--zeta: hyp2: zeta must be a finite number in [-1, 1], got 2.0"),
    (["--dataset", "demo", "--hash_bit", "abc"], "invalid int value: 'abc'"),
    (["--dataset", "demo", "--device", "cuda:0"], "CUDA is not available"),
])
def test_bad_flags_are_one_line_errors(argv, fragment, capsys):
    if "cuda:0" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and err.startswith("error: ")


def test_hash_bit_too_short_for_the_classes(tmp_path, capsys):
    # demo has 8 classes: ⌈log2 8⌉ = 3 bits at least for the code table's ζ
    assert main(["--dataset", "demo", "--hash_bit", "2", "--subset", "20", "--result_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--hash_bit 2 and 8 classes" in err and "use --hash_bit ≥ 3" in err


@pytest.mark.slow
def test_retrieval_py_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "retrieval.py", "--dataset", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --dataset: unknown dataset 'nope'")
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_defaults_are_the_official_ones_and_demo_overrides_them():
    c = parse_config(["--device", "cpu"])
    assert (c.dataset, c.backbone, c.hash_bit, c.batch_size, c.epochs, c.beta, c.retrieve, c.seed, c.rate) == \
        ("voc2007", "googlenet", 48, 100, 100, 0.5, 0, 0, 0.02)
    assert (c.image_size, c.lr, c.eval_every, c.pretrained, c.save, c.test) == (448, 0.02, 5, True, True, False)
    assert parse_config(["--backbone", "alexnet"]).lr == 0.01
    assert parse_config(["--backbone", "alexnet"]).image_size == 224
    d = parse_config(["--dataset", "demo"])
    assert (d.backbone, d.image_size, d.pretrained, d.epochs, d.workers) == ("small", 32, False, 15, 0)
    assert parse_config(["--dataset", "demo", "--epochs", "3"]).epochs == 3
    assert parse_config(["--no_pretrained"]).pretrained is False
    assert parse_config(["--loss", "hyp2"]).run_name == "voc2007_googlenet_48"
    with pytest.raises(UserError):
        parse_config(["--unknown_flag"])


def test_errors_raised_in_dataloader_workers_are_one_line(tmp_path, capsys):
    from PIL import Image
    root = tmp_path / "custom"
    root.mkdir()
    Image.new("RGB", (20, 20)).save(root / "ok.jpg")
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    for split in ("train", "test", "database"):
        (root / f"{split}.txt").write_text("ok.jpg 1 0\nbroken.jpg 0 1\n")
    code = main(["--dataset", "custom", "--data_root", str(root), "--backbone", "small", "--epochs", "1",
                 "--batch_size", "2", "--workers", "1", "--hash_bit", "8", "--result_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "broken.jpg" in err and "Traceback" not in err
    import multiprocessing
    # the worker stopped with the error, not at some later garbage collection (torch's 5 s timeout)
    assert multiprocessing.active_children() == []


@pytest.mark.slow
@pytest.mark.parametrize("content,fragment", [
    ("state_dict", "is not a hyp2 checkpoint (the official code's .ckpt files hold only"),
    ("garbage", "cannot read checkpoint"),
])
def test_foreign_or_corrupt_checkpoint_is_one_line(tmp_path, capsys, content, fragment):
    path = tmp_path / "demo_small_48.ckpt"
    if content == "state_dict":  # what the official code saves: the network's bare state dict
        from hyp2.models import build_model
        torch.save(build_model("small", 48, pretrained=False).state_dict(), path)
    else:
        path.write_bytes(b"\x80\x02truncated")
    assert main(["--dataset", "demo", "--result_dir", str(tmp_path), "--test"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_checkpoint_of_other_classes_is_refused(tmp_path, capsys):
    from PIL import Image
    root = tmp_path / "custom"
    root.mkdir()
    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(root / f"{i}.jpg")
    for split in ("train", "test", "database"):
        (root / f"{split}.txt").write_text("".join(f"{i}.jpg {i % 2} {1 - i % 2} 1\n" for i in range(6)))
    common = ["--dataset", "custom", "--data_root", str(root), "--backbone", "small", "--epochs", "1",
              "--batch_size", "3", "--workers", "0", "--hash_bit", "8", "--result_dir", str(tmp_path / "r")]
    assert main(common) == 0
    (root / "classes.txt").write_text("cat\ndog\nbird\n")  # same count, other names
    capsys.readouterr()
    assert main(common + ["--test"]) == 2
    err = capsys.readouterr().err
    assert "was trained on 3 classes (class0, class1, class2) but this dataset has 3 classes (cat, dog, bird)" in err
