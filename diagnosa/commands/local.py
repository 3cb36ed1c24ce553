"""``diagnosa run --local``, ``diagnosa executions`` and ``diagnosa endpoint``: the pipeline on this machine.

``run --local`` builds the same definition ``diagnosa pipeline definition`` prints (with the local
lake standing for the bucket ``s3://diagnosa-local``; the SDK's uploads land in the lake) — or
takes a saved definition with ``--definition`` — and hands the JSON to the local executor
(pipelines/executor.py).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from diagnosa.commands.common import (
    Unavailable,
    UsageError,
    dataset_name,
    int_in,
    local_workspace,
    open_lake,
    sagemaker_name,
    shell_json,
    split_families,
    split_params,
    workspace,
    workspace_hint,
)
from diagnosa.data.schema import BUILTIN_DATASET, resource_name
from diagnosa.files import FileProblem, read_file_bounded
from diagnosa.lake import DataLake, LakeError
from diagnosa.services import EXAMPLE_REQUEST, LocalWorkspace, curated_manifest, example_request, plan_local_run
from inference.limits import printable_line, printable_lines

if TYPE_CHECKING:
    from diagnosa.commands.progress import Board
    from pipelines.executor import LocalExecutor



def cmd_run(args: argparse.Namespace) -> int:
    from diagnosa.commands.progress import Board, follow_steps
    from pipelines.executor import ExecutionError

    if not args.local:
        raise UsageError("only --local runs here; on SageMaker use `diagnosa pipeline upsert` then "
                         "`diagnosa pipeline start`")
    if args.definition is not None and args.families is not None:  # the saved definition's own families ran
        raise UsageError("--families builds a definition; --definition runs a saved one with the families it has: "
                         "give one or the other")
    local = local_workspace(args)
    # The step lines go to stdout as always; on a terminal, a live board on stderr shows the running steps' phases.
    board = Board.for_terminal("run --local", quiet=args.quiet, transient=True)
    executor = local.executor(port=args.port, max_parallel=args.max_parallel, use_cache=not args.no_cache,
                              progress=board.echo, on_step=follow_steps(board))
    if args.resume == "":  # an unset shell variable: not a new run of the default dataset
        raise UsageError("--resume takes an execution id (`diagnosa executions` lists them), got an empty one")
    if args.resume:
        fixed = [flag for flag, given in (("--param", args.param), ("--families", args.families),
                                          ("--definition", args.definition), ("--dataset", args.dataset))
                 if given is not None and given != []]
        if fixed:  # as SageMaker's RetryPipelineExecution: a retry keeps the execution's definition and values
            raise UsageError(f"--resume reruns execution {args.resume} with its own definition and parameters; "
                             f"{', '.join(fixed)} cannot change them: start a new run with the fix instead "
                             "(`diagnosa run --local --param ...`)")
        try:
            with board:
                record = executor.resume(args.resume)
        except ExecutionError as err:
            raise UsageError(str(err)) from None
        return report_run(record, local.lake, port=args.port)
    overrides = split_params(args.param)
    families = split_families(args.families)
    definition = _read_definition(args.definition) if args.definition else None
    return run_pipeline(local, executor, dataset=args.dataset or BUILTIN_DATASET, overrides=overrides, families=families,
                        definition=definition, board=board, port=args.port)


DEFINITION_MAX_BYTES = 16 << 20  # SageMaker takes a definition of up to 100 KB inline, 1 MB from S3


def _read_definition(path: str) -> dict[str, Any]:
    """The saved definition at ``path``; UsageError naming the file when it is not one (empty, not JSON, malformed)."""
    from pipelines.graph import definition_problems

    try:
        data = read_file_bounded(path, DEFINITION_MAX_BYTES, "the definition")
        if not data.strip():  # json's words were "Expecting value: line 1 column 1 (char 0)"
            raise UsageError(f"the definition {path} is empty: give the file `diagnosa pipeline definition --out` wrote")
        definition = json.loads(data.decode("utf-8"))
    except FileProblem as err:
        raise UsageError(str(err)) from None
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"cannot read the definition {path}: {err}") from None
    problems = definition_problems(definition)
    if problems:  # all of them, as CreatePipeline checks a document, and the file they are in
        raise UsageError(f"the definition {path} is not a pipeline definition: {'; '.join(problems)}")
    return definition


def run_pipeline(local: LocalWorkspace, executor: LocalExecutor, *, dataset: str, overrides: dict[str, str],
                 families: tuple[str, ...] | None = None, definition: dict[str, Any] | None = None,
                 board: Board | None = None, port: int | None = None) -> int:
    """A new local execution, as `run --local` and `monitor --retrain` start it: planned (the data it trains on,
    the definition, the parameters), announced, run (shown live on ``board``, if given) and reported; the exit
    status."""
    from diagnosa.commands.progress import Board
    from pipelines.executor import ExecutionError

    board = board or Board("run --local", enabled=False)
    plan = plan_local_run(local.lake, dataset=dataset, overrides=overrides, families=families, definition=definition)
    manifest = plan.manifest
    # The pipeline's name as `diagnosa pipeline upsert` gives it for this dataset (docs/pipeline.md): the dataset's
    # resource name, diagnosa for the cohort; the execution record and its ARN carry it.
    pipeline = resource_name(manifest["dataset"] if manifest else dataset)
    board.echo(f"local execution of pipeline {pipeline} on {local.lake.uri}"
               + (f" (dataset {manifest['dataset']} version {manifest['version']})" if manifest else ""))
    try:
        with board:
            record = executor.start(plan.definition, plan.overrides, pipeline_name=pipeline)
    except ExecutionError as err:
        raise UsageError(str(err)) from None
    return report_run(record, local.lake, manifest, port=port)


def report_run(record: Any, lake: DataLake, manifest: dict[str, Any] | None = None, *, port: int | None = None) -> int:
    """What an execution did and how to use what it made; the exit status (0, 1 failed, 130 stopped). ``port``: the
    run's --port, repeated in the hints that deploy (the default port may be taken, as it was for the run)."""
    _report(record, lake, _example(lake, manifest, record), port=port)
    return 0 if record.status == "Succeeded" else 130 if record.status == "Stopped" else 1


