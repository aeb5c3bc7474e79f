import math
from pathlib import Path

import pytest
import torch
from torch import nn

import hyp2.losses
import hyp2.train
from hyp2.data.base import LabelledImages, image_transform
from hyp2.errors import UserError
from hyp2.losses import HashLoss, build_loss
from hyp2.train import (MOMENTUM, WEIGHT_DECAY, TrainingRun, fit, make_loader, make_optimizer, make_scheduler,
                        seed_everything, train_one_epoch)


class Linear(nn.Module):
    def __init__(self, k=8):
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, k)

    def forward(self, x):
        return self.fc(x.flatten(1))


def tiny_split(n=24, c=4, seed=0):
    from PIL import Image
    g = torch.Generator().manual_seed(seed)
    imgs = (torch.rand(n, 16, 16, 3, generator=g) * 255).to(torch.uint8).numpy()
    labels = (torch.rand(n, c, generator=g) < 0.4).to(torch.uint8).numpy()
    labels[:, 0] |= labels.sum(1) == 0

    class Load:
        def __call__(self, i):
            return Image.fromarray(imgs[i])

    return LabelledImages([str(i) for i in range(n)], labels, Load(), image_transform(16, True))


def test_optimizer_is_the_official_recipe():
    model, loss = Linear(), build_loss("hyp2", 4, 8, options={"zeta": 0.0})
    opt = make_optimizer(model, loss, net_lr=0.01, rate=0.02)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.02]
    assert all(g["momentum"] == MOMENTUM == 0.9 and g["weight_decay"] == WEIGHT_DECAY == 5e-4
               for g in opt.param_groups)
    assert opt.param_groups[1]["params"][0] is loss.proxies
    sched = make_scheduler(opt)
    for _ in range(10):
        opt.step()  # no gradients: a no-op that keeps the scheduler's order check quiet
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.01])


def test_data_order_and_flips_are_reproducible_from_the_seed():
    split = tiny_split()

    def first_epoch(seed):
        seed_everything(seed)
        return [(x.sum().item(), i.tolist()) for x, _, i in make_loader(split, 8, train=True, workers=0, seed=seed)]

    assert first_epoch(3) == first_epoch(3)
    assert first_epoch(3) != first_epoch(4)


def test_fit_evaluates_every_n_epochs_and_after_the_last_and_learns():
    seed_everything(0)
    split = tiny_split()
    model, loss = Linear(), build_loss("hyp2", 4, 8, options={"zeta": 0.0})
    opt = make_optimizer(model, loss, 0.05, 0.05)
    sched = make_scheduler(opt)
    loader = make_loader(split, 8, train=True, workers=0)
    ended = []

    class Checkpoints:  # what the loop hands each epoch to, in order
        def end_epoch(self, epoch, train_seconds, stats, evaluation):
            ended.append((epoch, train_seconds, stats.loss, evaluation))

    run = TrainingRun(model, model, loss, opt, sched, loader, torch.device("cpu"), epochs=7, eval_every=3,
                      evaluate=lambda: 0.5)
    seconds = fit(run, Checkpoints())
    assert [e for e, *_ in ended] == [1, 2, 3, 4, 5, 6, 7]
    assert [e for e, _, _, m in ended if m is not None] == [3, 6, 7]
    assert all(t2 >= t1 > 0 for (_, t1, _, _), (_, t2, _, _) in zip(ended, ended[1:]))
    assert seconds == ended[-1][1]
    assert ended[-1][2] < ended[0][2]
    assert [round(g["lr"], 6) for g in opt.param_groups] == [0.05, 0.05]  # stepped 7 times: not yet at 10
    ended.clear()
    fit(run, Checkpoints(), start_epoch=6, train_seconds=100.0)  # a resumed run continues the count
    assert [e for e, *_ in ended] == [6, 7] and ended[0][1] > 100.0


def test_non_finite_loss_stops_with_epoch_and_step():
    split = tiny_split()
    model, loss = Linear(), build_loss("hyp2", 4, 8, options={"zeta": 0.0})
    with torch.no_grad():
        model.fc.weight.fill_(math.nan)
    opt = make_optimizer(model, loss, 0.01, 0.01)
    with pytest.raises(UserError, match="at epoch 4, step 1;"):
        train_one_epoch(model, loss, make_loader(split, 8, train=True, workers=0), opt, "cpu", epoch=4)


