"""Atomic file writes: a reader sees the old file or the new one, never a partial one, and a crash
mid-write leaves at most a temp file beside the target (named ``.<target>.<random><suffix>``). And the
bounded read of a file a user names, which may be no file at all."""
from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = TMP_SUFFIX) -> Iterator[Path]:
    """A temp path in the target's folder to write; on success it replaces ``target`` in one rename,
    on any exception it is removed and the target is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: str | os.PathLike, data: Any, **dumps: Any) -> None:
    """``data`` as UTF-8 JSON (``json.dumps`` keyword arguments pass through), written atomically."""
    write_text_atomic(target, json.dumps(data, **{"ensure_ascii": False, **dumps}))


# What a processing container writes for DescribeProcessingJob's ExitMessage: AWS docs, "Save and Access Metadata
# Information About Your Processing Job" (docs.aws.amazon.com/sagemaker/latest/dg/byoc-metadata.html): UTF-8 text in
# /opt/ml/output/message, of which the service keeps the first 1 KB after the job ends ("Completed", "Stopped" or
# "Failed"); text that is not UTF-8 fails the job with a ClientError. The processing root is /opt/ml/processing,
# so the file is <base dir>/../output/message. No ProcessingOutput uploads /opt/ml/processing/output/failure.
EXIT_MESSAGE = ("output", "message")  # under the container root (/opt/ml), the processing base dir's parent
EXIT_MESSAGE_LIMIT = 1024  # bytes of the message the service keeps


def exit_message_path(base_dir: str | os.PathLike) -> Path:
    """Where a processing job whose base dir is ``base_dir`` (/opt/ml/processing) leaves its exit message."""
    return Path(base_dir).parent.joinpath(*EXIT_MESSAGE)


def clip_utf8(text: str, limit: int = EXIT_MESSAGE_LIMIT) -> str:
    """``text`` as UTF-8 within ``limit`` bytes, cut at a character boundary (what cannot be encoded escaped)."""
    data = text.encode("utf-8", errors="backslashreplace")
    return data[:limit].decode("utf-8", errors="ignore")


def write_job_failure(base_dir: str | os.PathLike, message: str) -> None:
    """A processing job's reason for failing: ``/opt/ml/output/message`` (the service's ExitMessage, the first
    1 KB, UTF-8; the local executor shows the same file) and ``<base dir>/output/failure`` (the whole reason, for
    a root run by hand). Best effort, since the job is already failing and its log has the message."""
    text = message.encode("utf-8", errors="backslashreplace").decode("utf-8")  # lone surrogates (odd file names)
    for path, body in ((exit_message_path(base_dir), clip_utf8(text)), (Path(base_dir) / "output" / "failure",
                                                                            text + "\n")):
        try:
            write_text_atomic(path, body)
        except OSError:
            pass


class FileProblem(ValueError):
    """A file a user named cannot be read whole: what it is instead, or how big."""


class FileTooLarge(FileProblem):
    """A file over the most a command reads whole."""


def not_a_regular_file(mode: int) -> str:
    """What a path of stat ``mode`` is, said for a message, when it is no regular file."""
    return ("a directory" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "not a regular file")


def read_file_bounded(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of a file a user names (``what`` says which, for the message), when it is a regular file of at
    most ``limit`` bytes: /dev/zero is endless (read whole, it exhausted the machine's memory), a FIFO may never
    end (the command hung), a folder is named as one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileProblem(f"{what} not found: {path}") from None
    except OSError as err:
        raise FileProblem(f"{what} {path} cannot be read: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        raise FileProblem(f"{what} {path} is {not_a_regular_file(mode)}: give the path of a file")
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as err:
        raise FileProblem(f"{what} {path} cannot be read: {err.strerror or err}") from None
    if len(data) > limit:
        raise FileTooLarge(f"{what} {path} is over {limit:,} bytes, the most read")
    return data