def _example(lake, manifest: dict[str, Any] | None, record) -> dict[str, Any]:
    """An example request for the hints: the built-in cohort's, else a curated row's feature values."""
    if manifest is None and record.data.get("Parameters", {}).get("InputDataUri"):
        manifest = curated_manifest(lake, "", record.data["Parameters"]["InputDataUri"])
    return example_request(lake, manifest) or EXAMPLE_REQUEST


def _report(record, lake, example: dict[str, Any] = EXAMPLE_REQUEST, *, port: int | None = None) -> None:
    from pipelines.definition import GATE_FAILED_STEP
    from pipelines.registry import approve_command, package_version

    # Every line names the workspace's paths (anyone's text: an ESC or a newline in a folder's name): printed escaped.
    print(printable_line(f"execution {record.id}: {record.status} (details: {record.path})"))
    steps = record.steps
    evaluate = steps.get("Evaluate", {}).get("Properties", {})
    report = evaluate.get("ProcessingOutputConfig", {}).get("Outputs", {}).get("report")
    evaluation = _evaluation(lake, evaluate)
    if report:
        key = report["S3Output"]["S3Uri"].split("/", 3)[3]
        print(printable_line(f"  evaluation report: {lake.url(key + '/report.md').removeprefix('file://')}"))
    if note := _split_note(evaluation):
        print(printable_line(f"  note: {note}"))
    registered = steps.get("Register", {}).get("Properties", {}).get("ModelPackageArn")
    if registered:
        print(printable_line(f"  registered: {registered}"))
    deploy = steps.get("Deploy", {}).get("Properties", {})
    # Name the command as it was run (e.g. .venv/bin/diagnosa from make), so the hint works when copied.
    prog = sys.argv[0] if os.path.basename(sys.argv[0]) == "diagnosa" else "diagnosa"
    if deploy.get("Url"):
        url = deploy["Url"]
        body = shell_json(example)
        # printf, not echo: echo would unescape the body under dash
        print(printable_lines(f"  endpoint {deploy['EndpointName']} serving on {url}\n"
                              f"    curl -s {url}/invocations -H 'Content-Type: application/json' -d '{body}'\n"
                              f"    printf '%s\\n' '{body}' | {prog} predict - --endpoint-url {url}"
                              + (f" --endpoint-name {deploy['EndpointName']}" if deploy["EndpointName"] != "diagnosa"
                                 else "")))
    elif deploy.get("Superseded"):  # a later approval's deploy was asked while this one waited: that one serves
        print(printable_line(f"  {deploy['Superseded']}"))
    elif registered and "Deploy" not in steps:  # a Deploy that ran and failed says so below, not "not Approved"
        group, version = package_version(registered)
        print(printable_line("  not deployed (ModelApprovalStatus is not Approved): approve it with "
                             f"`{approve_command(version, group)}" + (f" --port {port}`" if port is not None else "`")))
    if record.status == "Stopped":
        print(f"  stopped before the end: resume with `diagnosa run --local --resume {record.id}`")
    if record.status == "Failed":
        print(printable_line(f"  failed: {record.data.get('FailureReason')}"))
        failed_at = [name for name, s in steps.items() if s["StepType"] == "Fail" and s["StepStatus"] == "Failed"]
        if failed_at == [GATE_FAILED_STEP]:
            names = ", ".join(_gate_parameters(evaluation)) or "<Name>"
            print(printable_line(f"  the recall gate kept the model out of the registry: hold one run to other "
                                 f"thresholds with `--param NAME=VALUE` ({names}; training is reused from the cache), a "
                                 "dataset to its own in its config's [gate] (docs/data.md; ingested again, a new version "
                                 "that trains anew)"))
        elif failed_at:  # a saved definition's own Fail step: it ends there again when resumed
            print(printable_line(f"  the definition's Fail step {failed_at[0]} was reached: its condition decides, not a "
                                 "fault to resume"))
        elif _rejected_deploy(record, registered):  # resumed, it is refused again: not a fault a resume mends
            group, version = package_version(registered)
            print(printable_line(f"  {group} v{version} is Rejected in the registry: resuming does not deploy it. If it "
                                 f"may serve after all, `{approve_command(version, group)}` deploys it"))
        else:
            # A resumed run reads the same curated version: it can retry a fixed environment or code, not data.
            print(f"  after fixing the cause in the code or the environment, resume with `diagnosa run --local "
                  f"--resume {record.id}`; a data problem needs the data ingested again and a new run, a wrong "
                  "parameter a new run with `--param`")


