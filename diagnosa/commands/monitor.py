"""``diagnosa monitor`` (drift + live quality report, optional retraining), ``diagnosa feedback`` and the
``--drift`` scenario of ``diagnosa data generate``. See docs/operations.md."""
from __future__ import annotations

import argparse
import codecs
import errno
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagnosa.commands.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    Unavailable,
    UsageError,
    errors_file_apart,
    given_text,
    int_in,
    local_workspace,
    open_lake,
    os_problem,
    read_token_file,
    resolve_endpoint_name,
    sagemaker_name,
    split_families,
    split_params,
    workspace,
    workspace_hint,
)
from diagnosa.data.schema import BUILTIN_RESOURCE
from diagnosa.files import (
    FileProblem,
    FileTooLarge,
    FolderNotEmpty,
    atomic_folder,
    read_file_bounded,
    refuse_earlier_output,
)
from diagnosa.lake import DataLake, LakeError, storage_errors
from diagnosa.text import some_of
from inference.limits import MAX_RECORDS, has_surrogate, loads, printable, printable_line, printable_lines

if TYPE_CHECKING:  # imported where used (the CLI starts without the feedback module)
    from inference.feedback import StoredFeedback

EXIT_ALERT = 3  # with --fail-on-alert: the report's verdict is "alert"


# ------------------------------------------------------------------------------------------------ monitor

def _served_baselines(args: argparse.Namespace, lake: DataLake) -> list[Path]:
    """The baseline folders of the registered version the local endpoint serves (its ModelMetrics)."""
    endpoints = None if lake.uri.startswith("s3://") else local_workspace(args, lake).endpoints()
    record = endpoints.describe(args.endpoint_name) if endpoints else None
    if record is None:
        hint = endpoints.unknown_name(args.endpoint_name) if endpoints else ""
        raise UsageError(f"no local endpoint {args.endpoint_name!r} ({workspace_hint(args)}): "
                         + (f"{hint}; or " if hint else "") + "give the baseline folders with --baseline "
                         "(preprocess 'baseline' output and evaluate 'evaluation' output)")
    from diagnosa.services import ServiceError

    try:
        found = local_workspace(args, lake).served_baselines(record)
    except ServiceError as err:
        raise UsageError(str(err)) from None
    if found is not None:
        arn, folders = found
        print(printable_line(f"baselines of {arn} (served by {args.endpoint_name}): " + ", ".join(map(str, folders))))
        return folders
    served = record["ModelDataUrl"]
    raise UsageError(f"the model endpoint {args.endpoint_name!r} serves ({served}) has no registered version with "
                     "baselines: give them with --baseline")


def _served_model(args: argparse.Namespace, lake: DataLake) -> Any:
    """What is known of the model the workspace's local endpoint serves (monitoring.identity.ModelFacts), or None:
    no such local endpoint (an S3 lake: a SageMaker endpoint)."""
    from monitoring.identity import served_model

    if lake.uri.startswith("s3://"):
        return None
    record = local_workspace(args, lake).endpoints().describe(args.endpoint_name)
    return served_model(record["ModelDir"]) if record and record.get("ModelDir") else None


def cmd_monitor(args: argparse.Namespace) -> int:
    from monitoring.drift import DriftThresholds
    from monitoring.identity import baseline_model, check_same_model
    from monitoring.run import (
        WindowError,
        parse_duration,
        parse_window,
        quality_start,
        report_prefix,
        run_monitor,
        run_name,
        settings_from_baseline,
        write_report,
    )
    from processing.baseline import BaselineError, load_baseline

    drift = DriftThresholds(min_psi=args.min_psi, p_value=args.p_value,
                            min_rows=args.min_rows, missing_rate_delta=args.missing_rate_delta)
    try:  # before anything is read or printed (the served baselines were named first, then a bad flag refused)
        drift.validate()
    except ValueError as err:
        raise UsageError(_flags(str(err))) from None
    if args.out:  # before anything is read: a report never overwrites an earlier one
        _check_out(Path(args.out))
    lake = open_lake(args)
    if args.retrain:
        _check_retraining(args, lake)  # before the report and the feedback version are written
    else:
        given = [flag for flag, value in (("--param", args.param), ("--families", args.families),
                                          ("--base-version", args.base_version), ("--force-retrain", args.force_retrain))
                 if value not in (None, [], False)]
        if given:
            raise UsageError(f"{', '.join(given)} go{'es' * (len(given) == 1)} with --retrain (the execution it starts)")
    try:
        start, end = parse_window(args.since, args.until, args.last)
        lag = parse_duration(args.feedback_lag, "--feedback-lag", zero=True)
        if lag and start is None:
            raise WindowError("--feedback-lag goes with a window that has a start (--last or --since): without one, "
                              "every request since the beginning is judged already")
        quality_start(start, lag)  # the lag reaching before the earliest instant: refused here, naming the flag
        folders = [Path(p) for p in args.baseline] if args.baseline else _served_baselines(args, lake)
        baseline = load_baseline(folders)
        served = _served_model(args, lake)
        # The version whose baselines judge, and so whose traffic is judged: the served one for its registered
        # baselines; for --baseline folders, the one they name (a baseline of another dataset is refused), the
        # served one for statistics alone (they describe the data, not one model).
        version = baseline_model(baseline).version
        if served is not None and args.baseline:
            check_same_model(baseline_model(baseline), served, args.endpoint_name)
        if served is not None and (not args.baseline or version is None):
            version = served.version
        settings = settings_from_baseline(baseline, drift, args.min_feedback, model=served)
        settings.validate()
    except (WindowError, BaselineError, ValueError) as err:  # BaselineMismatch is a ValueError
        raise UsageError(_flags(str(err))) from None
    now = datetime.now(timezone.utc)
    report = run_monitor(lake, args.endpoint_name, baseline, start, end, settings, now=now, model_version=version,
                         feedback_lag=lag)
    name = run_name(now)
    out = Path(args.out) if args.out else workspace(args) / "monitoring" / args.endpoint_name / name
    try:  # whole or not at all (a temp folder beside it, renamed into place): a retry after a full disk writes it
        with atomic_folder(out, EARLIER_REPORT) as folder:
            paths = {kind: out / path.name for kind, path in write_report(report, folder).items()}
    except FolderNotEmpty as err:  # made meanwhile by another run
        raise UsageError(err.strerror) from None
    except OSError as err:
        said = (f"cannot write the report to {out}: {os_problem(err)}"
                + (f" ({err.filename})" if err.filename and str(err.filename) != str(out) else ""))
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # the machine, not the path: nothing of the report is left
            raise Unavailable(f"{said}; nothing of it was kept: free space there and run the command again") from None
        # --out a file, or where no folder can be made: a bad path, as docs/operations.md says
        raise UsageError(said) from None
    prefix = report_prefix(args.endpoint_name, name)
    for kind in sorted(paths, key=lambda kind: kind == "json"):  # report.json last: a folder without it was cut short
        lake.put_file(paths[kind], f"{prefix}/{paths[kind].name}")
    _print_summary(report, paths, lake.url(prefix + "/report.json"))
    status = 0
    if args.retrain:
        if report["retrain"]["recommended"] or args.force_retrain:
            status = _retrain(args, lake, start, end)
        else:
            print("retraining: not needed (no drift and no class below its threshold); --force-retrain starts it anyway")
    if status == 0 and args.fail_on_alert and report["verdict"] == "alert":
        return EXIT_ALERT
    return status


