"""Benchmark: what the monitoring job's read of a 24 h window of capture (and of refusals) costs, the old way and the
new.

Builds a year of hourly capture objects (``--days`` × 24 hours × ``--variants``, a few events each) in a local
folder and in S3 (moto, in process; each S3 request waits ``--latency-ms`` more, as a real S3 GET or LIST does), then
reads the last 24 h with no end (``--last 24h``, as the scheduled job does) and a bounded 24 h a month back, with:

- OLD: a copy of ``read_capture`` before this change (``old_read_capture`` below): one listing of the endpoint's
  whole history, then the window's objects fetched one after another;
- NEW: ``inference.capture.read_capture``: the window's day folders in each variant, objects fetched concurrently.

The same for the local endpoint's refusals (``capture-errors/``, one per hour): OLD ``old_read_errors`` (every
object of the endpoint's history listed and fetched, every refusal of the window held) against NEW
``inference.capture.read_errors(..., keep_events=False)`` as the monitor calls it.

Checks both give the same events, problems and misfiled lines (the same refusals summary); prints the median wall
time over ``--repeats`` runs, the ratio, and the storage calls (listings, folder listings, GETs; on S3 also the
ListObjectsV2 requests, pages included).
Usage: python benchmarks/bench_monitor_read.py [--days 365] [--variants 1] [--repeats 5] [--latency-ms 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from diagnosa.lake import DataLake
from inference.capture import (
    _KEY,
    FILING_MARGIN,
    ZONE,
    CaptureRead,
    ErrorsRead,
    _check_event,
    _check_name,
    _utc,
    capture_line,
    fetch_in_order,
    parse_time,
    read_capture,
    read_errors,
)

ENDPOINT = "diagnosa"
BUCKET = "bench-lake"
EVENTS_PER_OBJECT = 3


# -- OLD: read_capture as it was before the windowed listing and the concurrent fetch (kept for comparison) --------
def old_read_capture(lake: DataLake, endpoint: str, start: datetime | None = None, end: datetime | None = None,
                     variant: str | None = None) -> CaptureRead:
    """OLD CODE, verbatim but for the log lines: every key of the endpoint listed, the window's fetched in turn."""
    _check_name(endpoint, "endpoint")
    prefix = f"{ZONE}/{endpoint}/" + (f"{_check_name(variant, 'variant')}/" if variant else "")
    start = _utc(start) if start else None
    end = _utc(end) if end else None
    result = CaptureRead([])
    stamped: list[tuple[datetime, dict[str, Any]]] = []
    for key in lake.list(prefix):
        match = _KEY.fullmatch(key)
        if not match:
            result.problems.append(f"{key}: not in the capture layout")
            continue
        try:
            hour = datetime(int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]), tzinfo=timezone.utc)
        except ValueError:
            result.problems.append(f"{key}: impossible date in the path")
            continue
        if (end is not None and hour >= end + FILING_MARGIN) or \
                (start is not None and hour + timedelta(hours=1) + FILING_MARGIN <= start):
            continue
        for number, line in enumerate(lake.get_bytes(key).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                when = _check_event(obj)
            except (ValueError, RecursionError) as err:
                result.malformed += 1
                result.problems.append(f"{key}:{number}: {err}")
                continue
            if (start is None or when >= start) and (end is None or when < end):
                stamped.append((when, obj))
            elif not hour - FILING_MARGIN <= when < hour + timedelta(hours=1) + FILING_MARGIN:
                result.misfiled.append(f"{key}:{number}: inferenceTime {when:%Y-%m-%dT%H:%M:%SZ}")
    stamped.sort(key=lambda pair: pair[0])
    result.events = [obj for _when, obj in stamped]
    return result


def old_read_errors(lake: DataLake, endpoint: str, start: datetime | None = None,
                    end: datetime | None = None) -> dict[str, Any]:
    """OLD CODE, condensed to what the monitor used (the summary): every object of the stream listed and fetched,
    the window's refusals held and sorted, then counted."""
    result = ErrorsRead([])
    stamped: list[tuple[datetime, dict[str, Any]]] = []
    keys = [key for key in lake.list(f"capture-errors/{endpoint}/") if key.endswith(".jsonl")]
    for data in fetch_in_order(lake, keys):
        for line in data.result().splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                when = parse_time(obj["time"].replace("Z", "+00:00"), "time")
                int(obj["status"])
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                result.malformed += 1
                continue
            if (start is None or when >= start) and (end is None or when < end):
                stamped.append((when, obj))
    stamped.sort(key=lambda pair: pair[0])
    for _when, obj in stamped:
        result.events.append(obj)
        result.count(obj)
    return result.summary()


def new_read_errors(lake: DataLake, endpoint: str, start: datetime | None = None,
                    end: datetime | None = None) -> dict[str, Any]:
    return read_errors(lake, endpoint, start, end, keep_events=False).summary()
# -- end of OLD --------------------------------------------------------------------------------------------------


class Counting:
    """The lake's storage, counting the calls a read makes (from its threads)."""

    def __init__(self, storage: Any) -> None:
        self.storage, self.uri = storage, storage.uri
        self.lock = threading.Lock()
        self.counts = {"list": 0, "list_folders": 0, "get": 0}

    def _count(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1

    def list(self, prefix: str = "") -> list[str]:
        self._count("list")
        return self.storage.list(prefix)

    def list_folders(self, prefix: str) -> list[str]:
        self._count("list_folders")
        return self.storage.list_folders(prefix)

    def get_bytes(self, key: str) -> bytes:
        self._count("get")
        return self.storage.get_bytes(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


def objects(days: int, variants: int, last_hour: datetime) -> list[tuple[str, bytes]]:
    """One object per hour and variant, the last one at ``last_hour``: (key, body)."""
    out = []
    for variant in [f"Variant{n}" if n else "AllTraffic" for n in range(variants)]:
        for back in range(days * 24):
            hour = last_hour - timedelta(hours=back)
            lines = [json.dumps(capture_line(f"{variant}-{hour:%Y%m%d%H}-{n}", None, b'{"age": 40, "sex": "F"}',
                                             "application/json", b'{"predictions": [{"category": "NO ENFERMO"}]}',
                                             "application/json", hour + timedelta(minutes=20 * n)))
                     for n in range(EVENTS_PER_OBJECT)]
            out.append((f"capture/{ENDPOINT}/{variant}/{hour:%Y/%m/%d/%H}/20-00-000-x.jsonl",
                        ("\n".join(lines) + "\n").encode()))
    for back in range(days * 24):  # a refusal an hour (a local endpoint's errors stream)
        hour = last_hour - timedelta(hours=back)
        refusal = {"time": f"{hour:%Y-%m-%dT%H}:30:00.000Z", "status": 400, "route": "/invocations",
                   "error": "invalid request"}
        out.append((f"capture-errors/{ENDPOINT}/{hour:%Y/%m/%d/%H}/30-00-000-x.jsonl",
                    (json.dumps(refusal) + "\n").encode()))
    return out


def local_lake(root: Path, written: list[tuple[str, bytes]]) -> DataLake:
    for key, body in written:  # plain writes: building a year through the lake's fsync'd puts takes minutes
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return DataLake.from_uri(str(root))


def s3_lake(written: list[tuple[str, bytes]], latency: list[float], requests: dict[str, int]) -> DataLake:
    """The objects in a moto bucket; each request of the lake's client is counted in ``requests`` and waits
    ``latency[0]`` seconds first (a real S3 request's round trip: sleeping releases the GIL as a socket wait does)."""
    import boto3

    client = boto3.client("s3", region_name="eu-west-1")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for key, body in written:
        client.put_object(Bucket=BUCKET, Key=key, Body=body)

    lock = threading.Lock()

    def request(model: Any, **_: Any) -> None:  # before-call: once per request (each page of a listing too)
        with lock:
            requests[model.name] = requests.get(model.name, 0) + 1
        time.sleep(latency[0])

    client.meta.events.register("before-call.s3", request)
    return DataLake.from_uri(f"s3://{BUCKET}", s3_client=client)


def measure(read: Callable[..., Any], lake: DataLake, start: datetime, end: datetime | None, repeats: int,
            requests: dict[str, int] | None) -> tuple[float, dict[str, int], Any]:
    """Median seconds of ``repeats`` reads, the calls of one, and its result."""
    times, counts, result = [], {}, None
    for _ in range(repeats):
        counting = Counting(lake.storage)
        if requests is not None:
            requests.clear()
        began = time.perf_counter()
        result = read(DataLake(counting), ENDPOINT, start, end)
        times.append(time.perf_counter() - began)
        counts = dict(counting.counts) | ({f"S3 {k}": v for k, v in requests.items()} if requests is not None else {})
    return statistics.median(times), counts, result


def compare(name: str, lake: DataLake, windows: dict[str, tuple[datetime, datetime | None]], repeats: int,
            requests: dict[str, int] | None = None) -> None:
    def read_result(read: CaptureRead) -> tuple[Any, ...]:
        return read.events, read.malformed, read.problems, read.misfiled

    reads = (("capture", old_read_capture, read_capture, read_result, lambda read: len(read.events)),
             ("refusals", old_read_errors, new_read_errors, lambda summary: summary, lambda summary: summary["total"]))
    for stream, old_read, new_read, result_of, events_of in reads:
        for label, (start, end) in windows.items():
            old_s, old_calls, old = measure(old_read, lake, start, end, repeats, requests)
            new_s, new_calls, new = measure(new_read, lake, start, end, repeats, requests)
            same = result_of(old) == result_of(new)
            print(f"| {name} | {stream}, {label} | {events_of(new)} | {old_s * 1000:.0f} ms | {new_s * 1000:.0f} ms | "
                  f"{old_s / new_s:.1f}× | {old_calls} | {new_calls} | {'yes' if same else 'NO'} |", flush=True)
            if not same:
                raise SystemExit(f"{name} {stream} {label}: the old and the new read differ")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--variants", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added to each S3 request (moto answers at once)")
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args()
    now = datetime.now(timezone.utc)
    last_hour = now.replace(minute=0, second=0, microsecond=0)
    month_back = last_hour - timedelta(days=30, hours=last_hour.hour)
    windows: dict[str, tuple[datetime, datetime | None]] = {
        "last 24h, no end (the job)": (now - timedelta(hours=24), None),
        "24h a month back": (month_back, month_back + timedelta(hours=24)),
    }
    written = objects(args.days, args.variants, last_hour)
    print(f"{len(written)} capture and refusal objects ({args.days} days × 24 h × ({args.variants} variant(s) + the "
          "refusals)), "
          f"{args.repeats} repeats, medians; calls of one read\n")
    print("| lake | window | events | old | new | old/new | old calls | new calls | same result |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        compare("local folder", local_lake(Path(tmp), written), windows, args.repeats)
    if args.skip_s3:
        return
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    from moto import mock_aws

    requests: dict[str, int] = {}
    latency = [0.0]
    with mock_aws():
        lake = s3_lake(written, latency, requests)
        compare("S3 (moto)", lake, windows, args.repeats, requests)
        latency[0] = args.latency_ms / 1000
        compare(f"S3 (moto) + {args.latency_ms:.0f} ms a request", lake, windows, args.repeats, requests)


if __name__ == "__main__":
    main()
