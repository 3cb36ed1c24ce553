"""One log format for every entry point (the CLI, the serving process, each job's container)."""
from __future__ import annotations

import logging
import signal
import sys
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """INFO and up to ``stream`` (default standard output, where SageMaker collects a container's log),
    unless the process configured logging already (a test, a notebook)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, stream=stream or sys.stdout, format=FORMAT)


def utc_now() -> str:
    """Now in UTC, ISO 8601 with milliseconds: the timestamp of every local record (executions, endpoints)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def interrupted(program: str = "diagnosa") -> int:
    """What a command says of a Ctrl-C, wherever it lands (as it loads, in its checks, in a command that writes
    nothing): one line, no traceback; its exit status, 128 + SIGINT as a shell reports it."""
    print(f"{program}: interrupted", file=sys.stderr)
    return 128 + signal.SIGINT