EARLIER_REPORT = "an earlier report"


def _check_out(out: Path) -> None:
    """A report folder that can be written: nothing there or an empty folder (refuse_earlier_output)."""
    try:
        refuse_earlier_output(out, EARLIER_REPORT)
    except FolderNotEmpty as err:
        raise UsageError(err.strerror) from None
    except NotADirectoryError as err:
        raise UsageError(f"cannot write the report to {out}: {err.strerror}") from None
    except OSError as err:  # a path the system refuses to look at (permissions, a name too long)
        raise UsageError(f"cannot write the report to {out}: {os_problem(err)}") from None
    except ValueError as err:  # a NUL in the path
        raise UsageError(f"cannot write the report to {out}: {err}") from None


def _flags(message: str) -> str:
    """A threshold's own check (monitoring.drift) names its field; the user typed a flag."""
    return re.sub(r"\b(min_psi|p_value|missing_rate_delta)\b", lambda m: "--" + m.group(1).replace("_", "-"), message)


def _say(line: str) -> None:
    """One line of the summary, whose reasons, versions and names come from the lake (a refusal's message, a feedback
    object's name): a newline or an escape code in them can neither forge a line nor clear the screen."""
    print(printable_line(line))


def _print_summary(report: dict[str, Any], paths: dict[str, Path], lake_url: str) -> None:
    from monitoring.report import insufficient_text, lag_text, patient_column_text, unnamed_patients_text

    t = report["traffic"]
    _say(f"monitoring {report['endpoint']}: window {report['window']['start'] or 'beginning'} → "
          f"{report['window']['end'] or 'now'}; {t['events']} captured requests, {t['patients']} "
          f"{'rows' if t.get('patient_column') else 'patients'}, "
          f"{t['skipped']['total']} skipped")
    for entry in t["skipped"]["by_reason"]:
        _say(f"  skipped {entry['count']}: {entry['reason']}")
    other = t.get("other_versions") or {}
    ahead = t.get("ahead_of_now") or {}
    if ahead.get("events"):
        _say(f"  {ahead['events']} of them ({ahead['patients']} patients) stamped after this report's time, up to "
             f"{ahead['latest']}: the endpoint's clock runs ahead of this machine's, and the next window with no end "
             "counts them again (set both clocks right: NTP)")
    if t.get("model_version"):
        _say(f"  judged: the requests model version {t['model_version']} answered")
    patients = t.get("patient_column")
    if patients:
        _say(f"  {patient_column_text(patients)}")
    if t.get("unnamed_patient_columns"):
        _say(f"  note: {unnamed_patients_text(t['unnamed_patient_columns'])}")
    if other.get("requests"):
        versions = ", ".join(f"{v} ({n})" for v, n in other["by_version"].items())
        _say(f"  left out {other['requests']} captured requests ({other['patients']} patients) answered by other "
              f"model versions: {versions}")
    refused = report.get("refusals") or {}
    if refused.get("total"):
        statuses = ", ".join(f"{n} × {status}" for status, n in refused["by_status"].items())
        _say(f"refused requests: {refused['total']} ({statuses})")
        for entry in refused["by_reason"][:5]:
            _say(f"  refused {entry['count']}: {entry['reason']}")
    if refused.get("strays"):
        examples = refused.get("stray_examples") or []
        _say(f"objects in the refusals stream that are not .jsonl, not read: {refused['strays']}"
              + (f" (e.g. {', '.join(examples[:3])})" if examples else ""))
    judged = report["quality"].get("window") or {}
    if judged.get("feedback_lag_seconds"):
        _say(f"live quality: the requests of {judged['start']} → {judged['end'] or 'now'} ({judged['events']} requests, "
              f"{judged['patients']} patients): the window and its {lag_text(judged['feedback_lag_seconds'])} of "
              "feedback lag")
    fb = report["quality"]["feedback"]
    _say(f"feedback: {fb['records']} records ({fb['superseded']} superseded), {fb['matched']} joined with captures, "
          f"{fb['skipped']['total']} not used"
          + (f"; {fb['outside_window']} for events outside this window, not read" if fb.get("outside_window") else "")
          + (f"; {fb['not_named_by_traffic']} for event ids this window's traffic does not name, not read"
             if fb.get("not_named_by_traffic") else ""))
    for entry in fb["skipped"]["by_reason"]:
        _say(f"  not used {entry['count']}: {entry['reason']}")
    _say(f"verdict: {report['verdict'].upper()}")
    why = insufficient_text(report)
    if why:
        _say(f"  {why}")
    for alert in report["alerts"]:
        _say(f"  ALERT {alert}")
    for f in report["features"]:
        if f["verdict"] in ("drift", "warn"):
            _say(f"  {f['verdict']:5} {f['name']}: {'; '.join(f['reasons'])}")
    # The paths may hold what a terminal obeys (a --out or workspace with ESC or a newline): escaped, as every line.
    print("report: " + "\n        ".join(printable_line(str(shown)) for shown in (paths["html"], paths["json"],
                                                                                    lake_url)))


