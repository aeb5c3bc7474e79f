"""The local launcher: a sweep's runs as child processes of this one, ``--jobs`` at a time.

Each run is ``python -m hyp2.sweep.job -- FLAGS`` (:mod:`hyp2.sweep.job`): train with ``--resume``,
then ``--test``. With GPUs each job is pinned to one (``CUDA_VISIBLE_DEVICES``, round robin when
``--jobs`` exceeds them) unless the run names its device itself; on a CPU-only machine the jobs
share the cores (``OMP_NUM_THREADS`` divided among them unless set). A failed run does not stop
the others. Ctrl-C or SIGTERM stops the children cleanly (they exit as a run stopped that way
does, resumable) before the sweep returns; a SIGKILLed sweep takes its children with it (they get
SIGTERM from the kernel), so a rerun resumes them. A run another process holds (its lock) is
waited for, then looked at again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Sequence

from tqdm import tqdm

from ..errors import Terminated
from .plan import Plan, Run
from .state import DONE, FAILED, INTERRUPTED, Journal, RunState, failure_line, lock_holder, run_state

#: how often the loop looks at its children and at runs held elsewhere (seconds)
POLL_S = 0.25
#: how long stopped children get to exit cleanly before SIGKILL (seconds)
GRACE_S = 60.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means no GPU for the sweep
        count = 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed and len(listed) >= count else [str(i) for i in range(count)]


def child_env(run: Run, gpu: str | None, threads: int | None) -> dict[str, str]:
    """The environment of a run's job: hyp2 importable, its GPU pinned, its share of the cores."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                           if p])
    env["PYTHONUNBUFFERED"] = "1"
    if gpu is not None and "device" not in run.flags and "cuda" not in run.flags:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def job_command(run: Run, parent: int | None = None) -> list[str]:
    parent_flag = [f"--parent={parent}"] if parent else []
    return [sys.executable, "-m", "hyp2.sweep.job", *parent_flag, "--", *run.argv]


@dataclass
class _Child:
    run: Run
    process: subprocess.Popen
    out: IO
    slot: int
    started: float = field(default_factory=time.monotonic)


