"""Starts the Diagnosa monitoring job on SageMaker Processing (AWS Lambda, plain boto3).

Invoked by the monitoring schedule (``{"reason": "schedule", "schedule": "rate(1 day)", "window": ""}``)
or directly (``{"window": "7d"}``). It starts ``monitoring/job.py`` — ``monitor_job.py`` at the
root of the staged step code, the same ``sourcedir.tar.gz`` and image the pipeline's jobs
use — over the window's traffic in the lake's ``capture/<endpoint>/`` and ``feedback/<endpoint>/``
(the job reads those objects itself, ``--lake``: a ProcessingInput of the prefixes would download all the
traffic ever captured on every run) and the baselines of the model the endpoint serves
(``artifacts/monitoring/<endpoint>/baseline/``, put there by the deploy function, a ProcessingInput).
The job writes its report under
``artifacts/monitoring/<endpoint>/reports/<job name>/`` and publishes ``DriftScore`` (and friends)
to CloudWatch, where the drift alarm starts retraining.

The window is the last ``window`` (``30m``, ``24h``, ``7d``, ``2w``); an empty window is derived from
a ``rate(N unit)`` schedule (``rate(1 day)`` → ``1d``), so each run reads the traffic since the
previous one. Live quality also judges the requests of ``feedback_lag`` (FEEDBACK_LAG, ``7d`` by default in the
stack) before the window: a diagnosis confirmed days after its request is joined by a later run. Neither reaches
before the time the serving model started serving (the baselines' ``serving-since`` metadata): one model's traffic
is never compared with another's baselines.

Nothing is started, and the result says why, when the endpoint has no baselines (no deployment yet,
a deployment in progress, or a package registered without them), no captured traffic at all, or a serving model
that started serving just now. A ``serving-since`` that is unreadable or in the future is refused (``Refused``):
no job can keep to the serving model's traffic with it.
"""
from __future__ import annotations

import logging
import os
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
from job_request import CONTAINER, container_script, processing_request, s3_input, shown, unknown_fields

log = logging.getLogger()
log.setLevel(logging.INFO)

REQUIRED = ("data/statistics.json", "data/constraints.json")
ENTRY = "monitor_job.py"
FIELDS = ("reason", "schedule", "window", "feedback_lag")  # the schedule's input (infra/stack.py) and a manual invocation's
SCRIPT = container_script(ENTRY)
_RATE = re.compile(r"^rate\( *([0-9]+) +(minute|minutes|hour|hours|day|days) *\)$")
_WINDOW = re.compile(r"^([0-9]+)(m|h|d|w)$")
_UNIT = {"minute": "m", "minutes": "m", "hour": "h", "hours": "h", "day": "d", "days": "d"}


MAX_WINDOW = timedelta(days=36500)  # S3 keeps nothing longer on its own (object lock's longest retention)
MAX_DIGITS = 9  # more significant digits than any length of at most MAX_WINDOW has (52 560 000 minutes)
# How far ahead of this function's clock the deploy function's (which wrote serving-since) may run: a model that
# started serving that little "in the future" started just now, and has served no traffic yet.
CLOCK_SKEW = timedelta(minutes=5)
_MEND = ("set the baselines' serving-since metadata to when the serving model went InService "
         "(YYYY-MM-DDTHH:MM:SSZ, UTC)")


class Refused(Exception):
    """The event cannot start a monitoring job; nothing was started."""


def window_of(event: dict[str, Any], env: dict[str, str]) -> str:
    """The window to read (``7d``, its number without leading zeros), the event's else WINDOW, else the one of a
    ``rate(...)`` schedule; Refused naming the value (cut to job_request.SHOWN_LIMIT) and what it must be."""
    window = _text(event.get("window") or env.get("WINDOW") or "", "window").strip().lower()
    if not window:
        schedule = _text(event.get("schedule") or env.get("SCHEDULE") or "", "schedule").strip()
        match = _RATE.fullmatch(schedule)
        if not match:
            raise Refused(f"no window given and none derivable from schedule {shown(schedule)}: set the "
                          f"MonitorWindow parameter (e.g. 24h) for a cron schedule")
        window = f"{match[1]}{_UNIT[match[2]]}"
    form = "a positive duration like 30m, 24h, 7d or 2w"
    _length(window, "window", form, positive=True)
    return _normal(window)


