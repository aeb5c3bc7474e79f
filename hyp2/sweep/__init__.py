"""Sweeps: every run of a plan, resumably, on this machine or on a Slurm cluster (docs/sweeps.md).

``python -m hyp2.sweep PLAN`` (:mod:`hyp2.sweep.command`); plans are read by
:mod:`hyp2.sweep.plan`, run states by :mod:`hyp2.sweep.state`, one run's process is
:mod:`hyp2.sweep.job`, and the launchers are :mod:`hyp2.sweep.local` and :mod:`hyp2.sweep.slurm`.
"""
from .plan import Plan, Run, load_plan, shipped_plans
from .state import RunState, run_state

__all__ = ["Plan", "Run", "RunState", "load_plan", "run_state", "shipped_plans"]