def test_evaluation_loaders_leave_the_training_rng_alone():
    split = tiny_split()
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for _ in make_loader(split.with_transform(image_transform(16, False)), 8, train=False, workers=0):
        pass
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["hyp2", "hashnet", "dpsh", "idhn", "csq", "orthohash", "proxy_anchor", "dhn"])
def test_a_training_step_never_reads_a_device_value_on_the_host(name, monkeypatch):
    """Reads of tensor values on the host (item, float, int, bool) make a GPU step wait for the
    device. Those made by the training loop and the losses are counted over epochs of 3 and of 6
    steps: the difference is what each step reads. Only the labels' 0/1 check, on the host
    tensors the loader made, is allowed (the data pipeline's own reads, on the host, are not
    counted)."""
    import sys
    reads = {"value": 0, "bool": 0}
    watched = (str(Path(hyp2.train.__file__)), str(Path(hyp2.losses.__file__).parent))

    def counting(kind, original):
        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(watched):
                reads[kind] += 1
            return original(self, *args, **kwargs)
        return wrapper

    for method in ("item", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, method, counting("value", getattr(torch.Tensor, method)))
    monkeypatch.setattr(torch.Tensor, "__bool__", counting("bool", torch.Tensor.__bool__))

    def epoch_reads(steps: int) -> tuple[int, int]:
        split = tiny_split(n=8 * steps)
        model, loss = Linear(), build_loss(name, 4, 8)
        opt = make_optimizer(model, loss, 0.01, 0.01)
        loader = make_loader(split, 8, train=True, workers=0)
        reads.update(value=0, bool=0)
        train_one_epoch(model, loss, loader, opt, "cpu", epoch=1)
        return reads["value"], reads["bool"]

    (v3, b3), (v6, b6) = epoch_reads(3), epoch_reads(6)
    assert (v6 - v3, b6 - b3) == (0, 3), "per step: no value read, one host-side label check"


@pytest.mark.parametrize("make, fragment", [
    (lambda: nn.Linear(3 * 16 * 16, 5), "outputs of shape (8, 5), not (B, 8) for --hash_bit 8"),
])
def test_a_backbone_of_the_wrong_width_is_one_line(make, fragment):
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = make()

        def forward(self, x):
            return self.fc(x.flatten(1))

    split = tiny_split()
    model, loss = Flat(), build_loss("hyp2", 4, 8)
    with pytest.raises(UserError) as e:
        train_one_epoch(model, loss, make_loader(split, 8, train=True, workers=0),
                        make_optimizer(model, loss, 0.01, 0.01), "cpu", epoch=1)
    assert fragment in str(e.value) and "\n" not in str(e.value)


class _Returns(HashLoss):
    """A plugin-style loss overriding the call the base class owns, returning what it is given."""

    value = None

    def forward(self, h, y):
        return type(self).value(h)


@pytest.mark.parametrize("value, fragment", [
    (lambda h: h.sum(dim=1), "returned shape (8,), not a scalar tensor"),
    (lambda h: "0.5", "returned str, not a scalar tensor"),
    (lambda h: torch.tensor(1.0), "returned a value without a gradient"),
])
def test_a_loss_that_breaks_the_contract_is_one_line_naming_it(value, fragment):
    split = tiny_split()
    model = Linear()
    loss = type("Broken", (_Returns,), {"value": staticmethod(value), "name": "broken"})(4, 8)
    with pytest.raises(UserError) as e:
        train_one_epoch(model, loss, make_loader(split, 8, train=True, workers=0),
                        make_optimizer(model, loss, 0.01, 0.01), "cpu", epoch=1)
    assert str(e.value).startswith("--loss broken ") and fragment in str(e.value)


class _Rows(torch.utils.data.Dataset):
    """Six (3, 4, 4) images with two-class labels; item ``broken`` raises in the worker."""

    def __init__(self, broken: int | None = None):
        self.broken = broken

    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i == self.broken:
            raise UserError(f"cannot read item {i}")
        return torch.full((3, 4, 4), float(i)), torch.tensor([1.0, 0.0]), i


@pytest.mark.parametrize("persistent", [False, True])
def test_a_workers_error_stops_the_loaders_workers_at_once(persistent):
    """An error raised in a DataLoader worker comes back through torch, whose re-raise leaves the
    iterator in a reference cycle: unless stopped with the error, the workers live on until a
    garbage collection, which then holds the process for torch's 5 s timeout. Training and
    encoding both stop them at once, and a persistent loader starts afresh afterwards."""
    import multiprocessing

    from hyp2.evaluate import encode

    rows = _Rows(broken=3)
    loader = torch.utils.data.DataLoader(rows, batch_size=2, num_workers=1, persistent_workers=persistent)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8))
    with pytest.raises(UserError, match="cannot read item 3") as caught:
        hyp2.train.train_one_epoch(model, build_loss("hyp2", 2, 8), loader,
                                   torch.optim.SGD(model.parameters(), lr=0.1), "cpu", epoch=1)
    assert multiprocessing.active_children() == []  # while the error and its traceback still live
    with pytest.raises(UserError, match="cannot read item 3") as caught:
        encode(model, loader, "cpu")
    assert multiprocessing.active_children() == []
    rows.broken = None
    outputs, labels = encode(model, loader, "cpu")  # usable again
    assert outputs.shape == (6, 8) and labels.shape == (6, 2)
    del caught