def feedback_lag_of(event: dict[str, Any], env: dict[str, str]) -> timedelta:
    """How long after a request its feedback may come (``feedback_lag``: the event's, else FEEDBACK_LAG; ``0``)."""
    lag = _text(event.get("feedback_lag") or env.get("FEEDBACK_LAG") or "0", "feedback lag").strip().lower()
    return timedelta(0) if lag == "0" else _length(lag, "feedback lag", "0 or a duration like 12h, 7d or 2w")


def _text(value: Any, what: str) -> str:
    """A window, lag or schedule as text: a string, or a number as a schedule's target may send it."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10**MAX_DIGITS else "9" * (MAX_DIGITS + 1)  # no int-to-str limit
    raise Refused(f"{what} must be text like 7d, not {type(value).__name__}")


def _normal(window: str) -> str:
    """``0007d`` as ``7d``: the number's significant digits (at most MAX_DIGITS + 1 of them are read)."""
    digits = window[:-1].lstrip("0") or "0"
    return digits + window[-1]


def _length(text: str, what: str, form: str, positive: bool = False) -> timedelta:
    """``text`` (``7d``) as a duration of at most MAX_WINDOW; Refused naming ``what`` and the ``form`` it must have."""
    match = _WINDOW.fullmatch(text)
    digits = (match[1].lstrip("0") or "0") if match else ""
    if not match or (positive and digits == "0"):
        raise Refused(f"{what} {shown(text)} must be {form}")
    # Thousands of digits: past MAX_WINDOW, and past what int() reads (4 300 digits) or a timedelta holds.
    length = _duration(_normal(text)) if len(digits) <= MAX_DIGITS else None
    if length is None or length > MAX_WINDOW:
        raise Refused(f"{what} {shown(text)} is longer than {MAX_WINDOW.days} days: no capture is kept that long")
    return length


def _duration(window: str) -> timedelta:
    n, unit = int(window[:-1]), window[-1]
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: n})


def _has_objects(s3: Any, bucket: str, prefix: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0))


