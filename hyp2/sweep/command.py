"""``python -m hyp2.sweep PLAN [flags]``: make every run of a plan, resumably, then its report.

Running the same command again continues the sweep: the state of each run is read from the
result folder (:mod:`hyp2.sweep.state`), so nothing finished is trained again and nothing
interrupted starts over. When no run is left waiting or running, the runs that are done get
``hyp2.report``'s ``results.md`` and ``index.html`` in ``report/{plan}``, with the paper's
tables beside ours. The guide is docs/sweeps.md.
"""
from __future__ import annotations

import logging
import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from ..errors import ArgumentParser, Terminated, UserError, run_command
from .plan import Plan, load_plan, shipped_plans
from .state import DONE, FAILED, INTERRUPTED, PENDING, QUEUED, RUNNING, TRAINED, Journal, RunState, run_state
from ..logs import notice

log = logging.getLogger("hyp2")

_LAUNCHABLE = (PENDING, INTERRUPTED, TRAINED)

_EPILOG = """\
states: done (trained and tested), trained (only --test left), interrupted (resumes from
_last.ckpt), failed (see --retry-failed), running, queued (Slurm), pending.

examples:
  python -m hyp2.sweep demo                              # the demo plan on this machine
  python -m hyp2.sweep paper --dry-run                   # the paper's 16 HyP2 runs and their states
  python -m hyp2.sweep paper --launcher slurm --slurm_partition gpu --slurm_time 12:00:00
  python -m hyp2.sweep my_plan.yaml --set epochs=2 --jobs 4

guide: docs/sweeps.md
"""


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m hyp2.sweep", epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Make every run of a plan (train with --resume, then --test), on this machine\n"
                                   "or on a Slurm cluster, and write their report beside the paper's tables.\n"
                                   "Running it again continues where the result folder says.")
    p.add_argument("plan", metavar="PLAN", help=f"a plan file, or a shipped plan: {', '.join(shipped_plans())}")
    p.add_argument("--launcher", choices=("local", "slurm"), default="local", help="where the runs run")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="runs at once (local default: one per visible GPU, else 1; slurm: the array's limit)")
    p.add_argument("--result_dir", default=None, metavar="DIR", help="result folder of every run (and the journal)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a flag for every run, winning over the plan (repeatable), e.g. --set epochs=2")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print the plan, each run's state and command; run nothing")
    p.add_argument("--retry-failed", "--retry_failed", dest="retry_failed", action="store_true",
                   help="run the failed runs again too")
    p.add_argument("--report_dir", default=None, metavar="DIR", help="where the report goes (default: report/PLAN)")
    p.add_argument("--wait", action="store_true", help="slurm: keep polling until every job has ended")
    p.add_argument("--poll", type=float, default=15.0, metavar="S", help="slurm --wait: seconds between looks")
    slurm = p.add_argument_group("slurm (--launcher slurm, through submitit)")
    slurm.add_argument("--slurm_partition", default=None, metavar="P", help="the partition (default: the cluster's)")
    slurm.add_argument("--slurm_gpus_per_job", type=int, default=1, metavar="N",
                       help="GPUs per job (0: CPU jobs; more than 1 trains under torchrun, DDP)")
    slurm.add_argument("--slurm_time", default=None, metavar="TIME",
                       help="time limit per job (minutes or D-HH:MM:SS; a job reaching it is requeued and resumes)")
    slurm.add_argument("--slurm_mem", default=None, metavar="MEM", help="memory per job, e.g. 32G")
    slurm.add_argument("--slurm_extra", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option (repeatable), e.g. account=proj, qos=high")
    return p


def _check(args: argparse.Namespace) -> None:
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: must be at least 1")
    if args.slurm_gpus_per_job < 0:
        raise UserError(f"--slurm_gpus_per_job {args.slurm_gpus_per_job}: must be at least 0")
    if args.poll <= 0:
        raise UserError(f"--poll {args.poll}: must be more than 0 seconds")
    for text in args.slurm_extra:
        if "=" not in text or not text.split("=", 1)[0].strip():
            raise UserError(f"--slurm_extra {text}: expected KEY=VALUE, e.g. --slurm_extra account=proj")
    slurm_only = [f for f in ("slurm_partition", "slurm_time", "slurm_mem") if getattr(args, f) is not None]
    if args.launcher == "local" and (slurm_only or args.slurm_extra or args.wait):
        flag = (slurm_only + (["slurm_extra"] if args.slurm_extra else []) + ["wait"])[0]
        raise UserError(f"--{flag} applies to --launcher slurm; add it, or drop --{flag}")


def states_of(plan: Plan, journal: Journal) -> dict[str, RunState]:
    return {run.name: run_state(run, journal) for run in plan.runs}


def print_plan(plan: Plan, states: dict[str, RunState], commands: bool) -> None:
    counts = {s: sum(st.status == s for st in states.values()) for s in dict.fromkeys(
        st.status for st in states.values())}
    print(f"plan {plan.name} ({plan.source}): {len(plan.runs)} runs; "
          + ", ".join(f"{n} {s}" for s, n in counts.items()) + (f" — {plan.description}" if plan.description else ""))
    width = max(len(r.name) for r in plan.runs)
    for run in plan.runs:
        state = states[run.name]
        print(f"  {run.name:<{width}}  {state.status:<11}  {state.detail}".rstrip())
        if commands:
            print(f"  {'':<{width}}  python retrieval.py {' '.join(run.argv)}")
    sys.stdout.flush()


def _todo(plan: Plan, states: dict[str, RunState], retry_failed: bool) -> list:
    wanted = _LAUNCHABLE + ((FAILED,) if retry_failed else ())
    return [run for run in plan.runs if states[run.name].status in wanted]


def _report(plan: Plan, states: dict[str, RunState], report_dir: str | None) -> None:
    from ..report import GalleryOptions, build_report

    done = [run for run in plan.runs if states[run.name].status == DONE]
    if not done:
        return
    out = Path(report_dir) if report_dir else Path("report") / plan.name
    sources = [run.file(".json") for run in done] + [plan.source]
    made_from = f"from {len(done)} run file(s): " + ", ".join(f"`{p}`" for p in sources[:-1]) + "."
    if _newer_than(out / "index.html", sources) and made_from in _made_from(out / "results.md", sources):
        log.info(f"report: {out / 'results.md'} and {out / 'index.html'} (up to date: {len(done)} of "
                 f"{len(plan.runs)} runs done)")
        return
    codes = any(run.flags.get("export_codes") or run.flags.get("plots") for run in done)
    report = build_report([run.file(".json") for run in done], out, tsne=False, gallery=GalleryOptions(enabled=codes),
                          paper_datasets=[run.flags.get("dataset", "voc2007") for run in plan.runs])
    log.info(f"report: {out / 'results.md'} and {out / 'index.html'} ({len(done)} of {len(plan.runs)} runs done, "
             f"{len(report.files)} files)")


def _newer_than(path: Path, sources: Sequence[Path]) -> bool:
    try:
        made = path.stat().st_mtime
        return all(source.stat().st_mtime < made for source in sources)
    except OSError:
        return False


def _made_from(results: Path, sources: Sequence[Path]) -> str:
    """The text of a report's results.md newer than ``sources`` (which it names), else ''."""
    try:
        return results.read_text(encoding="utf-8") if _newer_than(results, sources) else ""
    except (OSError, UnicodeDecodeError):
        return ""


def _finish(plan: Plan, journal: Journal, states: dict[str, RunState], report_dir: str | None) -> None:
    busy = [n for n, s in states.items() if s.status in (QUEUED, RUNNING)]
    if busy:
        log.info(f"{len(busy)} of {len(plan.runs)} runs queued or running; run the same command again to see their "
                 f"states (or add --wait)")
        return
    _report(plan, states, report_dir)
    failed = [n for n, s in states.items() if s.status == FAILED]
    left = [n for n, s in states.items() if s.status not in (DONE, FAILED)]
    if failed:
        first = states[failed[0]]
        raise UserError(f"{len(failed)} of {len(plan.runs)} runs failed ({', '.join(failed)}); {failed[0]}: "
                        f"{first.detail}; outputs in {journal.folder}; fix the cause and rerun with --retry-failed")
    if left:
        raise UserError(f"{len(left)} runs are not done ({', '.join(left)}); run the same command again to continue")
    log.info(f"sweep {plan.name}: all {len(plan.runs)} runs done")


def _local(plan: Plan, journal: Journal, states: dict[str, RunState], args: argparse.Namespace) -> dict:
    from .local import LocalSweep

    # a run another process holds is waited for, then looked at again
    wanted = {run.name for run in _todo(plan, states, args.retry_failed)}
    todo = [run for run in plan.runs if run.name in wanted or states[run.name].status == RUNNING]
    if todo:
        try:
            LocalSweep(plan, todo, args.jobs, journal, args.retry_failed, states).run()
        except (KeyboardInterrupt, Terminated):
            notice(f"sweep {plan.name} stopped; its runs keep their last epoch: run the same command again to "
                   f"continue")
            raise
    return states_of(plan, journal)


def _slurm(plan: Plan, journal: Journal, states: dict[str, RunState], args: argparse.Namespace) -> dict:
    from .slurm import SlurmOptions, overlay, submit

    todo = _todo(plan, states, args.retry_failed)
    if todo:
        options = SlurmOptions(args.slurm_partition, args.slurm_gpus_per_job, args.slurm_time, args.slurm_mem,
                               dict(t.split("=", 1) for t in args.slurm_extra), args.jobs)
        ids = submit(plan, todo, options, journal)
        log.info(f"submitted {len(ids)} Slurm jobs: " + ", ".join(f"{n} {j}" for n, j in ids.items()))
    if args.wait:
        return _wait(plan, journal, args.poll)
    states = states_of(plan, journal)
    overlay(plan.runs, states, journal)
    return states


def _wait(plan: Plan, journal: Journal, poll: float) -> dict[str, RunState]:
    from tqdm import tqdm

    from .slurm import overlay

    with tqdm(total=len(plan.runs), unit="run", desc=f"sweep {plan.name}", dynamic_ncols=True,
              file=sys.stderr) as bar:
        while True:
            states = states_of(plan, journal)
            overlay(plan.runs, states, journal)
            bar.n = sum(s.status == DONE for s in states.values())
            counts = {k: sum(s.status == k for s in states.values()) for k in (RUNNING, QUEUED, FAILED)}
            bar.set_postfix_str(", ".join(f"{k} {n}" for k, n in counts.items() if n), refresh=True)
            if not counts[RUNNING] and not counts[QUEUED]:
                return states
            time.sleep(poll)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; the exit status (0: every run done, 2: bad input or runs failed or left)."""

    def body():
        args = _parser().parse_args(argv)
        _check(args)
        plan = load_plan(args.plan, args.set, args.result_dir)
        journal = Journal(plan.journal_dir)
        states = states_of(plan, journal)
        if args.launcher == "slurm":
            from .slurm import overlay

            overlay(plan.runs, states, journal)
        print_plan(plan, states, commands=args.dry_run)
        if args.dry_run:
            return
        run = _local if args.launcher == "local" else _slurm
        _finish(plan, journal, run(plan, journal, states, args), args.report_dir)

    return run_command(body)
