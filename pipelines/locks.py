"""One advisory file lock (flock) for the local registry's groups, an execution's resume and an endpoint's deploys.

The kernel releases it however the holding process ends (SIGKILL included), so a crash never leaves a stale lock;
the file is opened non-inheritable, so the jobs and servers a holder starts do not hold it too. An exclusive holder
writes its pid into the file while it holds it, so a refusal can name the process that holds it. The lock belongs to
the open file, not the process: two holds of one path from one process exclude each other (re-entrancy is the
caller's to handle).
"""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

POLL_SECONDS = 0.05  # between tries while waiting for a bounded time (flock has no timeout of its own)


class LockHeld(Exception):
    """Another holder kept the lock past the wait; ``pid``: the exclusive holder's, when its file records one."""

    def __init__(self, path: Path, pid: int | None = None):
        self.path = path
        self.pid = pid
        super().__init__(f"{path} is locked by another process" + (f" (pid {pid})" if pid is not None else ""))


def _holder(handle: IO[bytes]) -> int | None:
    handle.seek(0)
    text = handle.read().strip()
    return int(text) if text.isdigit() else None


@contextmanager
def file_lock(path: str | os.PathLike[str], *, shared: bool = False, wait: float | None = None) -> Iterator[None]:
    """Hold ``path``'s lock (created if missing; its folder must exist) for the ``with`` block: exclusive, or
    ``shared`` with other shared holders. ``wait``: None blocks until it is free, 0 tries once, more polls until that
    many seconds have passed; then LockHeld."""
    path = Path(path)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    # "a+": never truncates what a holder wrote before we hold it. Unbuffered: a write the disk refuses fails where it
    # is made, not again at close (a full disk's close failed the command the lock was for).
    with open(path, "a+b", buffering=0) as handle:
        if wait is None:
            fcntl.flock(handle, mode)
        else:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise LockHeld(path, _holder(handle)) from None
                    time.sleep(min(POLL_SECONDS, remaining))
        if not shared:
            _note_holder(handle, str(os.getpid()))
        try:
            yield
        finally:
            if not shared:  # cleared while still held: a later shared holder is not named by a pid that has left
                _note_holder(handle, "")
            fcntl.flock(handle, fcntl.LOCK_UN)


def _note_holder(handle: IO[bytes], text: str) -> None:
    """Write the holder's pid (``text``) into the lock file, for a waiter's message only. The lock is the flock, not
    the file's content: on a full disk the pid is not written, and whatever asked for the lock goes on (`endpoint
    stop` failed there, leaving the server running)."""
    handle.truncate(0)
    try:
        handle.write(text.encode("ascii"))
    except OSError:
        handle.truncate(0)