def _rejected_deploy(record: Any, registered: object) -> bool:
    """The execution's endpoint step failed and the version it registered is Rejected in its workspace's registry
    (rejected while it deployed, or before a resume): a resume is refused the same way."""
    from pipelines.executor import local_registry
    from pipelines.registry import RegistryError

    if not isinstance(registered, str) or not any(
            s.get("StepType") == "Endpoint" and s.get("StepStatus") == "Failed" for s in record.steps.values()):
        return False
    try:  # <workspace>/executions/<id>/
        package = local_registry(record.folder.parent.parent).describe_model_package(registered)
    except (RegistryError, OSError, ValueError):
        return False
    return bool(package.get("ModelApprovalStatus") == "Rejected")


def _evaluation(lake: DataLake, evaluate: dict[str, Any]) -> dict[str, Any]:
    """The evaluation.json the Evaluate step wrote ({} when it wrote none, or none readable)."""
    from processing.baseline import EVALUATION

    output = evaluate.get("ProcessingOutputConfig", {}).get("Outputs", {}).get("evaluation")
    if not output:
        return {}
    try:
        evaluation = json.loads(lake.get_bytes(f'{output["S3Output"]["S3Uri"].split("/", 3)[3]}/{EVALUATION}'))
    except (KeyError, ValueError, TypeError, OSError, LakeError):
        return {}
    return evaluation if isinstance(evaluation, dict) else {}


def _gate_parameters(evaluation: dict[str, Any]) -> list[str]:
    """The parameters of the gate's failed checks, from the evaluation the Evaluate step wrote."""
    from pipelines.definition import gate_parameter

    try:
        failures = evaluation["gate"]["failures"]
        return [name for name in (gate_parameter(f.get("check", "")) for f in failures) if name]
    except (KeyError, TypeError, AttributeError):
        return []


