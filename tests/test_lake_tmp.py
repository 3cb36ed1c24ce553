"""Temp files that killed lake writes leave behind: named after their writer, swept once the writer is gone (or, when
it cannot be checked, once old), never while a live writer still writes them; a local run sweeps at its start."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from diagnosa.lake import DataLake, LocalStorage
from pipelines.executor import LocalExecutor
from pipelines.registry import LocalModelRegistry

REPO = Path(__file__).resolve().parents[1]
SUFFIX = ".lake-tmp"
DAY = 24 * 3600

# Writes ``source`` to ``key`` through LocalStorage.put_file, a copy that writes its first MiB, says so and then
# blocks: a big write under way, for as long as the test lets it live.
SLOW_WRITER = """
import shutil, sys, time
from diagnosa.lake import LocalStorage

def slow_copy(src, dst):
    with open(src, "rb") as source, open(dst, "wb") as out:
        out.write(source.read(1 << 20))
        out.flush()
        print(dst, flush=True)
        time.sleep(600)

shutil.copyfile = slow_copy
LocalStorage(sys.argv[1]).put_file(sys.argv[2], sys.argv[3])
"""

# A process that ends in the middle of a write without cleaning up (os._exit runs no handler, as a SIGKILL).
DEAD_WRITER = """
import os, sys
from diagnosa.files import atomic_path

with atomic_path(sys.argv[1], suffix=".lake-tmp") as tmp:
    tmp.write_bytes(b"partial")
    print(tmp, flush=True)
    os._exit(0)
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def start_writer(root: Path, source: Path, key: str) -> tuple[subprocess.Popen, Path]:
    """A live writer of ``key`` in the lake at ``root``, blocked inside its write, and its temp file."""
    process = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(root), str(source), key], cwd=REPO,
                               env=child_env(), stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line, f"the writer ended before writing (status {process.wait()})"
    return process, Path(line)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def abandoned_temp(target: Path) -> Path:
    """The temp file of a write to ``target`` whose process died mid-way (it has ended when this returns)."""
    done = subprocess.run([sys.executable, "-c", DEAD_WRITER, str(target)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, check=True)
    tmp = Path(done.stdout.strip())
    assert tmp.is_file() and not target.exists()
    return tmp


def aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


@pytest.fixture
def big_source(tmp_path: Path) -> Path:
    source = tmp_path / "model.tar.gz"
    source.write_bytes(os.urandom(4 << 20))
    return source


def test_a_write_killed_by_sigkill_leaves_a_temp_that_the_sweep_removes(tmp_path, big_source):
    root = tmp_path / "lake"
    storage = LocalStorage(root)
    storage.put_bytes("artifacts/model.tar.gz", b"the previous model")
    storage.put_bytes("curated/part-0.parquet", b"other data")
    process, tmp = start_writer(root, big_source, "artifacts/model.tar.gz")
    assert tmp.parent == root / "artifacts" and tmp.stat().st_size == 1 << 20
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert tmp.exists(), "a SIGKILL runs no cleanup: the temp file stays"

    swept = storage.sweep_temp()

    assert swept.removed == [(tmp, 1 << 20)] and swept.bytes == 1 << 20 and swept.errors == 0
    assert not tmp.exists()
    assert storage.get_bytes("artifacts/model.tar.gz") == b"the previous model"  # the target is untouched
    assert storage.list() == ["artifacts/model.tar.gz", "curated/part-0.parquet"]
    assert storage.get_bytes("curated/part-0.parquet") == b"other data"


def test_a_killed_writer_not_yet_reaped_by_its_parent_is_gone(tmp_path, big_source):
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc: a zombie cannot be told from a live process")
    storage = LocalStorage(tmp_path / "lake")
    process, tmp = start_writer(storage.root, big_source, "features/train.parquet")
    try:
        process.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed writer did not become a zombie"
            time.sleep(0.01)
        assert [path for path, _ in storage.sweep_temp().removed] == [tmp]  # its pid still exists: a zombie's
    finally:
        stop(process)


def test_a_live_writers_temp_is_kept_however_old(tmp_path, big_source):
    storage = LocalStorage(tmp_path / "lake")
    process, tmp = start_writer(storage.root, big_source, "curated/cohort/part-0.parquet")
    try:
        assert f".{process.pid}." in tmp.name  # the temp names its writer
        assert storage.sweep_temp(older_than=0).removed == []
        aged(tmp, 3 * DAY)  # a stalled write: its writer still runs, so it is still written
        assert storage.sweep_temp().removed == [] and tmp.is_file()
    finally:
        stop(process)
    assert [path for path, _ in storage.sweep_temp().removed] == [tmp]


def test_old_format_temps_go_by_age_only(tmp_path):
    storage = LocalStorage(tmp_path / "lake")
    storage.put_bytes("raw/visits.csv", b"v")
    folder = storage.root / "raw"
    old = folder / f".visits.csv.{uuid.uuid4().hex}{SUFFIX}"
    old.write_bytes(b"12345")
    aged(old, DAY + 60)
    fresh = folder / f".visits.csv.{uuid.uuid4().hex}{SUFFIX}"
    fresh.write_bytes(b"1")

    swept = storage.sweep_temp()

    assert swept.removed == [(old, 5)] and fresh.is_file() and storage.get_bytes("raw/visits.csv") == b"v"
    aged(fresh, 120)
    assert storage.sweep_temp(older_than=60).removed == [(fresh, 1)]  # the age is the caller's to choose


def test_another_hosts_temps_go_by_age_only_whatever_their_pid(tmp_path):
    storage = LocalStorage(tmp_path / "lake")
    folder = storage.root / "curated"
    folder.mkdir(parents=True)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)  # no process has it here; on the other host it may well run
    fresh = folder / f".part-0.parquet.nfs-client-7-0a1b2c3d.{dead_pid}.12345.{uuid.uuid4().hex}{SUFFIX}"
    fresh.write_bytes(b"still written over there")
    old = folder / f".part-1.parquet.nfs-client-7-0a1b2c3d.{os.getpid()}.12345.{uuid.uuid4().hex}{SUFFIX}"
    old.write_bytes(b"abandoned")
    aged(old, 2 * DAY)

    assert storage.sweep_temp().removed == [(old, len(b"abandoned"))]
    assert fresh.is_file()


