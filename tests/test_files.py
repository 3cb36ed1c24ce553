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


def test_a_folder_write_sweeps_the_temp_folders_killed_writers_left_beside_it_whatever_their_target(tmp_path):
    # Each monitor run writes a report folder of a new name: a run SIGKILLed mid-write left its hidden temp folder,
    # and only a later write to the same name removed it (none came): they stayed for good. A live writer's stays.
    import signal
    import subprocess
    import sys

    from diagnosa.files import atomic_folder

    write = ("import os, signal, sys, time\nfrom diagnosa.files import atomic_folder\n"
             "with atomic_folder(sys.argv[1]) as tmp:\n    (tmp / 'report.json').write_text('{')\n"
             "    print(tmp.name, flush=True)\n"
             "    os.kill(os.getpid(), signal.SIGKILL) if sys.argv[2] == 'kill' else time.sleep(60)\n")
    killed = subprocess.run([sys.executable, "-c", write, str(tmp_path / "run-1"), "kill"], capture_output=True,
                            text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL and (tmp_path / killed.stdout.strip()).is_dir()
    live = subprocess.Popen([sys.executable, "-c", write, str(tmp_path / "run-2"), "sleep"], stdout=subprocess.PIPE,
                            text=True)
    try:
        writing = tmp_path / live.stdout.readline().strip()  # type: ignore[union-attr]
        assert writing.is_dir()
        with atomic_folder(tmp_path / "run-3") as tmp:
            (tmp / "report.json").write_text("{}")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([writing.name, "run-3"])
    finally:
        live.kill()
        live.wait()
