"""Benchmark: request-path cost of ``DataCapture.record`` (median and p99 µs per call).

Times only the call a request makes (sampling, serialising into the spool / queueing), on a local
lake in a temp folder, with a realistic one-patient JSON body and answer. Prints a Markdown row.
Usage: python benchmarks/bench_capture.py [--calls 20000] [--fsync]
"""
from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
import time
from datetime import datetime, timezone

from diagnosa.lake import DataLake
from inference.capture import DataCapture

BODY = json.dumps({"instances": [{"patient_id": "P-1", "age": 67, "sex": "M", "temperature_c": 38.9,
                                  "heart_rate_bpm": 112, "respiratory_rate_bpm": 26, "systolic_bp_mmhg": 104,
                                  "diastolic_bp_mmhg": 62, "spo2_pct": 90, "crp_mg_l": 180.0, "wbc_10e9_l": 16.2,
                                  "symptoms": ["HP:0001945", "HP:0012735", "HP:0002094"],
                                  "prior_diagnoses": ["I10"]}]}).encode()
ANSWER = json.dumps({"predictions": [{"patient_id": "P-1", "category": "ENFERMEDAD AGUDA",
                                      "probabilities": {"ENFERMEDAD AGUDA": 0.81, "NO ENFERMO": 0.1}}]}).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--fsync", action="store_true", help="fsync every spooled line (spool versions only)")
    args = parser.parse_args()
    kwargs = {"fsync": True} if args.fsync else {}
    if "max_queue" in inspect.signature(DataCapture).parameters:
        kwargs["max_queue"] = args.calls + 1  # the queue version: never drop while timing
    with tempfile.TemporaryDirectory() as tmp:
        capture = DataCapture(DataLake.from_uri(tmp), "diagnosa", flush_seconds=0.5, **kwargs)
        times = []
        for i in range(args.calls):
            when = datetime.now(timezone.utc)
            start = time.perf_counter_ns()
            capture.record(f"event-{i}", None, BODY, "application/json", ANSWER, "application/json", when)
            times.append((time.perf_counter_ns() - start) / 1000)
        capture.close()
    times.sort()
    print(f"| {'spool' if 'fsync' in inspect.signature(DataCapture).parameters else 'queue'}"
          f"{' + fsync' if args.fsync else ''} | {args.calls} | {statistics.median(times):.1f} | "
          f"{times[int(0.99 * len(times))]:.1f} |")


if __name__ == "__main__":
    main()
