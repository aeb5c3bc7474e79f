import json
from collections import namedtuple

import pytest

from hyp2.errors import UserError
from hyp2.io import atomic_open, atomic_write_json, atomic_write_text, human_bytes, parse_json, require_free_space


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "f.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as fh:
            fh.write('{"a": 2')  # half-written ...
            raise RuntimeError("crash")  # ... then the writer dies
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temporary left behind


def test_atomic_text_and_mode_check(tmp_path):
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    with pytest.raises(ValueError):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o644


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1024, 3 * 1024, 150 * 2**20, 13510573713)] == [
        "0 B", "1023 B", "1.0 KiB", "3.0 KiB", "150 MiB", "12.6 GiB"]


def test_free_space_message_in_human_units(tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda p: Usage(10, 9, 512))
    require_free_space(tmp_path, 512, "unused")
    with pytest.raises(UserError, match=r"^need 2.0 KiB in /odd\{path\}, 512 B free$"):
        require_free_space(tmp_path, 2048, "need {need} in /odd{path}, {free} free")


def test_parse_json_reports_deep_nesting_as_a_value_error():
    assert parse_json('{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError):
        parse_json("{not json")
