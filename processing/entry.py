"""The command line of a processing job's entry point: one shape for all of them."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any, Iterable, Iterator, NoReturn, Sequence

from diagnosa.data.validate import shown
from diagnosa.files import job_reason, write_job_failure
from diagnosa.text import some_of

PROCESSING_ROOT = "/opt/ml/processing"


def host_names_problem(hosts: Any) -> str | None:
    """What is wrong with a job's list of host names (a processing job's resourceconfig.json ``hosts``, a training
    job's ``SM_HOSTS``), None when nothing: it must list at least one name, each once. A host named twice is a worker
    that never joins (every xgboost host waited for it until the timeout) or a shard nobody transforms."""
    if not isinstance(hosts, list) or not hosts or not all(isinstance(host, str) and host for host in hosts):
        return f"it must list at least one host name, got {shown(hosts)}"
    twice = [host for host, count in Counter(hosts).items() if count > 1]
    return f"it names {some_of(map(repr, twice))} more than once" if twice else None


class JobArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors (exit 2) also leave the job's failure reason where the service reads it
    (``diagnosa.files.write_job_failure``): a bad argument is a failed job like any other."""

    _argv: list[str] | None = None

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: Any = None) -> tuple[Any, list[str]]:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        message = job_reason(message)  # it quotes the argument, which may be megabytes long or not UTF-8
        base = _base_dir(self._argv or [])
        try:
            is_root = Path(base).is_dir()
        except (OSError, ValueError):  # a --base-dir too long for the system or holding a NUL
            is_root = False
        if is_root:  # the container's root (never created here: a mistyped --base-dir stays absent)
            write_job_failure(base, f"{self.prog}: error: {message}")
        super().error(message)


def _base_dir(argv: list[str]) -> str:
    """``--base-dir`` as the arguments give it (the default otherwise), whatever else in them is wrong."""
    found = PROCESSING_ROOT
    for i, arg in enumerate(argv):
        if arg == "--base-dir" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--base-dir="):
            found = arg.split("=", 1)[1]
    return found


def job_parser(module: str, description: str, step: str, example: str,
               base_dir_help: str = "the processing container's root") -> argparse.ArgumentParser:
    """A parser for ``python -m <module>`` with ``--base-dir`` and an example run in a root that
    ``diagnosa job prepare <step>`` laid out (``example``: the arguments after ``--base-dir``). An argument error
    exits 2, as argparse does, with the reason also in the job's failure files."""
    root = f"jobs/{step.lower()}"
    parser = JobArgumentParser(
        prog=f"python -m {module}", formatter_class=argparse.RawDescriptionHelpFormatter, description=description,
        epilog=f"example, in a container root that `diagnosa job prepare {step} --root {root}` laid out:\n"
               f"  python -m {module} --base-dir {root}/processing {example}".rstrip())
    parser.add_argument("--base-dir", default=PROCESSING_ROOT, help=f"{base_dir_help} (default: %(default)s)")
    return parser


# ------------------------------------------------------------------------------------------------ stopped by SIGTERM
# SageMaker stops a processing job (StopProcessingJob, a stopped pipeline execution) with SIGTERM, then SIGKILL; the
# local executor does the same (pipelines/executor.py). Python's default action for SIGTERM ends the process at once:
# no `finally` ran, a file being written was left cut at its final name (Preprocess writes its parts in place), the
# outputs written so far looked like a run's, and the job left no reason.
STOPPED_EXIT = 128 + signal.SIGTERM  # a shell's status for a process ended by SIGTERM
STOPPED_MESSAGE = ("stopped by SIGTERM (StopProcessingJob, or the pipeline execution was stopped) before it finished: "
                   "the outputs it had written were removed")


class JobStopped(BaseException):
    """SIGTERM reached a job: raised where its code stands, so its ``finally`` blocks and atomic writes clean up. Not
    an Exception, so no ``except Exception`` on the way takes the stop for a failure to handle or retry."""


def _entries(roots: Iterable[Path]) -> set[Path]:
    return {path for root in roots if root.is_dir() for path in root.rglob("*")} | set(roots)


def _remove_new(roots: Iterable[Path], before: set[Path]) -> None:
    """Remove what lies under ``roots`` that was not there in ``before``, deepest first; what was stays."""
    for path in sorted(_entries(roots) - before, key=lambda p: len(p.parts), reverse=True):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            logging.getLogger(__name__).warning("could not remove %s of the stopped job: %s", path, err)


@contextlib.contextmanager
def stops_on_sigterm(base_dir: str | os.PathLike, outputs: Sequence[Path]) -> Iterator[None]:
    """Run a job's body so that SIGTERM stops it cleanly: JobStopped is raised where it stands (its ``finally``
    blocks and atomic writes clean up), what the job wrote under ``outputs`` since this began is removed (what was
    there before stays: a run refused for another's outputs keeps them), the reason is written as any failure's
    (``diagnosa.files.write_job_failure``) and the job exits STOPPED_EXIT. A second SIGTERM during that is ignored;
    SIGKILL follows on the service's own clock."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        yield
        return
    before = _entries(outputs)

    def stop(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup runs once, whole
        raise JobStopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except JobStopped:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # raised by the handler, which set this already: made sure
        logging.getLogger(__name__).error("job %s", STOPPED_MESSAGE)
        _remove_new(outputs, before)
        write_job_failure(base_dir, STOPPED_MESSAGE)
        raise SystemExit(STOPPED_EXIT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