def _split_note(evaluation: dict[str, Any]) -> str | None:
    """The evaluation's note on a split whose row shares lie far from those asked (None: none, or no split said)."""
    from processing.metrics import split_lines

    split = (evaluation.get("diagnosa") or {}).get("split")
    try:
        return split_lines(split)[1] if isinstance(split, dict) else None
    except (KeyError, TypeError, AttributeError, ValueError):
        return None


def cmd_executions(args: argparse.Namespace) -> int:
    from pipelines.executor import DAMAGED, executions_folder, list_executions

    root = executions_folder(workspace(args))
    executions = list_executions(root)
    if args.dataset:
        executions = [e for e in executions if _trained_on(e)[0] == args.dataset]
    if args.execution is not None:  # "" (an unset shell variable) names no execution; it does not mean all
        match = [e for e in executions if e["PipelineExecutionId"] == args.execution]
        if not match:
            raise UsageError(f"no local execution {args.execution!r} in {root} ({workspace_hint(args)})")
        execution = match[0]
        if execution["PipelineExecutionStatus"] == DAMAGED:
            raise UsageError(f"execution {args.execution}: {execution['Problem']}")
        # A record is a file others may have written: each field shown printable (an ESC acts on the terminal).
        print(printable_line(f"{execution['PipelineExecutionId']}  {execution['PipelineExecutionStatus']}  "
                             f"started {execution['CreationTime']}"))
        if execution.get("FailureReason"):
            print(printable_line(f"  failure: {execution['FailureReason']}"))
        for step in sorted(execution["Steps"].values(), key=lambda s: s["StartTime"]):
            cached = " (cache hit)" if step.get("CacheHitResult") else ""
            print(printable_line(f"  {step['StepName']:<28} {step['StepStatus']:<10} "
                                 f"{step.get('DurationSeconds', 0):7.1f} s  {step['RunFolder']}{cached}"))
            if step.get("FailureReason"):
                print(printable_line(f"    {step['FailureReason']}"))
        for name in execution.get("Skipped", []):
            print(printable_line(f"  {name:<28} not run (branch not taken)"))
        return 0
    if not executions:
        from diagnosa.data.ingest import spelled_as_endpoint

        hint = spelled_as_endpoint(open_lake(args), args.dataset) if args.dataset else ""
        print(printable_line(f"no local executions{f' of dataset {args.dataset}' if args.dataset else ''} in {root} "
                             f"({workspace_hint(args)}){hint}"))
    for e in executions:
        if e["PipelineExecutionStatus"] == DAMAGED:
            print(printable_line(f"{e['PipelineExecutionId']}  {DAMAGED:<10} {e['Problem']}"))
            continue
        steps = e["Steps"].values()
        dataset, version = _trained_on(e)
        data = f"  {dataset} {version}" if dataset else f"  {_input(e)}" if _input(e) else ""
        print(printable_line(f"{e['PipelineExecutionId']}  {e['PipelineExecutionStatus']:<10} started "
                             f"{e['CreationTime']}  {sum(s['StepStatus'] == 'Succeeded' for s in steps)}/{len(steps)} "
                             f"steps succeeded{data}"))
    return 0


def _input(execution: dict[str, Any]) -> str:
    return str((execution.get("Parameters") or {}).get("InputDataUri") or "")


def _trained_on(execution: dict[str, Any]) -> tuple[str | None, str]:
    """(dataset, version) of the curated data an execution trained on; (None, "") for another input."""
    found = re.search(r"/curated/([^/]+)/([^/]*)", _input(execution))
    return (found.group(1), found.group(2)) if found else (None, "")


