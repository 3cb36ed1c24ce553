"""Benchmark: reading captured traffic and joining doctors' feedback, the monitor's and retraining's paths.

Generates a local lake in a temp folder: ``--lines`` capture lines of the built-in endpoint ``diagnosa`` (written with
``inference.capture.capture_line``, one object per capture hour as the shipper writes them; about 1 in 10 requests
holds several patients, ``--retried`` of the lines are a client's retry of an earlier request) and ``--feedback``
feedback objects (written with ``inference.feedback.store_feedback``: most on kept requests, by ``event_row`` for
requests of several, some on a retried copy, some for events never captured). Then times, each in a fresh process so
its peak RSS is its own:

- monitor: ``read_traffic`` + ``read_feedback`` + ``join_feedback`` + ``live_quality`` (``monitoring/run.py``'s path,
  without the drift statistics);
- retrain: ``feedback_records`` (the built-in cohort's retraining table).

Prints a Markdown table: median wall time of ``--repeats`` runs and the process's peak RSS (and its RSS after the
imports, before reading). Run by hand; never timed in tests.

``--window 24h --spacing 60`` (one request a minute: 50,000 lines are 35 days of traffic) adds what one scheduled
monitoring job over the last ``--window`` moves out of the lake: the objects and bytes the job reads itself
(``monitoring/job.py --lake``, counted at the storage) beside what a ProcessingInput of ``capture/<endpoint>/`` and
``feedback/<endpoint>/`` downloads (every object under them), and the time to read them (the job reads only the
feedback of the ids its window's traffic names; the feedback it leaves unread is counted).
Usage: python benchmarks/bench_monitor.py [--lines 50000] [--feedback 5000] [--retried 0.1] [--repeats 3]
                                          [--spacing 2] [--window 24h]
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from diagnosa.labels import CATEGORIES
from diagnosa.lake import DataLake
from inference.capture import capture_line
from inference.feedback import parse_feedback, read_feedback, store_feedback
from monitoring.quality import QualityThresholds, join_feedback, live_quality
from monitoring.retrain import KINDS, feedback_records
from monitoring.run import parse_duration, parse_window
from monitoring.traffic import Skipped, read_traffic, read_traffic_since

ENDPOINT = "diagnosa"
LINES_PER_OBJECT = 2_000  # a busy endpoint's shipper writes a few objects an hour
START = datetime(2026, 11, 27, tzinfo=timezone.utc)
SYMPTOMS = ["HP:0001945", "HP:0012735", "HP:0002094", "HP:0002315", "HP:0001250", "HP:0002027", "HP:0000988"]
PRIOR = ["I10", "E11", "J45", "N18"]


def patient(rng: random.Random, number: int) -> dict[str, Any]:
    """One patient record as a hospital sends it to /invocations."""
    return {"patient_id": f"P-{number}", "age": rng.randint(1, 95), "sex": rng.choice("FM"),
            "temperature_c": round(rng.uniform(35.5, 40.5), 1), "heart_rate_bpm": rng.randint(50, 140),
            "respiratory_rate_bpm": rng.randint(10, 32), "systolic_bp_mmhg": rng.randint(85, 180),
            "diastolic_bp_mmhg": rng.randint(45, 110), "spo2_pct": rng.randint(84, 100),
            "crp_mg_l": round(rng.uniform(0, 250), 1), "wbc_10e9_l": round(rng.uniform(2, 25), 1),
            "symptoms": rng.sample(SYMPTOMS, rng.randint(0, 3)), "prior_diagnoses": rng.sample(PRIOR, rng.randint(0, 1))}


def answer(rng: random.Random, records: list[dict[str, Any]]) -> bytes:
    predictions = []
    for record in records:
        category = rng.choice(CATEGORIES)
        predictions.append({"patient_id": record["patient_id"], "category": category, "model_version": "7",
                            "probabilities": {category: round(rng.uniform(0.4, 0.99), 3)}})
    return json.dumps({"predictions": predictions}).encode()


def build_lake(root: str, lines: int, feedback: int, retried: float, seed: int = 7,
               spacing: float = 2.0) -> dict[str, int]:
    """The lake of the benchmark under ``root``, one request every ``spacing`` seconds; returns what it holds."""
    rng = random.Random(seed)
    lake = DataLake.from_uri(root)
    requests: list[tuple[str, str, bytes, bytes, int]] = []  # event id, inference id, body, answer, patients
    retried_ids: list[str] = []
    objects: dict[str, list[bytes]] = {}
    patients = 0
    for i in range(lines):
        when = START + timedelta(seconds=spacing * i)
        if requests and rng.random() < retried:  # the client timed out and sent a recent request again
            _, inference_id, body, output, count = requests[-rng.randint(1, min(50, len(requests)))]
            retried_ids.append(next(r[0] for r in reversed(requests) if r[1] == inference_id))
        else:
            count = rng.choice((2, 3)) if rng.random() < 0.1 else 1
            records = [patient(rng, patients + n) for n in range(count)]
            patients += count
            body = json.dumps({"instances": records} if count > 1 else records[0]).encode()
            output, inference_id = answer(rng, records), f"visit-{i}"
        event_id = f"ev-{i:08d}"  # names no time, as SageMaker's capture ids: all feedback is read
        line = capture_line(event_id, inference_id, body, "application/json", output, "application/json", when)
        requests.append((event_id, inference_id, body, output, count))
        key = f"capture/{ENDPOINT}/AllTraffic/{when:%Y/%m/%d/%H}/{i // LINES_PER_OBJECT:06d}.jsonl"
        objects.setdefault(key, []).append(json.dumps(line).encode())
    for key, encoded in objects.items():
        lake.put_bytes(key, b"\n".join(encoded) + b"\n")
    stored = 0
    for n in range(feedback):
        kind = rng.random()
        if kind < 0.05:
            event_id, row = f"never-captured-{n}", None
        elif kind < 0.10 and retried_ids:
            event_id, row = rng.choice(retried_ids), None  # feedback on the copy the client never got
        else:
            event_id, _, _, _, count = rng.choice(requests)
            row = rng.randrange(count) if count > 1 else None
        body: dict[str, Any] = {"event_id": event_id, "diagnosis": rng.choice(CATEGORIES)}
        if row is not None:
            body["event_row"] = row
        if rng.random() < 0.1:
            body["disease_id"] = rng.choice(("ORPHA:558", "ORPHA:79318", "OMIM:154700"))
        store_feedback(lake, ENDPOINT, parse_feedback(body), now=START + timedelta(seconds=spacing * lines + n))
        stored += 1
    return {"lines": lines, "objects": len(objects), "feedback": stored, "end": int((START + timedelta(
        seconds=spacing * lines)).timestamp())}


class CountingStorage:
    """The lake's storage, counting what is read from it (what an S3 lake would serve the job)."""

    def __init__(self, storage: Any) -> None:
        self.storage, self.objects, self.bytes, self.listings = storage, 0, 0, 0
        self.uri = storage.uri

    def get_bytes(self, key: str) -> bytes:
        data = self.storage.get_bytes(key)
        self.objects, self.bytes = self.objects + 1, self.bytes + len(data)
        return data

    def list(self, prefix: str = "") -> list[str]:
        self.listings += 1
        return self.storage.list(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


def window_io(root: str, window: str, end: datetime, lag: timedelta = timedelta(0)) -> dict[str, Any]:
    """What one monitoring job over the ``window`` ending at ``end`` reads (the job's own reads: read_traffic (or
    read_traffic_since, with a feedback ``lag``) and read_feedback, as run_monitor calls them), against what a
    ProcessingInput of the prefixes downloads."""
    lake = DataLake.from_uri(root)
    prefixes = [f"capture/{ENDPOINT}/", f"feedback/{ENDPOINT}/"]
    everything = [lake.storage.root / key for prefix in prefixes for key in lake.list(prefix)]
    counting = CountingStorage(lake.storage)
    start, _ = parse_window(last=window, now=end)
    assert start is not None
    began = time.perf_counter()
    if lag:
        traffic, judged = read_traffic_since(DataLake(counting), ENDPOINT, start, start - lag, end, KINDS,
                                             model_version="7")
    else:
        traffic = judged = read_traffic(DataLake(counting), ENDPOINT, start, end, KINDS, model_version="7")
    feedback = read_feedback(DataLake(counting), ENDPOINT, (start - lag, end), ids=judged.feedback_ids())
    seconds = time.perf_counter() - began
    return {"objects": counting.objects, "bytes": counting.bytes, "listings": counting.listings, "seconds": seconds,
            "all_objects": len(everything), "all_bytes": sum(path.stat().st_size for path in everything),
            "patients": len(traffic.rows), "judged": len(judged.rows), "feedback": feedback.records,
            "not_named": feedback.not_named}


def measure(path: str, root: str, repeats: int) -> dict[str, Any]:
    """Median wall time of ``path`` over ``repeats`` runs in this process, and its peak RSS (MiB)."""
    lake = DataLake.from_uri(root)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary: dict[str, Any] = {}

    def monitor() -> None:
        traffic = read_traffic(lake, ENDPOINT, None, None, KINDS, model_version="7")
        skipped = Skipped()
        joined = join_feedback(traffic.rows, read_feedback(lake, ENDPOINT).latest, skipped, CATEGORIES,
                               traffic.other_models, traffic.retried)
        live_quality(joined, QualityThresholds())
        summary.update(patients=len(traffic.rows), joined=len(joined), skipped=skipped.total)

    def retrain() -> None:
        records, _labs, skipped = feedback_records(lake, ENDPOINT)
        summary.update(records=len(records), skipped=skipped.total)

    run = {"monitor": monitor, "retrain": retrain}[path]
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"median_s": statistics.median(times), "peak_mib": peak, "imports_mib": before, **summary}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--feedback", type=int, default=5_000)
    parser.add_argument("--retried", type=float, default=0.1, help="fraction of lines that are a retried request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spacing", type=float, default=2.0, help="seconds between two captured requests")
    parser.add_argument("--window", help="also: what one monitoring job over this last window (24h) reads")
    parser.add_argument("--feedback-lag", help="and what it reads with this feedback lag (7d: the stack's default)")
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "LAKE"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.repeats)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as root:
        began = time.perf_counter()
        built = build_lake(root, args.lines, args.feedback, args.retried, spacing=args.spacing)
        end = datetime.fromtimestamp(built["end"], timezone.utc)
        print(f"lake: {built['lines']} capture lines in {built['objects']} objects, {built['feedback']} feedback, "
              f"{(end - START).total_seconds() / 86400:.1f} days of traffic "
              f"({time.perf_counter() - began:.1f} s to write)\n")
        if args.window:
            print(f"| one job over the last {args.window} | objects | MiB | listings | s | patients (drift) | "
                  "patients (quality) | feedback | feedback not read |")
            print("|---|---|---|---|---|---|---|---|---|")
            lags = [("reads the lake itself (--lake)", timedelta(0))] + (
                [(f"and --feedback-lag {args.feedback_lag}", parse_duration(args.feedback_lag, "--feedback-lag"))]
                if args.feedback_lag else [])
            for what, lag in lags:
                io = window_io(root, args.window, end, lag)
                print(f"| {what} | {io['objects']} | {io['bytes'] / 2**20:.1f} | {io['listings']} "
                      f"| {io['seconds']:.2f} | {io['patients']} | {io['judged']} | {io['feedback']} | "
                      f"{io['not_named']} |")
            print(f"| ProcessingInput of the prefixes (downloaded) | {io['all_objects']} | "
                  f"{io['all_bytes'] / 2**20:.1f} | | | | | | |\n", flush=True)
        print("| path | lines | feedback | median s | peak RSS MiB | RSS after imports MiB | result |")
        print("|---|---|---|---|---|---|---|")
        for path in ("monitor", "retrain"):
            # A fresh process per path: ru_maxrss only grows, so one process would report the larger path's twice.
            out = subprocess.run([sys.executable, __file__, "--measure", path, root, "--repeats", str(args.repeats)],
                                 check=True, capture_output=True, text=True).stdout
            found = json.loads(out.strip().splitlines()[-1])
            result = ", ".join(f"{k} {v}" for k, v in found.items() if k not in ("median_s", "peak_mib", "imports_mib"))
            print(f"| {path} | {args.lines} | {args.feedback} | {found['median_s']:.2f} | {found['peak_mib']:.0f} | "
                  f"{found['imports_mib']:.0f} | {result} |", flush=True)


if __name__ == "__main__":
    main()
