"""The one exception type that reaches users as a single line instead of a traceback, and what every
command line shares: the wrapper that turns it into ``error: ...`` and exit status 2, an argument
parser whose mistakes are one line too, a device resolver, and :func:`reason`, which condenses a
library's (often multi-line) exception into the clause our messages quote."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator, NoReturn

#: longest library message quoted inside one of ours
_REASON_CHARS = 300
# How a DataLoader worker re-raises our error in the main process: the worker's traceback in
# the message, our own line last, prefixed with the exception's qualified name.
_WORKER_MARK = "Original Traceback"


class UserError(Exception):
    """Bad input or environment a user can fix: the CLI prints ``error: <message>`` and exits 2.

    The message must say what is wrong, where, and how to fix it, in one line.
    """


def reason(e: BaseException) -> str:
    """``"TypeName: first meaningful line"`` of a library exception, at most about 300 characters.

    Libraries put the cause first and advice after (torch.load's weights-only refusal, tarfile's
    list of tried methods); the first non-empty line is the cause. Messages that only list causes
    (``tarfile``'s "could not be opened successfully:" followed by one line per method) keep
    their list, joined with "; ".
    """
    lines = [line.strip(" -") for line in str(e).splitlines() if line.strip(" -")]
    if not lines:
        text = ""
    elif lines[0].endswith(":") and len(lines) > 1:
        text = f"{lines[0]} {'; '.join(lines[1:])}"
    else:
        text = lines[0]
    if len(text) > _REASON_CHARS:
        text = text[:_REASON_CHARS - 1].rstrip() + "…"
    name = type(e).__name__
    return f"{name}: {text}" if text else name


def one_line(e: UserError) -> str:
    """The message of ``e`` as one line.

    An error raised in a DataLoader worker comes back re-raised with the worker's traceback as its
    message; its last line is ours. Any other message with line breaks (a library's text quoted
    whole) is joined into one line, so nothing that names a file or a reason is cut off.
    """
    text = str(e).strip()
    if _WORKER_MARK in text:
        text = text.splitlines()[-1]
        return text.removeprefix(f"{UserError.__module__}.{UserError.__qualname__}: ")
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C's ``KeyboardInterrupt``: a scheduler's stop
    (Slurm preemption, ``scancel``, ``kill``) unwinds the same way, so temporary files are removed,
    the run lock is released and the last complete epoch stays resumable."""


def _raise_terminated(signum, frame) -> NoReturn:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread. Only where SIGTERM
    still has its default action (an application embedding hyp2 keeps its own handler)."""
    install = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    if install:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_command(body: Callable[[], object]) -> int:
    """Run a command's body and return its exit status: 0 when it returns, 2 after printing one
    ``error: ...`` line for a :class:`UserError`, 130 when interrupted (Ctrl-C), 143 when terminated
    (SIGTERM, e.g. a scheduler's preemption), each after one line on stderr."""
    from .logs import configure

    configure()  # every command's lines go to stdout through the hyp2 logger (hyp2/logs.py)
    try:
        with sigterm_as_interrupt():
            body()
        return 0
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM); a training run continues from its last epoch with --resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from ._plugins import plugin_failure

        blame = plugin_failure(e)  # a plugin's own bug is one line naming it; one of hyp2's, a traceback
        if blame is None:
            raise
        print(f"error: {blame}", file=sys.stderr)
        return 2


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every hyp2 command line: a mistake is one :class:`UserError` line naming the
    command, not a usage block; a subcommand-less call names the subcommands."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def resolve_device(name: str | None, flag: str = "--device", cuda_index: int = 0):
    """The ``torch.device`` a command runs on.

    Args:
        name: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...; ``None`` means ``cuda:<cuda_index>`` when
            CUDA is available, else the CPU.
        flag: how messages name the option.
        cuda_index: the device index of ``name=None`` (the official ``--cuda`` flag).

    Raises:
        UserError: an unknown device string, a device type this project does not run on (only
            ``cpu`` and ``cuda`` are supported: ``meta`` tensors hold no data, and ``mps``/``xla``
            are untested), CUDA requested without CUDA, or a CUDA index that does not exist.
    """
    import torch

    if name is None:
        return torch.device(f"cuda:{cuda_index}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"{flag} {name!r}: not a device ({reason(e)}); use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"{flag} {name}: hyp2 runs on cpu or cuda only (not {device.type}); use --device cpu "
                        f"or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{flag} {name}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and not 0 <= device.index < count:
            raise UserError(f"{flag} {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return device