def _check_retraining(args: argparse.Namespace, lake: DataLake) -> None:
    """What `--retrain` would start, checked as `run --local` checks it (its --param names and types, its
    --families, the dataset's latest version) before the feedback version is written: a typo after it left a
    new curated version as the dataset's latest, which the next plain `run --local` trained on."""
    from diagnosa.services import plan_local_run
    from monitoring.retrain import RetrainError, endpoint_dataset

    overrides, (families, _) = split_params(args.param), _retraining_families(args, lake)
    try:
        dataset = _served_dataset(args, lake) or endpoint_dataset(lake, args.endpoint_name)
    except RetrainError as err:
        raise UsageError(f"retraining not started: {err}") from None
    if args.base_version is not None:  # else a typo passed every day until the day an alert started a retraining
        from diagnosa.data.ingest import VERSION_ID, IngestError, read_manifest
        from diagnosa.data.validate import shown

        try:
            found = VERSION_ID.fullmatch(args.base_version) and read_manifest(lake, dataset, args.base_version)
        except IngestError as err:
            raise UsageError(f"retraining not started: --base-version: {err}") from None
        if not found:
            raise UsageError(f"retraining not started: --base-version {shown(args.base_version, 80)} is no curated "
                             f"version of {dataset} (the folders of curated/{dataset}/ in the lake; leave it out for the latest)")
    plan_local_run(lake, dataset=dataset, overrides=overrides, families=families)


def _retraining_families(args: argparse.Namespace, lake: DataLake) -> tuple[tuple[str, ...] | None, str]:
    """The candidate families a retraining trains, and how they were chosen: --families, else those of the run that
    trained the model the local endpoint serves (as SageMaker's retraining runs the pipeline as deployed: a model
    trained with `--families svm,random_forest` was retrained with the four default ones), else the defaults."""
    given = split_families(args.families)
    if given is not None:
        return given, "as --families names"
    served = None if lake.uri.startswith("s3://") else local_workspace(args, lake).served_families(args.endpoint_name)
    if served is None:
        return None, "the default ones (this workspace does not say which run trained the served model)"
    families, run = served
    return families, f"those run {run} chose the served model among (--families to change)"


def _served_dataset(args: argparse.Namespace, lake: DataLake) -> str | None:
    """The dataset of the model the workspace's local endpoint serves (None: not a local endpoint here): retraining
    trains it, whatever dataset the endpoint is named after (another dataset's model serves there once the first
    was stopped: the endpoint's dataset was retrained, with that model's feedback written into its raw data)."""
    if lake.uri.startswith("s3://"):
        return None
    return local_workspace(args, lake).endpoint_dataset(args.endpoint_name)


def _retrain(args: argparse.Namespace, lake: DataLake, start: Any, end: Any) -> int:
    from diagnosa.commands.local import run_pipeline
    from diagnosa.services import retraining_input
    from monitoring.retrain import NothingToFold, RetrainError, feedback_dataset
    from pipelines.definition import DEFAULT_FAMILIES

    try:
        folded = feedback_dataset(lake, args.endpoint_name, dataset=_served_dataset(args, lake),
                                  base_version=args.base_version, start=None, end=end)
    except NothingToFold as err:
        # As on AWS (the retrain function trains on the version the folding job found nothing to add to): the report
        # asked for a retraining, and the version may hold data the served model never saw (a batch ingested since).
        assert err.dataset is not None and err.base_version is not None
        print(printable_line(f"retraining: {err}; training on curated version {err.base_version} of {err.dataset} "
                             "as it is"))
        dataset, version = err.dataset, err.base_version
    except RetrainError as err:
        raise UsageError(f"retraining not started: {err}") from None
    else:
        print(printable_lines(folded.summary()))  # it names what was left out of the feedback, and why
        print(f"retraining: starting a local pipeline execution on curated version {folded.version}")
        dataset, version = folded.dataset, folded.version
    # The recall gate of that execution decides whether the new model is registered (and so replaces the old one).
    local = local_workspace(args, lake)
    overrides = {"InputDataUri": retraining_input(dataset, version), **split_params(args.param)}
    families, chosen = _retraining_families(args, lake)
    print(printable_line(f"retraining: candidate families {', '.join(families or DEFAULT_FAMILIES)}, {chosen}"))
    return run_pipeline(local, local.executor(), dataset=dataset, overrides=overrides, families=families)


