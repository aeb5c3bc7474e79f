"""Smoke test of benchmarks/index_speed.py at a tiny size: every row it times and the JSON it writes."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "index_speed.py"
_spec = importlib.util.spec_from_file_location("index_speed", SCRIPT)
index_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(index_speed)


def test_every_engine_k_and_query_count(tmp_path, capsys):
    out = tmp_path / "index.json"
    assert index_speed.main(["--size", "2000", "--bits", "20", "--repeats", "1", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    engines = [False] + ([True] if index_speed.eval_speed.import_faiss() is not None else [])
    assert saved["size"] == 2000 and saved["bits"] == 20
    assert [(r["faiss"], r["k"], r["queries"]) for r in saved["rows"]] == [
        (f, k, nq) for f in engines for k in (10, 100, 1000) for nq in (1, 10)]
    assert all(r["s"] > 0 and r["load"] >= 0 for r in saved["rows"])
    assert "CodeIndex.search over 2,000 codes of 20 bits" in capsys.readouterr().out
