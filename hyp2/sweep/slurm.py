"""The Slurm launcher: one job per run through ``submitit`` (optional: ``pip install submitit``).

The runs go in as one job array (``--jobs`` its parallelism). Each job runs the run's
:mod:`hyp2.sweep.job` (train with ``--resume``, then ``--test``; under ``torchrun`` when a job
has more than one GPU), so a job requeued or preempted — whatever signal Slurm sent, USR2, SIGTERM
or SIGKILL — continues from the run's ``_last.ckpt`` when it runs again; submitit's checkpoint
hook (USR2 before a time limit) only asks for the requeue. The job ids are kept in the sweep's
journal (``slurm_jobs.json``); states come from the result folder and from ``squeue``/``sacct``
(with timeouts: both block for minutes when the controller is down).
"""
from __future__ import annotations

import getpass
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import UserError, reason
from ..io import atomic_write_json
from .plan import Plan, Run
from .state import DONE, FAILED, QUEUED, RUNNING, Journal, RunState, read_record

JOBS_FILE = "slurm_jobs.json"
#: how many times submitit requeues a job that reached its time limit
MAX_REQUEUES = 100
#: seconds a squeue / sacct call may take
QUERY_TIMEOUT_S = 30
_WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESV_DEL_HOLD"}
_ACTIVE = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class SlurmOptions:
    """The sweep's ``--slurm_*`` flags and ``--jobs`` (the array's parallelism; None: no limit)."""

    partition: str | None = None
    gpus_per_job: int = 1
    time: str | None = None
    mem: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    jobs: int | None = None


def minutes(text: str) -> int:
    """A Slurm time limit (``MM``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in whole minutes, rounded up."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise UserError(f"--slurm_time {text}: expected minutes, HH:MM:SS or D-HH:MM:SS (Slurm's forms)")
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is None and second is None:
        total = first * 60  # plain minutes
    elif days is None and third is None:
        total = first * 60 + second  # MM:SS
    else:
        total = (days or 0) * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)
    if total <= 0:
        raise UserError(f"--slurm_time {text}: must be more than 0")
    return -(-total // 60)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install submitit") from None
    return submitit


def job_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a job's run process: ``environ`` with hyp2 importable, output
    unbuffered, and torch's threads following the job's CPUs (``SLURM_CPUS_ON_NODE``), not the
    node's, where Slurm does not bind them; an ``OMP_NUM_THREADS`` already set is kept."""
    env = dict(environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (_PACKAGE_ROOT, environ.get("PYTHONPATH")) if p))
    cpus = environ.get("SLURM_CPUS_ON_NODE", "")
    if cpus.isdigit() and int(cpus) > 0 and "OMP_NUM_THREADS" not in environ:
        env["OMP_NUM_THREADS"] = cpus
    return env


class SweepJob:
    """What a Slurm job runs: the run's job process, its output appended to the journal's
    ``{run}.out``, its exit recorded in the journal. Requeued, it does the same again."""

    def __init__(self, run: Run, journal_dir: Path, gpus: int, cwd: str):
        self.name, self.argv, self.gpus = run.name, run.argv, gpus
        self.journal_dir, self.cwd = Path(journal_dir).resolve(), cwd

    def command(self) -> list[str]:
        torchrun = [f"--torchrun={self.gpus}"] if self.gpus > 1 else []
        return [sys.executable, "-m", "hyp2.sweep.job", *torchrun, "--", *self.argv]

    def __call__(self) -> int:
        journal, command = Journal(self.journal_dir), self.command()
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job else os.environ.get("SLURM_JOB_ID")
        env = job_env(os.environ)
        journal.folder.mkdir(parents=True, exist_ok=True)
        with open(journal.out(self.name), "a", encoding="utf-8") as out:
            out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} Slurm job {job}: python retrieval.py "
                      f"{' '.join(self.argv)}\n")
            out.flush()
            journal.started(self.name, command, job=job)
            code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd, env=env)
        entry = journal.record(self.name, exit=code, command=command, job=job)
        if entry["status"] == FAILED:  # so that sacct says FAILED too
            raise RuntimeError(f"run {self.name} failed with exit status {code}; see {journal.out(self.name)}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook before a time limit or preemption: requeue the same job; the run's
        files hold all its progress."""
        return _submitit().helpers.DelayedSubmission(self)


def make_executor(folder: Path, options: SlurmOptions):
    """A submitit SlurmExecutor for one job per run with the sweep's options."""
    submitit = _submitit()
    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=MAX_REQUEUES)
    params: dict[str, Any] = {"time": minutes(options.time) if options.time else None, "ntasks_per_node": 1,
                              "setup": [f"export PYTHONPATH={shlex.quote(_PACKAGE_ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}"],
                              "job_name": "hyp2-sweep", "additional_parameters": dict(options.extra)}
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_job:
        params["gpus_per_node"] = options.gpus_per_job
    if options.mem:
        params["mem"] = options.mem
    if options.jobs:
        params["array_parallelism"] = options.jobs
    try:
        executor.update_parameters(**params)
    except ValueError as e:
        raise UserError(f"--slurm_extra: {reason(e)}") from None
    return executor


