"""One log format for every entry point (the CLI, the serving process, each job's container)."""
from __future__ import annotations

import codecs
import io
import logging
import os
import signal
import sys
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UtcFormatter(logging.Formatter):
    """Times in UTC, ISO 8601 with milliseconds and ``Z`` (2026-12-06T18:39:57.123Z), as every record, capture and
    feedback object says them: the local time without a zone could not be matched with them, and was ambiguous in
    the hour a daylight-saving change repeats."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """INFO and up to ``stream`` (default standard output, where SageMaker collects a container's log),
    unless the process configured logging already (a test, a notebook)."""
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(UtcFormatter(FORMAT))
        logging.basicConfig(level=level, handlers=[handler])


UNENCODABLE = "diagnosa.u-escape"  # the error handler of the CLI's standard output and error (terminal_streams)


def _u_escape(err: UnicodeError) -> tuple[str, int]:
    """A character the stream's encoding lacks as JSON writes it, ``\\u00d3`` (astral ones as a surrogate pair):
    valid inside the JSON strings `diagnosa predict` writes, and readable in a message. A lone surrogate (a path's
    byte that is not UTF-8, as Python decodes it) is written the same way."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    out = []
    for char in err.object[err.start:err.end]:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out), err.end


codecs.register_error(UNENCODABLE, _u_escape)


def terminal_streams() -> None:
    """Standard output and error write what their encoding lacks escaped (UNENCODABLE) instead of failing: under an
    ASCII locale (``PYTHONIOENCODING=ascii``, ``LC_ALL=C`` with ``PYTHONUTF8=0``) a label such as ENFERMEDAD CRÓNICA,
    and under any strict UTF-8 locale a path holding a byte that is not UTF-8, raised UnicodeEncodeError after the
    command had done its work: `data ingest` had made its version the latest and exited 1, `predict` had been
    answered and said its input was bad."""
    if sys.stderr is None:  # started with it closed (2>&-): print(file=None) wrote errors into standard output,
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # inside predict's JSON; they go nowhere, as asked
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors != UNENCODABLE:
            stream.reconfigure(errors=UNENCODABLE)


def utc_now() -> str:
    """Now in UTC, ISO 8601 with milliseconds: the timestamp of every local record (executions, endpoints)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def interrupted(program: str = "diagnosa") -> int:
    """What a command says of a Ctrl-C, wherever it lands (as it loads, in its checks, in a command that writes
    nothing): one line, no traceback; its exit status, 128 + SIGINT as a shell reports it."""
    print(f"{program}: interrupted", file=sys.stderr)
    return 128 + signal.SIGINT
