"""pipelines.locks.file_lock against real holders in other processes: the registry's group lock, a resume's claim and
an endpoint's deploy hold are all this one flock, so what it does across processes is what they do."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines.locks import LockHeld, file_lock

ROOT = Path(__file__).resolve().parents[1]
HOLDER = """
import sys
from pipelines.locks import file_lock
with file_lock(sys.argv[1], shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    sys.stdin.readline()  # released when the test says so (or its stdin closes)
print("released", flush=True)
"""


class Holder:
    """Another process holding ``path``'s lock until release()."""

    def __init__(self, path: Path, shared: bool = False):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "shared" if shared else "exclusive"],
                                        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "held"

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"
        self.process.wait(30)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)


@pytest.fixture
def holders():
    started: list[Holder] = []

    def start(path: Path, shared: bool = False) -> Holder:
        started.append(Holder(path, shared))
        return started[-1]

    yield start
    for holder in started:
        if holder.process.poll() is None:
            holder.kill()


@pytest.mark.parametrize("wait", [None, 60], ids=["blocking", "bounded"])
def test_a_waiting_lock_is_taken_once_the_holder_releases_it(tmp_path, holders, wait):
    path = tmp_path / ".lock"
    holder = holders(path)
    acquired = threading.Event()

    def take() -> None:
        with file_lock(path, wait=wait):
            acquired.set()

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    assert not acquired.wait(1.0), "taken while another process held it"
    holder.release()
    assert acquired.wait(30), "still waiting after the holder released it"
    taker.join(30)


def test_wait_0_refuses_at_once_naming_the_path_and_the_holders_pid(tmp_path, holders):
    path = tmp_path / ".lock"
    holder = holders(path)
    started = time.monotonic()
    with pytest.raises(LockHeld) as refused:
        with file_lock(path, wait=0):
            pytest.fail("taken while another process held it")
    assert time.monotonic() - started < 5.0  # no waiting (a generous bound: a loaded machine is slow)
    assert refused.value.path == path and refused.value.pid == holder.pid
    assert f"(pid {holder.pid})" in str(refused.value)


def test_a_bounded_wait_refuses_once_it_has_passed(tmp_path, holders):
    path = tmp_path / ".lock"
    holders(path)
    started = time.monotonic()
    with pytest.raises(LockHeld):
        with file_lock(path, wait=0.5):
            pytest.fail("taken while another process held it")
    assert time.monotonic() - started >= 0.5  # it waited before refusing


def test_shared_holds_coexist_and_exclude_an_exclusive_one(tmp_path, holders):
    path = tmp_path / ".lock"
    shared = holders(path, shared=True)
    with file_lock(path, shared=True, wait=0):  # a second shared hold, beside the other process's
        pass
    with pytest.raises(LockHeld) as refused:
        with file_lock(path, wait=0):
            pytest.fail("exclusive while another process held it shared")
    assert refused.value.pid is None  # a shared holder records no pid
    shared.release()
    exclusive = holders(path)  # and the other way round: an exclusive hold refuses a shared one
    with pytest.raises(LockHeld) as refused:
        with file_lock(path, shared=True, wait=0):
            pytest.fail("shared while another process held it exclusively")
    assert refused.value.pid == exclusive.pid


def test_the_pid_is_recorded_while_held_and_cleared_on_release(tmp_path, holders):
    path = tmp_path / ".lock"
    holder = holders(path)
    assert path.read_text(encoding="utf-8") == str(holder.pid)
    holder.release()
    assert path.read_text(encoding="utf-8") == ""  # a shared holder next is not named by a pid that has left
    with file_lock(path, wait=0):
        assert path.read_text(encoding="utf-8") == str(os.getpid())


def test_a_killed_holder_leaves_no_lock(tmp_path, holders):
    path = tmp_path / ".lock"
    holders(path).kill()  # SIGKILL: no finally ran, the kernel released its hold
    with file_lock(path, wait=0):
        pass


def test_a_disk_that_refuses_the_pid_does_not_refuse_the_lock(tmp_path):
    # The pid is for a waiter's message; the lock is the flock. On a full disk its write failed, and `endpoint stop`,
    # `registry approve` and `reject` with it, leaving a server running. Here the kernel refuses every byte written
    # (RLIMIT_FSIZE 0: EFBIG, as a full disk's ENOSPC) while the lock is taken and released.
    script = ("import resource, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
              "from pipelines.locks import file_lock\n"
              "try:\n    open(sys.argv[1] + '.probe', 'wb', buffering=0).write(b'x')\n"
              "except OSError as err:\n    print('refused', err.errno, flush=True)\n"
              "with file_lock(sys.argv[1]):\n    print('held', flush=True)\nprint('released', flush=True)\n")
    done = subprocess.run([sys.executable, "-B", "-c", script, str(tmp_path / ".lock")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split("\n")[1:3] == ["held", "released"] and done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("refused ")  # the disk did refuse writes
    assert (tmp_path / ".lock").read_bytes() == b""
