"""The one exception type that reaches users as a single line instead of a traceback."""


class UserError(Exception):
    """Bad input or environment a user can fix: the CLI prints ``error: <message>`` and exits 2.

    The message must say what is wrong, where, and how to fix it, in one line.
    """
