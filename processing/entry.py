"""The command line of a processing job's entry point: one shape for all of them."""
from __future__ import annotations

import argparse

PROCESSING_ROOT = "/opt/ml/processing"


def job_parser(module: str, description: str, step: str, example: str,
               base_dir_help: str = "the processing container's root") -> argparse.ArgumentParser:
    """A parser for ``python -m <module>`` with ``--base-dir`` and an example run in a root that
    ``diagnosa job prepare <step>`` laid out (``example``: the arguments after ``--base-dir``)."""
    root = f"jobs/{step.lower()}"
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", formatter_class=argparse.RawDescriptionHelpFormatter, description=description,
        epilog=f"example, in a container root that `diagnosa job prepare {step} --root {root}` laid out:\n"
               f"  python -m {module} --base-dir {root}/processing {example}".rstrip())
    parser.add_argument("--base-dir", default=PROCESSING_ROOT, help=f"{base_dir_help} (default: %(default)s)")
    return parser
