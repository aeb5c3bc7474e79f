"""One run of a sweep, as a process: ``python -m hyp2.sweep.job [--torchrun N] -- FLAGS...``.

It looks at the run's files first, then trains with ``--resume`` unless the run is trained to the
end, then runs ``--test`` unless the JSON holds current test results; both steps are the ordinary
command line (:func:`hyp2.cli.main`), in this process (``--torchrun N``: training under ``torchrun``
with N processes). Started again after any kind of stop, it continues where the files say. Its
exit status is the first failing step's (0: the run is done).

Under a local sweep it ends when its parent does (Linux: ``PR_SET_PDEATHSIG``): a killed sweep
leaves no run behind holding its lock, only files that the next sweep resumes.
"""
from __future__ import annotations

import logging
import argparse
import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

log = logging.getLogger("hyp2")

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM (a clean, resumable stop) when the parent process ends."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: a killed sweep leaves its runs running
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def torchrun_command(n: int, argv: Sequence[str]) -> list[str]:
    """The training command under torchrun with ``n`` processes on this machine (DDP)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
            "-m", "hyp2.cli", *argv]


def _torchrun(n: int, argv: Sequence[str]) -> int:
    # torchrun forwards SIGINT/SIGTERM to its workers; this process waits for it to finish
    child = subprocess.Popen(torchrun_command(n, argv))

    def forward(signum, frame):
        child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    return child.wait()


def run_job(argv: Sequence[str], torchrun: int = 0) -> int:
    """Train (unless trained) then test (unless tested) the run of ``argv``; the exit status."""
    from ..cli import main
    from .plan import Run, identify
    from .state import progress

    name, result_dir, epochs = identify(argv)
    run = Run(name, {}, Path(result_dir), epochs)
    _, final, test = progress(run)
    flags = list(argv)
    train = [a for a in flags if a not in ("--export_codes", "--plots")] + ["--resume"]
    if not final:
        status = _torchrun(torchrun, train) if torchrun > 1 else main(train)
        if status != 0:
            return status
        _, final, test = progress(run)
    if test is None:
        return main(flags + ["--test"])
    log.info(f"{name}: trained and tested already; nothing to do")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyp2.sweep.job",
                                     description="Train (with --resume) then test one run of a sweep.")
    parser.add_argument("--torchrun", type=int, default=0, metavar="N", help="train with torchrun, N processes")
    parser.add_argument("--parent", type=int, default=0, help="end with this parent process (a local sweep)")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="-- then the run's flags")
    args = parser.parse_args(argv)
    if args.parent:
        die_with_parent(args.parent)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    from ..errors import run_command

    status = [0]

    def body():
        status[0] = run_job(flags, args.torchrun)

    return run_command(body) or status[0]


if __name__ == "__main__":
    sys.exit(main())
