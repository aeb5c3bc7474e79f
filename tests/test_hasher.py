"""Rebuilding a trained model from its checkpoint alone, and hashing images with it."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

import hyp2
from conftest import imagenet_like
from hyp2.data import image_transform
from hyp2.errors import UserError
from hyp2.hasher import Hasher, rebuild_model
from hyp2.models import BACKBONES, ModelRecipe
from hyp2.checkpoint import load_checkpoint, save_checkpoint

LOSS = {"name": "hyp2", "hparams": {"beta": 0.5, "zeta": 0.0}, "state": {}}


def save(path, recipe, model, classes=("a", "b")):
    return save_checkpoint(path, recipe=recipe, model_state=model.state_dict(), loss=LOSS, classes=list(classes),
                           config={}, meta={"dataset": "demo", "epoch": 3, "map": 0.5})


# The paper's backbones, and one of each other kind of hash layer (the rest share these).
@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["googlenet", "alexnet", "resnet", "small", "resnet18", "efficientnet_b0"])
def test_training_and_test_side_builds_give_identical_outputs(backbone, tmp_path):
    """The training side builds from ImageNet weights (a stand-in: see conftest.imagenet_like), the
    test side from the checkpoint alone: eval-mode outputs must be bit-identical."""
    entry = BACKBONES.get(backbone)
    pretrained = entry.weights is not None
    size = max(entry.min_size, 64)
    recipe = ModelRecipe.for_training(backbone, 12, size, pretrained=pretrained)
    imagenet = imagenet_like(entry.arch(**dict(recipe.arch_options)), size) if pretrained else None
    trained = recipe.build(imagenet, "test weights").eval()
    save(tmp_path / "m.ckpt", recipe, trained)
    rebuilt = rebuild_model(load_checkpoint(tmp_path / "m.ckpt"))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(trained(x), rebuilt(x))


@pytest.mark.slow
def test_inception_input_convention_matters_so_the_recipe_keeps_it(tmp_path):
    """The flag the state dict does not hold: dropping it changes the outputs (what --test did)."""
    recipe = ModelRecipe.for_training("googlenet", 8, 75, pretrained=True)
    assert dict(recipe.arch_options) == {"transform_input": True}
    model = recipe.build(imagenet_like(BACKBONES.get("googlenet").arch(transform_input=True), 75)).eval()
    without = ModelRecipe.for_training("googlenet", 8, 75, pretrained=False).build().eval()
    without.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 75, 75)
    with torch.no_grad():
        y, wrong = model(x), without(x)
    assert (y - wrong).norm() > 0.3 * y.norm()  # far more than rounding: other inputs altogether
    save(tmp_path / "g.ckpt", recipe, model)
    assert load_checkpoint(tmp_path / "g.ckpt").recipe == recipe


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("h") / "small.ckpt"
    torch.manual_seed(1)
    recipe = ModelRecipe.for_training("small", 10, 40)
    save(path, recipe, recipe.build(), classes=("cat", "dog", "car"))
    return path


def test_hasher_knows_its_model_and_encodes_every_input_kind(small, tmp_path):
    hasher = hyp2.load_hasher(small)
    assert (hasher.num_bits, hasher.image_size, hasher.classes) == (10, 40, ("cat", "dog", "car"))
    assert hasher.meta["epoch"] == 3 and hasher.digest == load_checkpoint(small).digest
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (30 + 7 * i, 50, 3), dtype=np.uint8) for i in range(3)]
    images = [Image.fromarray(a) for a in arrays]
    paths = []
    for i, img in enumerate(images):
        img.save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    # Reference: the run's test transform, by hand, through the rebuilt network.
    x = torch.stack([image_transform(40, train=False)(img) for img in images])
    with torch.no_grad():
        want = hasher.model(x)
    assert torch.equal(hasher.outputs(images), want)
    codes = hasher.encode(paths)
    assert codes.dtype == torch.int8 and torch.equal(codes, torch.where(want >= 0, 1, -1).to(torch.int8))
    assert torch.equal(hasher.encode(str(paths[0])), codes[:1])
    # A uint8 batch at the trained size goes through the same PIL pipeline.
    batch = torch.from_numpy(rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)).permute(0, 3, 1, 2)
    pil = [Image.fromarray(b.permute(1, 2, 0).numpy()) for b in batch]
    assert torch.equal(hasher.outputs(batch), hasher.outputs(pil))
    # A float batch in [0, 1] at the trained size is normalised exactly like the uint8 one.
    assert torch.allclose(hasher.outputs(batch.float() / 255), hasher.outputs(batch), atol=1e-5)
    assert hasher.encode(torch.rand(3, 3, 64, 48)).shape == (3, 10)
    assert hasher.encode([]).shape == (0, 10)


def test_hasher_errors_are_clear(small, tmp_path):
    hasher = Hasher(load_checkpoint(small))
    with pytest.raises(UserError, match="cannot read image .*missing.png .*no such file"):
        hasher.encode([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        hasher.encode(torch.zeros(2, 40, 40))
    with pytest.raises(ValueError, match="uint8 or float"):
        hasher.encode(torch.zeros(1, 3, 40, 40, dtype=torch.int32))
    with pytest.raises(ValueError, match="image 1 is a int"):
        hasher.encode([Image.new("RGB", (4, 4)), 7])
    for device in ("meta", "mps", "nonsense"):
        with pytest.raises(UserError, match="device"):
            hyp2.load_hasher(small, device=device)
    with pytest.raises(UserError, match="no checkpoint at"):
        hyp2.load_hasher(tmp_path / "none.ckpt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hasher_on_cuda_matches_the_cpu(small):
    images = [Image.fromarray(np.full((40, 40, 3), v, np.uint8)) for v in (10, 128, 250)]
    cpu = hyp2.load_hasher(small).outputs(images)
    gpu = hyp2.load_hasher(small, device="cuda").outputs(images)
    assert torch.allclose(cpu, gpu, atol=1e-4)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, "4"])
def test_a_bad_batch_size_is_a_clear_error(small, batch_size):
    hasher = Hasher(load_checkpoint(small))
    images = [Image.new("RGB", (8, 8))]
    with pytest.raises(ValueError, match=r"Hasher\.encode: batch_size must be an integer >= 1"):
        hasher.encode(images, batch_size=batch_size)
    with pytest.raises(ValueError, match=r"Hasher\.outputs: batch_size must be an integer >= 1"):
        hasher.outputs(images, batch_size=batch_size)
    assert hasher.encode(images * 3, batch_size=1).shape == (3, 10)  # 1 is the smallest that works


def test_empty_images_are_a_clear_error(small):
    hasher = Hasher(load_checkpoint(small))
    for shape in [(2, 3, 0, 0), (1, 3, 0, 40), (1, 3, 40, 0)]:
        for dtype in (torch.float32, torch.uint8):
            with pytest.raises(ValueError, match=r"at least 1×1 pixels, got shape " + re.escape(str(shape))):
                hasher.encode(torch.zeros(shape, dtype=dtype))
    for size in [(0, 0), (0, 5), (5, 0)]:
        with pytest.raises(ValueError, match=f"image 1 is {size[0]}×{size[1]} pixels"):
            hasher.encode([Image.new("RGB", (4, 4)), Image.new("RGB", size)])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_blames_the_input_not_the_checkpoint(small, bad):
    hasher = Hasher(load_checkpoint(small))
    for size in (40, 23):  # at the trained size, and resized
        x = torch.rand(3, 3, size, size)
        x[2, 1, 3, 4] = bad
        for call in (hasher.encode, hasher.outputs):
            with pytest.raises(ValueError, match="image 2 of the input holds NaN or inf values"):
                call(x)
    with pytest.raises(ValueError, match="image 0 of the input holds NaN or inf"):
        hasher.forward(torch.full((1, 3, 40, 40), bad))


def test_nan_outputs_for_finite_input_blame_the_checkpoint(small):
    hasher = Hasher(load_checkpoint(small))
    with torch.no_grad():
        next(hasher.model.parameters()).fill_(float("nan"))
    with pytest.raises(UserError, match="gives NaN outputs for finite input; the checkpoint is broken"):
        hasher.encode(torch.rand(2, 3, 40, 40))
