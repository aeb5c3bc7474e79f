"""The checkpoint files (hyp2.checkpoint): every field checked, a digest over everything, and one
line for anything hand-made, altered, foreign or out of range."""
import random

import numpy as np
import pytest
import torch

from hyp2.checkpoint import (_signed, checkpoint_payload, content_digest, load_checkpoint, load_last, save_checkpoint,
                             save_last, ResumeState)
from hyp2.errors import UserError
from hyp2.models import ModelRecipe, state_digest

RECIPE = ModelRecipe.for_training("small", 8, 32)
LOSS = {"name": "hyp2", "hparams": {"beta": 0.5}, "state": {}}


def good_payload() -> dict:
    """A checkpoint's contents as this hyp2 writes them, without the digest."""
    payload = checkpoint_payload(recipe=RECIPE, model_state=RECIPE.build().state_dict(), loss=LOSS,
                                 classes=["a", "b"], config={}, meta={"epoch": 3, "map": 0.5})
    return {k: v for k, v in payload.items() if k != "digest"}


def written(path, payload: dict, sign: bool = True):
    """``payload`` saved as a checkpoint; ``sign`` gives it a valid digest, as a hand-made file that
    copies the digest rule would have (so its fields, not the digest, are what is checked)."""
    torch.save(_signed(payload) if sign else payload, path)
    return path


