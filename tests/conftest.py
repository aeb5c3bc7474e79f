"""Helpers shared by tests across the package."""
from __future__ import annotations

import contextlib
import os
import sys
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn


def imagenet_like(net: nn.Module, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for an ImageNet state dict of ``net``'s torchvision architecture: its random
    initialisation, with the BatchNorm running statistics calibrated on random images of side
    ``size`` (as trained weights have them). Without that, eval-mode BatchNorm networks map every
    input to nearly one output, and tests of their input pipeline could not fail."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration batch
    aux = getattr(net, "AuxLogits", None)  # Inception's aux head needs 299 px inputs in train mode
    if aux is not None:
        net.AuxLogits = None
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 3, size, size))
    if aux is not None:
        net.AuxLogits = aux
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    return net.eval().state_dict()


# Runs the CLI in a child process that SIGKILLs itself at the `kill_at`-th atomic save of a
# checkpoint (best and resumable ones counted together), after writing half of the file.
KILLER = textwrap.dedent("""
    import os, signal, sys
    import hyp2.io as io
    from hyp2.io import atomic_open
    kill_at, calls = int(sys.argv[1]), [0]
    def dying_save(path, save):
        calls[0] += 1
        if calls[0] == kill_at:
            with atomic_open(path, "wb") as fh:
                fh.write(b"half a checkpoint")
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        with atomic_open(path, "wb") as fh:
            save(fh)
    io.atomic_save = dying_save
    from hyp2.cli import main
    sys.exit(main(sys.argv[2:]))
""")


#: a small demo run that resumes, kills and overwrites are compared with (tests/test_resume.py,
#: tests/test_checkpointer.py): 4 epochs of 100 images, evaluated after each
DEMO_RUN_ARGS = ["--dataset", "demo", "--subset", "100", "--epochs", "4", "--eval_every", "1", "--batch_size", "25",
                 "--hash_bit", "12"]
_FINISHED: dict = {}


def finished_demo_run(tmp_path_factory):
    """``(folder, {file name: bytes})`` of :data:`DEMO_RUN_ARGS` trained once per test session
    (read it, or copy the folder; never write into it)."""
    if "run" not in _FINISHED:
        from hyp2.cli import main

        out = tmp_path_factory.mktemp("finished_demo")
        assert main(DEMO_RUN_ARGS + ["--result_dir", str(out)]) == 0
        _FINISHED["run"] = out, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix != ".lock"}
    return _FINISHED["run"]


@contextlib.contextmanager
def mounted(kind: str, path: Path, size: str = "64k"):
    """A tmpfs of ``size`` (``full``: a disk that fills up) or a read-only bind mount of the folder
    ``path.parent / "ro-src"`` (``ro``; fill that folder first) at ``path``; skips unless root."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small or read-only file system needs root")
    path.mkdir()
    if kind == "full":
        cmds = [["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]]
    else:
        src = path.parent / "ro-src"
        src.mkdir(exist_ok=True)
        cmds = [["mount", "--bind", str(src), str(path)], ["mount", "-o", "remount,bind,ro", str(path)]]
    for cmd in cmds:
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(path)], capture_output=True)
            pytest.skip(f"cannot mount here ({' '.join(cmd)})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def sweep_in_process(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m hyp2.sweep ARGS`` run from ``cwd`` in this process (its runs are child processes
    as always), with the exit status and output a subprocess would give: the sweep's own start-up
    (importing torch) is paid once per session, not once per call. Sweeps that load a plugin or
    are signalled run as real subprocesses instead."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from hyp2.sweep.command import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
        patch.delenv("HYP2_PLUGINS", raising=False)
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        with redirect_stdout(out), redirect_stderr(err):
            status = main(list(args))
    return subprocess.CompletedProcess(["python", "-m", "hyp2.sweep", *args], status, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _plugins_end_with_their_test():
    """What a test's plugins register in this process is gone after it, and their modules are
    imported afresh by the next test that loads them: no test sees another's entries."""
    from hyp2 import _plugins
    from hyp2.data import DATASETS
    from hyp2.evaluate import METRICS
    from hyp2.losses import LOSSES
    from hyp2.models import BACKBONES

    registries = (BACKBONES, DATASETS, LOSSES, METRICS)
    names = [set(r.names()) for r in registries]
    modules, loaded = set(sys.modules), dict(_plugins._LOADED)
    yield
    for registry, before in zip(registries, names):
        for name in set(registry.names()) - before:
            registry.unregister(name)
    for name in set(sys.modules) - modules:
        source = getattr(sys.modules[name], "__file__", None)
        if source and os.path.realpath(source) in _plugins._LOADED and os.path.realpath(source) not in loaded:
            del sys.modules[name]
    for source in set(_plugins._LOADED) - set(loaded):
        del _plugins._LOADED[source]