def read_jobs(journal: Journal) -> dict[str, dict[str, Any]]:
    """The job ids this sweep submitted, by run."""
    return read_record(journal.folder / JOBS_FILE) or {}


def submit(plan: Plan, runs: Sequence[Run], options: SlurmOptions, journal: Journal) -> dict[str, str]:
    """Submit ``runs`` as one job array; returns ``{run: job id}`` (also kept in the journal)."""
    folder = journal.folder / "slurm" / time.strftime("%Y%m%d-%H%M%S")
    executor = make_executor(folder, options)
    cwd = os.getcwd()
    try:
        with executor.batch():
            jobs = [executor.submit(SweepJob(run, journal.folder, options.gpus_per_job, cwd)) for run in runs]
    except Exception as e:  # noqa: BLE001 - sbatch's refusal reaches us as submitit's error
        raise UserError(f"sbatch refused the jobs ({reason(e)}); check --slurm_partition, --slurm_gpus_per_job, "
                        f"--slurm_time, --slurm_mem and --slurm_extra against the cluster (sinfo)") from None
    ids = {run.name: str(job.job_id) for run, job in zip(runs, jobs)}
    recorded = read_jobs(journal)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    recorded.update({name: {"job": job, "submitted": stamp, "folder": str(folder)} for name, job in ids.items()})
    journal.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(journal.folder / JOBS_FILE, recorded)
    return ids


def _query(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def job_states(ids: Sequence[str]) -> dict[str, str] | None:
    """Slurm's state of each job id (``PENDING``, ``RUNNING``, ``COMPLETED``, ...) from ``squeue``,
    then ``sacct`` for the jobs that left the queue; ids neither knows are absent. None when the
    controller does not answer (nothing is known then)."""
    if not ids:
        return {}
    text = _query(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"])
    if text is None:
        return None
    wanted = set(ids)
    states = {parts[0]: parts[1] for parts in (line.split() for line in text.splitlines())
              if len(parts) == 2 and parts[0] in wanted}
    missing = wanted - set(states)
    if missing:
        bases = sorted({i.split("_")[0] for i in missing})
        text = _query(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(bases)]) or ""
        for line in text.splitlines():
            job, _, state = line.partition("|")
            if job in missing and state.split():
                states[job] = state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    return states


def overlay(runs: Sequence[Run], states: dict[str, RunState], journal: Journal) -> None:
    """In ``states``, the runs whose job waits or runs (Slurm's word) become queued or running; an
    ended job's state is added to its run's detail."""
    jobs = read_jobs(journal)
    ids = {run.name: str(jobs[run.name]["job"]) for run in runs if isinstance(jobs.get(run.name), dict)
           and "job" in jobs[run.name]}
    merge_job_states(states, ids, job_states(list(ids.values())))


def merge_job_states(states: dict[str, RunState], ids: Mapping[str, str], slurm: Mapping[str, str] | None) -> None:
    """:func:`overlay`'s rule: ``states`` (from the result folder) updated with ``slurm``, the
    state of each run's job id in ``ids`` (None: the controller did not answer)."""
    for name, job in ids.items():
        if slurm is None:  # the controller does not answer: a job may still run; never submit it twice
            if states[name].status not in (DONE, FAILED):
                states[name] = RunState(QUEUED, f"job {job}: Slurm does not answer (squeue); state unknown")
            continue
        state = slurm.get(job)
        if state is None:
            continue
        # a job is running until Slurm says it ended, even when its run's files say done: it may
        # still be recording its exit in the journal, which --wait must not return before
        if state in _WAITING:
            states[name] = RunState(QUEUED, f"job {job} {state}")
        elif state in _ACTIVE:
            states[name] = RunState(RUNNING, f"job {job}")
        elif states[name].status not in (DONE, FAILED):
            states[name] = RunState(states[name].status, ", ".join(
                p for p in (states[name].detail, f"job {job} ended {state}") if p))
