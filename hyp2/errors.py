"""The one exception type that reaches users as a single line instead of a traceback, and the
wrapper every command line uses to turn it into ``error: ...`` and exit status 2."""
from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """Bad input or environment a user can fix: the CLI prints ``error: <message>`` and exits 2.

    The message must say what is wrong, where, and how to fix it, in one line.
    """


def one_line(e: UserError) -> str:
    """The message of ``e`` as one line. An error raised in a DataLoader worker comes back
    re-raised with the worker's traceback as its message; its last line is ours."""
    text = str(e).strip()
    if "\n" in text:
        text = text.splitlines()[-1]
        text = text.removeprefix(f"{UserError.__module__}.{UserError.__qualname__}: ")
    return text


def run_command(body: Callable[[], object]) -> int:
    """Run a command's body and return its exit status: 0 when it returns, 2 after printing one
    ``error: ...`` line for a :class:`UserError`, 130 when interrupted."""
    try:
        body()
        return 0
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
