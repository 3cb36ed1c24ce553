"""The command line of a processing job's entry point: one shape for all of them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from diagnosa.files import write_job_failure

PROCESSING_ROOT = "/opt/ml/processing"


class JobArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors (exit 2) also leave the job's failure reason where the service reads it
    (``diagnosa.files.write_job_failure``): a bad argument is a failed job like any other."""

    _argv: list[str] | None = None

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: Any = None) -> tuple[Any, list[str]]:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        base = _base_dir(self._argv or [])
        if Path(base).is_dir():  # the container's root (never created here: a mistyped --base-dir stays absent)
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