def test_the_sweep_follows_no_symlink_out_of_the_root(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    theirs = outside / f".notes.txt.{uuid.uuid4().hex}{SUFFIX}"
    theirs.write_bytes(b"not the lake's")
    aged(theirs, 3 * DAY)
    dead = abandoned_temp(outside / "report.json")
    storage = LocalStorage(tmp_path / "lake")
    storage.put_bytes("curated/x.csv", b"x")
    (storage.root / "curated" / "linked").symlink_to(outside, target_is_directory=True)
    link = storage.root / "curated" / f".y.csv.{uuid.uuid4().hex}{SUFFIX}"
    link.symlink_to(theirs)
    os.utime(link, (time.time() - 3 * DAY,) * 2, follow_symlinks=False)

    assert storage.sweep_temp().removed == []
    assert theirs.is_file() and dead.is_file() and link.is_symlink()


def test_a_file_that_cannot_be_removed_is_logged_and_skipped(tmp_path, monkeypatch, caplog):
    storage = LocalStorage(tmp_path / "lake")
    stuck = abandoned_temp(storage.root / "features" / "a.parquet")
    gone = abandoned_temp(storage.root / "features" / "b.parquet")
    unlink = os.unlink

    def refusing(path, *args, **kwargs):
        if os.fspath(path) == stuck.name:
            raise PermissionError(13, "Permission denied")
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refusing)
    with caplog.at_level("INFO", logger="diagnosa.lake"):
        swept = storage.sweep_temp()
    assert [path for path, _ in swept.removed] == [gone] and swept.errors == 1 and stuck.is_file()
    assert any(str(stuck) in r.getMessage() and "Permission denied" in r.getMessage() for r in caplog.records)
    assert sum("removed 1 abandoned temp file" in r.getMessage() for r in caplog.records) == 1  # one summary line


def test_a_target_name_near_the_filesystem_limit_can_be_written(tmp_path):
    storage = LocalStorage(tmp_path / "lake")
    name = "é" * 100 + "a" * 54  # 254 bytes: the temp name cannot hold it whole
    storage.put_bytes(f"curated/{name}", b"long")
    assert storage.get_bytes(f"curated/{name}") == b"long"
    assert os.listdir(storage.root / "curated") == [name]


def test_a_local_run_sweeps_the_lake_first(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"), raw_uri=str(tmp_path / "raw-lake"))
    lake.put_bytes("curated/seed/seed.txt", b"seed")
    lake.put_bytes("raw/visits.csv", b"v")
    stale = abandoned_temp(tmp_path / "lake" / "artifacts" / "model.tar.gz")
    stale_raw = abandoned_temp(tmp_path / "raw-lake" / "raw" / "labs.csv")
    stale_size, stale_raw_size = stale.stat().st_size, stale_raw.stat().st_size
    said: list[str] = []
    executor = LocalExecutor(lake=lake, bucket="test-lake", root=tmp_path / "executions",
                             registry=LocalModelRegistry(tmp_path / "registry"), progress=said.append)
    definition = {"Version": "2020-12-01", "Steps": [
        {"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "nothing to do"}}]}

    executor.start(definition)

    assert not stale.exists() and not stale_raw.exists()
    sizes = stale_size + stale_raw_size
    assert f"removed 2 temp file(s) of lake writes killed mid-way ({sizes:,} bytes; docs/operations.md)" in said
    assert lake.get_bytes("curated/seed/seed.txt") == b"seed" and lake.get_bytes("raw/visits.csv") == b"v"


def test_a_pid_taken_by_a_later_process_does_not_keep_a_temp(tmp_path):
    from diagnosa.files import host_token, process_start

    if process_start(os.getpid()) is None:
        pytest.skip("no /proc: a process's start time is unknown")
    storage = LocalStorage(tmp_path / "lake")
    folder = storage.root / "capture"
    folder.mkdir(parents=True)
    here = host_token()
    # This host's pid, alive, but started at another time: the writer was an earlier process given the same pid.
    reused = folder / f".e.jsonl.{here}.{os.getpid()}.1.{uuid.uuid4().hex}{SUFFIX}"
    reused.write_bytes(b"r")
    # The writer's start time unknown (0): a live pid may be it, so only age decides.
    unknown = folder / f".f.jsonl.{here}.{os.getpid()}.0.{uuid.uuid4().hex}{SUFFIX}"
    unknown.write_bytes(b"u")

    assert storage.sweep_temp().removed == [(reused, 1)] and unknown.is_file()
    aged(unknown, DAY + 60)
    assert storage.sweep_temp().removed == [(unknown, 1)]