def refused(path, fragment: str) -> str:
    with pytest.raises(UserError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert fragment in message and "\n" not in message, message
    return message


def test_a_written_checkpoint_reads_back_with_both_digests(tmp_path):
    model = RECIPE.build().state_dict()
    digest = save_checkpoint(tmp_path / "m.ckpt", recipe=RECIPE, model_state=model, loss=LOSS, classes=["a", "b"],
                             config={"seed": 1}, meta={"epoch": 3, "map": 0.5})
    ckpt = load_checkpoint(tmp_path / "m.ckpt")
    assert ckpt.digest == digest == state_digest(model) == ckpt.meta["model_digest"]
    assert ckpt.recipe == RECIPE and ckpt.classes == ("a", "b") and ckpt.meta["epoch"] == 3
    assert ckpt.file_digest == torch.load(tmp_path / "m.ckpt", weights_only=True)["digest"] != ckpt.digest


@pytest.mark.parametrize("change,fragment", [
    ({"meta": ["a list"]}, "'meta' is list, not a dict"),
    ({"meta": None}, "'meta' is NoneType, not a dict"),
    ({"model": "weights"}, "'model' is str, not a dict"),
    ({"model": {"w": "not a tensor"}}, "not a state dict of tensors"),
    ({"recipe": {"backbone": "small"}}, "recipe's num_bits is missing"),
    ({"recipe": {**RECIPE.to_dict(), "backbone": "nope"}}, "unknown backbone 'nope'"),
    ({"loss": {"name": "hyp2"}}, "'loss' must hold its name, hparams and state"),
    ({"classes": "ab"}, "'classes' is str, not a list"),
    ({"classes": []}, "'classes' must be a non-empty list of names"),
    ({"version": 2}, "has version 2; this hyp2 reads version 3"),
    ({"format": "other"}, "is not a hyp2 checkpoint"),
    # what a hand-made file can set to drive --test out of memory or into a library's traceback
    ({"recipe": {**RECIPE.to_dict(), "image_size": 200000}}, "image_size must be an integer in [16, 1024], got 200000"),
    ({"recipe": {**RECIPE.to_dict(), "image_size": -32}}, "image_size must be an integer in [16, 1024], got -32"),
    ({"recipe": {**RECIPE.to_dict(), "num_bits": 4096}}, "num_bits must be an integer in [1, 256], got 4096"),
    ({"recipe": {**RECIPE.to_dict(), "arch_options": {"bogus": 1}}}, "arch_options {'bogus': 1} are not the small"),
    ({"recipe": {**RECIPE.to_dict(), "std": [0.2, 0.0, 0.2]}}, "std [0.2, 0.0, 0.2] must be positive"),
    ({"recipe": {**RECIPE.to_dict(), "mean": [0.5, float("nan"), 0.5]}}, "recipe's mean is missing or malformed"),
    ({"meta": {"epoch": "abc"}}, "meta.epoch 'abc' is not an epoch number"),
    ({"meta": {"epoch": 2, "map": 7.0}}, "meta.map 7.0 is not an mAP"),
])
def test_hand_made_checkpoints_are_refused_in_one_line(tmp_path, change, fragment):
    refused(written(tmp_path / "x.ckpt", {**good_payload(), **change}), fragment)


def test_nan_weights_are_refused_even_with_consistent_digests(tmp_path):
    payload = good_payload()
    model = {k: v.clone() for k, v in payload["model"].items()}
    model["hash_layer.bias"][0] = float("nan")
    payload.update(model=model, meta={**payload["meta"], "model_digest": state_digest(model)})
    refused(written(tmp_path / "nan.ckpt", payload), "weights hold NaN or infinite values (hash_layer.bias)")


@pytest.mark.parametrize("edit", [
    lambda p: p["recipe"].update(image_size=64),             # --test then evaluated at 64 px
    lambda p: p["meta"].update(epoch=99, map=0.99),          # and reported epoch 99
    lambda p: p["loss"]["hparams"].update(beta=0.1),
    lambda p: p["classes"].reverse(),
    lambda p: p["model"]["hash_layer.bias"].add_(1),
])
def test_an_edited_checkpoint_is_refused(tmp_path, edit):
    """The digest covers everything that rebuilds the model or is reported, not only the weights."""
    path = tmp_path / "m.ckpt"
    save_checkpoint(path, recipe=RECIPE, model_state=RECIPE.build().state_dict(), loss=LOSS, classes=["a", "b"],
                    config={}, meta={"epoch": 3, "map": 0.5})
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    refused(path, "do not match their digest")


def test_a_checkpoint_without_a_digest_is_refused(tmp_path):
    refused(written(tmp_path / "x.ckpt", good_payload(), sign=False), "it has no digest")


def test_empty_missing_foreign_and_garbage_checkpoints(tmp_path):
    (tmp_path / "zero.ckpt").write_bytes(b"")
    refused(tmp_path / "zero.ckpt", "is empty")
    refused(tmp_path / "none.ckpt", "no checkpoint at")
    (tmp_path / "dir.ckpt").mkdir()
    refused(tmp_path / "dir.ckpt", "is a folder, not a file")
    (tmp_path / "junk.ckpt").write_bytes(random.Random(0).randbytes(300))  # seeded: the same bytes every run
    refused(tmp_path / "junk.ckpt", "cannot read checkpoint")
    torch.save([1, 2], tmp_path / "list.ckpt")
    refused(tmp_path / "list.ckpt", "is not a hyp2 checkpoint")
    np.savez(tmp_path / "codes.npz", codes=np.zeros(3))
    refused(tmp_path / "codes.npz", "is a NumPy .npz file (an exported codes file?), not a checkpoint")


def test_the_resumable_state_passed_as_a_checkpoint_says_which_file_to_pass(tmp_path):
    save_last(tmp_path / "demo_small_8_last.ckpt", _state())
    message = refused(tmp_path / "demo_small_8_last.ckpt", "is the resumable state of run demo_small_8")
    assert str(tmp_path / "demo_small_8.ckpt") in message


def test_content_digest_sees_every_value_and_no_order():
    a = {"x": torch.arange(3), "y": [1, 2.5, None, "s"], "z": {"b": 1, "a": True}}
    same = {"z": {"a": True, "b": 1}, "y": [1, 2.5, None, "s"], "x": torch.arange(3)}
    assert content_digest(a) == content_digest(same)
    for other in ({**a, "x": torch.arange(3).float()}, {**a, "y": [1, 2.5, None, "t"]}, {**a, "z": {"b": 1}},
                  {**a, "y": [1, 2.500000001, None, "s"]}, {**a, "z": {"b": 1, "a": 1}}):
        assert content_digest(other) != content_digest(a)


# ---------------------------------------------------------------------------------------- resumable state

REQUIRED = ("dataset", "hash_bit")


def _state(**changes) -> ResumeState:
    model = RECIPE.build()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fields = dict(epoch=2, train_seconds=3.5, model=model.state_dict(), loss={}, optimizer=opt.state_dict(),
                  scheduler={}, rng={"torch": torch.get_rng_state()},
                  history=[{"epoch": 1, "map": 0.4}, {"epoch": 2, "map": 0.5}],
                  best={"epoch": 2, "map": 0.5, "digest": "abc"}, config={"dataset": "demo", "hash_bit": 8})
    fields.update(changes)
    return ResumeState(**fields)


def test_a_resumable_state_reads_back(tmp_path):
    save_last(tmp_path / "r_last.ckpt", _state())
    state = load_last(tmp_path / "r_last.ckpt", REQUIRED)
    assert state.epoch == 2 and state.best["digest"] == "abc" and state.history[1]["map"] == 0.5


@pytest.mark.parametrize("change,fragment", [
    ({"epoch": "abc"}, "epoch 'abc' is not an epoch number"),
    ({"epoch": 0}, "epoch 0 is not an epoch number"),
    ({"model": "abc"}, "'model' is not a state dict of tensors"),
    ({"optimizer": []}, "'optimizer' is list, not a dict"),
    ({"rng": "x"}, "'rng' is str, not a dict"),
    ({"train_seconds": "x"}, "train_seconds 'x' is not a duration"),
    ({"train_seconds": float("inf")}, "train_seconds inf is not a duration"),
    ({"config": {}}, "its config lacks dataset, hash_bit"),
    ({"history": "x"}, "'history' must be a list of evaluations"),
    ({"history": [{"epoch": 5, "map": 0.4}]}, "history[0].epoch 5 is not an epoch from 1 to 2"),
    ({"history": [{"epoch": 1, "map": "high"}]}, "history[0].map 'high' is not an mAP"),
    ({"best": {"epoch": 2, "map": 0.9, "digest": "abc"}}, "is not one of its history's evaluations"),
    ({"best": None}, "'best' is missing although the history holds evaluations"),
])
def test_hand_made_resumable_states_are_refused_in_one_line(tmp_path, change, fragment):
    path = tmp_path / "r_last.ckpt"
    save_last(path, _state())
    payload = {k: v for k, v in torch.load(path, weights_only=True).items() if k != "digest"}
    torch.save(_signed({**payload, **change}), path)
    with pytest.raises(UserError) as err:
        load_last(path, REQUIRED)
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_scaled_weights_in_a_resumable_state_are_refused(tmp_path):
    """What resumed silently: the weights ×1.5, the rest untouched."""
    path = tmp_path / "r_last.ckpt"
    save_last(path, _state())
    payload = torch.load(path, weights_only=True)
    payload["model"] = {k: v * 1.5 if v.is_floating_point() else v for k, v in payload["model"].items()}
    torch.save(payload, path)
    with pytest.raises(UserError, match="do not match their digest"):
        load_last(path, REQUIRED)


def test_older_or_foreign_resumable_states(tmp_path):
    torch.save({"format": "hyp2-last", "epoch": 1}, tmp_path / "old_last.ckpt")
    with pytest.raises(UserError, match="has version None; this hyp2 reads version 3"):
        load_last(tmp_path / "old_last.ckpt")
    torch.save({"something": "else"}, tmp_path / "x_last.ckpt")
    with pytest.raises(UserError, match="is not a hyp2 resumable checkpoint"):
        load_last(tmp_path / "x_last.ckpt")
