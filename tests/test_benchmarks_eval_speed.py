"""Smoke test of benchmarks/eval_speed.py at tiny sizes: the exactness checks it reports and the
memory measured in a fresh process."""
import pytest
import argparse
import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_speed.py"
_spec = importlib.util.spec_from_file_location("eval_speed", SCRIPT)
es = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(es)
FAISS = es.import_faiss()


@pytest.mark.slow
def test_one_code_length_is_exact_and_measured():
    rng = np.random.default_rng(0)
    args = argparse.Namespace(queries=30, database=600, topk=20, repeats=1, loop_queries=5)
    row = es.run_bits(20, args, es.make_labels(rng, 30), es.make_labels(rng, 600), FAISS)
    assert row["exact_vs_stable_reference"] is True
    assert row.get("same_topk_distances_as_faiss", True) is True
    assert ("faiss_search_s" in row) == (FAISS is not None)
    assert row["hyp2_s"] > 0 and row["loop_s"] > 0
    # graded metrics and mAP alone, run alternately: same mAP, one time per run
    assert row["graded"]["same_map"] is True
    assert len(row["graded"]["graded_s"]) == len(row["graded"]["map_s"]) == 1 and row["graded"]["ratio"] > 0
    assert set(row["graded"]["values"]) == {"map", "acg", "ndcg", "weighted_map", "topk"}
    # measured in a fresh process: ints, one per call
    assert isinstance(row["map_bytes"], int) and isinstance(row["evaluate_all_bytes"], int)


@pytest.mark.slow
def test_scaling_memory_in_a_fresh_process():
    out = es.scaling_memory(3000, 16, 10)
    assert out["n"] == 3000 and isinstance(out["map_bytes"], int) and isinstance(out["evaluate_all_bytes"], int)

