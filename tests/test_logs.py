"""Output (hyp2.logs, hyp2.progress): the hyp2 logger on stdout, the run's log file, --quiet / -v,
TensorBoard scalars, and progress bars that never write into a log."""
import io
import json
import logging

import pytest

from hyp2.cli import main
from hyp2.logs import configure, run_log
from hyp2.progress import bar

TINY = ["--dataset", "demo", "--subset", "40", "--epochs", "2", "--batch_size", "20", "--hash_bit", "12"]


def test_lines_go_to_stdout_warnings_say_so_and_the_file_has_everything(tmp_path, capsys):
    configure()
    log = logging.getLogger("hyp2")
    with run_log(tmp_path / "run.txt"):
        log.info("an epoch")
        log.debug("a detail")
        log.warning("a problem")
    log.info("after the run")
    out = capsys.readouterr().out.splitlines()
    assert out == ["an epoch", "warning: a problem", "after the run"]
    lines = (tmp_path / "run.txt").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["an epoch", "a detail", "warning: a problem"]
    configure(verbosity=-1)
    log.info("hidden")
    log.warning("shown")
    configure(verbosity=1)
    log.debug("debug shown")
    assert capsys.readouterr().out.splitlines() == ["warning: shown", "debug shown"]
    configure(rank=1)  # another torchrun process keeps its warnings only
    log.info("rank 1 line")
    assert capsys.readouterr().out == ""
    configure()


def test_a_bar_draws_nothing_where_stderr_is_not_a_terminal():
    """tqdm's carriage returns used to share a line with the `error:` that followed in a log."""
    stream = io.StringIO()
    for _ in bar(range(100), desc="encode", file=stream):
        pass
    assert stream.getvalue() == ""


@pytest.mark.slow
def test_quiet_and_verbose_runs(tmp_path, capsys):
    assert main(TINY + ["--result_dir", str(tmp_path / "q"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert "epoch 2/2" in (tmp_path / "q" / "demo_small_12.txt").read_text()  # the log keeps everything
    assert main(TINY + ["--result_dir", str(tmp_path / "v"), "-v"]) == 0
    assert "config: {" in capsys.readouterr().out
    assert main(TINY + ["--quiet", "-v"]) == 2
    assert "--quiet and --verbose together" in capsys.readouterr().err


@pytest.mark.slow
def test_tensorboard_scalars_of_every_epoch(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(TINY + ["--result_dir", str(tmp_path), "--tensorboard"]) == 0
    events = EventAccumulator(str(tmp_path / "demo_small_12.tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/proxy_pos", "train/proxy_neg", "train/pair", "lr/network", "lr/hyp2",
            "eval/map"} <= tags
    maps = [e.value for e in events.Scalars("eval/map")]
    history = json.loads((tmp_path / "demo_small_12.json").read_text())["history"]
    assert maps == pytest.approx([h["map"] for h in history]) and len(maps) == 2
    assert main(TINY + ["--result_dir", str(tmp_path), "--test", "--tensorboard"]) == 2
