"""Where each run of a sweep stands, read from its result folder and the sweep's journal alone.

* **done** — the run's JSON holds its final evaluation (an entry at its last epoch) and ``--test``
  results of its best checkpoint;
* **trained** — final evaluation, no (current) test results: only ``--test`` is left;
* **failed** — the journal's last attempt ended with an error (exit status and log lines kept);
* **interrupted** — ``{run}_last.ckpt`` without the final evaluation: ``--resume`` continues it;
* **running** — a process holds the run's lock (``{run}.lock``); **queued** — a Slurm job waits;
* **pending** — nothing yet.

The journal is a folder beside the runs (``{result_dir}/sweep-{plan}``): per run, ``{run}.out``
(everything its attempts printed) and ``{run}.status.json`` (its last attempt: command, host,
exit status, the output's last lines), written atomically.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..io import atomic_write_json
from .plan import Run

DONE, TRAINED, FAILED, INTERRUPTED, RUNNING, QUEUED, PENDING = (
    "done", "trained", "failed", "interrupted", "running", "queued", "pending")
#: exit statuses of a run stopped from outside (Ctrl-C, SIGTERM): resumable, not failures
STOPPED = (130, 143, -2, -15)
TAIL_LINES = 20


@dataclass(frozen=True)
class RunState:
    """A run's state (one of the names above) and one line of detail for people."""

    status: str
    detail: str = ""


def lock_holder(lock: Path) -> int | None:
    """The PID holding ``flock`` on ``lock`` (0 when the PID is not visible), or None when none does.

    Read from ``/proc/locks``, so looking never takes the lock from the run about to start. Where
    that file does not exist the answer is None (not known to be running).
    """
    try:
        st = lock.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == device:
            return int(parts[4]) if parts[4].isdigit() else 0
    return None


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or unreadable (a state is then
    derived from the other files; nothing is lost)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def progress(run: Run) -> tuple[int | None, bool, dict[str, Any] | None]:
    """``(last evaluated epoch, trained to the end, current test results)`` from the run's JSON."""
    record = read_record(run.file(".json")) or {}
    history = [h for h in record.get("history") or [] if isinstance(h, dict)]
    last = history[-1].get("epoch") if history else None
    final = isinstance(last, int) and last >= run.epochs
    test, best = record.get("test"), record.get("best") or {}
    current = (isinstance(test, dict) and test.get("map") is not None
               and test.get("checkpoint_epoch") == best.get("epoch"))
    return last, final, test if current else None


class Journal:
    """The sweep's folder of per-run output and last-attempt records."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def out(self, run: str) -> Path:
        return self.folder / f"{run}.out"

    def status_file(self, run: str) -> Path:
        return self.folder / f"{run}.status.json"

    def last(self, run: str) -> dict[str, Any] | None:
        return read_record(self.status_file(run))

    def record(self, run: str, *, exit: int | None, command: Sequence[str], **extra: Any) -> dict[str, Any]:
        """Write the run's last attempt: ``failed`` unless it exited 0 or was stopped from outside."""
        status = "ok" if exit == 0 else INTERRUPTED if exit in STOPPED else FAILED
        entry = {"run": run, "status": status, "exit": exit, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "host": socket.gethostname(), "command": list(command), "tail": tail(self.out(run)), **extra}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.status_file(run), entry)
        return entry

    def started(self, run: str, command: Sequence[str], **extra: Any) -> None:
        """Mark an attempt as begun (what a killed sweep leaves; the result folder then decides)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.status_file(run), {"run": run, "status": "started", "command": list(command),
                                                  "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                  "host": socket.gethostname(), **extra})


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` lines of a text file (progress bars' carriage returns folded)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    out = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    return [line for line in out if line][-lines:]


def failure_line(entry: dict[str, Any]) -> str:
    """The line of a failed attempt that says why: its ``error:`` line, else its last line."""
    lines = entry.get("tail") or []
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors or lines or ["(no output)"])[-1]


def run_state(run: Run, journal: Journal) -> RunState:
    """The state of ``run`` (see the module doc), in that order of precedence."""
    holder = lock_holder(run.file(".lock"))
    if holder is not None:
        return RunState(RUNNING, f"PID {holder}" if holder else "")
    last, final, test = progress(run)
    if final and test is not None:
        return RunState(DONE, f"test mAP {test['map']:.4f}")
    entry = journal.last(run.name)
    if entry is not None and entry.get("status") == FAILED:
        return RunState(FAILED, f"exit {entry.get('exit')}: {failure_line(entry)}")
    if final:
        return RunState(TRAINED, "trained; --test is left")
    if run.file("_last.ckpt").exists():
        seen = f"evaluated up to epoch {last} of {run.epochs}" if last is not None else f"of {run.epochs} epochs"
        return RunState(INTERRUPTED, seen)
    return RunState(PENDING)
