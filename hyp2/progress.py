"""Progress bars of long work (training, encoding, caching, downloads, extraction).

Every bar is tqdm's, shown on a terminal only: where stderr is a file or a pipe (a job's log, a
``2>&1 | tee``), no bar is drawn, so no carriage-return line shares a line with the next message
(the ``error: ...`` a failed run ends with, above all). ``enabled=False`` hides a bar anywhere.
"""
from __future__ import annotations

from typing import Iterable

from tqdm import tqdm


def bar(iterable: Iterable | None = None, *, desc: str = "", enabled: bool = True, **options) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``) that disappears when done and
    is drawn only on a terminal (``disable=None``: tqdm's own test of the stream)."""
    return tqdm(iterable, desc=desc, leave=False, disable=None if enabled else True, **options)
