"""Plans (hyp2.sweep.plan): the shipped ones cover the paper's tables exactly; grids, runs, defaults
and --set combine as documented; every mistake is one line naming the file and key."""
from __future__ import annotations

from pathlib import Path

import pytest

from hyp2 import paper
from hyp2.errors import UserError
from hyp2.sweep import load_plan, shipped_plans
from hyp2.sweep.plan import identify


def plan_file(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_shipped_plans():
    assert shipped_plans() == ["demo", "paper", "paper-baselines"]


def test_paper_plan_is_the_16_hyp2_runs_of_both_tables():
    plan = load_plan("paper")
    expected = [f"{d}_{paper.DATASETS[d].backbone}_{b}" for d in paper.DATASETS for b in paper.DATASETS[d].bits]
    assert [r.name for r in plan.runs] == expected and len(expected) == 16
    assert all(r.epochs == 100 and r.result_dir == Path("result") for r in plan.runs)
    assert plan.journal_dir == Path("result/sweep-paper")


def test_paper_baselines_is_every_dagger_row_on_its_datasets_and_bits():
    plan = load_plan("paper-baselines")
    got = sorted((r.flags["dataset"], r.flags["backbone"], r.flags["hash_bit"], r.flags["loss"]) for r in plan.runs)
    want = sorted((row.dataset, paper.DATASETS[row.dataset].backbone, bits, row.loss)
                  for row in paper.PAPER_ROWS if row.mark == "†" for bits in row.bits)
    assert got == want and len(got) == 80
    assert {r.name for r in plan.runs} >= {"nuswide_alexnet_48_dcilh", "voc2012_googlenet_16_proxy_anchor"}


def test_demo_plan_is_small():
    plan = load_plan("demo")
    assert [r.name for r in plan.runs] == ["demo_small_16", "demo_small_16_csq", "demo_small_48", "demo_small_48_csq"]
    assert all(r.epochs == 15 for r in plan.runs)  # the demo's default


def test_grids_runs_defaults_and_sets_combine(tmp_path):
    path = plan_file(tmp_path, "name: mine\ndefaults: {dataset: demo, epochs: 3, seed: 1}\n"
                               "grid:\n  - {hash_bit: [8, 12], loss: [hyp2, dhn]}\n  - {hash_bit: 16, seed: [2]}\n"
                               "runs:\n  - {hash_bit: 20, epochs: 5}\n")
    plan = load_plan(path, ["seed=9", "lr=1e-3"], "out")
    assert [r.name for r in plan.runs] == ["demo_small_8", "demo_small_8_dhn", "demo_small_12", "demo_small_12_dhn",
                                           "demo_small_16", "demo_small_20"]
    assert [r.epochs for r in plan.runs] == [3, 3, 3, 3, 3, 5]
    assert all(r.flags["seed"] == 9 and r.flags["lr"] == 0.001 and r.result_dir == Path("out") for r in plan.runs)
    run = plan.runs[1]
    assert run.argv == ["--dataset", "demo", "--epochs", "3", "--seed", "9", "--hash_bit", "8", "--loss", "dhn",
                        "--lr", "0.001", "--result_dir", "out"]
    assert run.train_argv()[-1] == "--resume" and run.test_argv()[-1] == "--test"
    assert plan.name == "mine" and plan.journal_dir == Path("out/sweep-mine")


def test_test_only_flags_go_to_the_test_step(tmp_path):
    plan = load_plan(plan_file(tmp_path, "defaults: {dataset: demo, plots: true}\n"))
    (run,) = plan.runs
    assert "--plots" not in run.train_argv() and "--plots" in run.test_argv()
    assert plan.name == "p"  # the file's stem


def test_identify_follows_the_dataset_defaults():
    assert identify(["--dataset", "demo"]) == ("demo_small_48", Path("result"), 15)
    assert identify(["--dataset", "flickr", "--backbone", "alexnet", "--loss", "csq", "--result_dir", "r"]) == (
        "flickr_alexnet_48_csq", Path("r"), 100)
    assert identify(["--dataset", "no_such"])[0] == "no_such_googlenet_48"  # the run itself will say why


@pytest.mark.parametrize("text, sets, message", [
    ("grid: {hash_bits: [1]}\n", (), "p.yaml: grid: unknown key 'hash_bits'"),
    ("grid: {hash_bit: []}\n", (), "p.yaml: grid: hash_bit: an empty list makes no runs"),
    ("grid: [{hash_bit: [8]}, 3]\n", (), "p.yaml: grid[1]: expected a non-empty mapping"),
    ("runs: [{epochs: two}]\n", (), "p.yaml: runs[0]: epochs: expected an integer, got 'two'"),
    ("runs: {epochs: 2}\n", (), "p.yaml: runs: expected a list of flag mappings"),
    ("defaults: {test: true}\n", (), "p.yaml: defaults: test: a plan may not set it"),
    ("runs: [{overwrite: true}]\n", (), "p.yaml: run 1: overwrite: a plan may not set it"),
    ("grid: {dataset: demo}\n", ("no_save=true",), "--set: no_save: a plan may not set it"),
    ("grid: {dataset: demo}\n", ("epochs",), "--set epochs: expected KEY=VALUE"),
    ("grid: {dataset: demo}\n", ("epochs=x",), "--set epochs=x: epochs: expected an integer"),
    ("runs: [{dataset: demo}]\nsweep: 1\n", (), "p.yaml: unknown key 'sweep'"),
    ("name: a/b\n", (), "p.yaml: name: 'a/b' must be"),
    ("- 1\n", (), "p.yaml: a plan is a mapping"),
    ("grid: {dataset: demo, lr: [0.1, 0.2]}\n", (), "two runs would both be demo_small_48 in result"),
    ("grid: [\n", (), "p.yaml: not valid YAML"),
])
def test_plan_errors_are_one_line(tmp_path, text, sets, message):
    with pytest.raises(UserError) as info:
        load_plan(plan_file(tmp_path, text), sets)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_unknown_plan_names_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="PLAN papper: no such file, and not a shipped plan .demo, paper, "):
        load_plan("papper")


def test_runs_in_different_folders_may_share_a_name(tmp_path):
    plan = load_plan(plan_file(tmp_path, "runs: [{dataset: demo, lr: 0.1, result_dir: a}, "
                                         "{dataset: demo, lr: 0.2, result_dir: b}]\n"))
    assert [(r.name, str(r.result_dir)) for r in plan.runs] == [("demo_small_48", "a"), ("demo_small_48", "b")]
    with pytest.raises(UserError, match="two runs would both be demo_small_48 in a"):
        load_plan(plan_file(tmp_path, "grid: {dataset: demo, lr: [0.1, 0.2], result_dir: a}\n"))
