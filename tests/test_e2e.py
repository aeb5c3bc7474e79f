"""The path real users take, for every paper backbone: ImageNet-style weights from a file
(``--weights``; here the torchvision architecture's own random initialisation, saved by the test),
train -> ``--test`` -> ``hyp2.search`` -> ``hyp2.load_hasher``, all agreeing exactly.

On the CPU by default; ``HYP2_TEST_DEVICE=cuda`` runs it on a GPU and ``HYP2_TEST_AMP=1`` trains
with ``--amp`` (benchmarks/gpu_check.sh does both).
"""
import json
import os
import re

import numpy as np
import pytest
import torch
from torchvision import models as tvm

import hyp2
from conftest import imagenet_like
from hyp2.cli import main
from hyp2.data import DataOptions, build_dataset
from hyp2.codes import load_codes
from hyp2.search import main as search_main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# backbone -> (torchvision architecture as the official ImageNet weights come, smallest useful size)
PAPER_BACKBONES = {
    "googlenet": (lambda: tvm.inception_v3(weights=None, aux_logits=True, init_weights=False), 75),
    "alexnet": (lambda: tvm.alexnet(weights=None), 64),
    "resnet": (lambda: tvm.resnet50(weights=None), 64),
    "small": (None, 32),  # trains from scratch: no ImageNet weights to pass
}
SUBSET, BATCH, BITS = 16, 8, 16
DEVICE = os.environ.get("HYP2_TEST_DEVICE", "cpu")
AMP = ["--amp"] if os.environ.get("HYP2_TEST_AMP") == "1" else []


def printed_map(out: str) -> float:
    found = re.findall(r"^map: (\S+)$", out, re.M)
    assert len(found) == 1, out
    return float(found[0])


@pytest.fixture(scope="module", params=list(PAPER_BACKBONES))
def trained(request, tmp_path_factory):
    """One epoch of the demo subset with ``--weights``, then ``--test --export_codes``."""
    backbone = request.param
    arch, size = PAPER_BACKBONES[backbone]
    tmp = tmp_path_factory.mktemp(backbone)
    flags = ["--dataset", "demo", "--subset", str(SUBSET), "--backbone", backbone, "--image_size", str(size),
             "--epochs", "1", "--batch_size", str(BATCH), "--hash_bit", str(BITS), "--result_dir", str(tmp / "r"),
             "--workers", "0", "--device", DEVICE]
    if arch is not None:
        torch.save(imagenet_like(arch(), size), tmp / "imagenet.pth")
        flags += ["--weights", str(tmp / "imagenet.pth")]
    return {"backbone": backbone, "size": size, "tmp": tmp, "flags": flags,
            "run": f"demo_{backbone}_{BITS}", "result": tmp / "r"}


def run_cli(capsys, argv) -> str:
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_train_test_search_and_hasher_agree(trained, capsys, tmp_path):
    flags, result, run = trained["flags"], trained["result"], trained["run"]
    best = printed_map(run_cli(capsys, flags + AMP))
    # --test rebuilds the network from the checkpoint alone (not from flags) and gets the same mAP.
    tested = printed_map(run_cli(capsys, [f for f in flags if f not in ("--image_size", str(trained["size"]))]
                                 + ["--test", "--export_codes"]))
    assert tested == best
    record = json.loads((result / f"{run}.json").read_text())
    assert record["test"]["map"] == best == record["best"]["map"]
    ckpt = torch.load(result / f"{run}.ckpt", weights_only=True)
    assert ckpt["recipe"]["image_size"] == trained["size"]
    if trained["backbone"] == "googlenet":  # the input convention of its ImageNet weights
        assert ckpt["recipe"]["arch_options"] == {"transform_input": True}

    # The Python API encodes the database exactly as --test did (same transform, same batches).
    db_codes = load_codes(result / f"{run}_codes.npz")
    hasher = hyp2.load_hasher(result / f"{run}.ckpt", device=DEVICE)
    assert (hasher.num_bits, hasher.image_size) == (BITS, trained["size"])
    assert list(hasher.classes) == list(db_codes.classes) and hasher.meta["epoch"] == 1
    data = build_dataset("demo", DataOptions(image_size=trained["size"]))
    images = [data.database.load(i) for i in range(SUBSET)]
    outputs = hasher.outputs(images, batch_size=BATCH)
    assert np.array_equal(np.packbits(outputs.numpy() >= 0, axis=1), db_codes.codes)
    codes = hasher.encode(images[:BATCH], batch_size=BATCH)  # the same first batch: the same numbers
    assert codes.dtype == torch.int8 and torch.equal(codes, torch.where(outputs[:BATCH] >= 0, 1, -1).to(torch.int8))

    # hyp2.search with a database image returns that image's exported code, at distance 0.
    i = next(i for i in range(SUBSET) if outputs[i].abs().min() > 1e-3)  # no sign near a tie
    images[i].save(tmp_path / "query.png")
    assert search_main(["--checkpoint", str(result / f"{run}.ckpt"), "--codes", str(result / f"{run}_codes.npz"),
                        "--json", "--top", "3", "--device", DEVICE, str(tmp_path / "query.png")]) == 0
    answer = json.loads(capsys.readouterr().out)["queries"][0]
    assert answer["code"] == db_codes.codes[i].tobytes().hex()
    assert answer["results"][0]["distance"] == 0
    assert str(db_codes.ids[i]) in [r["id"] for r in answer["results"] if r["distance"] == 0]


def test_test_refuses_flags_that_disagree_with_the_checkpoint(trained, capsys):
    flags, size = trained["flags"], trained["size"]
    if not (trained["result"] / f"{trained['run']}.ckpt").exists():
        run_cli(capsys, flags)
    other = [f if f != str(size) else str(size + 8) for f in flags]
    assert main(other + ["--test"]) == 2
    err = capsys.readouterr().err
    assert f"--image_size {size}" in err and f"--image_size {size + 8}" in err and err.count("\n") == 1
