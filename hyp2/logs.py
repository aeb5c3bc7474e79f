"""Output of the command lines: the ``hyp2`` logger, a run's log file, and TensorBoard scalars.

Every module logs to ``logging.getLogger("hyp2")``. A command line calls :func:`configure` once:
INFO lines go to stdout as they are, warnings as ``warning: ...``; ``--quiet`` keeps warnings
only, ``-v`` adds DEBUG. Under torchrun only rank 0 speaks; the others keep their warnings. While
a run holds its name, :func:`run_log` adds its ``{run}.txt`` as a file handler (timestamped lines,
DEBUG included). A library user who configures nothing sees warnings only (Python's default).

Notices about the data (a third-party list fetched, a cache built or waited for) go to
:func:`notice`, the ``hyp2.notice`` logger, always shown on stderr: stdout carries results that
scripts parse (``map: ...``, a search's table).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator

from .errors import UserError, reason

LOGGER = logging.getLogger("hyp2")
NOTICES = logging.getLogger("hyp2.notice")
_CONSOLE = "hyp2-console"


class _Console(logging.StreamHandler):
    """A handler writing to ``sys.stdout`` or ``sys.stderr`` as they are when a record is emitted,
    not when the handler was made (a test, or an embedding program, may replace them)."""

    def __init__(self, name: str):
        super().__init__()
        self._which = name

    @property
    def stream(self):
        return getattr(sys, self._which)

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler sets it; the stream is always the current one
        pass


class _Lines(logging.Formatter):
    """A message as it is, warnings and errors prefixed with their level, the time in front in
    a log file."""

    def __init__(self, stamp: bool = False):
        super().__init__(datefmt="%Y-%m-%d %H:%M:%S")
        self.stamp = stamp

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        if self.stamp:
            text = f"{self.formatTime(record, self.datefmt)} {text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(verbosity: int = 0, rank: int = 0) -> None:
    """Console output for a command line: stdout (as it is at the call), INFO and up (``verbosity``
    1: DEBUG, -1: WARNING); a process of rank > 0 shows warnings only. Replaces an earlier call's."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 or rank > 0 else logging.INFO
    for handler in [h for h in LOGGER.handlers if h.get_name() == _CONSOLE]:
        LOGGER.removeHandler(handler)
    console = _Console("stdout")
    console.set_name(_CONSOLE)
    console.setFormatter(_Lines())
    console.setLevel(level)
    LOGGER.addHandler(console)
    LOGGER.setLevel(logging.DEBUG)
    LOGGER.propagate = False  # the command owns its output: no second copy through the root logger


@contextlib.contextmanager
def run_log(path: Path | None) -> Iterator[None]:
    """Append the ``hyp2`` logger's records, DEBUG included and timestamped, to ``path`` (the
    run's ``{run}.txt``) for the block; nothing when ``path`` is None (``--no_save``, rank > 0)."""
    if path is None:
        yield
        return
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write the log {path} ({e.strerror or reason(e)}); check the free space and "
                        f"permissions of {Path(path).parent}") from None
    handler.setFormatter(_Lines(stamp=True))
    handler.setLevel(logging.DEBUG)
    previous = LOGGER.level
    LOGGER.setLevel(logging.DEBUG)
    LOGGER.addHandler(handler)
    NOTICES.addHandler(handler)
    try:
        yield
    finally:
        LOGGER.removeHandler(handler)
        NOTICES.removeHandler(handler)
        LOGGER.setLevel(previous)
        handler.close()


def notice(message: str) -> None:
    """A notice about the data, on stderr (see the module docstring) and in the run's log."""
    NOTICES.info(message)


def _notices_on_stderr() -> None:
    handler = _Console("stderr")
    handler.setFormatter(_Lines())
    NOTICES.addHandler(handler)
    NOTICES.setLevel(logging.INFO)
    NOTICES.propagate = False


_notices_on_stderr()


class Board:
    """TensorBoard scalars of a run (``--tensorboard``) in ``{run}.tb/``: per epoch the loss, each of
    its terms, the learning rate of every parameter group, and every evaluation's mAP."""

    def __init__(self, folder: Path, group_names: list[str]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard (or drop "
                            "--tensorboard)") from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.groups = group_names

    def epoch(self, epoch: int, stats, lrs: list[float], evaluation: float | None) -> None:
        """One epoch's scalars: ``stats`` (:class:`hyp2.train.EpochStats`), the learning rate each
        parameter group trained at, and the evaluation's mAP when there was one."""
        w = self.writer
        w.add_scalar("train/loss", stats.loss, epoch)
        for name, value in stats.components.items():
            w.add_scalar(f"train/{name}", value, epoch)
        for name, value in zip(self.groups, lrs):
            w.add_scalar(f"lr/{name}", value, epoch)
        w.add_scalar("train/seconds", stats.seconds, epoch)
        if evaluation is not None:
            w.add_scalar("eval/map", evaluation, epoch)
        w.flush()

    def close(self) -> None:
        self.writer.close()