class LocalSweep:
    """Run ``todo`` (runs of ``plan``) ``jobs`` at a time; :meth:`run` returns when all ended."""

    def __init__(self, plan: Plan, todo: Sequence[Run], jobs: int | None, journal: Journal, retry_failed: bool,
                 states: dict[str, RunState]):
        self.plan, self.journal, self.retry_failed = plan, journal, retry_failed
        self.gpus = visible_gpus()
        self.jobs = jobs or max(1, len(self.gpus))
        cores = os.cpu_count() or 1
        self.threads = max(1, cores // self.jobs) if not self.gpus and self.jobs > 1 else None
        self.queue: deque[Run] = deque(todo)
        self.held: dict[str, Run] = {}
        self.children: dict[str, _Child] = {}
        self.states = dict(states)
        self.bar: tqdm | None = None

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict[str, RunState]:
        """Start, watch and reap the jobs; the final state of every run of the plan."""
        done = sum(s.status == DONE for s in self.states.values())
        self.started, self.initial = time.monotonic(), done
        # the bar shows on a terminal only (disable=None); each run's end is a line either way
        with tqdm(total=len(self.plan.runs), initial=done, unit="run", desc=f"sweep {self.plan.name}",
                  dynamic_ncols=True, file=sys.stderr, disable=None) as self.bar:
            try:
                while self.queue or self.children or self.held:
                    self._start_what_fits()
                    self._reap()
                    self._recheck_held()
                    self._show()
                    if self.queue or self.children or self.held:
                        time.sleep(POLL_S)
            except (KeyboardInterrupt, Terminated) as stop:
                self._stop_all(signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
                raise
        return self.states

    def _free_slot(self) -> int | None:
        used = {c.slot for c in self.children.values()}
        return next((i for i in range(self.jobs) if i not in used), None)

    def _start_what_fits(self) -> None:
        while self.queue:
            slot = self._free_slot()
            if slot is None:
                return
            run = self.queue.popleft()
            state = run_state(run, self.journal)
            self.states[run.name] = state
            if state.status == DONE or (state.status == FAILED and not self.retry_failed):
                continue
            holder = lock_holder(run.file(".lock"))
            if holder is not None:
                self.held[run.name] = run
                self._say(f"{run.name}: in use by another process (PID {holder or '?'}); waiting for it to end")
                continue
            self._start(run, slot)

    def _start(self, run: Run, slot: int) -> None:
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else None
        command = job_command(run, parent=os.getpid())
        self.journal.folder.mkdir(parents=True, exist_ok=True)
        out = open(self.journal.out(run.name), "a", encoding="utf-8")
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} python retrieval.py {' '.join(run.argv)}"
                  + (f" (CUDA_VISIBLE_DEVICES={gpu})" if gpu is not None else "") + "\n")
        out.flush()
        self.journal.started(run.name, command, gpu=gpu)
        # its own session: a terminal's Ctrl-C reaches the sweep only, which stops each child once
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=child_env(run, gpu, self.threads), start_new_session=True)
        self.children[run.name] = _Child(run, process, out, slot)
        self.states[run.name] = RunState("running", f"PID {process.pid}" + (f", GPU {gpu}" if gpu else ""))
        self._say(f"{run.name}: started" + (f" on GPU {gpu}" if gpu is not None else ""))

    def _reap(self) -> None:
        for name, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            del self.children[name]
            self._finished(child, code)

    def _finished(self, child: _Child, code: int) -> None:
        child.out.close()
        entry = self.journal.record(child.run.name, exit=code, command=child.process.args)
        state = run_state(child.run, self.journal)
        self.states[child.run.name] = state
        took = f"{time.monotonic() - child.started:.0f} s"
        if state.status == DONE:
            self.bar.update(1)
            self._say(f"{child.run.name}: done, {state.detail} ({took}); {self._progress()}")
        elif entry["status"] == FAILED:
            self._say(f"{child.run.name}: failed (exit {code}) after {took}: {failure_line(entry)}; "
                      f"output: {self.journal.out(child.run.name)}")
        else:
            self._say(f"{child.run.name}: stopped (exit {code}), {state.detail or state.status}")

    def _recheck_held(self) -> None:
        for name, run in list(self.held.items()):
            if lock_holder(run.file(".lock")) is None:
                del self.held[name]
                self.queue.appendleft(run)

    # ------------------------------------------------------------------ stopping

    def _stop_all(self, sig: int) -> None:
        """Send ``sig`` to every child once, wait for them (SIGKILL after :data:`GRACE_S`)."""
        for child in self.children.values():
            _signal(child.process, sig)
        deadline = time.monotonic() + GRACE_S
        for child in self.children.values():
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(child.process, signal.SIGKILL)
                child.process.wait()
            child.out.close()
            self.journal.record(child.run.name, exit=child.process.returncode, command=child.process.args)
            self.states[child.run.name] = RunState(INTERRUPTED, "stopped with the sweep")
        self.children.clear()

    # ------------------------------------------------------------------ display

    def _say(self, line: str) -> None:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()

    def _counts(self) -> str:
        counts: dict[str, int] = {}
        for state in self.states.values():
            counts[state.status] = counts.get(state.status, 0) + 1
        return ", ".join(f"{k} {counts[k]}" for k in ("running", FAILED, "pending", INTERRUPTED) if counts.get(k))

    def _progress(self) -> str:
        """``3/4 done, running 1, ETA 0:00:26`` (the ETA from the runs this sweep finished)."""
        done = sum(s.status == DONE for s in self.states.values())
        left, finished = len(self.plan.runs) - done, done - self.initial
        eta = ""
        if finished > 0 and left > 0:
            seconds = (time.monotonic() - self.started) / finished * left
            eta = f", ETA {time.strftime('%H:%M:%S', time.gmtime(seconds))}"
        counts = self._counts()
        return f"{done}/{len(self.plan.runs)} done" + (f", {counts}" if counts else "") + eta

    def _show(self) -> None:
        if self.bar.disable:
            return
        postfix = self._counts()
        if postfix != self.bar.postfix:
            self.bar.set_postfix_str(postfix, refresh=False)
        if time.monotonic() - self.bar.last_print_t >= 1:
            self.bar.refresh()


def _signal(process: subprocess.Popen, sig: int) -> None:
    try:
        process.send_signal(sig)
    except ProcessLookupError:
        pass
