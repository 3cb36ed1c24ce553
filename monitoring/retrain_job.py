"""Feedback-folding job (for the retrain function to start in AWS, or by hand): an endpoint's accepted feedback
folded into a new curated version of its dataset, as ``diagnosa monitor --retrain`` does before it trains.

Container contract (SageMaker Processing):
- no data input: the job reads and writes the lake itself (``--lake s3://bucket[/prefix]`` or a folder, and
  ``--raw-lake`` when the raw zone is a storage of its own, the stack's object-locked raw bucket): the dataset's
  raw data and curated version, the endpoint's ``capture/`` and ``feedback/``; it writes the new raw data
  (raw zone), its curated version and ``curated/<dataset>/LATEST.json`` (``monitoring.retrain.feedback_dataset``:
  all the feedback, each event's latest diagnosis, added to the data the hospital gave);
- ``--endpoint-name`` names the endpoint whose feedback is folded; ``--dataset`` the dataset it serves (an AWS
  stage's endpoint is ``diagnosa-<stage>`` whatever its dataset, so the retrain function names it; default: the
  dataset that deploys to the endpoint of its name, as locally); ``--base-version`` the curated version to add
  it to (default: the dataset's latest);
- writes ``output/result/retraining.json`` (a ProcessingOutput uploads it)::

    {"endpoint": ..., "dataset": ..., "base_version": ... | null,
     "version": the new curated version | null, "input_data_uri": the pipeline's InputDataUri for it | null,
     "feedback_rows": N, "skipped": {reason: count}, "reason": why there is no new version | null,
     "overtaken_by": a version that stays the latest instead of "version" | null,
     "rebuilt_from": [{"base_version": ..., "version": ..., "ingested_meanwhile": ...}, ...]}

  ``base_version`` is the version the feedback was added to, or found nothing to add to (the one to train on
  then); ``input_data_uri`` is the lake's URL of the version's prefix (``s3://<lake bucket>/curated/<dataset>/<version>``;
  ``file://...`` for a folder). A version ingested while the job read the feedback (a hospital's new batch) stays the
  latest: the feedback is added again, to it, and ``rebuilt_from`` names each fold so dropped (its version written,
  never the latest); ``overtaken_by`` names the version that stayed the latest when the new one is not (a
  ``--base-version`` overtaken, or a fold overtaken each time: the version trains without that one's data).

Exit status 0 when the result is written, with a new version or without one: no accepted feedback to fold (none
at all, or none that could become a row) is ``version: null`` with the reason, and the caller trains on
``base_version``. Exit status 1 only when the job could not run (no curated version to add to, an endpoint
no dataset deploys to, a ``--dataset`` with no curated version, ingestion refused, the lake unreadable, an output
folder holding another run's result): ``output/failure`` and the job's ExitMessage hold the reason. Bad arguments:
2, as argparse, with the reason in the same places. Stopped by SIGTERM (StopProcessingJob): 143, the reason "stopped
by SIGTERM ..." in the same places and no result (``processing.entry.stops_on_sigterm``); the lake keeps what was
ingested whole (a version without its manifest is never read; one written before LATEST.json moved is the latest
again when the same feedback is folded again).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from diagnosa.files import atomic_folder, job_reason, refuse_earlier_output, write_job_failure
from diagnosa.logs import configure_logging
from processing.entry import PROCESSING_ROOT, JobArgumentParser, stops_on_sigterm

log = logging.getLogger("diagnosa.retrain")

RESULT = "retraining.json"
EARLIER_RESULT = "another run's result"


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    # An argument error fails the job with its reason where the service reads it (ExitMessage), as every job's.
    parser = JobArgumentParser(prog="python -m monitoring.retrain_job",
                               description="Diagnosa feedback-folding job: the endpoint's accepted feedback → a new "
                                           "curated version of its dataset (output/result/retraining.json)")
    parser.add_argument("--base-dir", default=PROCESSING_ROOT, help="the processing container's root "
                                                                   "(default: %(default)s)")
    parser.add_argument("--lake", required=True, help="the data lake: s3://bucket[/prefix] or a folder")
    parser.add_argument("--raw-lake", help="the raw zone's own storage (the stack's object-locked raw bucket)")
    parser.add_argument("--endpoint-name", required=True, help="the endpoint whose feedback is folded")
    parser.add_argument("--dataset", help="the dataset the endpoint serves (an AWS stage's endpoint is "
                                          "diagnosa-<stage> whatever its dataset); default: the dataset that deploys "
                                          "to the endpoint of its name")
    parser.add_argument("--base-version", help="the curated version to add the feedback to (default: the latest)")
    args = parser.parse_args(argv)
    base = Path(args.base_dir)
    # Stopped by SIGTERM (StopProcessingJob): what it wrote under output/ is removed, its reason is written (the
    # retrain function quotes it), exit 143 (processing/entry.py). The lake needs no undoing: a curated version is
    # read only once its manifest is written, whole (atomic writes), and LATEST.json moves only after it; a stop
    # before LATEST leaves a complete version that a rerun of the same feedback makes the latest again.
    with stops_on_sigterm(base, [base / "output"]):
        return _fold(args, base)


def _fold(args: argparse.Namespace, base: Path) -> int:
    """The job's body: 0 with the result written, 1 with its reason written for the service."""
    out = base / "output" / "result"
    from diagnosa.data.ingest import IngestError, curated_prefix, latest_version
    from diagnosa.lake import DataLake, LakeError
    from monitoring.retrain import NothingToFold, RetrainError, endpoint_dataset, feedback_dataset

    try:
        refuse_earlier_output(out, EARLIER_RESULT)  # before the work: and again as the result takes its place
        lake = DataLake.from_uri(args.lake, raw_uri=args.raw_lake)
        dataset = args.dataset or endpoint_dataset(lake, args.endpoint_name)  # none ingested: latest_version says so
        result: dict[str, Any] = {"endpoint": args.endpoint_name, "dataset": dataset, "base_version": args.base_version,
                                  "version": None, "input_data_uri": None, "feedback_rows": 0, "skipped": {},
                                  "reason": None, "overtaken_by": None, "rebuilt_from": []}
        try:
            folded = feedback_dataset(lake, args.endpoint_name, dataset=dataset, base_version=args.base_version)
        except NothingToFold as err:
            # The version there was nothing to add to: the caller trains on it, not on whatever is latest by then.
            result |= {"base_version": args.base_version or latest_version(lake, dataset),
                       "skipped": dict(err.skipped.counts.most_common()), "reason": str(err)}
            log.info("no new curated version of %s: %s", dataset, err)
        else:
            # No example cell in the job's log (CloudWatch): the quarantined rows it names keep them, in the lake.
            log.log(logging.WARNING if folded.overtaken_by or folded.rebuilt_from else logging.INFO, "%s",
                    folded.summary(values=False))
            result |= {"base_version": folded.base_version, "version": folded.version,
                       "input_data_uri": lake.url(curated_prefix(folded.dataset, folded.version)),
                       "feedback_rows": folded.feedback_rows, "skipped": dict(folded.skipped.counts.most_common()),
                       "overtaken_by": folded.overtaken_by,
                       "rebuilt_from": [{"base_version": base, "version": version, "ingested_meanwhile": newer}
                                        for base, version, newer in folded.rebuilt_from]}
        path = out / RESULT
        with atomic_folder(out, EARLIER_RESULT, in_place=True) as folder:  # whole or none (a full disk)
            (folder / RESULT).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except (RetrainError, IngestError, LakeError, FileExistsError, ValueError, OSError) as err:
        return _failed(base, str(err))
    except Exception as err:  # an S3 error (botocore's), a bug: the caller still needs the reason, not a timeout
        log.exception("feedback folding failed")
        return _failed(base, f"{type(err).__name__}: {err}", logged=True)
    log.info("wrote %s: %s", path, "version " + result["version"] if result["version"] else "no new version")
    return 0


def _failed(base: Path, message: str, *, logged: bool = False) -> int:
    if not logged:
        log.error("feedback folding failed: %s", job_reason(message))
    write_job_failure(base, message)
    return 1


if __name__ == "__main__":
    sys.exit(main())
