"""Local server processes (the endpoint, the doctors' app): a free loopback port, waiting until one answers,
whether one still runs."""
from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

# The longest wait a client takes (a call's timeout, `diagnosa predict|app --timeout`, DIAGNOSA_APP_TIMEOUT): a day.
# Past it botocore's deadline arithmetic overflowed ("timestamp out of range for platform time_t") on every call.
MAX_TIMEOUT = 86_400.0


class ServerExited(RuntimeError):
    """The server process ended before it answered."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (another process may still take it before it is bound again)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_taken(host: str, port: int, *, wait: float = 0.0) -> bool:
    """Whether another socket listens on ``host:port`` (a stopped server's TIME_WAIT connections do not count, as
    for the servers' own SO_REUSEADDR bind), waiting up to ``wait`` s for it to be released."""
    deadline = time.monotonic() + wait
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return False
            except OSError:
                if time.monotonic() >= deadline:
                    return True
        time.sleep(0.2)


def wait_until_ok(url: str, *, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; ServerExited if ``process`` ends first, TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerExited(f"the server exited with status {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    if process is not None and process.poll() is not None:  # another server answered on its port
                        raise ServerExited(f"the server exited with status {process.returncode}; something else "
                                           f"answers {url}")
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:g} s")


def process_alive(pid: object) -> bool:
    """Whether a process with this pid exists (owned by anyone)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True