def handler(event: dict[str, Any], context: Any = None, *, sagemaker: Any = None, s3: Any = None,
            env: dict[str, str] | None = None, now: float | None = None) -> dict[str, Any]:
    env = env if env is not None else dict(os.environ)
    event = {} if event is None else event
    if not isinstance(event, dict):  # Lambda passes any JSON as the event
        raise Refused(f"the event must be a JSON object, not {type(event).__name__}")
    if "detail-type" in event:  # an EventBridge event: none is routed here (it was read as a manual run, and started)
        raise Refused(f"unexpected event type {shown(event['detail-type'])}: nothing started (the schedule and a "
                      "manual invocation give reason, schedule, window and feedback_lag only)")
    problem = unknown_fields(event, FIELDS)
    if problem:
        raise Refused(f"{problem}: nothing started")
    s3 = s3 or boto3.client("s3")
    when = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    window = window_of(event, env)
    lag = feedback_lag_of(event, env)
    bucket, endpoint = env["LAKE_BUCKET"], env["ENDPOINT_NAME"]
    base = f"artifacts/monitoring/{endpoint}"
    baseline = f"{base}/baseline/"

    present = {o["Key"][len(baseline):] for o in s3.list_objects_v2(Bucket=bucket, Prefix=baseline).get("Contents", [])}
    missing = [name for name in REQUIRED if name not in present]
    if missing:
        log.warning("skipped: no baseline for %s (%s missing under s3://%s/%s): no model with baselines is "
                    "serving yet, or a deployment is in progress", endpoint, ", ".join(missing), bucket, baseline)
        return {"status": "skipped", "reason": "no baseline", "missing": missing}
    if not _has_objects(s3, bucket, f"capture/{endpoint}/"):
        log.warning("skipped: nothing captured yet under s3://%s/capture/%s/", bucket, endpoint)
        return {"status": "skipped", "reason": "no captured traffic"}

    metadata = s3.head_object(Bucket=bucket, Key=baseline + REQUIRED[0]).get("Metadata", {})
    since = _since(metadata.get("serving-since"), f"s3://{bucket}/{baseline}{REQUIRED[0]}", when)
    if since is not None and since >= when:
        log.warning("skipped: %s started serving at %s, just now: no traffic of it to judge yet", endpoint,
                    metadata.get("serving-since"))
        return {"status": "skipped", "reason": "no traffic of the serving model yet"}
    # The serving model started within the window: read only its own traffic. Live quality judges the requests of
    # the feedback lag before the window too, but none from before the serving model started (whole minutes).
    start = when - _duration(window)
    if since is not None and since > start:
        traffic = ["--since", since.strftime("%Y-%m-%dT%H:%M:%SZ")]
    else:
        lag = min(lag, start - since) if since is not None else lag
        minutes = int(lag.total_seconds()) // 60
        traffic = ["--last", window] + (["--feedback-lag", f"{minutes}m"] if minutes else [])
    arguments = ["--base-dir", CONTAINER, "--endpoint-name", endpoint, "--lake", f"s3://{bucket}", *traffic,
                 "--metrics-namespace", env["METRICS_NAMESPACE"]]

    name = f"{env['JOB_PREFIX']}-{when.strftime('%Y%m%d-%H%M%S')}"[:63]
    request = monitoring_request(env, name, arguments)
    (sagemaker or boto3.client("sagemaker")).create_processing_job(**request)
    log.info("started %s for %s (%s), baselines of %s", name, endpoint, " ".join(traffic),
             metadata.get("model-package", "?"))
    return {"status": "started", "job": name, "arguments": arguments, "model_package": metadata.get("model-package"),
            "report": f"s3://{bucket}/{base}/reports/{name}/"}


def _since(value: str | None, where: str, when: datetime) -> datetime | None:
    """When the serving model started serving (the baselines' serving-since, which the deploy function writes);
    None when the metadata is absent (baselines installed before it was written).

    Refused when it is unreadable or later than ``when`` by more than CLOCK_SKEW: the deploy function wrote neither,
    so the metadata is damaged, and no job can be sized from it. A job reading the window and the feedback lag
    regardless could judge the previous model's traffic against this one's baselines (false drift, and the drift
    alarm retrains); one reading from a future time reads nothing. The refusal fails the invocation, whose retries
    end in the dead-letter queue, whose alarm tells a person, who sets it right."""
    if not value:
        return None
    try:
        since = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise Refused(f"{where}: unreadable serving-since {shown(value)} (not YYYY-MM-DDTHH:MM:SSZ): no job started, "
                      f"it could read another model's traffic; {_MEND}") from None
    if since > when + CLOCK_SKEW:
        raise Refused(f"{where}: serving-since {value} is in the future (now {when:%Y-%m-%dT%H:%M:%SZ}): no job "
                      f"started, it would read no traffic; {_MEND}")
    return since


def monitoring_request(env: dict[str, str], name: str, arguments: list[str]) -> dict[str, Any]:
    """The monitoring job's CreateProcessingJob request (checked against botocore's shape in the tests). Its one data
    input is the baselines; the job lists and reads the window's capture and feedback in the lake itself."""
    lake, endpoint = f"s3://{env['LAKE_BUCKET']}", env["ENDPOINT_NAME"]
    inputs = [s3_input("baseline", f"{lake}/artifacts/monitoring/{endpoint}/baseline/", "baseline")]
    return processing_request(env, name, role_arn=env["JOB_ROLE_ARN"], entry=ENTRY, arguments=arguments,
                              inputs=inputs, output=("report", f"{lake}/artifacts/monitoring/{endpoint}/reports/{name}/",
                                                     "report"))


__all__ = ["Refused", "feedback_lag_of", "handler", "monitoring_request", "window_of"]
