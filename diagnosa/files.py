"""Atomic file writes: a reader sees the old file or the new one, never a partial one, and a crash
mid-write leaves at most a temp file beside the target (named ``.<target>.<random><suffix>``)."""
from __future__ import annotations

import json
import os
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


def write_job_failure(base_dir: str | os.PathLike, message: str) -> None:
    """A processing job's reason for failing, ``<base dir>/output/failure`` (what a run's status shows): best
    effort, since the job is already failing and its log has the message."""
    try:
        write_text_atomic(Path(base_dir) / "output" / "failure", message + "\n")
    except OSError:
        pass
