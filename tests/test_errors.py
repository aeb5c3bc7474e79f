"""One line for every user error: the shared parser, device resolver and exception summaries."""
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyp2.errors import ArgumentParser, UserError, one_line, reason, resolve_device, run_command

ROOT = Path(__file__).resolve().parents[1]


def test_reason_keeps_the_cause_of_a_multi_line_library_error():
    import io
    import tarfile
    with pytest.raises(tarfile.ReadError) as err:  # random bytes: tarfile lists every method it tried
        tarfile.open(fileobj=io.BytesIO(random.Random(0).randbytes(600)), mode="r:*")
    text = reason(err.value)
    assert text.startswith("ReadError: file could not be opened successfully: method gz: ") and "\n" not in text
    assert "method tar: ReadError('invalid header')" in text
    assert reason(ValueError("")) == "ValueError"
    assert reason(RuntimeError("first line\nadvice\nmore advice")) == "RuntimeError: first line"
    assert len(reason(OSError("x" * 1000))) < 330


def test_one_line_joins_messages_and_unwraps_worker_errors():
    assert one_line(UserError("cannot read w.txt:\n  because\n")) == "cannot read w.txt: because"
    worker = UserError("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                       "  File ...\nhyp2.errors.UserError: cannot open image a.jpg: broken")
    assert one_line(worker) == "cannot open image a.jpg: broken"


def test_parser_errors_are_one_line_naming_the_command(capsys):
    p = ArgumentParser(prog="python -m hyp2.x")
    p.add_argument("--n", type=int, required=True)
    assert run_command(lambda: p.parse_args(["--n", "x"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: python -m hyp2.x: argument --n: invalid int value") and err.count("\n") == 1


@pytest.mark.parametrize("name", ["meta", "mps", "xla", "cuda:x", "cpu:0:1"])
def test_devices_we_do_not_run_on_are_refused(name):
    with pytest.raises(UserError, match="device"):
        resolve_device(name)


def test_devices_that_work():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda:0")


@pytest.mark.slow
@pytest.mark.parametrize("module", ["hyp2.report", "hyp2.search"])
def test_commands_without_arguments_say_so_in_one_line(module):
    proc = subprocess.run([sys.executable, "-m", module], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "usage:" not in proc.stderr


def test_unreadable_weights_name_the_file_and_the_reason(tmp_path, capsys):
    from hyp2.cli import main
    (tmp_path / "w.txt").write_text("these are not weights\n")
    assert main(["--backbone", "resnet", "--weights", str(tmp_path / "w.txt"), "--dataset", "demo", "--subset", "8",
                 "--image_size", "64", "--epochs", "1", "--result_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"--weights {tmp_path / 'w.txt'}: not a readable PyTorch state dict (" in err and err.count("\n") == 1
