import urllib.error

import pytest
import torch
from torchvision import models as tvm

from hyp2.errors import UserError
from hyp2.models import BACKBONES, ReusedClassifierHash, build_model


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES.names())  # every entry: a new one gets this for free
def test_outputs_b_by_k_in_train_and_eval(backbone):
    torch.manual_seed(0)
    entry = BACKBONES.get(backbone)
    model = build_model(backbone, 13, pretrained=False)
    x = torch.randn(2, 3, entry.min_size, entry.min_size)
    model.train()
    assert model(x).shape == (2, 13)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 13)


def test_googlenet_is_inception_v3_without_aux_head():
    model = build_model("googlenet", 48, pretrained=False)
    assert isinstance(model, tvm.Inception3)
    assert model.AuxLogits is None and not model.aux_logits
    assert model.fc.in_features == 2048 and model.fc.out_features == 48


def test_resnet_is_resnet50_and_alexnet_reuses_fc6_fc7():
    r = build_model("resnet", 16, pretrained=False)
    assert isinstance(r, tvm.ResNet) and len(r.layer3) == 6 and r.fc.out_features == 16
    a = build_model("alexnet", 16, pretrained=False)
    assert isinstance(a, ReusedClassifierHash)
    linears = [m for m in a.hash_layer if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(9216, 4096), (4096, 4096), (4096, 16)]
    assert sum(isinstance(m, torch.nn.Dropout) for m in a.hash_layer) == 2


@pytest.mark.slow
def test_local_weights_are_loaded_into_the_backbone(tmp_path):
    src = tvm.alexnet(weights=None)
    torch.save(src.state_dict(), tmp_path / "alexnet.pth")
    model = build_model("alexnet", 8, weights_path=tmp_path / "alexnet.pth")
    assert torch.equal(model.hash_layer[1].weight, src.classifier[1].weight)
    assert torch.equal(model.features[0].weight, src.features[0].weight)


def test_googlenet_with_weights_keeps_torchvision_input_transform(tmp_path):
    src = tvm.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(src.state_dict(), tmp_path / "inc.pth")
    model = build_model("googlenet", 8, weights_path=tmp_path / "inc.pth")
    assert model.transform_input  # as torchvision's pretrained Inception-v3 (and the official code)
    assert torch.equal(model.Conv2d_1a_3x3.conv.weight, src.Conv2d_1a_3x3.conv.weight)


def test_wrong_or_missing_weights_file_is_one_clear_error(tmp_path):
    torch.save(tvm.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UserError, match="do not fit backbone 'resnet'"):
        build_model("resnet", 8, weights_path=tmp_path / "r18.pth")
    with pytest.raises(UserError, match="no such file"):
        build_model("resnet", 8, weights_path=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch state dict"):
        build_model("resnet", 8, weights_path=tmp_path / "junk.pth")


def test_failed_download_names_the_file_torch_home_and_the_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as err:
        build_model("alexnet", 8, pretrained=True)
    msg = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(tmp_path) in msg
    assert "--weights" in msg and "--no_pretrained" in msg and "\n" not in msg


def test_bad_arguments():
    with pytest.raises(ValueError, match="known backbones: googlenet, alexnet, resnet, small, resnet18"):
        build_model("vgg", 8)
    for bits in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_bits"):
            build_model("small", bits)
    assert {"googlenet", "alexnet", "resnet", "small"} <= set(BACKBONES)


@pytest.mark.parametrize("backbone", BACKBONES.names())
def test_every_entry_is_complete(backbone):
    entry = BACKBONES.get(backbone)
    assert entry.name == backbone and entry.description and entry.lr > 0
    assert entry.min_size <= entry.image_size <= 448
    assert entry.weights is None or entry.weights.url.endswith(".pth")
    assert isinstance(entry.input_options(True), dict) and isinstance(entry.input_options(False), dict)


def test_checking_flags_does_not_import_torchvision():
    """torchvision costs a second at start-up: a bad flag, --help or a sweep's plan do without it."""
    import subprocess
    import sys

    code = ("import sys; from hyp2.cli import build_parser, parse_config; build_parser(); "
            "parse_config(['--dataset', 'demo', '--backbone', 'alexnet']); print('torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout == "False\n", done.stdout + done.stderr


def test_registering_a_backbone_twice_is_refused():
    with pytest.raises(ValueError, match="backbone 'resnet' is already registered"):
        BACKBONES.register("resnet", "again", tvm.resnet50, attach=lambda net, k: net)
