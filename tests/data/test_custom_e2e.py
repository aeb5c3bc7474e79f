"""End to end: one epoch of HyP² training on a generated custom dataset through the command line."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from .test_custom import LABELS, write_custom

cli = pytest.importorskip("hyp2.cli", reason="hyp2.cli is not written yet")


@pytest.mark.parametrize("cache", [False, True])
def test_one_epoch_on_custom_data(tmp_path, cache):
    data_root, result = tmp_path / "data", tmp_path / "result"
    write_custom(data_root)
    (data_root / "classes.txt").write_text("sun\nsea\nsand\n")
    argv = ["--dataset", "custom", "--data_root", str(data_root), "--backbone", "small", "--no_pretrained",
            "--epochs", "1", "--eval_every", "1", "--image_size", "32", "--batch_size", "8", "--workers", "0",
            "--result_dir", str(result), "--hash_bit", "16"] + (["--cache"] if cache else [])
    with redirect_stdout(io.StringIO()):
        assert cli.main(argv) == 0
    runs = list(result.glob("*.json"))
    assert len(runs) == 1, sorted(p.name for p in result.iterdir())
    run = json.loads(runs[0].read_text())
    assert run["num_classes"] == 3
    assert run["topk"] == len(LABELS["database"])  # the whole database
    assert [h["epoch"] for h in run["history"]] == [1]
    assert 0.0 <= run["best"]["map"] <= 1.0
    assert (data_root / ".cache").exists() == cache
