"""diagnosa.files: atomic writes leave the old file or the new one, never a partial one."""
from __future__ import annotations

import json

import pytest

from diagnosa.files import atomic_path, write_json_atomic, write_text_atomic


def test_a_write_replaces_the_target_in_one_step_and_leaves_no_temp(tmp_path):
    target = tmp_path / "deep" / "record.json"
    write_json_atomic(target, {"name": "é"}, indent=1)
    assert json.loads(target.read_text(encoding="utf-8")) == {"name": "é"} and "é" in target.read_text("utf-8")
    write_text_atomic(target, "second")
    assert target.read_text(encoding="utf-8") == "second"
    assert [p.name for p in target.parent.iterdir()] == ["record.json"]


def test_a_failed_write_keeps_the_old_content_and_removes_its_temp(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half", encoding="utf-8")
            raise RuntimeError("disk full")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_the_temp_name_ends_with_the_given_suffix(tmp_path):
    with atomic_path(tmp_path / "x.bin", suffix=".lake-tmp") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.bin.") and tmp.name.endswith(".lake-tmp")
        tmp.write_bytes(b"1")
    assert (tmp_path / "x.bin").read_bytes() == b"1"
