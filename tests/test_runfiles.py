"""The run's files: checkpoint validation, the run lock, owned temporary files, failed writes."""
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hyp2.errors import UserError
from hyp2.models import ModelRecipe
from hyp2.results import (RunFiles, RunLock, RunRecorder, load_checkpoint, prepare_result_dir, read_json,
                          save_checkpoint, write_torch)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ModelRecipe.for_training("small", 8, 32)
LOSS = {"name": "hyp2", "hparams": {"beta": 0.5}, "state": {}}


def good_payload() -> dict:
    return {"format": "hyp2-checkpoint", "version": 2, "model": RECIPE.build().state_dict(),
            "recipe": RECIPE.to_dict(), "loss": LOSS, "classes": ["a", "b"], "config": {}, "meta": {}}


@pytest.mark.parametrize("change,fragment", [
    ({"meta": ["a list"]}, "'meta' is list, not a dict"),
    ({"meta": None}, "'meta' is NoneType, not a dict"),
    ({"model": "weights"}, "'model' is str, not a dict"),
    ({"model": {"w": "not a tensor"}}, "not a state dict of tensors"),
    ({"recipe": {"backbone": "small"}}, "recipe's num_bits is missing"),
    ({"recipe": {**RECIPE.to_dict(), "backbone": "nope"}}, "unknown backbone 'nope'"),
    ({"loss": {"name": "hyp2"}}, "'loss' must hold its name, hparams and state"),
    ({"classes": "ab"}, "'classes' must be a list of names"),
    ({"version": 7}, "has version 7"),
    ({"format": "other"}, "is not a hyp2 checkpoint"),
])
def test_hand_made_checkpoints_are_refused_in_one_line(tmp_path, change, fragment):
    path = tmp_path / "x.ckpt"
    torch.save({**good_payload(), **change}, path)
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_empty_missing_and_garbage_checkpoints(tmp_path):
    (tmp_path / "zero.ckpt").write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        load_checkpoint(tmp_path / "zero.ckpt")
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "none.ckpt")
    (tmp_path / "dir.ckpt").mkdir()
    with pytest.raises(UserError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "dir.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(random.Random(0).randbytes(300))  # seeded: the same bytes every run
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(UserError, match="is not a hyp2 checkpoint"):
        load_checkpoint(tmp_path / "list.ckpt")


def test_altered_weights_do_not_match_the_digest(tmp_path):
    path = tmp_path / "m.ckpt"
    digest = save_checkpoint(path, recipe=RECIPE, model_state=RECIPE.build().state_dict(), loss=LOSS,
                             classes=["a", "b"], config={}, meta={"epoch": 1})
    ckpt = load_checkpoint(path)
    assert ckpt.digest == digest == ckpt.meta["model_digest"] and ckpt.recipe == RECIPE
    payload = torch.load(path, weights_only=True)
    payload["model"]["hash_layer.bias"] += 1
    torch.save(payload, path)
    with pytest.raises(UserError, match="do not match their recorded digest"):
        load_checkpoint(path)


def test_version_1_checkpoints_are_read_with_their_config(tmp_path):
    path = tmp_path / "v1.ckpt"
    recipe = ModelRecipe.for_training("small", 8, 48)
    torch.save({"format": "hyp2-checkpoint", "version": 1, "model": recipe.build().state_dict(),
                "loss": {"proxies": torch.zeros(2, 8)}, "config": {"pretrained": False, "beta": 0.5, "zeta": None},
                "meta": {"backbone": "small", "hash_bit": 8, "image_size": 48, "classes": ["a", "b"],
                         "loss": "hyp2"}}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.recipe == recipe and ckpt.classes == ("a", "b")
    assert ckpt.loss["hparams"] == {"beta": 0.5} and ckpt.loss["state"]["proxies"].shape == (2, 8)


def test_run_json_must_be_an_object(tmp_path):
    for text, fragment in (("[]", "holds a JSON list"), ("{", "cannot read results file"), ("3", "JSON int")):
        (tmp_path / "r.json").write_text(text)
        with pytest.raises(UserError, match=fragment):
            read_json(tmp_path / "r.json")
        with pytest.raises(UserError, match=fragment):
            RunRecorder.for_test(RunFiles(tmp_path, "r"), {}, save=False)


def test_stale_temporary_files_of_other_runs_are_never_touched(tmp_path):
    """A run removes only the temporaries of its own file names: demo_small_4 never touches
    demo_small_48's or demo_small_48_dhn's in-flight writes."""
    theirs = [".demo_small_48.ckpt.x1y2.tmp", ".demo_small_48_dhn.ckpt.abc.tmp", ".demo_small_4_dhn.json.q.tmp",
              ".demo_small_40_last.ckpt.z.tmp", ".demo_small_4.ckpt.a.b.tmp", "notes.tmp"]
    ours = [".demo_small_4.ckpt.k3j_x.tmp", ".demo_small_4_last.ckpt.abc.tmp", ".demo_small_4.json.0.tmp"]
    for name in theirs + ours:
        (tmp_path / name).write_bytes(b"x")
    removed = RunFiles(tmp_path, "demo_small_4").remove_stale_temps()
    assert sorted(p.name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_stale_temporary_file_of_another_run_survives_a_cli_run(tmp_path):
    from hyp2.cli import main
    victim = tmp_path / ".demo_small_48.ckpt.x.tmp"
    tmp_path.mkdir(exist_ok=True)
    victim.write_bytes(b"in flight")
    assert main(["--dataset", "demo", "--hash_bit", "4", "--epochs", "1", "--subset", "40",
                 "--result_dir", str(tmp_path)]) == 0
    assert victim.read_bytes() == b"in flight"


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hyp2.results import RunFiles, RunLock
    with RunLock(RunFiles(Path(sys.argv[1]), "demo_small_48")):
        print("holding", flush=True)
        time.sleep(60)
""")


def test_second_run_of_a_name_is_refused_naming_the_holder_and_sigkill_leaves_no_stale_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        with pytest.raises(UserError, match=f"in use by another process \\(PID {proc.pid}") as err:
            with RunLock(RunFiles(tmp_path, "demo_small_48")):
                pass
        assert "another --result_dir" in str(err.value)
        with RunLock(RunFiles(tmp_path, "demo_small_4")):  # another name in the same folder is free
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with RunLock(RunFiles(tmp_path, "demo_small_48")):  # the killed holder's lock is gone
        assert (tmp_path / "demo_small_48.lock").read_text().strip() == str(os.getpid())


def test_a_cli_run_of_a_name_in_use_stops_before_touching_its_files(tmp_path, capsys):
    """What two simultaneous runs of one name did: both passed the checks and one lost its checkpoint.
    Now the second (here: a run while another process holds the name) stops in one line."""
    from hyp2.cli import main
    (tmp_path / "demo_small_48.ckpt").write_bytes(b"the first run's checkpoint")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "holding"
        for extra in (["--overwrite"], ["--test"]):
            assert main(["--dataset", "demo", "--epochs", "1", "--subset", "20", "--result_dir", str(tmp_path)]
                        + extra) == 2
            err = capsys.readouterr().err
            assert f"(PID {proc.pid}" in err and err.count("\n") == 1, err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "demo_small_48.ckpt").read_bytes() == b"the first run's checkpoint"


def test_result_dir_that_is_a_file_or_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        prepare_result_dir(tmp_path / "file")
    with pytest.raises(UserError, match="cannot create it"):
        prepare_result_dir(tmp_path / "file" / "sub")
    with pytest.raises(UserError, match="cannot create it|not writable"):
        prepare_result_dir(Path("/proc/hyp2-results"))


@contextlib.contextmanager
def mounted(kind: str, path: Path):
    """A tiny tmpfs (``full``) or a read-only bind mount (``ro``) at ``path``; skips unless root."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small or read-only file system needs root")
    path.mkdir()
    if kind == "full":
        cmds = [["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)]]
    else:
        src = path.parent / "ro-src"
        src.mkdir()
        cmds = [["mount", "--bind", str(src), str(path)], ["mount", "-o", "remount,bind,ro", str(path)]]
    for cmd in cmds:
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(path)], capture_output=True)
            pytest.skip(f"cannot mount here ({' '.join(cmd)})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    with mounted("full", tmp_path / "full") as disk:
        (disk / "m.ckpt").write_bytes(b"previous")
        big = {"w": torch.zeros(64 * 1024)}  # 256 KiB: more than the disk holds
        with pytest.raises(UserError, match="not enough space for the checkpoint .* free") as err:
            write_torch(disk / "m.ckpt", big, "checkpoint")
        assert "\n" not in str(err.value)
        # When the space check is fooled (another writer fills the disk meanwhile), the failed write
        # itself (torch's "unexpected pos ...") is one line too, and nothing half-written remains.
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 0, 10**12))
        with pytest.raises(UserError, match="cannot write the checkpoint .*free space"):
            write_torch(disk / "m.ckpt", big, "checkpoint")
        assert (disk / "m.ckpt").read_bytes() == b"previous"
        assert sorted(p.name for p in disk.iterdir()) == ["m.ckpt"]


def test_read_only_result_dir_stops_the_cli_in_one_line(tmp_path, capsys):
    from hyp2.cli import main
    with mounted("ro", tmp_path / "ro") as ro:
        assert main(["--dataset", "demo", "--epochs", "1", "--subset", "20", "--result_dir", str(ro)]) == 2
        err = capsys.readouterr().err
        assert "is not writable" in err and err.count("\n") == 1


def test_several_runs_share_one_result_folder_at_once(tmp_path, capsys):
    """Runs of other names in one folder at the same time (a sweep): each holds only its own name,
    cleans only its own files, and --test of each reads back its own model."""
    import json

    from hyp2.cli import main
    common = [sys.executable, "retrieval.py", "--dataset", "demo", "--subset", "60", "--epochs", "2",
              "--result_dir", str(tmp_path)]
    runs = {"demo_small_8": ["--hash_bit", "8"], "demo_small_48": ["--hash_bit", "48"],
            "demo_small_8_dhn": ["--hash_bit", "8", "--loss", "dhn"]}
    procs = [subprocess.Popen(common + flags, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for flags in runs.values()]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outputs]
    for (run, flags), (out, _) in zip(runs.items(), outputs):
        record = json.loads((tmp_path / f"{run}.json").read_text())
        assert record["run"] == run and [h["epoch"] for h in record["history"]] == [1, 2]
        assert f"map: {record['best']['map']}" in out
        assert main(["--dataset", "demo", "--subset", "60", "--result_dir", str(tmp_path), "--test", *flags]) == 0
        assert f"map: {record['best']['map']}" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))
