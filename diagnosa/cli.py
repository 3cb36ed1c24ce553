"""The ``diagnosa`` command line.

Every command works on one data lake: ``--lake`` (or ``DIAGNOSA_LAKE``), by default the folder
``lake/`` inside the workspace, which persists across commands: ``--workspace``, else ``DIAGNOSA_HOME``,
else the nearest ``.diagnosa`` folder in the current directory or above it (as git finds ``.git``),
else ``./.diagnosa``. ``s3://bucket/prefix`` selects the same layout on S3. ``--raw-lake``
(or ``DIAGNOSA_RAW_LAKE``) names a separate home for the raw zone (the stack's object-locked raw bucket).
Bad input ends with exit status 2 and one line naming what is wrong.
"""
from __future__ import annotations

import argparse
import errno
import io
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from diagnosa.aws import client as aws_client
from diagnosa.aws import resolve_region
from diagnosa.commands.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    Unavailable,
    UsageError,
    dataset_name,
    endpoint_url,
    errors_file_apart,
    given_text,
    int_in,
    local_workspace,
    model_folder,
    open_lake,
    os_problem,
    positive_seconds,
    read_token_file,
    resolve_endpoint_name,
    sagemaker_name,
    shell_json,
    split_families,
    split_params,
    workspace,
    workspace_hint,
)
from diagnosa.data.validate import clip, shown
from diagnosa.files import FULL_DISK
from diagnosa.lake import DataLake, LakeError, bucket_name_problem
from diagnosa.logs import interrupted, terminal_streams
from diagnosa.services import LOCAL_BUCKET, EndpointBusy, PortTaken, ServiceError
from diagnosa.text import ITEM_CHARS
from inference.limits import INVOKE_TIMEOUT, printable, printable_line, printable_lines

MAX_TOP_K = 1_000  # --top-k's bound here; the endpoint holds it to the model's labels


def _fraction(what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"{what} must be in [0, 1), got {value}")
        return value + 0.0  # -0.0 is 0.0 (it was recorded as -0.0 in the batch's card)
    return parse


# ------------------------------------------------------------------------------------------------ data

def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--drift-strength must be a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"--drift-strength must be in (0, 1], got {value}")
    return value


