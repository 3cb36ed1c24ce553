"""Network isolation for local jobs: a network namespace with loopback only, as SageMaker isolates a container.

A job request that sets network isolation (``NetworkConfig.EnableNetworkIsolation`` of a processing job,
``EnableNetworkIsolation`` of a training job) runs all its processes in one new network namespace whose
only interface is loopback, brought up: nothing outside answers, while the processes of a multi-instance
job still reach each other (their hosts are loopback addresses: ``local_jobs.cluster_hosts``), like the
peers of a SageMaker training cluster. A holder process (``unshare``) creates the namespace and keeps it
while the job runs; each process enters it with ``nsenter``, which then executes the command itself (so
the executor's process is the job's, and stopping it stops the job). As root ``unshare --net`` does it;
unprivileged, ``unshare --net --map-root-user`` where the kernel allows user namespaces. When neither
works the job runs with the machine's network, and ``unavailable_reason`` says why.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

# Inside the new namespace: bring loopback up (SIOCGIFFLAGS/SIOCSIFFLAGS on "lo", the ioctls `ip link set lo
# up` makes; a struct ifreq is 40 bytes), say so, then hold the namespace until the executor closes stdin.
HOLDER = """
import fcntl, socket, struct, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    name = b"lo".ljust(16, b"\\0")
    flags = struct.unpack_from("H", fcntl.ioctl(s, 0x8913, name + bytes(24)), 16)[0]
    fcntl.ioctl(s, 0x8914, name + struct.pack("H", flags | 1) + bytes(22))
print("ready", flush=True)
sys.stdin.read()
"""
MODES = (("--net",), ("--net", "--map-root-user"))  # root first; then an unprivileged user namespace
PROBE_SECONDS = 10


class IsolationError(RuntimeError):
    """The namespace could not be made although the probe succeeded."""


@functools.cache
def _mode(python: str) -> tuple[tuple[str, ...] | None, str]:
    """(unshare flags that make an isolated namespace here, or None; why not)."""
    missing = [tool for tool in ("unshare", "nsenter") if shutil.which(tool) is None]
    if missing:
        return None, f"{' and '.join(missing)} (util-linux) not found"
    reasons = []
    for flags in MODES:
        try:
            probe = subprocess.run(["unshare", *flags, "--", python, "-c", HOLDER], input="", capture_output=True,
                                   text=True, timeout=PROBE_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as err:
            reasons.append(f"unshare {' '.join(flags)}: {err}")
            continue
        if probe.returncode == 0 and probe.stdout.strip() == "ready":
            return flags, ""
        reasons.append(f"unshare {' '.join(flags)}: {(probe.stderr.strip().splitlines() or ['failed'])[-1]}")
    return None, "; ".join(reasons)


def unavailable_reason(python: str = sys.executable) -> str:
    """Why this machine cannot isolate a job's network ("" when it can)."""
    return _mode(python)[1]


@contextmanager
def isolated_network(python: str = sys.executable) -> Iterator[Callable[[list[str]], list[str]]]:
    """A new network namespace (loopback up) for one job; yields how to wrap a command to run inside it.
    Call only when ``unavailable_reason`` is empty."""
    flags, reason = _mode(python)
    if flags is None:
        raise IsolationError(f"network isolation is unavailable: {reason}")
    holder = subprocess.Popen(["unshare", *flags, "--", python, "-c", HOLDER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "ready":
            raise IsolationError(f"the network namespace holder failed: {holder.communicate()[1].strip()}")
        # Joining the holder's user namespace too (unprivileged mode) is what grants the right to join its network.
        enter = ["nsenter", f"--target={holder.pid}", "--net"] + (
            ["--user", "--preserve-credentials"] if "--map-root-user" in flags else [])
        yield lambda command: [*enter, "--", *command]
    finally:
        if holder.poll() is None:
            holder.communicate(input="")  # closing its stdin ends it; the namespace goes with its last process
