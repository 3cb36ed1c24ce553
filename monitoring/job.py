"""Monitoring job (scheduled in AWS, or by hand): a window of captured traffic + feedback → report.

Container contract (SageMaker Processing):
- ``--lake s3://bucket[/prefix]`` (or a folder; default ``input/lake/``): the lake whose ``capture/<endpoint>/`` and
  ``feedback/<endpoint>/`` the job reads itself, only the window's objects (the hour folders of the window and their
  filing margin, the feedback of events that may be in it). The monitor function passes the stack's lake: a
  ProcessingInput of those prefixes would download every request ever captured, each day, however short the window;
- ``input/baseline/``: ``statistics.json`` + ``constraints.json`` (preprocess ``baseline`` output) and
  ``prediction_baseline.json`` (evaluate ``evaluation`` output), in one folder or two
  (``input/baseline/data`` and ``input/baseline/predictions``);
- writes ``output/report/{report.json,report.html,constraint_violations.json}``.

Prints ``monitor:drifted_features=N``, ``monitor:failing_classes=N`` and ``monitor:alert=0|1``;
with ``--metrics-namespace`` it also publishes them to CloudWatch (``monitoring/cloudwatch.py``), where
the CDK app's drift alarm starts retraining; the exit status is 0 whatever the verdict (1 only when the job
could not run), so an alert never looks like a broken job. Stopped by SIGTERM (StopProcessingJob): 143, its reason
"stopped by SIGTERM ..." and no report (``processing.entry.stops_on_sigterm``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from diagnosa.data.schema import BUILTIN_RESOURCE
from diagnosa.files import atomic_folder, job_reason, refuse_earlier_output, write_job_failure
from diagnosa.lake import DataLake, LakeError
from diagnosa.logs import configure_logging
from processing.entry import PROCESSING_ROOT, JobArgumentParser, stops_on_sigterm

log = logging.getLogger("diagnosa.monitor")

EARLIER_REPORT = "another run's report"


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    # An argument error fails the job with its reason where the service reads it (ExitMessage), as every job's.
    parser = JobArgumentParser(prog="python -m monitoring.job", description="Diagnosa monitoring job")
    parser.add_argument("--base-dir", default=PROCESSING_ROOT, help="the processing container's root "
                                                                   "(default: %(default)s)")
    parser.add_argument("--lake", help="the lake holding capture/ and feedback/: s3://bucket[/prefix] or a folder "
                                       "(default: <base-dir>/input/lake)")
    parser.add_argument("--endpoint-name", default=BUILTIN_RESOURCE)
    parser.add_argument("--since")
    parser.add_argument("--until")
    parser.add_argument("--last", help="e.g. 24h (the schedule's period)")
    parser.add_argument("--feedback-lag", default="0", help="e.g. 7d: live quality also judges the requests of this "
                                                               "long before the window (their feedback may come late)")
    parser.add_argument("--min-feedback", type=int, default=None)
    parser.add_argument("--metrics-namespace", help="also publish the verdict as CloudWatch metrics in this namespace "
                                                    "(the CDK app's drift alarm watches Diagnosa/Monitoring DriftScore)")
    args = parser.parse_args(argv)
    base = Path(args.base_dir)
    # Stopped by SIGTERM (StopProcessingJob): what it wrote under output/ is removed (a report cut between its files
    # looked like a run's), its reason is written, exit 143 (processing/entry.py).
    with stops_on_sigterm(base, [base / "output"]):
        return _monitor(args, base)


def _monitor(args: argparse.Namespace, base: Path) -> int:
    """The job's body: 0 whatever the verdict, 1 with its reason written for the service when it could not run."""
    out = base / "output" / "report"
    from monitoring.run import (
        WindowError,
        parse_duration,
        parse_window,
        run_monitor,
        settings_from_baseline,
        write_report,
    )
    from processing.baseline import BaselineError, load_baseline

    try:
        refuse_earlier_output(out, EARLIER_REPORT)  # before the work: and again as the report takes its place
        start, end = parse_window(args.since, args.until, args.last)
        lag = parse_duration(args.feedback_lag, "--feedback-lag", zero=True)
        root = base / "input" / "baseline"
        folders = [p for p in (root, root / "data", root / "predictions") if p.is_dir()]
        baseline = load_baseline(folders or [root])
        lake_uri = args.lake
        if lake_uri is None:
            lake_dir = base / "input" / "lake"
            lake_dir.mkdir(parents=True, exist_ok=True)  # no capture at all is a report of "no data", not a crash
            lake_uri = str(lake_dir)
        report = run_monitor(DataLake.from_uri(lake_uri), args.endpoint_name, baseline, start, end,
                             settings_from_baseline(baseline, min_feedback=args.min_feedback), feedback_lag=lag)
        with atomic_folder(out, EARLIER_REPORT, in_place=True) as folder:  # whole or none (a full disk)
            paths = {kind: out / path.name for kind, path in write_report(report, folder).items()}
    except (WindowError, BaselineError, LakeError, FileExistsError, ValueError, OSError) as err:
        log.error("monitoring failed: %s", job_reason(str(err)))
        write_job_failure(base, str(err))
        return 1
    except Exception as err:  # an S3 error (botocore's), a bug: the job's status still needs the reason
        log.exception("monitoring failed")
        write_job_failure(base, f"{type(err).__name__}: {err}")
        return 1
    log.info("verdict %s; %s", report["verdict"], "; ".join(report["alerts"]) or "no alert")
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    print(f"monitor:drifted_features={len(report['drifted_features'])}")
    print(f"monitor:failing_classes={len(report['failing_classes'])}")
    print(f"monitor:alert={int(report['verdict'] == 'alert')}")
    if args.metrics_namespace:
        from botocore.exceptions import BotoCoreError, ClientError

        from monitoring.cloudwatch import publish

        try:
            data = publish(report, args.endpoint_name, args.metrics_namespace)
        except (BotoCoreError, ClientError) as err:  # the report is written; the alarm would miss this run
            log.error("could not publish the metrics to CloudWatch %s: %s", args.metrics_namespace, err)
            return 1
        log.info("published %s to CloudWatch %s", ", ".join(f"{d['MetricName']}={d['Value']:g}" for d in data),
                 args.metrics_namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