def cmd_data_generate(args: argparse.Namespace) -> int:
    from diagnosa.commands.progress import Board
    from diagnosa.data.card import render_card
    from diagnosa.data.cohort import CohortConfig, apply_drift, generate, write_raw
    from diagnosa.data.hpo import load_ontology
    from diagnosa.data.ingest import check_batch_name, raw_keys
    from diagnosa.data.orphan import build_catalogue

    if args.drift and args.card:
        raise UsageError("--card documents the default cohort; a drifted batch has no card of its own")
    if args.batch is not None:
        check_batch_name(args.batch)  # as ingest checks it: it names raw files, written once
    if args.drift_strength is not None and not args.drift:
        raise UsageError("--drift-strength goes with --drift (it generated the plain cohort without a word)")
    if args.card:  # checked before the raw batch is written (minutes of generating), not after
        problem = _card_problem(args.card)
        if problem:
            raise UsageError(problem)
    strength = 1.0 if args.drift_strength is None else args.drift_strength
    healthy = CohortConfig.healthy_fraction
    if args.orphan_fraction + healthy >= 1:  # within the flag's own range, and no room left for common diseases
        raise UsageError(f"--orphan-fraction {args.orphan_fraction:g} leaves no room for common diseases beside the "
                         f"{healthy:.0%} healthy patients: give less than {1 - healthy:g}")
    config = CohortConfig(patients=args.patients, seed=args.seed, orphan_fraction=args.orphan_fraction,
                          defect_rate=args.defect_rate)
    lake = open_lake(args)
    lake.init_zones()  # a new lake shows its layout
    # A drifted batch (for showing the monitoring loop, docs/operations.md) is the cohort with one scenario applied.
    batch = args.batch or (f"{config.batch}-drift-{args.drift}" if args.drift else config.batch)
    records_key, labs_key = raw_keys(batch)
    if lake.exists(records_key):
        differs = _generated_otherwise(lake, batch, config, args.drift, strength)
        if differs:  # it said "nothing to do", and the cohort asked for was never made
            raise UsageError(f"raw batch {batch} already in {lake.uri} was generated with {differs}: raw data is "
                             "write-once; give this cohort another name with --batch NAME")
        # Whole only with its labs and its card, written after the records: one cut short (a full disk) is generated
        # again, the same bytes for what is there. It was "nothing to do", and ingest found no batch.
        cards = [f"raw/cohort_cards/{batch}.json", *([] if args.drift else [f"raw/cohort_cards/{batch}.md"])]
        whole = lake.exists(labs_key) and all(lake.exists(card) for card in cards)
        if whole and not args.card:
            print(printable_line(f"raw batch {batch} already in {lake.uri}: nothing to do (raw data is write-once)"))
            return 0
    with Board.for_terminal(f"data generate {batch}", quiet=args.quiet) as board:
        board.phase("loading the phenotype ontology")
        ontology = load_ontology()
        board.phase("building the orphan-disease catalogue")
        orphans = build_catalogue(ontology=ontology)
        board.phase("generating patients", f"{config.patients:,}")
        cohort = generate(config, orphans=orphans, ontology=ontology)
        if args.drift:
            board.phase("applying drift", f"{args.drift}, strength {strength:g}")
            try:
                cohort = apply_drift(cohort, args.drift, seed=args.seed, strength=strength)
            except ValueError as err:
                raise UsageError(str(err)) from None
        summary = cohort.summary() | {"batch": batch}
        board.phase("writing the raw batch", lake.uri)
        write_raw(cohort, lake, batch)
        lake.put_bytes_once(f"raw/cohort_cards/{batch}.json",
                            (json.dumps(summary, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n")
                            .encode("utf-8"))
        if not args.drift:
            card = render_card(summary, orphans)
            lake.put_bytes_once(f"raw/cohort_cards/{batch}.md", card.encode("utf-8"))
            if args.card:
                from diagnosa.files import write_text_atomic

                write_text_atomic(args.card, card)  # whole or not at all
    if args.drift:
        assert cohort.drift is not None, "apply_drift records the scenario and what it changed"
        print(f"generated drifted batch {batch} ({args.drift}: {cohort.drift['description']}): "
              f"{summary['patients']:,} patients, {summary['lab_panels']:,} lab panels")
        print(f"  changed: {json.dumps(cohort.drift['changed'], ensure_ascii=False, default=str)}")
    else:
        print(f"generated batch {batch}: {summary['patients']:,} patients, {summary['lab_panels']:,} lab panels, "
              f"{summary['orphan_patients']:,} orphan-disease patients over {summary['orphan_diseases_sampled']} diseases")
        for label, count in summary["per_class"].items():
            print(f"  {label}: {count:,}")
    print(printable_line(f"  → {lake.url(records_key)}"))  # the lake's path: anyone's text (an ESC, a newline)
    print(printable_line(f"  → {lake.url(labs_key)}"))
    return 0


def _card_problem(card: str) -> str | None:
    """Why the data card cannot be written to ``card`` (a folder, a device, a folder that is not there or not
    writable), or None. Found after the batch was generated, it was a bare "No such file or directory" or
    "Permission denied" with exit status 1; a device (/dev/null) took the card, and the command said it wrote it (the
    card is now written beside its path and renamed into place, which would replace the device)."""
    from diagnosa.files import not_a_file

    path, named = Path(card), clip(card, ITEM_CHARS)
    try:
        path.lstat()
        there = True
    except (FileNotFoundError, NotADirectoryError):
        there = False
    except OSError as err:  # a name too long
        return f"--card {named}: {os_problem(err)}"
    except ValueError as err:  # a NUL in the path
        return f"--card {named}: {err}"
    problem = not_a_file(path) if there else None
    if problem:
        return f"--card {named}: {problem}: give the path of the Markdown file to write"
    folder = path.parent
    if not folder.is_dir():
        return f"--card {named}: its folder {clip(str(folder), ITEM_CHARS)} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--card {named}: its folder {clip(str(folder), ITEM_CHARS)} is not writable"
    return None


def _generated_otherwise(lake: DataLake, batch: str, config: Any, drift: str | None, strength: float) -> str | None:
    """What the raw batch ``batch``, already in the lake, was generated with that this command asks otherwise (its
    card, raw/cohort_cards/<batch>.json, says), as flags; None when nothing differs or no card says."""
    try:
        summary = json.loads(lake.get_bytes(f"raw/cohort_cards/{batch}.json"))
    except (LakeError, ValueError, OSError):
        return None
    made = summary.get("config") if isinstance(summary, dict) else None
    if not isinstance(made, dict):
        return None
    differs = [f"--{name.replace('_', '-')} {made[name]!s}" for name in ("patients", "seed", "orphan_fraction",
                                                                         "defect_rate")
               if name in made and made[name] != getattr(config, name)]
    recorded = summary.get("drift")
    if isinstance(recorded, dict) != bool(drift):
        differs.append(f"--drift {recorded.get('scenario')}" if isinstance(recorded, dict) else "no --drift")
    elif isinstance(recorded, dict):
        for flag, value, asked in (("--drift", recorded.get("scenario"), drift),
                                   ("--drift-strength", recorded.get("strength"), strength)):
            if value != asked:
                differs.append(f"{flag} {value!s}")
    return ", ".join(clip(d, ITEM_CHARS) for d in differs) or None


def cmd_data_ingest(args: argparse.Namespace) -> int:
    from diagnosa.commands.progress import Board

    with Board.for_terminal("data ingest", quiet=args.quiet) as board:
        report = _ingest(args, board.phase)
    print(printable_lines(report.summary()))
    return 0


def _ingest(args: argparse.Namespace, phase):
    from diagnosa.data.ingest import cohort_batches, ingest_cohort, ingest_cohort_files, ingest_csv

    if args.config:  # checked before the lake's folders are made
        if not args.path:
            raise UsageError("--config describes your own CSV: give its path too "
                             "(diagnosa data ingest FILE.csv --config CONFIG.toml)")
        ignored = [flag for flag, given in (("--batch", args.batch), ("--labs", args.labs)) if given is not None]
        if ignored:  # they were taken without a word and never used: the raw file is named after the CSV
            raise UsageError(f"{' and '.join(ignored)} go{'es' * (len(ignored) == 1)} with the built-in cohort's "
                             "files; a CSV of your own is stored under its own name (raw/<dataset>/<file>-<hash>.csv)")
    lake = open_lake(args)
    lake.init_zones()
    if args.config:
        from diagnosa.services import label_naming_problem

        problem = label_naming_problem(Path(args.config))
        if problem:
            raise UsageError(problem)
        return ingest_csv(lake, Path(args.path), Path(args.config), phase=phase)
    elif args.path:
        path = Path(args.path)
        if path.is_dir():
            records = sorted(path.glob("*.jsonl"))
            labs = sorted(path.glob("*.csv"))
            if len(records) != 1 or len(labs) != 1:
                raise UsageError(f"{path} must hold exactly one .jsonl (clinical records) and one .csv (lab results); "
                                 f"found {len(records)} and {len(labs)}")
            return ingest_cohort_files(lake, records[0], labs[0], args.batch, phase=phase)
        if path.suffix == ".csv":
            raise UsageError(f"{path} is a CSV: describe it with --config CONFIG.toml (see docs/data.md)")
        if not args.labs:
            raise UsageError(f"clinical records {path} need their lab results: add --labs LABS.csv")
        return ingest_cohort_files(lake, path, Path(args.labs), args.batch, phase=phase)
    else:
        batches = cohort_batches(lake)
        if args.batch:
            batch = args.batch
        elif len(batches) == 1:
            batch = batches[0]
        elif not batches:
            raise UsageError(f"no raw batch in {lake.uri}: run `diagnosa data generate` or give a PATH")
        else:
            raise UsageError(f"several raw batches in {lake.uri} ({', '.join(batches)}): choose one with --batch")
        return ingest_cohort(lake, batch, phase=phase)


# ------------------------------------------------------------------------------------------------ serving


def cmd_serve(args: argparse.Namespace) -> int:
    from diagnosa.logs import configure_logging
    from inference.serve import ServeError, ServeSettings, start, token_from_environment

    model_dir = model_folder(Path(args.model), workspace(args))
    if args.endpoint_name is None:  # the model's dataset's, as a run deploys it (the app finds it the same way)
        from diagnosa.data.schema import BUILTIN_RESOURCE
        from diagnosa.model import ModelLoadError, model_endpoint

        try:
            args.endpoint_name = model_endpoint(model_dir)
        except ModelLoadError:  # no readable metadata: loading the model says what is wrong
            args.endpoint_name = BUILTIN_RESOURCE
    try:
        token = read_token_file(args.feedback_token_file) if args.feedback_token_file else token_from_environment()
        settings = ServeSettings(model_dir, args.endpoint_name, host=args.host, port=args.port,
                                 lake=open_lake(args) if args.capture_sampling > 0 else None,
                                 capture_sampling=args.capture_sampling, capture_spool=args.capture_spool,
                                 capture_fsync=args.capture_fsync, workers=args.workers, feedback_token=token)
        configure_logging(stream=sys.stderr)
        endpoint = start(settings)
    except ServeError as err:
        raise UsageError(str(err)) from None
    example = _served_example(args, model_dir)
    body = shell_json(example) if example else None
    print(printable_line(f"local endpoint '{args.endpoint_name}' on {endpoint.url} (model {model_dir})") + "\n"
          + (f"  curl -s {endpoint.url}/invocations -H 'Content-Type: application/json' -d '{body}'\n" if body else "")
          + f"  diagnosa predict patients.json --endpoint-url {endpoint.url}", flush=True)
    endpoint.serve_forever()
    return 0


def _served_example(args: argparse.Namespace, model_dir: Path) -> dict[str, Any] | None:
    """The example request `serve` prints: the served model's own fields (the first row of the curated version it
    trained on, when the lake holds it), the built-in cohort's for the cohort's model; None when neither is at hand
    (a model of your own from elsewhere: an example with the cohort's fields would be refused)."""
    from diagnosa.data.ingest import IngestError, curated_uri
    from diagnosa.data.schema import BUILTIN_DATASET
    from diagnosa.model import ModelLoadError, read_metadata
    from diagnosa.services import curated_manifest, example_request

    try:
        trained = read_metadata(model_dir).get("dataset") or {}
        name, version = trained.get("name") or BUILTIN_DATASET, trained.get("version")
        if name == BUILTIN_DATASET:
            return example_request(open_lake(args), None)
        lake = open_lake(args)
        manifest = curated_manifest(lake, name, curated_uri(LOCAL_BUCKET, name, version) if version else None)
        return example_request(lake, manifest) if manifest else None
    except (ModelLoadError, IngestError, LakeError, UsageError, OSError, AttributeError, TypeError):
        return None


BATCH_CHUNK = 50  # patients per request when a raw batch is sent as traffic


def _send_batch(args: argparse.Namespace, client: Any) -> int:
    """A raw batch as traffic: its patients in requests of BATCH_CHUNK; a refused request is resent one patient
    at a time, so one defective record costs one refusal. Prints a summary, not the predictions."""
    from collections import Counter

    from diagnosa.data.ingest import IngestError, check_batch_name
    from inference.bulk import problem_kind
    from inference.client import ClientFailure, PredictionRejected, raw_batch_requests

    try:
        check_batch_name(args.batch)  # a name, never a path: 128 KiB of it was "File name too long", exit 1
        batch = raw_batch_requests(open_lake(args), args.batch)
    except IngestError as err:
        raise UsageError(str(err)) from None
    categories: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    requests = 0

    def send(records: list[dict[str, Any]]) -> bool:
        nonlocal requests
        requests += 1
        try:
            prediction = client.predict(records, top_k=args.top_k)
        except PredictionRejected as err:
            if len(records) == 1:
                first = err.errors[0] if err.errors else {}
                refused[problem_kind(first.get("field"), first.get("problem", err.message))] += 1
            return False
        categories.update(r["category"] for r in prediction.results)
        return True

    try:
        for start in range(0, len(batch.records), BATCH_CHUNK):
            chunk = batch.records[start:start + BATCH_CHUNK]
            if not send(chunk) and len(chunk) > 1:
                for record in chunk:
                    send([record])
    except ClientFailure as err:  # the endpoint, not the batch: unreachable, failing, too slow
        print(f"diagnosa: error: {_said(err)} (after {sum(categories.values())} patients were answered)", file=sys.stderr)
        return EXIT_FAILED
    answered = sum(categories.values())
    print(f"batch {args.batch}: {answered:,} of {len(batch.records):,} patients answered in {requests:,} requests"
          + (f"; {batch.unreadable} unreadable line(s) skipped" if batch.unreadable else ""))
    for category, count in categories.most_common():
        print(printable_line(f"  {category:<22} {count:,}"))  # the endpoint's words
    if refused:
        print(printable_line(f"  refused: {sum(refused.values()):,} patient(s); " + "; ".join(
            f"{reason} ({n})" for reason, n in refused.most_common(5))))
    return 0


def _predict_format(args: argparse.Namespace) -> str:
    if args.format != "auto":
        return args.format
    name = args.input.lower()
    return "csv" if name.endswith(".csv") else "jsonl" if name.endswith((".jsonl", ".ndjson")) else "json"


def _file_kind(path: str) -> str | None:
    """What a file that is no UTF-8 text is, when its first and last bytes say (gzip, a workbook, ...)."""
    from diagnosa.data.csv_cells import container_kind

    try:
        with open(path, "rb") as file:
            head = file.read(16)
            file.seek(max(0, os.fstat(file.fileno()).st_size - 4))
            return container_kind(head, file.read(4))
    except OSError:
        return None


def cmd_predict(args: argparse.Namespace) -> int:
    """A file (or standard input) of patients, streamed to the endpoint in requests of 100; the predictions go to
    standard output as they arrive, the refused records' problems to a file, summarised on standard error."""
    from inference.client import DiagnosaClient, overall_deadline

    if (args.input is None) == (args.batch is None):
        raise UsageError("give either a file (or - for standard input) or --batch NAME, not both")
    if args.endpoint_url and args.region:  # it was dropped without a word (the app refuses the pair too)
        raise UsageError("--region is for a SageMaker endpoint; the local endpoint is chosen by --endpoint-url")
    if args.region is not None and not REGION_NAME.fullmatch(args.region):  # botocore's words were put on --endpoint-url
        raise UsageError(f"AWS region {shown(args.region, 80)} (--region) is not a region's name: e.g. eu-west-1")
    resolve_endpoint_name(args)
    try:
        # --timeout bounds each read; the deadline each request in all (an endpoint trickling its answer held it)
        client = DiagnosaClient(args.endpoint_name, endpoint_url=endpoint_url(args), region=args.region,
                                timeout=args.timeout, deadline=overall_deadline(args.timeout))
    except ValueError as err:
        raise UsageError(f"--endpoint-url: {err}") from None
    if args.batch is not None and args.differential:  # it was dropped without a word
        raise UsageError("--differential lists each patient's rare diseases; --batch prints a summary of the "
                         "categories, not the answers: send the batch's patients as a file instead")
    try:
        return _send_batch(args, client) if args.batch is not None else _predict_file(args, client)
    finally:
        # Answers the endpoint could not capture are valid predictions: exit status as without them (1 would tell a
        # script to send the file again, answering and capturing the rest twice), said on standard error.
        _warn_uncaptured(client)


def _predict_file(args: argparse.Namespace, client: Any) -> int:
    """`predict` of a file or standard input with ``client``: its exit status."""
    from inference.bulk import Answered, JsonNotCsv, PredictionsDocument, ProblemSummary, predict_stream, read_records
    from inference.client import ClientFailure, PredictionRejected

    fmt = _predict_format(args)
    if fmt == "csv" and args.differential:
        raise UsageError("--differential needs JSON input: a CSV request carries no options")
    if fmt == "csv" and args.top_k is not None:
        raise UsageError("--top-k needs JSON input: a CSV request carries no options (the endpoint lists its default, "
                         "3 categories or every label of a model with fewer)")
    name = "standard input" if args.input == "-" else args.input
    # In the current folder, never beside the input: that may be a lake's raw zone or read-only.
    errors_path = Path(args.errors_file or ("predict-errors.jsonl" if args.input == "-"
                                            else f"{Path(args.input).name}.errors.jsonl"))
    errors_file_apart(errors_path, args.input, "file of patients")
    if args.input == "-" and sys.stdin is None:  # started with standard input closed (0<&-)
        raise UsageError("standard input is closed: give the file's path instead of -")
    try:
        stream = _stdin_utf8() if args.input == "-" else open(args.input, encoding="utf-8", newline="")
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:  # said as every command says it (_command)
            raise
        raise UsageError(f"cannot read {args.input}: {err.strerror or err}") from None
    def open_errors_file():
        try:
            return open(errors_path, "w", encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot write the list of refused records to {errors_path}: {os_problem(err)} "
                             "(choose another file with --errors-file)") from None

    document, problems = PredictionsDocument(sys.stdout), ProblemSummary(open_errors_file)
    failure = None
    unwritten: OSError | None = None
    # The endpoint (unreachable, failing, too slow), not the input, stopped the run: exit status 1, as for any service
    # that says no, not 2 (a script told "bad input" would not send the same file again).
    endpoint_failed = False
    try:
        records, header = read_records(stream, fmt, name)
        for outcome in predict_stream(client, records, csv_header=header, top_k=args.top_k,
                                      differential=args.differential):
            if isinstance(outcome, Answered):
                document.add(outcome)
            else:
                problems.add(outcome)
    except UnicodeDecodeError as err:
        kind = None if args.input == "-" else _file_kind(args.input)
        failure = (f"{name} is not a text file: it is {kind}" if kind else
                   f"{name} is not UTF-8 text (byte {err.start} of a block read): the endpoint reads UTF-8; a "
                   "spreadsheet saved on Windows is often cp1252: save it as 'CSV UTF-8'")
    except JsonNotCsv as err:
        failure = f"{err}: give --format json, or --format jsonl for one record per line"
    except ValueError as err:  # a JSON document that is not JSON, a CSV without a header, no records at all
        failure = str(err)
    except PredictionRejected as err:  # the request itself (not a record) is wrong: every request would be
        failure = str(err)
    except ClientFailure as err:
        failure = str(err) + (f" (after {document.count:,} patients were answered)" if document.count else "")
        endpoint_failed = True
    except OSError as err:  # the answers or the list of refused records could not be written (a full disk)
        if err.errno not in FULL_DISK:
            raise
        unwritten = err
    finally:
        for close in (document.close, problems.close):
            try:
                close()
            except OSError as err:
                if err.errno not in FULL_DISK:
                    raise
                unwritten = unwritten or err
        if args.input != "-":
            stream.close()
        elif stream is not sys.stdin:
            stream.detach()  # standard input stays open: only its UTF-8 reader is let go
    if unwritten is not None:  # not the lake's "nothing half-written is read": these are cut where the disk filled
        what = (f"the list of refused records ({_said(os.fsdecode(unwritten.filename))})" if unwritten.filename
                else "the answers (standard output)")
        print(f"diagnosa: error: {unwritten.strerror}: {what} could not be written whole: it stops where the disk "
              f"filled, its last line perhaps cut; {document.count:,} patient(s) were answered before it. Free space "
              f"and send {_said(name)} again", file=sys.stderr)
        return EXIT_FAILED
    if failure and endpoint_failed and not problems.total:
        print(f"diagnosa: error: {_said(failure)}", file=sys.stderr)
        return EXIT_FAILED
    if failure and not problems.total:
        raise UsageError(failure)
    if problems.total:
        refused = problems.records
        print(f"diagnosa: error: {refused:,} of {refused + document.count:,} patient record(s) of {_said(name)} refused "
              f"({problems.total:,} problem(s)); "
              + (f"the other {document.count:,} answered on standard output" if document.count else "none answered"),
              file=sys.stderr)
        print("\n".join(problems.lines()), file=sys.stderr)
        if problems.sink is not None:
            print(printable_line(f"every problem, one JSON line each: {errors_path.resolve()}"), file=sys.stderr)
        if failure:
            print(f"then stopped: {_said(failure)}", file=sys.stderr)
        return EXIT_FAILED if endpoint_failed else EXIT_BAD_INPUT
    if len(document.event_ids) > 1:
        print(f"{document.count:,} patients answered in {len(document.event_ids):,} requests", file=sys.stderr)
    return 0


def _stdin_utf8() -> Any:
    """Standard input read as UTF-8, as a file given by its path is: it was read in the locale's encoding, so under
    a Latin-1 locale 'José' reached the endpoint and its capture as 'JosÃ©', and under an ASCII one UTF-8 was refused
    as not UTF-8. A text stream without bytes under it (a test's) is read as it is."""
    buffer = getattr(sys.stdin, "buffer", None)
    return sys.stdin if buffer is None else io.TextIOWrapper(buffer, encoding="utf-8", newline="")


def _warn_uncaptured(client: Any) -> None:
    """The summary's line on the answers ``client`` took whose capture failed (``X-Diagnosa-Capture: failed``: the
    local endpoint's capture spool could not be written, a full disk), on standard error; nothing when there are none."""
    if client.uncaptured:
        print(f"diagnosa: warning: {client.uncaptured:,} of {client.answered:,} answers were not captured by the endpoint "
              "(X-Diagnosa-Capture: failed): the monitor will not see them, and feedback for them is refused; the "
              "predictions themselves are valid; see the endpoint's log (its capture spool could not be written: a "
              "full disk?)", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ registry

def open_registry(args: argparse.Namespace):
    """The local registry, or SageMaker's Model Registry with --region (approving there triggers the deploy function)."""
    from pipelines.executor import local_registry
    from pipelines.registry import SageMakerRegistry

    if getattr(args, "region", None):  # a region's name, checked as `pipeline`'s are (botocore's refusal was exit 1)
        return SageMakerRegistry(aws_client("sagemaker", _required_region(args)))
    return local_registry(workspace(args))


def _test_summary(args: argparse.Namespace, package: dict) -> str:
    """Test-set recall figures of a version, from the evaluation its ModelMetrics point at (local lake)."""
    try:  # the fields are the version's (a file, or SageMaker's answer): text or a list where an object goes is no report
        uri = package.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get("S3Uri", "")
        bucket, _, key = str(uri).removeprefix("s3://").partition("/")
        if bucket != LOCAL_BUCKET:
            raise LakeError(f"not in the local lake: {uri}")
        report = json.loads(open_lake(args).get_bytes(key))["diagnosa"]
        worst = report["worst_class_recall"]
        # The dataset's slice by its name (a dataset's own: 'pediatrico'; only 'orphan' was shown) and its groups held
        # out of training ('orphan_unseen'); not its complement ('common') nor its groups seen in training.
        slices = [(name, found.get("macro_recall")) for name, found in (report.get("slices") or {}).items()
                  if isinstance(found, dict) and name != "common" and not str(name).endswith("_seen")]
        return (f"test recall: macro {report['macro']['recall']:.3f}, worst {worst['label']} {worst['recall']:.3f}"
                + "".join(f", {printable(str(name))} slice {recall:.3f}" for name, recall in slices
                          if isinstance(recall, (int, float))))
    except (LakeError, ValueError, KeyError, TypeError, AttributeError):  # gone, or not an evaluation's report
        return "test metrics not available locally"


def _in_service(args: argparse.Namespace) -> list[dict]:
    """The local endpoints in service (none for SageMaker's registry)."""
    lake = open_lake(args)
    if args.region or lake.uri.startswith("s3://"):
        return []
    return local_workspace(args, lake).in_service()


def _serving(endpoints: list[dict], package: dict) -> list[str]:
    from diagnosa.services import serves

    return [r["EndpointName"] for r in endpoints if serves(r, package)]


def cmd_registry_list(args: argparse.Namespace) -> int:
    from diagnosa.text import some_of
    from pipelines.registry import (
        APPROVAL_DESCRIPTION_CHARS,
        DAMAGED,
        LISTED_GROUPS,
        DamagedVersion,
        RegistryError,
    )

    registry = open_registry(args)
    try:  # SageMaker's refusal or an answer that cannot be used (the service failed: exit status 1); locally none
        existing = registry.groups()
    except RegistryError as err:
        raise Unavailable(str(err)) from None
    where = f"{registry.root}" + ("" if args.region else f" ({workspace_hint(args)})")
    if args.group and args.group not in existing:
        raise UsageError(f"no model package group {args.group!r} in {where}: "
                         + (f"its groups are {some_of(map(printable_line, existing))}" if existing
                            else "it has no groups yet"))
    groups = [args.group] if args.group else existing
    if not groups:
        print(printable_line(f"no model packages in {where}"))
        return 0
    if args.region and len(groups) > LISTED_GROUPS:  # each group is a ListModelPackages call and one call per version
        print(f"(the first {LISTED_GROUPS} of {len(groups):,} model package groups shown: give --group)")
        groups = groups[:LISTED_GROUPS]
    endpoints = _in_service(args)
    for group in groups:
        if args.region:
            try:  # the newest LISTED_VERSIONS, described: 100,000 versions were 100,000 DescribeModelPackage calls
                packages, more = registry.newest_packages(group)
            except RegistryError as err:  # a refusal of DescribeModelPackage was a traceback
                raise Unavailable(str(err)) from None
        else:
            packages, more = registry.list_model_packages(group), False
        print(printable_line(f"{group}: more than {len(packages)} versions (the newest {len(packages)} shown; every "
                             f"one: aws sagemaker list-model-packages --model-package-group-name {group} --region "
                             f"{args.region})" if more else f"{group}: {len(packages)} version(s)"))
        for p in packages:
            # Every field is the version file's or SageMaker's answer (anyone's text): printed escaped and bounded
            # (_answered), one line each — a newline in metadata forged a version line, a lone surrogate crashed the
            # listing of every group, a 10 MB description made a 10 MB line, a field missing was a KeyError.
            if isinstance(p, DamagedVersion):
                print(printable_line(f"  v{p['ModelPackageVersion']:<4} {DAMAGED:<22} {p['Problem']}"))
                continue
            status = p.get("ModelApprovalStatus", "?")
            rejected = " — rejected, still serving" if status == "Rejected" else ""
            serving = "".join(f"  [serving on {name}{rejected}]" for name in _serving(endpoints, p))
            print(printable_line(f"  v{_answered(p.get('ModelPackageVersion', '?')):<4} {_answered(status):<22} "
                                 f"{_answered(p.get('CreationTime', '?'))}  {_test_summary(args, p)}{serving}"))
            reason = p.get("ApprovalDescription")  # the --reason of the last approve or reject (local packages)
            if reason:
                print(f"        reason: {_answered(reason, APPROVAL_DESCRIPTION_CHARS)}")  # SageMaker's limit: 1,024 characters
            lineage = p.get("CustomerMetadataProperties")
            if isinstance(lineage, dict) and lineage:
                print(f"        execution {_answered(lineage.get('diagnosa:execution', '?'))} · data "
                      f"{_answered(lineage.get('diagnosa:input-data', '?'))} · code "
                      f"{_answered(lineage.get('diagnosa:code-sha256', '?'))[:12]}")
    return 0


def cmd_registry_decide(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from diagnosa.text import some_of
    from pipelines.registry import ARN_PREFIX, RegistryError, UnusableAnswer, approve_command

    registry = open_registry(args)
    status = "Approved" if args.registry_command == "approve" else "Rejected"
    deploy = status == "Approved" and not args.no_deploy and not args.region
    again = approve_command(args.version, args.group)
    try:
        arn = registry.package_arn(args.group, args.version) if args.region else f"{ARN_PREFIX}/{args.group}/{args.version}"
        if deploy:  # what would refuse the deploy is checked before the status is written
            before = registry.describe_model_package(arn)
            name = args.endpoint_name or before["ModelPackageGroupName"]
            problem = local_workspace(args).deploy_problem(before, name, args.port)
            if problem:
                raise UsageError(f"{args.group} v{args.version} not approved (the registry is unchanged: it is still "
                                 f"{before['ModelApprovalStatus']}), as it cannot be deployed to endpoint {name}: "
                                 f"{problem}")
        registry.update_model_package(arn, status, args.reason)
        # On AWS nothing below reads the package: describing it after the update made a refusal of that call (or
        # of anything else after the decision was written) an error, the version Approved all the same.
        package = {} if args.region else registry.describe_model_package(arn)
    except UnusableAnswer as err:  # SageMaker's answer cannot be used: the service failed, not the command
        raise Unavailable(str(err)) from None
    except RegistryError as err:
        try:
            groups: list[str] | None = registry.groups()
        except (RegistryError, BotoCoreError, ClientError):  # SageMaker's listing of groups failing too: no hint
            groups = None
        missing = "" if groups is None or args.group in groups else (
            f"; there is no model package group {args.group!r} (" + (
                f"its groups are {some_of(map(printable_line, groups))}: give --group" if groups else "no groups yet")
            + ")")
        raise UsageError(f"{err}{missing}" if args.region else f"{err}{missing} ({workspace_hint(args)})") from None
    print(f"{args.group} v{args.version}: {status}")
    if status == "Rejected":
        serving = [] if args.region else _serving(_in_service(args), package)
        if serving:
            print(printable_line(f"warning: v{args.version} still serves on {', '.join(serving)}: rejecting it does "
                                 "not take it down. Approve another version to replace it, or `diagnosa endpoint stop "
                                 f"{serving[0]}`."), file=sys.stderr)
        elif args.region:  # the deploy function acts on approvals only: an endpoint serving it is not changed
            print(f"  on AWS rejecting does not change an endpoint: one serving v{args.version} keeps serving it "
                  f"until another version is approved (`diagnosa registry approve N --group {args.group} --region "
                  f"{args.region}`)")
    if args.region:
        if status == "Approved":
            print("  on AWS the approval event starts the deploy function (docs/deploy.md)")
        return 0
    if deploy:
        from diagnosa.services import DeploySuperseded, VersionRejected
        from pipelines.local_endpoints import DEPLOY_WAIT

        def waiting(line: str) -> None:  # another approval's deploy: this one follows it, as on AWS
            print(printable_line(f"{line}, then deploys v{args.version}"), file=sys.stderr, flush=True)

        try:
            record = local_workspace(args).deploy_approved(package, endpoint_name=args.endpoint_name, port=args.port,
                                                           wait=DEPLOY_WAIT, on_wait=waiting)
        except DeploySuperseded as err:  # a later approval of the endpoint was asked meanwhile: the latest serves
            print(f"{_said(err)}; `diagnosa endpoint list` shows what serves")
            return 0
        except VersionRejected as err:  # `registry reject` since this approval: rejected it is, and not served
            again += f" --endpoint-name {args.endpoint_name}" if args.endpoint_name else ""
            print(f"diagnosa: error: {args.group} v{args.version} is Rejected in the registry now (rejected since this "
                  f"approval), and not deployed: {_said(err)}. If it may serve after all, approving it again deploys "
                  f"it (`{again}`)",
                  file=sys.stderr)
            return EXIT_FAILED
        except EndpointBusy as err:  # transient, not bad input: the same command deploys it once that deploy ends
            again += (f" --endpoint-name {args.endpoint_name}" if args.endpoint_name else "") + (
                f" --port {args.port}" if args.port is not None else "")
            print(f"diagnosa: error: {args.group} v{args.version} is Approved in the registry, but not deployed: "
                  f"{_said(err)}. Once that deploy ends, approving it again deploys it (`{again}`)", file=sys.stderr)
            return EXIT_FAILED
        except ServiceError as err:
            again += f" --endpoint-name {args.endpoint_name}" if args.endpoint_name else ""
            port = isinstance(err, PortTaken)  # the only failure another port mends
            hint = (f"Approving it again on a free port deploys it (`{again} --port 0`)" if port else
                    f"Once that is fixed, approving it again deploys it (`{again}`); or reject it "
                    f"(`diagnosa registry reject {args.version}" + (f" --group {args.group}" if args.group != "diagnosa"
                                                                    else "") + "`)")
            raise UsageError(f"{args.group} v{args.version} is Approved in the registry, but not deployed: {err}. "
                             f"{hint}") from None
        print(printable_line(f"endpoint {record['EndpointName']} now serves v{package['ModelPackageVersion']} on "
                             f"{record['Url']}"))
    return 0


# ------------------------------------------------------------------------------------------------ pipeline (AWS)

def _pipeline_name(args: argparse.Namespace) -> str:
    """--name, else the dataset's resource name (diagnosa for the built-in cohort)."""
    from diagnosa.data.schema import resource_name

    dataset = _dataset_name(args)
    if args.name is not None:  # start, status and list sent it as given: a newline in it forged a line of AWS's error
        sagemaker_name_problem = _resource_name_problem(args.name)
        if sagemaker_name_problem:
            raise UsageError(f"--name {sagemaker_name_problem}")
    return args.name or resource_name(dataset)


def _resource_name_problem(name: str) -> str | None:
    """Why ``name`` is no pipeline name `pipeline upsert` would create (a SageMaker name), or None."""
    from diagnosa.data.schema import RESOURCE_NAME

    if RESOURCE_NAME.fullmatch(name):
        return None
    return f"{shown(name, 80)} is not a SageMaker name (ASCII letters, digits and inner '-', at most 63)"


def _dataset_name(args: argparse.Namespace) -> str:
    from diagnosa.data.schema import BUILTIN_DATASET

    if getattr(args, "dataset_config", None):
        from diagnosa.data.schema import load_dataset_config

        return load_dataset_config(args.dataset_config)["name"]
    return getattr(args, "dataset", None) or BUILTIN_DATASET


def _dataset_settings(args: argparse.Namespace, bucket: str) -> dict:
    """The definition's dataset settings (labels, slice, group, endpoint; docs/pipeline.md):
    --dataset-config FILE.toml (offline), else the built-in cohort, else the latest curated version of
    --dataset in the data lake (--lake or DIAGNOSA_LAKE; otherwise the workspace's lake for
    `definition`, s3://<bucket> for upsert and start)."""
    from diagnosa.data.ingest import unfinished_note
    from diagnosa.data.schema import BUILTIN_DATASET, load_dataset_config
    from diagnosa.services import curated_manifest, dataset_of
    from pipelines.definition import config_dataset_settings

    if getattr(args, "dataset_config", None):
        config = load_dataset_config(args.dataset_config)
        if args.dataset not in (None, config["name"]):
            raise UsageError(f"--dataset {args.dataset} but {args.dataset_config} describes dataset {config['name']}")
        return config_dataset_settings(config)
    dataset = args.dataset or BUILTIN_DATASET
    if dataset == BUILTIN_DATASET:
        return dataset_of(None, dataset)
    if args.lake is not None or os.environ.get("DIAGNOSA_LAKE") or args.pipeline_command == "definition":
        lake = open_lake(args)
    else:
        lake = DataLake.from_uri(f"s3://{bucket}", s3_client=aws_client("s3", args.region))
    manifest = curated_manifest(lake, dataset)
    if manifest is None:
        raise UsageError(f"no curated dataset '{dataset}' in {lake.uri}: run `diagnosa data ingest` first "
                         "(or describe it with --dataset-config FILE.toml)" + unfinished_note(lake, dataset))
    return dataset_of(manifest, dataset)


def _region(args: argparse.Namespace) -> str | None:
    return resolve_region(getattr(args, "region", None))


# botocore's own check of a region's name (botocore.utils.validate_region_name): it refused one with exit status 1, as
# if AWS had said no, quoting the whole name (128 KiB of it).
REGION_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?", re.ASCII)


def _required_region(args: argparse.Namespace) -> str:
    region = _region(args)
    if not region:
        raise UsageError("give an AWS region with --region (or AWS_REGION)")
    if not REGION_NAME.fullmatch(region):
        source = "--region" if getattr(args, "region", None) else "AWS_REGION or AWS_DEFAULT_REGION"
        raise UsageError(f"AWS region {shown(region, 80)} ({source}) is not a region's name: e.g. eu-west-1")
    return region


def _bucket(args: argparse.Namespace) -> str:
    bucket = args.bucket or os.environ.get("DIAGNOSA_BUCKET")
    if not bucket:
        raise UsageError("give the pipeline's bucket with --bucket (or DIAGNOSA_BUCKET)")
    if "://" in bucket or "/" in bucket:
        name = bucket.split("://", 1)[-1].split("/", 1)[0]
        raise UsageError(f"--bucket takes the bucket's name, got {bucket!r}: --bucket {name} (the pipeline reads "
                         "the bucket's root as its lake)")
    problem = bucket_name_problem(bucket)
    if problem:
        raise UsageError(f"--bucket: {problem}")
    return bucket


def _pipeline_target(args: argparse.Namespace) -> tuple[str, str, dict]:
    """The bucket, region and definition settings the pipeline commands were given."""
    bucket, region = _bucket(args), _required_region(args)
    families = split_families(getattr(args, "families", None))
    extra: dict = {**_dataset_settings(args, bucket), "name": _pipeline_name(args)}
    if families:
        extra["families"] = families
    if getattr(args, "model_package_group", None):
        extra["model_package_group"] = args.model_package_group
    if getattr(args, "no_deploy_steps", False):
        extra["deploy_steps"] = False
    if getattr(args, "kms_key", None):
        extra["kms_key"] = args.kms_key
    for name in ("subnets", "security_group_ids"):
        if getattr(args, name, None):
            extra[name] = tuple(v.strip() for v in getattr(args, name).split(",") if v.strip())
            if not extra[name]:  # "," or " , ": a pipeline outside the VPC, exit 0
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} names no id, got {shown(getattr(args, name), 80)}: give them comma-separated")
    return bucket, region, extra


UNSET_ROLE = "arn:aws:iam::000000000000:role/unset"
# An IAM role's ARN (IAM's own rules for the path and name): SageMaker runs the pipeline as this role, and a user
# ARN or a typo used to be sent as given, or to end in the SDK's traceback.
ROLE_ARN = re.compile(r"arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/([\x21-\x7e]{1,510}/)?[\w+=,.@-]{1,64}", re.ASCII)


def _role_arn(args: argparse.Namespace) -> str | None:
    role = getattr(args, "role_arn", None)
    if role is not None and not ROLE_ARN.fullmatch(role):
        raise UsageError(f"--role-arn {shown(role, 120)} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>): "
                         "the pipeline's execution role, e.g. the stack output PipelineRoleArn")
    return role


def _definition_offline(args: argparse.Namespace) -> str:
    """The definition ``upsert`` would send, built with no AWS call (and so no credentials)."""
    from pipelines.offline import build_offline

    bucket, region, extra = _pipeline_target(args)
    try:
        return build_offline(bucket, _role_arn(args) or UNSET_ROLE, region=region, **extra).definition
    except ValueError as err:
        raise UsageError(str(err)) from None


def _pipeline(args: argparse.Namespace, role_arn: str | None = None):
    """Stage the step code into the bucket and build the pipeline object (upsert, start)."""
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    from pipelines.definition import PipelineSettings, build_pipeline
    from pipelines.staging import stage_code

    role = role_arn or _role_arn(args) or UNSET_ROLE  # before anything is uploaded
    bucket, region, extra = _pipeline_target(args)
    boto_session = boto3.Session(region_name=region)
    staged = stage_code(DataLake.from_uri(f"s3://{bucket}", s3_client=aws_client("s3", region)))
    session = PipelineSession(boto_session=boto_session, sagemaker_client=aws_client("sagemaker", region),
                              default_bucket=bucket)
    settings = PipelineSettings(bucket=bucket, role_arn=role,
                                code_uri=f"s3://{bucket}/{staged.key}", code_sha256=staged.sha256,
                                region=region, **extra)
    try:
        return build_pipeline(settings, session)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _start_deployed(args: argparse.Namespace) -> int:
    """`pipeline start`: the pipeline as SageMaker holds it (not one built here, which may differ from what was
    upserted), its parameters checked against that definition before an execution is started."""
    from botocore.exceptions import ClientError

    from diagnosa.services import plan_aws_start
    from pipelines.executor import parameter_text
    from pipelines.service_model import parameter_value_problems

    bucket, region = _bucket(args), _required_region(args)
    name = _pipeline_name(args)
    raw = split_params(args.param)
    client = aws_client("sagemaker", region)
    try:
        described = client.describe_pipeline(PipelineName=name)
    except ClientError as err:  # SageMaker: ResourceNotFound; moto: a ValidationException saying so
        if err.response["Error"]["Code"] != "ResourceNotFound" and "Could not find" not in str(err):
            raise
        raise UsageError(f"no pipeline {name!r} in {region}: deploy it with `diagnosa pipeline upsert` (or name "
                         "another with --name)") from None
    named = _dataset_name(args) if (getattr(args, "dataset", None) or getattr(args, "dataset_config", None)) else None
    lake = DataLake.from_uri(f"s3://{bucket}", s3_client=aws_client("s3", region))
    text = described.get("PipelineDefinition")  # an answer botocore cannot read is its UnreadableAnswer (diagnosa.aws)
    try:  # what SageMaker holds is read as JSON text; anything else was a traceback (KeyError, JSONDecodeError)
        definition = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        definition = None
    if not isinstance(definition, dict):
        raise Unavailable(f"AWS answered DescribePipeline for {name} without a readable PipelineDefinition (a JSON "
                          f"object): got {_answered(text)}")
    try:
        overrides = plan_aws_start(definition, raw, lake, bucket, dataset=named)
    except ServiceError as err:
        raise UsageError(f"pipeline {name}: {err}") from None
    # Each value as SageMaker takes it (a Boolean as true or false, as the retrain function sends it, not str()'s
    # True). resolve_parameters checked each value's text (parameter_text); this checks the texts actually sent.
    sent = [{"Name": k, "Value": parameter_text(v)} for k, v in overrides.items()]
    problems = [f"parameter {p['Name']}: {problem}" for p in sent for problem in parameter_value_problems(p["Value"])]
    if problems:
        raise UsageError(f"pipeline {name}: {clip('; '.join(problems), ITEM_CHARS)}")
    execution = client.start_pipeline_execution(PipelineName=name, PipelineParameters=sent)
    arn = execution.get("PipelineExecutionArn")
    print(f"{_answered(arn)}  (InputDataUri={_answered(overrides['InputDataUri'])})")
    return 0


LISTED_EXECUTIONS = 100  # executions `pipeline list` shows, newest first (one ListPipelineExecutions page at most)
REASON_CHARS = 1_300  # of a FailureReason shown (SageMaker's own limit on the field)


def _answered(value: Any, limit: int = ITEM_CHARS) -> str:
    """A field of an AWS answer (text others wrote: a FailureReason quotes a job's output) as printed: one line, each
    control or format character and lone surrogate escaped (printable_line), at most ``limit`` characters; a value of
    another kind than text said as its repr, bounded (:func:`shown`), a time or number as itself."""
    from datetime import datetime

    if value is None or isinstance(value, (datetime, int, float)):
        return str(value)
    if not isinstance(value, str):
        return shown(value, limit)
    return clip(printable_line(value[:limit + 1]), limit)


def _answer_list(answer: Any, key: str, operation: str) -> list[dict[str, Any]]:
    """``answer[key]``, a list of objects, as an AWS answer to ``operation`` holds it; Unavailable when it does not
    (a missing key or a None in the list was a traceback). An answer that is no object, or text where the list goes,
    botocore cannot read: diagnosa.aws refuses it as UnreadableAnswer."""
    items = answer.get(key)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items[:LISTED_EXECUTIONS + 1]):
        raise Unavailable(f"AWS answered {operation} without a list of {key}: got {_answered(items)}")
    return items


def _execution_status(client: Any, arn: str) -> list[str]:
    """`pipeline status`: the execution's line (ARN, status, creation time) and, when it failed, SageMaker's reason."""
    described = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    lines = [f"{_answered(arn)}  {_answered(described.get('PipelineExecutionStatus', '?'))}  "
             f"started {_answered(described.get('CreationTime'))}"]
    reason = described.get("FailureReason")
    if reason:
        lines.append(f"  reason: {_answered(reason, REASON_CHARS)}")
    return lines


def _execution_lines(client: Any, name: str, command: str, given: str | None) -> list[str]:
    """What `pipeline status` (the latest or ``given`` execution) and `pipeline list` (the newest LISTED_EXECUTIONS,
    from ListPipelineExecutions' own summaries: no call per execution) print, every field of AWS's answers bounded and
    on its line."""
    if given is not None:
        return _execution_status(client, given)
    answer = client.list_pipeline_executions(PipelineName=name, SortBy="CreationTime", SortOrder="Descending",
                                             MaxResults=1 if command == "status" else LISTED_EXECUTIONS)
    summaries = _answer_list(answer, "PipelineExecutionSummaries", "ListPipelineExecutions")
    if command == "status":
        if not summaries:
            raise UsageError(f"pipeline {name} has no executions")
        arn = summaries[0].get("PipelineExecutionArn")
        if not isinstance(arn, str) or not EXECUTION_ARN.fullmatch(arn):
            raise Unavailable(f"AWS answered ListPipelineExecutions with {_answered(arn)}, not an execution's ARN")
        return _execution_status(client, arn)
    lines = [f"{_answered(s.get('PipelineExecutionArn'))}  {_answered(s.get('PipelineExecutionStatus', '?'))}  "
             f"started {_answered(s.get('StartTime'))}" for s in summaries[:LISTED_EXECUTIONS]]
    if len(summaries) > LISTED_EXECUTIONS or answer.get("NextToken"):
        lines.append(f"(the newest {LISTED_EXECUTIONS} shown; every one: aws sagemaker list-pipeline-executions "
                     f"--pipeline-name {name})")
    return lines


EXECUTION_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:[0-9]{12}:pipeline/([A-Za-z0-9-]{1,256})/execution/"
                           r"[a-z0-9]{1,256}", re.ASCII)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from botocore.exceptions import ClientError

    try:
        if args.pipeline_command in ("status", "list"):
            client = aws_client("sagemaker", _required_region(args))
            name = _pipeline_name(args)
            given = getattr(args, "execution", None)
            if given is not None:  # an unset $ARN showed the latest execution; another pipeline's, under this name
                found = EXECUTION_ARN.fullmatch(given)
                if not found:
                    raise UsageError(f"{given!r} is not a pipeline execution ARN (arn:aws:sagemaker:<region>:<account>:"
                                     "pipeline/<name>/execution/<id>; `diagnosa pipeline list` shows them)")
                if args.name and found.group(1) != name:
                    raise UsageError(f"execution {given} belongs to pipeline {found.group(1)}, not {name} (--name)")
            for line in _execution_lines(client, name, args.pipeline_command, given):
                print(line)
            return 0
        if args.pipeline_command == "definition":
            text = _definition_offline(args)
            if args.pretty:
                text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            if args.out:
                from diagnosa.files import write_text_atomic

                if Path(args.out).is_dir():  # "Is a directory", exit status 1, as if the machine had failed
                    raise UsageError(f"--out {args.out} is a directory: give the path of the JSON file to write")
                write_text_atomic(args.out, text + "\n")  # whole or not at all: an interrupted write left half a JSON
                print(printable_line(f"wrote {args.out}"))
            else:
                print(text)
            return 0
        if args.pipeline_command == "start":
            return _start_deployed(args)
        if not args.role_arn:
            raise UsageError("upsert needs the pipeline execution role: --role-arn")
        from pipelines.definition import sdk_quiet

        with sdk_quiet():
            arn = _pipeline(args).upsert(role_arn=_role_arn(args))["PipelineArn"]
        print(_answered(arn))
        return 0
    except ClientError as err:  # AWS answered no; one that never answers (BotoCoreError) is main's to report
        raise UsageError(f"AWS refused {args.pipeline_command}: {_answered(str(err), MAX_ERROR)}") from None


# ------------------------------------------------------------------------------------------------ parser

# What one error says at most. A flag's message quotes its value (`--since` 'x…'), a command's what it refused; a value
# as long as one argument can be (128 KiB) came back whole, from most flags and names.
MAX_FLAG_ERROR = 1_000
MAX_ARGUMENTS = 1_000  # command-line arguments read at most (argparse parses 1,000 in a tenth of a second)
MAX_ERROR = 8_000  # a command's error (up to 20 problems named, each bounded: diagnosa.text.some_of)


class _Parser(argparse.ArgumentParser):
    """argparse's parser (and its subcommands'), its usage error cut to MAX_FLAG_ERROR characters: argparse quotes
    an invalid value whole ("invalid choice: '…'"), as do the flags' own type checks."""

    def error(self, message: str) -> NoReturn:
        super().error(clip(message, MAX_FLAG_ERROR))


def _said(err: BaseException | str) -> str:
    """An error's text as one printable line (:func:`printable_line`), at most MAX_ERROR characters: a message quotes
    what it refuses -- a CSV's column name, a request's field, a record others wrote -- and an ESC in it acted on the
    terminal that showed it (``lab\\x1b]0;…\\x07`` retitled the window)."""
    return clip(printable_line(str(err)[:MAX_ERROR + 1]), MAX_ERROR)


def _installed_version() -> str:
    """The distribution's version (setup.py's), as pip installed it; an uninstalled checkout says so."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diagnosa")
    except PackageNotFoundError:
        return "(not installed: run from a checkout)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diagnosa", description="Diagnosa: build, gate, ship and watch the triage "
                                                                  "model, on this machine or on SageMaker.")
    parser.add_argument("--version", action="version", version=f"diagnosa {_installed_version()}",
                        help="the installed version, and exit")
    parser.add_argument("--workspace", help="workspace folder (default $DIAGNOSA_HOME, else the nearest .diagnosa "
                                              "in the current folder or above, else ./.diagnosa)")
    parser.add_argument("--lake", help="data lake: a folder or s3://bucket/prefix (default <workspace>/lake)")
    parser.add_argument("--raw-lake", help="the raw zone's own home, when it has one (the AWS stack's object-locked "
                                           "raw bucket: s3://<RawBucket>); default $DIAGNOSA_RAW_LAKE, else inside --lake")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="generate and ingest patient data").add_subparsers(dest="data_command", required=True)
    gen = data.add_parser("generate", help="write a synthetic cohort into the raw zone")
    gen.add_argument("--patients", type=int_in(1_000, 1_000_000, "--patients"), default=20_000,
                     help="patients in the cohort (1,000 to 1,000,000)")
    gen.add_argument("--seed", type=int_in(0, 2**32 - 1, "--seed"), default=7,
                     help="random seed: the same seed writes the same cohort")
    gen.add_argument("--orphan-fraction", type=_fraction("--orphan-fraction"), default=0.02,
                     help="share of patients with an orphan (rare) disease")
    gen.add_argument("--defect-rate", type=_fraction("--defect-rate"), default=0.001,
                     help="share of rows with an injected recording defect (exercises quarantine)")
    gen.add_argument("--batch", help="raw batch name (default cohort-n<patients>-s<seed>)")
    gen.add_argument("--quiet", action="store_true", help="no live progress on stderr (shown only on a terminal)")
    gen.add_argument("--card", help="also write the data card to this path (e.g. docs/data.md)")
    from diagnosa.data.cohort import DRIFT_SCENARIOS

    gen.add_argument("--drift", choices=list(DRIFT_SCENARIOS),
                     help="write a drifted batch instead (for showing monitoring): "
                          + "; ".join(f"{k}: {v}" for k, v in DRIFT_SCENARIOS.items()).replace("%", "%%"))
    gen.add_argument("--drift-strength", type=_strength, default=None,
                     help="with --drift: how strong the drift is, in (0, 1] (default 1)")
    gen.set_defaults(func=cmd_data_generate)

    ing = data.add_parser("ingest", help="validate raw data into a versioned curated dataset")
    ing.add_argument("path", nargs="?", help="a records .jsonl (with --labs), a folder with one .jsonl and one .csv, "
                                             "or your own .csv (with --config); default: a raw batch already in the lake")
    ing.add_argument("--labs", help="lab results CSV that goes with a records .jsonl")
    ing.add_argument("--batch", help="raw batch to ingest, or the name to give a staged one")
    ing.add_argument("--config", help="TOML config describing your own CSV (id, target, labels, exclusions)")
    ing.add_argument("--quiet", action="store_true", help="no live progress on stderr (shown only on a terminal)")
    ing.set_defaults(func=cmd_data_ingest)

    serve = commands.add_parser("serve", help="run the local endpoint (SageMaker container and runtime APIs)")
    serve.add_argument("--model", required=True, help="a model folder or a model.tar.gz")
    # Empty (an unset shell variable: --host "$HOST"), it listened on every interface, not on 127.0.0.1.
    serve.add_argument("--host", default="127.0.0.1", type=given_text("--host", "127.0.0.1"),
                       help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int_in(0, 65535, "--port"), default=8080, help="port (0: any free port)")
    serve.add_argument("--endpoint-name", type=sagemaker_name, default=None,
                       help="the endpoint's name: the runtime route /endpoints/<name>/invocations and capture/<name>/ "
                            "(default: the model's dataset's endpoint, as a run deploys it: diagnosa for the cohort)")
    serve.add_argument("--capture-sampling", type=int_in(0, 100, "--capture-sampling"), default=100,
                       help="percentage of requests written to the lake's capture/ zone (0 turns capture off)")
    serve.add_argument("--workers", type=int_in(0, 64, "--workers"), default=None,
                       help="processes that score requests, each with the model loaded (0: score in the server "
                            "process, the least memory); default: one per CPU core available")
    serve.add_argument("--capture-spool", metavar="DIR",
                       help="local folder of the capture write-ahead spool (default: <lake>/.capture-spool for a "
                            "local lake, a folder under the temp dir for s3://)")
    serve.add_argument("--capture-fsync", action="store_true",
                       help="fsync every captured line: survives power loss, not only a killed process (~1 ms each)")
    serve.add_argument("--feedback-token-file", metavar="PATH",
                       help="POST /feedback then needs 'Authorization: Bearer <token>' with the token in this file "
                            "(default $DIAGNOSA_FEEDBACK_TOKEN; neither: no check)")
    serve.set_defaults(func=cmd_serve)

    predict = commands.add_parser("predict", help="send patients (JSON, JSON Lines or CSV) to an endpoint")
    predict.add_argument("input", nargs="?", help="a .json, .jsonl or .csv file, or - for standard input; sent in "
                                                  "requests of 100 patients, JSON Lines and CSV read as a stream")
    predict.add_argument("--batch", metavar="NAME",
                         help="instead of a file: send a raw batch of the lake as traffic (`data generate`, "
                              "drifted ones too), its patients in requests of 50; prints a summary")
    predict.add_argument("--format", choices=("auto", "json", "jsonl", "csv"), default="auto",
                         help="the input's format (auto: .csv, .jsonl/.ndjson by the file's extension, JSON otherwise)")
    predict.add_argument("--endpoint-url", type=given_text("--endpoint-url", "the workspace's endpoint"),
                         help="e.g. http://127.0.0.1:8080 (default: the URL of the workspace's "
                              "local endpoint --endpoint-name, unless --region)")
    predict.add_argument("--endpoint-name", type=sagemaker_name, default=None,
                         help="the local (or, with --region or none here, SageMaker) endpoint's name (default: the "
                              "one --endpoint-url serves, else diagnosa)")
    predict.add_argument("--region", help="AWS region of a SageMaker endpoint")
    predict.add_argument("--top-k", type=int_in(1, MAX_TOP_K, "--top-k"), default=None,
                         help="categories listed per patient, most likely first (default: the endpoint's, 3 or "
                              "every label of a model with fewer; at most the model's labels: the endpoint checks; "
                              "JSON input only)")
    predict.add_argument("--differential", type=int, default=None, metavar="N",
                         help="also list the N best-matching rare diseases (decision support, JSON input only; "
                              "the endpoint checks N)")
    predict.add_argument("--timeout", type=positive_seconds, default=INVOKE_TIMEOUT,
                         help=f"seconds to wait for each request's answer (default {INVOKE_TIMEOUT:g}: over SageMaker's "
                              "60 s limit on a model's answer, which is not asked for twice: a read timeout is not "
                              "retried); a connection waits at most 10 s of it, and a request gives up after 4 x "
                              "--timeout in all")
    predict.add_argument("--errors-file", metavar="PATH",
                         help="where the refused records' problems go, one JSON line each, when there are more than the "
                              "10 the message lists (default: NAME.errors.jsonl in the current folder, for an input file "
                              "NAME; predict-errors.jsonl for standard input)")
    predict.set_defaults(func=cmd_predict)

    pipeline = commands.add_parser("pipeline", help="the SageMaker Pipeline: definition, upsert, start, status, list")
    pipeline_commands = pipeline.add_subparsers(dest="pipeline_command", required=True)
    for verb, text in (("definition", "print or save the definition JSON (offline: no AWS credentials needed)"),
                       ("upsert", "create or update the pipeline"),
                       ("start", "start an execution"), ("status", "the latest (or a given) execution's status"),
                       ("list", "executions, newest first")):
        sub = pipeline_commands.add_parser(verb, help=text)
        sub.add_argument("--name", default=None, help="pipeline name (default: the dataset's, diagnosa for the "
                                                      "built-in cohort)")
        sub.add_argument("--region", help="AWS region (default AWS_REGION)")
        sub.add_argument("--dataset", type=dataset_name,
                         help="the dataset the pipeline is for (default patients, the built-in cohort); "
                              "its labels and slice come from its latest curated manifest in the lake")
        sub.add_argument("--dataset-config", help="the dataset's TOML config instead (labels and slice; no lake read)")
        if verb in ("definition", "upsert", "start"):
            sub.add_argument("--bucket", help="the data lake bucket (default DIAGNOSA_BUCKET)")
        if verb in ("definition", "upsert"):  # how the definition is built; start runs the one SageMaker holds
            sub.add_argument("--role-arn", help="pipeline execution role")
            sub.add_argument("--families", help="comma-separated candidate model families")
            sub.add_argument("--model-package-group", help="Model Package Group the champion is registered in "
                                                           "(default: the dataset's name, '_' written '-'; "
                                                           "diagnosa for the built-in cohort)")
            sub.add_argument("--no-deploy-steps", action="store_true",
                             help="leave deployment to the approval event's deploy function (as the CDK app does)")
            sub.add_argument("--kms-key", help="KMS key ARN for the jobs' volumes and outputs (the CDK app sets its "
                                               "stage's key; default: the account's default encryption)")
            sub.add_argument("--subnets", help="comma-separated subnet ids: the jobs run in this VPC "
                                               "(with --security-group-ids)")
            sub.add_argument("--security-group-ids", help="comma-separated security group ids of the jobs in a VPC")
        if verb == "definition":
            sub.add_argument("--out", help="write the JSON here instead of printing it")
            sub.add_argument("--pretty", action="store_true",
                             help="indent the JSON for reading (default: byte for byte what upsert sends)")
        if verb == "start":
            sub.add_argument("--param", action="append", default=[], help="NAME=VALUE override (repeatable)")
        if verb == "status":
            sub.add_argument("execution", nargs="?", help="execution ARN (default: the latest)")
        sub.set_defaults(func=cmd_pipeline)

    registry = commands.add_parser("registry", help="the local model registry").add_subparsers(
        dest="registry_command", required=True)
    listing = registry.add_parser("list", help="model package groups and their versions")
    listing.add_argument("--region", help="SageMaker's Model Registry in this region instead of the local one")
    listing.add_argument("--group", type=sagemaker_name, help="only this model package group")
    listing.set_defaults(func=cmd_registry_list)
    for verb in ("approve", "reject"):
        decide = registry.add_parser(verb, help=f"{verb} a model package version")
        decide.add_argument("version", type=int_in(1, 10**9, "version"))
        decide.add_argument("--group", type=sagemaker_name, default="diagnosa", help="the model package group (one per dataset)")
        decide.add_argument("--reason", help="approval description kept with the version")
        decide.add_argument("--region", help="decide in SageMaker's Model Registry in this region (the local one otherwise)")
        if verb == "approve":
            decide.add_argument("--endpoint-name", type=sagemaker_name, default=None,
                                help="local endpoint the approved version goes to (default: the group's name)")
            decide.add_argument("--port", type=int_in(0, 65535, "--port"), default=None,
                                help="port of the endpoint (a new one: default 8080, 0 picks a free one; an existing "
                                     "one keeps its port unless given one, then moves there: 0 to a free one)")
            decide.add_argument("--no-deploy", action="store_true", help="approve without deploying")
        else:
            decide.set_defaults(no_deploy=True)
        decide.set_defaults(func=cmd_registry_decide)

    from diagnosa.commands import app, job, local, monitor  # command groups kept in modules of their own

    for module in (local, job, app, monitor):
        module.register(commands)
    _finish_help(parser, ["diagnosa"])
    return parser


# Examples under each command's --help: what a newcomer types first.
EXAMPLES = {
    "diagnosa": "the main job, end to end on this machine:\n"
                "  diagnosa data generate && diagnosa data ingest --batch cohort-n20000-s7\n"
                "  diagnosa run --local --param ModelApprovalStatus=Approved\n"
                "then: diagnosa predict patients.json --endpoint-url http://127.0.0.1:8080",
    "diagnosa data generate": "  diagnosa data generate --patients 20000 --seed 7\n"
                              "  diagnosa data generate --drift symptoms --drift-strength 0.5 --batch week-48  # drifted",
    "diagnosa data ingest": "  diagnosa data ingest --batch cohort-n20000-s7\n"
                            "  diagnosa data ingest my.csv --config my.toml             # your own table (docs/data.md)",
    "diagnosa run": "  diagnosa run --local\n"
                    "  diagnosa run --local --param Resampling=smote --families xgboost,mlp\n"
                    "  diagnosa run --local --resume <execution id>              # after fixing a failed step's cause",
    "diagnosa serve": "  diagnosa serve --model path/to/model --port 8080\n"
                      "  diagnosa serve --model model.tar.gz --workers 0 --capture-sampling 0",
    "diagnosa predict": "  diagnosa predict patients.json --endpoint-url http://127.0.0.1:8080\n"
                        "  echo '{\"age\": 67, \"symptoms\": [\"HP:0001945\"]}' | diagnosa predict - "
                        "--endpoint-url http://127.0.0.1:8080 --differential 5\n"
                        "  diagnosa predict patients.csv --endpoint-name diagnosa-prod --region eu-west-1\n"
                        "  diagnosa predict --batch cohort-n20000-s7-drift-symptoms --endpoint-url http://127.0.0.1:8080",
    "diagnosa feedback": "  diagnosa feedback <event id> \"ENFERMEDAD CRÓNICA\" --endpoint-url http://127.0.0.1:8080\n"
                         "  diagnosa feedback --file confirmed.jsonl                 # a hospital system's export",
    "diagnosa monitor": "  diagnosa monitor --last 24h\n"
                        "  diagnosa monitor --last 7d --fail-on-alert",
    "diagnosa registry approve": "  diagnosa registry approve 2 --reason \"reviewed by the clinical lead\"",
    "diagnosa pipeline definition": "  diagnosa pipeline definition --bucket my-lake --region eu-west-1 --pretty",
    "diagnosa pipeline start": "  diagnosa pipeline start --bucket my-lake --region eu-west-1 --param Resampling=smote",
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; an option's default shown unless its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default in (None, False, argparse.SUPPRESS)
                or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)"


# Text flags whose commands refuse an empty or blank value in their own words (the workspace's and the lakes' name their
# environment variables; --families and --resume say what they take); every other text flag by given_text.
OWN_BLANK_RULE = frozenset({"workspace", "lake", "raw_lake", "families", "resume"})


def _finish_help(parser: argparse.ArgumentParser, path: list[str]) -> None:
    """Every parser gets the formatter and, where there is one, its examples."""
    parser.formatter_class = _HelpFormatter
    example = EXAMPLES.get(" ".join(path))
    if example and not parser.epilog:
        parser.epilog = "examples:\n" + example
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                _finish_help(sub, [*path, name])
        elif (action.option_strings and action.type is None and action.nargs is None
              and isinstance(action, (argparse._StoreAction, argparse._AppendAction))
              and action.dest not in OWN_BLANK_RULE):
            # A text flag given an empty or blank value (an unset shell variable) is refused, never read as the flag
            # left out: --feedback-token-file "" served feedback with no token, --subnets "" deployed outside the
            # VPC, --definition "" trained the built-in cohort, --model "" loaded the current folder.
            flag = max(action.option_strings, key=len)
            action.type = given_text(flag, "its default" if action.default in (None, []) else repr(action.default))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; its exit status. A Ctrl-C is one line and 128 + SIGINT, not a traceback: as the options are
    read, before a run's record exists (its checks), or in a command that writes nothing (its imports:
    diagnosa/__main__.py)."""
    terminal_streams()
    try:
        return _command(argv)
    except KeyboardInterrupt:
        return interrupted()


def _command(argv: Sequence[str] | None) -> int:
    """The command ``argv`` names, run; its exit status. What it raises is said in one line (main: a Ctrl-C)."""
    from boto3.exceptions import Boto3Error  # upload_file's S3UploadFailedError is none of botocore's
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from diagnosa.data.ingest import IngestError
    from diagnosa.data.schema import SchemaError

    given = sys.argv[1:] if argv is None else list(argv)
    if len(given) > MAX_ARGUMENTS:  # argparse takes time quadratic in their number: 100,000 --param ran for 20 minutes
        print(f"diagnosa: error: {len(given):,} command-line arguments: at most {MAX_ARGUMENTS:,} are read (a "
              "pipeline declares a few dozen parameters: give each --param NAME=VALUE once)", file=sys.stderr)
        return EXIT_BAD_INPUT
    parser = build_parser()
    args = parser.parse_args(given)
    if sys.stdout is None:  # started with it closed (>&-): print() wrote nothing, and the command said 0
        print("diagnosa: error: standard output is closed (>&-): what the command says would be lost; send it to a "
              "file or to /dev/null", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except (UsageError, ServiceError, IngestError, SchemaError, LakeError) as err:
        print(f"diagnosa: error: {_said(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Unavailable as err:
        print(f"diagnosa: error: {_said(err)}", file=sys.stderr)
        return EXIT_FAILED
    except MemoryError:  # pyarrow's ArrowMemoryError too: a traceback said nothing of the input's size
        print("diagnosa: error: out of memory: this machine cannot hold what the command reads at once (docs/"
              "operations.md, 'Sizes', gives what was measured): run it on a machine with more memory, or give it "
              "less at a time (a smaller file, a shorter --last window)", file=sys.stderr)
        return EXIT_FAILED
    except NoCredentialsError:  # an s3:// lake or a SageMaker call on a machine without AWS credentials
        lake = getattr(args, "lake", None) or os.environ.get("DIAGNOSA_LAKE") or ""
        hint = "; a local lake is a folder: --lake PATH" if lake.startswith("s3://") else ""  # not for SageMaker calls
        print("diagnosa: error: this needs AWS credentials, and none were found (AWS_PROFILE, AWS_ACCESS_KEY_ID, "
              f"~/.aws/credentials, an instance role){hint}", file=sys.stderr)
        return EXIT_FAILED
    except (BotoCoreError, ClientError, Boto3Error) as err:  # AWS unreachable (no network, a wrong region) or refusing
        print(f"diagnosa: error: AWS: {_answered(str(err), MAX_ERROR)}", file=sys.stderr)  # its text: one line
        return EXIT_FAILED
    except BrokenPipeError:  # `diagnosa registry list | head`: the reader had what it wanted, as for any Unix tool
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        except (OSError, ValueError, AttributeError):  # a replaced stdout (tests) may have no descriptor
            pass
        return 128 + signal.SIGPIPE
    except OSError as err:  # the machine's answer about a path: unwritable, a file where a folder goes, disk full
        if err.errno == errno.ENAMETOOLONG:  # the path given is wrong, not the machine: bad input, as for any command
            path = err.filename
            named = f"{clip(os.fsdecode(path), ITEM_CHARS)}: " if isinstance(path, (str, bytes, os.PathLike)) else ""
            print(f"diagnosa: error: {_said(named + os_problem(err))}", file=sys.stderr)
            return EXIT_BAD_INPUT
        where = f": {err.filename}" if err.filename else ""
        full = ("; free space there and run the command again (what was written whole is kept, and nothing "
                "half-written is read)") if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"diagnosa: error: {_said(f'{err.strerror or err}{where}{full}')}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
