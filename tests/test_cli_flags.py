"""Flags: ranges, contradictions, --loss_opt, --test taking its settings from the checkpoint, and the
training-time findings (a last batch of one, --compile without a compiler)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyp2.cli import main, parse_config
from hyp2.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["--dataset", "demo", "--subset", "60", "--epochs", "1", "--batch_size", "30", "--hash_bit", "12"]


def error_of(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv,fragment", [
    (["--image_size", "100000"], "--image_size 100000: must be between 75 and 1024"),
    (["--seed", "99999999999999999999999"], "--seed 99999999999999999999999: must be between 0 and 4294967295"),
    (["--seed", "-1"], "--seed -1: must be between 0 and"),
    (["--workers", "5000"], "--workers 5000: must be between 0 and 64"),
    (["--cuda", "-2"], "--cuda -2: must be at least 0"),
    (["--device", "meta"], "--device meta: hyp2 runs on cpu or cuda only"),
    (["--device", "mps"], "--device mps: hyp2 runs on cpu or cuda only"),
    (["--device", "xla"], "--device xla: hyp2 runs on cpu or cuda only"),
    (["--device", "banana"], "--device 'banana': not a device"),
])
def test_out_of_range_values_are_refused(argv, fragment, capsys):
    assert fragment in error_of(capsys, argv)


@pytest.mark.parametrize("argv,fragment", [
    (["--resume", "--overwrite"], "--resume and --overwrite together"),
    (["--resume", "--no_save"], "--resume and --no_save together"),
    (["--resume", "--test"], "--resume and --test together"),
    (["--weights", "w.pth", "--no_pretrained"], "--weights and --no_pretrained together"),
    (["--device", "cpu", "--cuda", "1"], "--device and --cuda together"),
    (["--dataset", "demo", "--weights", "missing.pth"], "--backbone small has no ImageNet weights to replace"),
    (["--export_codes"], "--export_codes applies to --test"),
    (["--plots"], "--plots applies to --test"),
    (["--split_file", "s.json"], "--split_file: --dataset voc2007 does not use it (it applies to flickr)"),
    (["--dataset", "demo", "--voc_url", "http://x"], "--voc_url: --dataset demo does not use it (it applies to voc"),
    (["--dataset", "custom", "--no_md5"], "--no_md5: --dataset custom does not use it"),
    (["--loss", "dhn", "--beta", "0.3"], "--beta is HyP²'s; --loss dhn does not use it"),
    (["--loss", "csq", "--zeta", "0.1"], "--zeta is HyP²'s; --loss csq does not use it"),
    (["--beta", "0.3", "--loss_opt", "beta=0.2"], "--beta and --loss_opt beta=... both set beta"),
])
def test_contradictory_or_meaningless_flags_are_refused(argv, fragment, capsys):
    assert fragment in error_of(capsys, argv)


def test_loss_opt_is_parsed_checked_and_listed(capsys):
    c = parse_config(["--loss", "dpsh", "--loss_opt", "eta=5"])
    assert c.loss_options == (("eta", 5.0),)
    assert parse_config(["--beta", "0.25"]).loss_options == (("beta", 0.25),)
    assert parse_config([]).loss_options == () and parse_config([]).beta == 0.5
    err = error_of(capsys, ["--loss", "dpsh", "--loss_opt", "eta2=1"])
    assert "--loss_opt: dpsh: unknown option 'eta2'; valid: eta=10.0" in err
    assert "is not a number" in error_of(capsys, ["--loss", "dpsh", "--loss_opt", "eta=abc"])
    assert "KEY=VALUE" in error_of(capsys, ["--loss", "dpsh", "--loss_opt", "eta"])


def test_help_lists_every_registered_dataset_backbone_and_loss(capsys):
    from hyp2.data import DATASETS
    from hyp2.losses import LOSSES
    from hyp2.models import BACKBONES
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in DATASETS.names() + BACKBONES.names() + LOSSES.names():
        assert f"{name}:" in text, name
    assert "--loss_opt KEY=VALUE" in text


def printed_map(out: str) -> float:
    (value,) = re.findall(r"^map: (\S+)$", out, re.M)
    return float(value)


def test_loss_options_are_recorded_and_test_refuses_other_ones(tmp_path, capsys):
    argv = DEMO + ["--loss", "dpsh", "--loss_opt", "eta=5", "--result_dir", str(tmp_path)]
    assert main(argv) == 0
    best = printed_map(capsys.readouterr().out)
    record = json.loads((tmp_path / "demo_small_12_dpsh.json").read_text())
    assert record["loss_hparams"] == {"eta": 5.0} and record["config"]["loss_options"] == {"eta": 5.0}
    ckpt = torch.load(tmp_path / "demo_small_12_dpsh.ckpt", weights_only=True)
    assert ckpt["loss"]["name"] == "dpsh" and ckpt["loss"]["hparams"] == {"eta": 5.0}
    # --test needs no loss option: the checkpoint knows them; a disagreeing one is refused.
    assert main(DEMO + ["--loss", "dpsh", "--result_dir", str(tmp_path), "--test"]) == 0
    assert printed_map(capsys.readouterr().out) == best
    err = error_of(capsys, DEMO + ["--loss", "dpsh", "--loss_opt", "eta=6", "--result_dir", str(tmp_path), "--test"])
    assert "was trained with --loss_opt eta=5.0 but this run has --loss_opt eta=6.0" in err


def test_test_evaluates_at_the_trained_image_size(tmp_path, capsys):
    """A run trained at --image_size 48 used to be tested at the default 32."""
    assert main(DEMO + ["--image_size", "48", "--result_dir", str(tmp_path)]) == 0
    best = printed_map(capsys.readouterr().out)
    assert main(DEMO + ["--result_dir", str(tmp_path), "--test"]) == 0
    out = capsys.readouterr().out
    assert printed_map(out) == best and "48px" in out
    err = error_of(capsys, DEMO + ["--image_size", "32", "--result_dir", str(tmp_path), "--test"])
    assert "trained with --image_size 48 but this run has --image_size 32" in err


def test_zero_byte_checkpoint_is_one_line_for_test_and_search(tmp_path, capsys):
    from hyp2.search import main as search_main
    (tmp_path / "demo_small_12.ckpt").write_bytes(b"")
    assert "is empty (0 bytes)" in error_of(capsys, DEMO + ["--result_dir", str(tmp_path), "--test"])
    (tmp_path / "q.png").write_bytes(b"")
    assert search_main(["--checkpoint", str(tmp_path / "demo_small_12.ckpt"), "--codes", str(tmp_path / "c.npz"),
                        str(tmp_path / "q.png")]) == 2
    err = capsys.readouterr().err
    assert "is empty (0 bytes)" in err and err.count("\n") == 1


def test_a_last_batch_of_one_image_is_dropped_for_batchnorm_networks(tmp_path, capsys):
    """21 training images in batches of 20 left a batch of one: 'Expected more than 1 value per channel'."""
    argv = ["--dataset", "demo", "--subset", "21", "--epochs", "1", "--batch_size", "20", "--hash_bit", "8",
            "--result_dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "the last training batch would hold one image" in out
    assert main(argv[:3] + ["22"] + argv[4:] + ["--overwrite"]) == 0  # a last batch of two trains
    assert "would hold one image" not in capsys.readouterr().out


@pytest.mark.slow
def test_compile_without_a_compiler_falls_back_with_a_warning(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "CXX": "/nonexistent/c++", "CC": "/nonexistent/cc",
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "retrieval.py", *DEMO, "--compile", "--result_dir", str(tmp_path / "r")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--compile: torch.compile does not work on this machine" in proc.stdout
    assert re.search(r"^map: ", proc.stdout, re.M)


def test_flags_given_are_told_from_those_left_to_their_default():
    # --test takes the checkpoint's image size unless one is given; a loss option only when given
    test = parse_config(["--dataset", "demo", "--test"])
    assert test.image_size is None and test.loss_options == ()
    given = parse_config(["--dataset", "demo", "--test", "--image_size", "40", "--beta", "0.5", "--hash_bit", "0"]
                         [:-2])
    assert given.image_size == 40 and given.loss_options == (("beta", 0.5),)
    assert parse_config(["--dataset", "demo"]).image_size == 32  # training: the backbone's
    with pytest.raises(UserError, match="--hash_bit 0: must be between 1 and 256"):  # 0 is a value, not "absent"
        parse_config(["--dataset", "demo", "--hash_bit", "0"])
    with pytest.raises(UserError, match="--backbone: unknown backbone 'vgg'"):
        parse_config(["--backbone", "vgg"])


def test_unlabelled_queries_are_warned_about_with_their_line_and_data_provenance_is_recorded(tmp_path, capsys):
    from PIL import Image
    root = tmp_path / "custom"
    root.mkdir()
    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(root / f"{i}.jpg")
    lines = "".join(f"{i}.jpg {i % 2} {1 - i % 2}\n" for i in range(6))
    (root / "train.txt").write_text(lines)
    (root / "database.txt").write_text(lines)
    (root / "test.txt").write_text(lines + "0.jpg 0 0\n1.jpg 0 0\n")  # two queries without any label
    argv = ["--dataset", "custom", "--data_root", str(root), "--backbone", "small", "--epochs", "1", "--workers", "0",
            "--batch_size", "3", "--hash_bit", "8", "--result_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"2 queries have no label (first: {root / 'test.txt'} line 7)" in out and "AP 0" in out
    record = json.loads((tmp_path / "r" / "custom_small_8.json").read_text())
    assert record["data"] and all(isinstance(v, str) for v in record["data"].values())