# ------------------------------------------------------------------------------------------------ feedback

def cmd_feedback(args: argparse.Namespace) -> int:
    from inference.client import ClientFailure, FeedbackRejected, InvalidInput
    from inference.feedback import FeedbackError, parse_feedback, store_feedback

    if args.feedback_token_file and not args.endpoint_url:
        raise UsageError("--feedback-token-file goes with --endpoint-url: the endpoint checks the token (feedback "
                         "written straight to the lake takes none)")
    if args.errors_file and not args.file:
        raise UsageError("--errors-file goes with --file (one feedback is refused on the command line itself)")
    resolve_endpoint_name(args)
    if args.file:
        if args.event_id or args.diagnosis:
            raise UsageError("give either EVENT_ID DIAGNOSIS or --file, not both")
        return _feedback_file(args)
    if not (args.event_id and args.diagnosis):
        raise UsageError("give EVENT_ID and DIAGNOSIS (or --file FEEDBACK.jsonl)")
    body = {"event_id": args.event_id, "diagnosis": args.diagnosis}
    for name in ("event_row", "note", "source", "disease_id"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    lake = None if args.endpoint_url else open_lake(args)  # straight to the lake: opened once
    try:
        # Through the endpoint, its model's labels judge (there); into the lake, the local endpoint's model's.
        feedback = parse_feedback(body, None if lake is None else _feedback_labels(args, lake))
    except FeedbackError as err:
        hint = ("; the command line is not UTF-8 text here: is the terminal's encoding UTF-8 (`locale`)?"
                if any(isinstance(v, str) and has_surrogate(v) for v in body.values()) else "")
        raise UsageError(f"{err}{hint}") from None
    if lake is None:
        try:
            stored = _send_feedback(_feedback_client(args), feedback)
        except (FeedbackRejected, InvalidInput) as err:  # this record, or this command's token: bad input
            raise UsageError(str(err)) from None
        except ClientFailure as err:  # the endpoint (unreachable, failing, its lake full): not the input; send again
            raise Unavailable(str(err)) from None
    else:
        captured = _captured_patients(args, lake, [feedback.event_id])
        try:
            _check_row(feedback, captured)
        except FeedbackError as err:
            raise UsageError(str(err)) from None
        stored = store_feedback(lake, args.endpoint_name, feedback)
    row = "" if feedback.event_row is None else f" row {feedback.event_row}"
    print(printable_line(f"feedback for event {feedback.event_id}{row} ({feedback.diagnosis}) stored as {stored.key}"))
    if stored.replaced is not None:  # another record of this patient was there (perhaps another doctor's)
        print(printable_line(stored.replaced.describe()))
    if lake is not None:
        _warn_not_captured(args, lake, [feedback.event_id], captured)
    return 0


# A feedback POST waits FEEDBACK_TIMEOUT s for its connection and for each socket read of its answer, and
# overall_deadline(FEEDBACK_TIMEOUT) in all, the rule of `diagnosa predict`'s calls: an endpoint trickling its reply a
# byte at a time never let a read time out, and held the command (a file's batch with it) for as long as it trickled.
FEEDBACK_TIMEOUT = 10.0


def _feedback_client(args: argparse.Namespace) -> Any:
    """The client of --endpoint-url, with the feedback token of --feedback-token-file (default $DIAGNOSA_FEEDBACK_TOKEN)
    and an overall deadline on each call."""
    from inference.client import DiagnosaClient, overall_deadline

    token = read_token_file(args.feedback_token_file) if args.feedback_token_file else None
    try:
        return DiagnosaClient(args.endpoint_name, endpoint_url=args.endpoint_url, feedback_token=token,
                              timeout=FEEDBACK_TIMEOUT, deadline=overall_deadline(FEEDBACK_TIMEOUT))
    except ValueError as err:  # the endpoint URL is not a server root
        raise UsageError(f"--endpoint-url: {err}") from None


def _send_feedback(client: Any, feedback: Any) -> StoredFeedback:
    """POST /feedback of the client's endpoint: the event-id check, the token and the served model's labels."""
    stored: StoredFeedback = client.send_feedback(feedback.event_id, feedback.diagnosis, feedback.note,
                                                  disease_id=feedback.disease_id, source=feedback.source,
                                                  event_row=feedback.event_row)
    return stored


def _feedback_labels(args: argparse.Namespace, lake: DataLake) -> list[str]:
    """The labels a diagnosis written straight to the lake must be one of: those of the model the workspace's local
    endpoint of that name serves; the built-in cohort's for its endpoint. Another endpoint's are not known here."""
    from diagnosa.labels import CATEGORIES

    labels = None if lake.uri.startswith("s3://") else local_workspace(args, lake).endpoint_labels(args.endpoint_name)
    if labels is not None:
        return labels
    if args.endpoint_name == BUILTIN_RESOURCE:
        return list(CATEGORIES)
    hint = "" if lake.uri.startswith("s3://") else local_workspace(args, lake).endpoints().unknown_name(args.endpoint_name)
    raise UsageError(f"no local endpoint {args.endpoint_name} in this workspace, so the labels its diagnoses must be "
                     "one of are not known here: " + (f"{hint}; or " if hint else "") + "send the feedback through "
                     "the endpoint (--endpoint-url), which checks them against the model it serves")


def _captured_patients(args: argparse.Namespace, lake: DataLake, event_ids: list[str]) -> dict[str, int] | None:
    """Of ``event_ids``, those the lake holds a captured request of --endpoint-name for → its number of patients;
    None, with a warning, when the capture cannot be read. One read of the capture for all of them."""
    from diagnosa.lake import LakeError
    from inference.capture import captured_patients

    try:
        return captured_patients(lake, args.endpoint_name, event_ids)
    except (LakeError, OSError) as err:
        print(printable_line(f"warning: could not check the event ids against the capture of {args.endpoint_name}: "
                             f"{err}"), file=sys.stderr)
        return None


def _check_row(feedback: Any, captured: dict[str, int] | None) -> None:
    """FeedbackError when the captured request of the feedback's event holds no patient at its event_row, as the
    endpoint's route refuses it: a missing row of a request of several, or one beyond them."""
    from inference.feedback import FeedbackError, row_problem

    patients = (captured or {}).get(feedback.event_id)
    problem = None if patients is None else row_problem(feedback, patients)
    if problem is not None:
        raise FeedbackError({"event_row": problem})


def _warn_not_captured(args: argparse.Namespace, lake: DataLake, event_ids: list[str],
                       captured: dict[str, int] | None) -> None:
    """Feedback written straight to the lake is stored without a captured request (SageMaker's capture may arrive
    later), where the endpoint's route refuses it: a warning names the event ids with no captured request, which
    the monitor cannot join with a prediction. ``captured``: from _captured_patients (None: not checked)."""
    if captured is None:
        return
    missing = [event_id for event_id in dict.fromkeys(event_ids) if event_id not in captured]
    if not missing:
        return
    shown = some_of(missing, 5)
    hint = ""
    if not lake.uri.startswith("s3://"):
        endpoints = local_workspace(args, lake).endpoints()
        if endpoints.describe(args.endpoint_name) is None:
            others = endpoints.unknown_name(args.endpoint_name)
            hint = f"; this workspace has no local endpoint {args.endpoint_name}" + (
                f": {others}; choose one with --endpoint-name" if others else "")
    print(f"warning: {len(missing):,} event id(s) have no captured request of endpoint {args.endpoint_name} in the "
          f"lake: {shown}. Stored, but the monitor counts this feedback as not captured until the request's capture "
          f"is there{hint}", file=sys.stderr)


def _event_ids(lines: list[str]) -> list[str]:
    """The event ids a feedback file's lines name, as the file's pass reads them (lines it refuses name none)."""
    from inference.feedback import FeedbackError, parse_feedback

    ids = []
    for line in lines:
        try:
            ids.append(parse_feedback(loads(line), None).event_id)
        except (ValueError, RecursionError, FeedbackError):  # refused in the file's pass, with its line number
            continue
    return ids


def export_text(data: bytes) -> str:
    """A hospital system's export as text: UTF-8, its byte-order mark read past (Windows tools write one), or UTF-16
    when it starts with UTF-16's mark ('Unicode text' as Windows saves it), as CSV ingestion recognises one."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16's: FF FE 00 00 starts both
        return data.decode("utf-32")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")  # the mark says the byte order, and is dropped
    # A byte that is not UTF-8 is kept as a lone surrogate (U+DC80-U+DCFF), which no decoded text holds otherwise:
    # its line is refused by number (undecodable), the others stored; one such byte refused the whole export.
    return data.decode("utf-8-sig", errors="surrogateescape")


def undecodable(line: str) -> str | None:
    """Why a line of :func:`export_text` is not UTF-8 text (its first byte that is not), None when it is."""
    for column, char in enumerate(line, start=1):
        if "\udc80" <= char <= "\udcff":
            return f"not UTF-8 text (byte 0x{ord(char) - 0xDC00:02x} at character {column}): export the file as UTF-8"
    return None


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def export_lines(text: str) -> list[str]:
    """The lines of a JSON Lines export: broken at CR LF, LF or a lone CR only. str.splitlines() also broke at
    U+2028, U+2029 and NEL, which JSON allows raw inside a string (json.dumps(..., ensure_ascii=False) writes them),
    and at the form feed, vertical tab and U+001C-U+001E: a good record was cut in two, both halves refused, and
    every later line number was off by one."""
    lines = _LINE_BREAK.split(text)
    if lines and not lines[-1]:  # the export's last line break ends a line, it starts none
        lines.pop()
    return lines


class _Interrupted(BaseException):
    """SIGINT or SIGTERM as a record of a --file batch was about to be sent or stored (``sent`` False), or while it
    was (True: it may be stored)."""

    def __init__(self, sent: bool) -> None:
        super().__init__(sent)
        self.sent = sent


class _BatchSignals:
    """SIGINT and SIGTERM during a --file batch: taken by ``take``, which notes the signal, and raises
    :class:`_Interrupted` only while a record is being sent (``armed``): the loop stops there, or before its next
    line, and says what was stored and where to resume, instead of a bare "interrupted" (or nothing, for SIGTERM).
    Only the main thread takes signals; one ignored (a background job's SIGINT) or handled otherwise stays so."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False
        self.previous: dict[int, Any] = {}

    @contextmanager
    def sending(self) -> Iterator[None]:
        """While a record is sent or stored, a signal raises :class:`_Interrupted` (at once, for one already taken)."""
        if self.signum is not None:
            raise _Interrupted(sent=False)
        self.armed = True
        try:
            yield
        finally:
            self.armed = False

    def take(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self.armed:
            self.armed = False
            raise _Interrupted(sent=True)

    def __enter__(self) -> _BatchSignals:
        if threading.current_thread() is threading.main_thread():
            for sig, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
                if signal.getsignal(sig) is default:
                    self.previous[sig] = signal.signal(sig, self.take)
        return self

    def __exit__(self, *exc: object) -> None:
        self.armed = False
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


FEEDBACK_MAX_BYTES = 256 << 20  # a feedback export, read whole (its event ids are looked up in one pass)


def _feedback_file(args: argparse.Namespace) -> int:
    """Feedback from a JSON Lines file (a hospital system's export): good lines stored (through --endpoint-url's
    route, or straight to the lake), bad lines named — every one when there are few, else counted by kind with the
    first of each, and all of them, one JSON line each, in the errors file; an endpoint that fails every line stops
    the file."""
    from inference.bulk import ProblemSummary, Refused
    from inference.client import AnswerTimeout, ClientFailure, FeedbackRejected
    from inference.feedback import OPTIONAL, REQUIRED, FeedbackError, parse_feedback, store_feedback

    path = Path(args.file)
    try:
        if args.file == "-":
            if sys.stdin is None:  # started with standard input closed (0<&-)
                raise UsageError("--file -: standard input is closed; give the file's path")
            stdin = getattr(sys.stdin, "buffer", None)  # bytes when there are (a redirected file), else its text
            text = (export_text(stdin.read(FEEDBACK_MAX_BYTES + 1)) if stdin is not None
                    else sys.stdin.read(FEEDBACK_MAX_BYTES + 1).removeprefix("\ufeff"))
            if len(text) > FEEDBACK_MAX_BYTES:
                raise UsageError(f"--file -: standard input holds over {FEEDBACK_MAX_BYTES:,} bytes, the most read; "
                                 "split the export")
            lines = export_lines(text)
        else:
            lines = export_lines(export_text(read_file_bounded(path, FEEDBACK_MAX_BYTES, "feedback file")))
    except FileTooLarge as err:
        raise UsageError(f"{err}; split the export") from None
    except FileProblem as err:
        raise UsageError(str(err)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {args.file}: {err}") from None
    if not any(line.strip() for line in lines):  # it said "0 stored, 0 refused" with status 0: a wrong file, likely
        raise UsageError(f"{'standard input' if args.file == '-' else args.file} holds no feedback (it is empty or "
                         "only blank lines): one JSON object per line")
    captured: dict[str, int] | None = None
    if args.endpoint_url:
        client, lake, labels = _feedback_client(args), None, None  # the endpoint judges the labels and event ids
    else:
        client, lake = None, open_lake(args)
        labels = _feedback_labels(args, lake)
        captured = _captured_patients(args, lake, _event_ids(lines))  # one read of the capture for every line
    # In the current folder, never beside the export: that may be a hospital share or read-only.
    errors_path = Path(args.errors_file or ("feedback-errors.jsonl" if args.file == "-"
                                            else f"{path.name}.errors.jsonl"))
    errors_file_apart(errors_path, args.file, "feedback file")

    def open_errors_file() -> Any:
        try:
            return _ErrorsFile(errors_path)
        except OSError as err:
            raise UsageError(f"cannot write the list of refused lines to {errors_path}: {os_problem(err)} "
                             "(choose another file with --errors-file)") from None

    # One line of the errors file per refused line, as --errors-file says (one per problem was 100,002 lines, 13.6 MB,
    # for one line of 100,000 unknown keys); a field the line invented counted as one kind, not one kind per name.
    bad = ProblemSummary(open_errors_file, known_fields=(*REQUIRED, *OPTIONAL, "body"), per_record=True)
    stored, stored_ids = 0, []
    replacing = {"other": 0, "same": 0, "unreadable": 0}  # stored lines that replaced an earlier record, by kind
    stopped: tuple[int, str] | None = None  # the line every later line would fail at too, and why
    interrupted: int | None = None  # the line a signal stopped the batch at
    in_doubt = False  # the stopping line's record was sent, with no answer: it may be stored
    number = 0
    with _BatchSignals() as signals:
        try:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                if signals.signum is not None:  # taken between two records: this one not begun
                    interrupted = number
                    break
                where = f"line {number}"
                problem = undecodable(line)
                if problem:
                    bad.add(Refused(where, None, problem))
                    continue
                try:
                    body = loads(line)  # a key given twice is named, as the endpoint's route names it
                except (ValueError, RecursionError) as err:  # RecursionError: arrays nested thousands deep
                    bad.add(Refused(where, None, "not JSON (" + ("nested too deeply" if isinstance(err, RecursionError)
                                                                 else printable(str(err))) + ")"))
                    continue
                try:
                    feedback = parse_feedback(body, labels)
                    with signals.sending():  # a signal now stops the send itself: its record may be stored
                        if client is not None:
                            replaced = _send_feedback(client, feedback).replaced
                        else:
                            assert lake is not None
                            _check_row(feedback, captured)
                            replaced = store_feedback(lake, args.endpoint_name, feedback).replaced
                except (FeedbackError, FeedbackRejected) as err:  # this line's: its fields, its event id, its size
                    fields = err.fields or {}
                    for field, problem in fields.items():
                        bad.add(Refused(where, printable(field), printable(problem)))
                    if not fields:
                        bad.add(Refused(where, None, printable(str(getattr(err, "message", err)))))
                    continue
                except ClientFailure as err:  # every line's (unreachable, the token, the endpoint's state): stop here
                    stopped = (number, str(err))
                    in_doubt = isinstance(err, AnswerTimeout)  # sent, then no (complete) answer
                    break
                except storage_errors() as err:  # the lake full or failing: every line's too; nothing of it stored
                    if lake is None:
                        raise
                    stopped = (number, f"the lake {lake.uri} could not store it: {_lake_problem(err)}")
                    break
                stored += 1
                stored_ids.append(feedback.event_id)
                if replaced is not None:  # an earlier record of the patient (an earlier line's, or already in the lake)
                    replacing["unreadable" if replaced.unreadable else "same" if replaced.same else "other"] += 1
        except _Interrupted as err:  # wherever it landed while armed: at worst a stored record is said in doubt
            interrupted, in_doubt = number, err.sent
        finally:
            bad.close()
    signum = signals.signum  # also one taken after the last record: every line was handled, the status says so
    at = stopped[0] if stopped else interrupted
    not_sent = 0 if at is None else sum(1 for line in lines[at - 1:] if line.strip()) - int(in_doubt)
    where = f" to {client.endpoint_url}" if client is not None else ""
    print(printable_line(f"feedback from {args.file}{where}: {stored} stored, {bad.records} refused"
                         + (", 1 may be stored (sent, no answer)" if in_doubt else "")
                         + (f", {not_sent} not sent" if at is not None else "")
                         + (f"; interrupted at line {interrupted}" if interrupted is not None else "")
                         + _replacing_summary(replacing)))
    if bad.total:
        print("\n".join(bad.lines()))  # each printable
    incomplete = bad.sink.failed if isinstance(bad.sink, _ErrorsFile) else None
    if bad.sink is not None and incomplete is None:
        print(printable_line(f"every refused line's problems, one JSON line each: {errors_path.resolve()}"))
    if lake is not None and stored_ids:
        _warn_not_captured(args, lake, stored_ids, captured)
    resend = f"; re-send the file from line {at} (a record sent again replaces itself)"
    if at is not None:
        rest = (f"its record may be stored, {not_sent} line(s) after it not sent{resend}" if in_doubt
                else f"{not_sent} line(s) from there not sent")
        if stopped:
            print(printable_line(f"diagnosa: error: {stopped[1]}: stopped at line {at}, {rest}"), file=sys.stderr)
            return EXIT_FAILED
        print(f"diagnosa: interrupted ({_signal_name(signum)}) at line {at}, {rest}{'' if in_doubt else resend}",
              file=sys.stderr)
    elif signum is not None:
        print(f"diagnosa: interrupted ({_signal_name(signum)}) after the last line: every line was handled",
              file=sys.stderr)
    if signum is not None:
        return 128 + signum  # as a shell reports a command a signal stopped (130 for Ctrl-C, as diagnosa.logs)
    if incomplete is not None:  # every line was handled, as said above; only the list of refusals is short
        print(printable_line(f"diagnosa: error: the list of refused lines in {errors_path.resolve()} is incomplete: "
                             f"{os_problem(incomplete)} (the {bad.records} refused are counted above; free space, or "
                             "choose another file with --errors-file, and send the file again: a stored record sent "
                             "again replaces itself)"), file=sys.stderr)
        return EXIT_FAILED
    return 0 if not bad.total else EXIT_BAD_INPUT


class _ErrorsFile:
    """The feedback file's list of refused lines. A write or close the disk refuses (full, over quota) is kept in
    ``failed``, not raised: the batch goes on storing and refusing lines and its summary is printed, then the
    command fails naming the file. It raised: every count of what had been stored was lost, the message generic."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "w", encoding="utf-8")
        self.name = str(path)
        self.failed: OSError | None = None

    def write(self, text: str) -> int:
        if self.failed is None:
            try:
                self._file.write(text)
            except OSError as err:
                self.failed = err
        return len(text)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as err:
            self.failed = self.failed or err


def _lake_problem(err: BaseException) -> str:
    """A failing lake's error in a line: the machine's words with the path, S3's code, or the error itself."""
    if isinstance(err, OSError) and not isinstance(err, LakeError):
        return os_problem(err)
    code = (getattr(err, "response", None) or {}).get("Error", {}).get("Code")
    return f"S3 answered {code}" if code else f"{type(err).__name__}: {err}"


def _signal_name(signum: int | None) -> str:
    return signal.Signals(signum).name if signum is not None else "a signal"


def _replacing_summary(replacing: dict[str, int]) -> str:
    """The end of the --file summary line: how many stored lines replaced an earlier record of their patient."""
    total = sum(replacing.values())
    if not total:
        return ""
    kinds = [f"{replacing['same']} with the same diagnosis"] if replacing["same"] else []
    kinds += [f"{replacing['unreadable']} that could not be read"] if replacing["unreadable"] else []
    return (f"; {total} replaced an earlier record of their patient"
            + (f" ({', '.join(kinds)})" if kinds else ""))


# ------------------------------------------------------------------------------------------------ parser

def register(commands: Any) -> None:
    monitor = commands.add_parser("monitor", help="drift and live-quality report of captured traffic (docs/operations.md)")
    monitor.add_argument("--baseline", action="append", metavar="DIR",
                         help="folder with statistics.json + constraints.json (preprocess 'baseline' output); repeat "
                              "for the folder with prediction_baseline.json (evaluate 'evaluation' output); default: "
                              "the baselines registered with the version the local endpoint serves")
    monitor.add_argument("--endpoint-name", type=sagemaker_name, default=BUILTIN_RESOURCE,
                         help="the endpoint whose captured traffic is read")
    monitor.add_argument("--since", help="window start, ISO 8601 (UTC unless an offset is given)")
    monitor.add_argument("--until", help="window end (exclusive), ISO 8601")
    monitor.add_argument("--last", help="window of this length before --until or now: 30m, 24h, 7d, 2w")
    monitor.add_argument("--feedback-lag", default="0", metavar="DURATION",
                         help="how long after a request its confirmed diagnosis may still come (e.g. 7d): live "
                              "quality judges the requests of the window and of this long before it, so feedback "
                              "given after an earlier report still counts; drift stays the window's (default 0)")
    monitor.add_argument("--out", help="report folder (default <workspace>/monitoring/<endpoint>/<time>)")
    monitor.add_argument("--min-psi", type=float, default=0.10,
                         help="population stability index a significant shift (--p-value) needs to be drift (a "
                              "smaller one is 'warn'; PSI without a significant test is no verdict)")
    monitor.add_argument("--p-value", type=float, default=0.01,
                         help="significance of the distribution tests (KS, chi-square) that drift needs")
    monitor.add_argument("--min-rows", type=int_in(1, 10**9, "--min-rows"), default=30,
                         help="live rows a feature needs before it is judged ('insufficient data' below)")
    monitor.add_argument("--missing-rate-delta", type=float, default=0.10,
                         help="rise of a feature's missing rate over the baseline that counts as a violation")
    monitor.add_argument("--min-feedback", type=int_in(1, 10**9, "--min-feedback"), default=None,
                         help="confirmed cases a class needs before its recall can fail it (default 5)")
    monitor.add_argument("--fail-on-alert", action="store_true", help=f"exit {EXIT_ALERT} when the verdict is alert")
    monitor.add_argument("--retrain", action="store_true",
                         help="when the report recommends it: add accepted feedback to the training data and start "
                              "a local pipeline execution (`diagnosa run --local`)")
    monitor.add_argument("--force-retrain", action="store_true", help="with --retrain: retrain even without an alert")
    monitor.add_argument("--base-version",
                         help="curated version of the endpoint's dataset to add feedback to (default: its latest)")
    monitor.add_argument("--param", action="append", default=[], help="NAME=VALUE for the pipeline run (repeatable)")
    monitor.add_argument("--families", help="candidate model families for the retraining run (comma-separated; "
                                            "default: those of the run that trained the served model)")
    monitor.set_defaults(func=cmd_monitor)

    feedback = commands.add_parser("feedback", help="store a doctor's confirmed diagnosis for a prediction")
    feedback.add_argument("event_id", nargs="?", help="the prediction's X-Diagnosa-Event-Id")
    feedback.add_argument("diagnosis", nargs="?", help="the confirmed category, e.g. 'ENFERMEDAD AGUDA'")
    feedback.add_argument("--event-row", type=int_in(0, MAX_RECORDS - 1, "--event-row"),
                          help="the patient's position in a request of several (0 for the first): the event_row "
                               "`diagnosa predict` writes beside each event_id")
    feedback.add_argument("--note", help="free text, up to 1000 characters")
    feedback.add_argument("--source", help="who sends it (e.g. the hospital system), up to 100 characters")
    feedback.add_argument("--disease-id", help="the confirmed disease (ORPHA:..., OMIM:... put it in the orphan slice)")
    feedback.add_argument("--file", help="JSON Lines of feedback objects ('-' for standard input)")
    feedback.add_argument("--errors-file", metavar="PATH",
                          help="with --file: where every refused line's problems go, one JSON line each, when there "
                               "are more than 10 (default <file name>.errors.jsonl in the current folder)")
    feedback.add_argument("--endpoint-name", type=sagemaker_name, default=None,
                          help="the endpoint whose prediction this confirms (default: the one --endpoint-url serves, "
                               "else diagnosa)")
    feedback.add_argument("--endpoint-url", type=given_text("--endpoint-url", "the lake, written straight"),
                          help="send through the local endpoint's POST /feedback instead of the lake")
    feedback.add_argument("--feedback-token-file", metavar="PATH",
                          help="with --endpoint-url: a file holding the endpoint's feedback token (default "
                               "$DIAGNOSA_FEEDBACK_TOKEN)")
    feedback.set_defaults(func=cmd_feedback)

