"""One log format for every entry point (the CLI, the serving process, each job's container)."""
from __future__ import annotations

import logging
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