def cmd_endpoint(args: argparse.Namespace) -> int:
    from pipelines.local_endpoints import DAMAGED, DeployError, EndpointBusy

    endpoints = local_workspace(args).endpoints()
    if args.endpoint_command == "list":
        records = endpoints.list()
        if not records:
            print(printable_line(f"no local endpoints in {endpoints.root} ({workspace_hint(args)})"))
        for r in records:  # a record may lack a field (written by hand, by an older version): shown empty
            detail = (r["Problem"] if r["EndpointStatus"] == DAMAGED
                      else f"{r.get('Url', '')}  config {r.get('EndpointConfigName', '')}"
                      + (f"  ({r['Note']})" if r.get("Note") else ""))
            print(printable_line(f"{r['EndpointName']:<16} {r['EndpointStatus']:<13} {detail}"))
        return 0
    if args.endpoint_command == "start":
        endpoints = local_workspace(args).endpoints(args.port)
        try:
            record = endpoints.start(args.name)
        except EndpointBusy as err:  # a deploy runs: transient, the same command succeeds once it ends (exit 1)
            raise Unavailable(str(err)) from None
        except DeployError as err:
            raise UsageError(str(err)) from None
        if record is None:
            current = endpoints.describe(args.name)
            print(printable_line(f"endpoint {args.name} serves already on {current.get('Url') if current else None}"))
        else:
            print(printable_line(f"endpoint {args.name} InService on {record['Url']} (config "
                                 f"{record['EndpointConfigName']})"))
        return 0
    try:
        stopped = endpoints.stop(args.name)
    except EndpointBusy as err:  # a deploy runs: transient, the same command succeeds once it ends (exit 1)
        raise Unavailable(str(err)) from None
    except DeployError as err:
        raise UsageError(str(err)) from None
    shipped = endpoints.ship_spool(args.name)
    print(f"endpoint {args.name}: {'stopped' if stopped else 'was not running'}"
          + (f"; {shipped:,} captured request(s) a killed server had left in its spool shipped to the lake"
             if shipped else ""))
    return 0


def register(commands: Any) -> None:
    run = commands.add_parser("run", help="run the pipeline definition locally (the main job)")
    run.add_argument("--local", action="store_true", help="run on this machine with the local executor")
    run.add_argument("--param", action="append", default=[], help="NAME=VALUE parameter override (repeatable)")
    run.add_argument("--dataset", type=dataset_name, default=None,
                     help="the curated dataset to train on, its latest version (default: the built-in cohort, patients); "
                          "the definition is built for its labels and slice")
    run.add_argument("--definition", help="a saved definition JSON to run instead of building it")
    run.add_argument("--families", help="comma-separated candidate model families (when building the definition)")
    run.add_argument("--resume", metavar="EXECUTION_ID",
                     help="rerun a failed execution from its failed step, with its own definition and parameters")
    run.add_argument("--no-cache", action="store_true",
                     help="run every step even when an earlier run with the same inputs is cached")
    run.add_argument("--max-parallel", type=int_in(1, 64, "--max-parallel"), default=None,
                     help="steps running at once (default: cores, at most 4)")
    run.add_argument("--port", type=int_in(0, 65535, "--port"), default=None,
                     help="port of the local endpoint (a new one: default 8080, 0 picks a free one; an existing one "
                          "keeps its port unless given another, then moves there)")
    run.add_argument("--quiet", action="store_true", help="no live progress on stderr (shown only on a terminal)")
    run.set_defaults(func=cmd_run)

    executions = commands.add_parser("executions", help="past local executions, or one execution's steps")
    executions.add_argument("execution", nargs="?", help="an execution id")
    executions.add_argument("--dataset", type=dataset_name, help="only the executions that trained on this dataset")
    executions.set_defaults(func=cmd_executions)

    endpoint = commands.add_parser("endpoint", help="local endpoints deployed by runs and approvals")
    endpoint_commands = endpoint.add_subparsers(dest="endpoint_command", required=True)
    endpoint_commands.add_parser("list", help="local endpoints and their status").set_defaults(
        func=cmd_endpoint)
    start = endpoint_commands.add_parser("start", help="start the model a stopped local endpoint served, again (after "
                                                       "`endpoint stop`, a reboot or a killed server)")
    start.add_argument("name")
    start.add_argument("--port", type=int_in(0, 65535, "--port"), default=None,
                       help="move it to this port (default: its own)")
    start.set_defaults(func=cmd_endpoint)
    stop = endpoint_commands.add_parser("stop", help="stop a local endpoint's server")
    stop.add_argument("name", type=sagemaker_name)
    stop.set_defaults(func=cmd_endpoint)
