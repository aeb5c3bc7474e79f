"""A plugin that breaks something is one line naming it, whatever it broke: a built-in name taken,
sys.exit at import, a loss, backbone, dataset or metric that raises (hyp2._plugins and
hyp2.errors.run_command), while an error in hyp2's own code stays a traceback."""
import textwrap

import pytest

from hyp2.cli import main
from hyp2.data import DATASETS
from hyp2.errors import run_command
from hyp2.losses import LOSSES

DEMO = ["--dataset", "demo", "--subset", "40", "--epochs", "1", "--batch_size", "20", "--hash_bit", "12",
        "--no_save"]


def write(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_a_plugin_taking_a_built_in_name_is_one_line(tmp_path, capsys):
    path = write(tmp_path, "takes_demo.py", """
        from hyp2.data import DATASETS
        DATASETS.register("demo", "mine", lambda options: None)
    """)
    assert main(["--plugin", path, *DEMO]) == 2
    err = one_line(capsys)
    assert f"--plugin {path}: importing it failed" in err and "dataset 'demo' is already registered" in err


def test_sys_exit_in_a_plugin_is_one_line(tmp_path, capsys):
    path = write(tmp_path, "exits.py", "import sys\nsys.exit(3)\n")
    assert main(["--plugin", path, *DEMO]) == 2
    assert "importing it called sys.exit(3)" in one_line(capsys)


def test_a_loss_that_raises_is_one_line_naming_the_plugin(tmp_path, capsys):
    path = write(tmp_path, "raising_loss.py", """
        from hyp2.losses import LOSSES, HashLoss

        @LOSSES.register("raising", "raises in its terms")
        class Raising(HashLoss):
            weights = {"a": 1.0}

            def terms(self, h, labels):
                return {"a": h.sum() / undefined_name}
    """)
    try:
        assert main(["--plugin", path, *DEMO, "--loss", "raising"]) == 2
    finally:
        LOSSES.unregister("raising")
    err = one_line(capsys)
    assert f"plugin {path} failed (NameError: name 'undefined_name' is not defined) at " in err
    assert "raising_loss.py:9;" in err


def test_a_dataset_builder_that_raises_is_one_line_naming_the_plugin(tmp_path, capsys):
    path = write(tmp_path, "raising_data.py", """
        from hyp2.data import DATASETS

        @DATASETS.register("raising_data", "raises when built")
        def build(options):
            return {}["missing"]
    """)
    try:
        assert main(["--plugin", path, *DEMO[2:], "--dataset", "raising_data"]) == 2
    finally:
        DATASETS.unregister("raising_data")
    assert f"plugin {path} failed (KeyError: 'missing')" in one_line(capsys)


def test_an_error_in_hyp2_itself_stays_a_traceback():
    def bug():
        raise ZeroDivisionError("a bug of ours")

    with pytest.raises(ZeroDivisionError):
        run_command(bug)
