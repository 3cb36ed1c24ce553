"""``diagnosa job prepare``: one job step of a local execution, laid out to run by hand (pipelines/job_prepare.py)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from diagnosa.commands.common import UsageError, local_workspace, os_problem
from diagnosa.services import LOCAL_BUCKET
from inference.limits import has_surrogate, printable, printable_lines


def cmd_job_prepare(args: argparse.Namespace) -> int:
    from pipelines.executor import executions_folder
    from pipelines.job_prepare import PrepareError, prepare_job
    from pipelines.local_jobs import LakeMapping

    local = local_workspace(args)
    if args.root and has_surrogate(args.root):  # checked before anything is laid out under it
        raise UsageError(f"--root {printable(args.root)} is not UTF-8 text (its bytes were kept as \\udcXX): the job's "
                         "shell scripts name it, and they are UTF-8; give a folder whose name is")
    if args.root and not args.root.isprintable():  # a newline, ESC, a bidi override: the script printed for pasting
        # shows it escaped, so the pasted command would name another folder
        raise UsageError(f"--root {printable(args.root)} holds a control or format character: the command printed to "
                         "run the job names it, and a terminal cannot show it as it is; give a folder whose name has "
                         "none")
    try:
        job = prepare_job(executions_folder(local.root), LakeMapping(LOCAL_BUCKET, local.lake), args.step,
                          Path(args.root) if args.root else None, execution_id=args.execution, force=args.force)
    except PrepareError as err:
        raise UsageError(str(err)) from None
    except OSError as err:  # --root where no folder can be made (a file, /proc): bad input, exit status 2
        where = err.filename or args.root
        raise UsageError(f"cannot lay the job out under {args.root or 'the workspace'}: {os_problem(err)}"
                         + (f" ({where})" if where and str(where) != str(args.root) else "")) from None
    # Its lines name the workspace's or --root's paths: an ESC or a newline in one is printed escaped, never raw.
    print(printable_lines("\n".join(job.script())))
    return 0


def register(commands: Any) -> None:
    job = commands.add_parser("job", help="run one job step of a local execution by hand")
    job_commands = job.add_subparsers(dest="job_command", required=True)
    prepare = job_commands.add_parser(
        "prepare", help="lay out a step's container root from the lake and print the command that runs it",
        description="Lay out the container root (/opt/ml) of one processing or training step of a local execution, "
                    "from the execution's definition and the data lake, as the local executor does; then print the "
                    "command that runs the step's entry point by hand against it (docs/pipeline.md).",
        epilog="examples:\n"
               "  diagnosa job prepare Preprocess --root .diagnosa/jobs/preprocess\n"
               "  diagnosa job prepare Train-xgboost --execution 2612072235v5   # `diagnosa executions` lists them\n"
               "  diagnosa job prepare Evaluate --root .diagnosa/jobs/evaluate --force   # replace an earlier one")
    prepare.add_argument("step", help="a step of the definition: Preprocess, Transform, Train-<family>, Select, Evaluate")
    prepare.add_argument("--execution", metavar="ID", help="the local execution (default: the latest)")
    prepare.add_argument("--root", help="the folder that stands for /opt/ml (default: <workspace>/jobs/<execution>/<step>)")
    prepare.add_argument("--force", action="store_true",
                         help="replace a non-empty root that `diagnosa job prepare` laid out before")
    prepare.set_defaults(func=cmd_job_prepare)
