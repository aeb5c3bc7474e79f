"""The exported codes file: database and query codes; earlier versions, foreign and partial files
refused."""
import json

import numpy as np
import pytest
import torch

from hyp2.codes import export_codes, load_codes
from hyp2.errors import UserError

CLASSES = ["a", "b", "c"]


def test_database_and_queries_round_trip(tmp_path):
    db, q = torch.randn(6, 10), torch.randn(2, 10)
    dl, ql = np.eye(6, 3, dtype=np.uint8), np.array([[1, 1, 0], [0, 0, 0]])
    export_codes(tmp_path / "c.npz", db, dl, list("uvwxyz"), 10, CLASSES, {"model_digest": "d"},
                 queries=(q, ql, ["q0", "q1"]))
    codes = load_codes(tmp_path / "c.npz")
    assert codes.num_bits == 10 and codes.classes == tuple(CLASSES) and codes.meta == {"model_digest": "d"}
    want = np.packbits((db >= 0).numpy(), axis=1)
    assert np.array_equal(codes.codes, want) and np.array_equal(codes.labels, dl)
    assert codes.ids.tolist() == list("uvwxyz")
    assert np.array_equal(codes.queries.codes, np.packbits((q >= 0).numpy(), axis=1))
    assert np.array_equal(codes.queries.labels, ql) and codes.queries.ids.tolist() == ["q0", "q1"]
    assert len(codes.queries) == 2


def test_earlier_versions_and_partial_queries_are_refused(tmp_path):
    export_codes(tmp_path / "c.npz", torch.randn(4, 8), np.eye(4, 3), list("abcd"), 8, CLASSES, {},
                 queries=(torch.randn(1, 8), np.ones((1, 3)), ["q"]))
    with np.load(tmp_path / "c.npz") as z:
        arrays = {k: z[k] for k in z.files}
    v1 = {k: v for k, v in arrays.items() if not k.startswith("query_")}
    np.savez(tmp_path / "v1.npz", **{**v1, "version": np.array(1)})
    with pytest.raises(UserError, match="has version 1, this code reads version 2"):
        load_codes(tmp_path / "v1.npz")
    assert load_codes(tmp_path / "c.npz").queries is not None
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in arrays.items() if k != "query_ids"})
    with pytest.raises(UserError, match="query arrays query_codes, query_labels without the others"):
        load_codes(tmp_path / "partial.npz")
    np.savez(tmp_path / "mismatch.npz", **{**arrays, "query_labels": np.ones((1, 2), np.uint8)})
    with pytest.raises(UserError, match=r"query labels \(1, 2\) for 1 codes and 3 classes"):
        load_codes(tmp_path / "mismatch.npz")


def test_test_exports_what_it_evaluated(tmp_path, capsys):
    from hyp2.cli import main
    argv = ["--dataset", "demo", "--subset", "40", "--epochs", "1", "--hash_bit", "12", "--result_dir", str(tmp_path)]
    assert main(argv) == 0
    assert main(argv + ["--test", "--export_codes"]) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "demo_small_12.json").read_text())
    codes = load_codes(tmp_path / record["test"]["codes"])
    assert len(codes.ids) == 40 and len(codes.queries) == 40 and codes.queries.ids[0] == "demo/02000"
    assert codes.meta["model_digest"] == record["test"]["model_digest"] and codes.meta["data_root"] == "data"


def test_a_file_that_is_not_an_archive_is_not_a_codes_file(tmp_path):
    """What a report whose test.codes named /etc/passwd said: "contains pickled data"."""
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(UserError, match=r"passwd is not a codes file \(an exported .npz archive\)"):
        load_codes(tmp_path / "passwd")
