"""A test plugin (``--plugin tests/sweep_gate.py --dataset demo_gate``): the demo dataset whose
training split stops one run, mid-training, until that run is killed.

Tests of sweeps must stop a run in the middle of its training, deterministically: on any machine,
however loaded, the run must be past its first checkpoint and short of its last epoch when it is
killed or requeued. The first process to read training item ``$HYP2_TEST_GATE_AFTER + 1`` (the
first item of its second epoch, when that is the training split's size: its first epoch's
``_last.ckpt`` is then on disk) creates the file ``$HYP2_TEST_GATE`` with its PID and then waits
forever; every other process, and that run resumed, finds the file there and goes on. Items,
labels and their order are the demo's own, so the numbers equal an ungated demo run's.
"""
from __future__ import annotations

import dataclasses
import os
import time

from hyp2.data.base import DATASETS
from hyp2.data.demo import DEFAULTS, build as build_demo


class GatedLoad:
    """The demo's image loader, counting the items it served in this process."""

    def __init__(self, load, after: int, marker: str):
        self.load, self.after, self.marker, self.served = load, after, marker, 0

    def __call__(self, i: int):
        self.served += 1
        if self.served == self.after + 1:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass  # another run (or this one before it was killed) stopped here already
            else:
                os.write(fd, f"{os.getpid()}\n".encode())
                os.close(fd)
                while True:  # until a signal ends the process
                    time.sleep(0.05)
        return self.load(i)


@DATASETS.register("demo_gate", "the demo dataset, one run stopped in its second epoch (sweep tests)",
                   defaults=DEFAULTS)
def build(options):
    data = build_demo(options)
    gate = GatedLoad(data.train.load, int(os.environ["HYP2_TEST_GATE_AFTER"]), os.environ["HYP2_TEST_GATE"])
    return dataclasses.replace(data, name="demo_gate", train=data.train.with_loader(gate))
