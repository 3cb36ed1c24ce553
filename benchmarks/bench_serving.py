"""Benchmark: the local endpoint against a naive baseline server, side by side in one run.

Load comes from a separate process over loopback (keep-alive HTTP/1.1 connections, bounded in
time). For single-patient JSON requests and 100-patient batches it prints p50/p99 latency and
throughput for Diagnosa's endpoint (validation in plain Python, the compiled feature path, worker
processes) and for a naive server (pandas parses the JSON, then the model's ``predict_proba``; in a
process of its own), and the throughput ratio. The two servers take turns, ``--rounds`` times per request
size, with the same load program and bodies; the figures are the medians over the rounds (a shared
machine's load changes within a run), and the machine's load average is printed before and after.
Targets: single-patient p50 < 5 ms, p99 < 20 ms and >= 3x the baseline's throughput (issue 4);
100-patient batches >= 3x the baseline (issue 15).

The baseline serves the model as saved, with its own math-library threads (XGBoost's n_jobs=-1: all
cores); ``--baseline-threads 1`` gives it one thread per request, as Diagnosa's workers have.

Usage: python benchmarks/bench_serving.py --model MODEL_DIR [--seconds 8] [--rounds 3] [--connections 2]
       [--workers N] [--baseline-threads N]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOAD = r"""
import http.client, json, sys, threading, time
host, port, path, body_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
seconds, connections = float(sys.argv[5]), int(sys.argv[6])
body = open(body_file, "rb").read()
latencies, errors = [], [0]
lock = threading.Lock()
def worker():
    conn = http.client.HTTPConnection(host, port, timeout=30)
    mine, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        conn.request("POST", path, body, {"Content-Type": "application/json", "Accept": "application/json"})
        response = conn.getresponse(); response.read()
        mine.append(time.perf_counter() - start)
        if response.status != 200:
            errors[0] += 1
    with lock:
        latencies.extend(mine)
threads = [threading.Thread(target=worker) for _ in range(connections)]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps({"latencies": latencies, "errors": errors[0], "seconds": seconds}))
"""

PATIENT = {"age": 67, "sex": "M", "temperature_c": 38.9, "heart_rate_bpm": 112, "respiratory_rate_bpm": 26,
           "systolic_bp_mmhg": 104, "diastolic_bp_mmhg": 62, "spo2_pct": 90, "crp_mg_l": 180.0, "wbc_10e9_l": 16.2,
           "symptoms": ["HP:0001945", "HP:0012735", "HP:0002094"], "prior_diagnoses": ["I10"]}


def cohort_batch(n: int, seed: int) -> list[dict]:
    """``n`` patients of a generated cohort as an application sends them: the clinical record with its lab
    panel (if one was drawn), the model's input fields only, missing values left out."""
    import numpy as np
    import pandas as pd

    from diagnosa.data.cohort import CohortConfig, generate
    from diagnosa.data.schema import cohort_schema

    cohort = generate(CohortConfig(patients=max(n, 1000), seed=seed, defect_rate=0.0))
    rows = cohort.records.merge(cohort.labs, on="patient_id", how="left").sample(n, random_state=seed)
    fields = [f.name for f in cohort_schema().fields if f.role == "feature"]
    batch = []
    for row in rows[fields].to_dict("records"):
        patient = {}
        for name, value in row.items():
            if isinstance(value, (list, tuple, np.ndarray)):
                patient[name] = [str(v) for v in value]
            elif not pd.isna(value):
                patient[name] = value.item() if isinstance(value, np.generic) else value
        batch.append(patient)
    return batch


def baseline_server(model_dir: str, threads: int | None = None) -> ThreadingHTTPServer:
    """What a first version usually looks like: pandas parses the body, then predict_proba. ``threads``: the
    classifier's n_jobs (None: as saved)."""
    import pandas as pd

    from diagnosa.model import DiagnosaModel

    model = DiagnosaModel.load(model_dir)
    if threads is not None:
        classifier = model.pipeline.steps[-1][1]
        classifier.set_params(**{k: threads for k in classifier.get_params(deep=True)
                                 if k == "n_jobs" or k.endswith("__n_jobs")})
    columns = [f["name"] for f in model.metadata["input_schema"]] if isinstance(model.metadata["input_schema"], list) \
        else list(model.metadata["input_schema"])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as the real server: otherwise delayed ACKs add ~40 ms per request

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            data = json.loads(body)
            frame = pd.json_normalize(data.get("instances", data) if isinstance(data, dict) else data)
            frame = frame.reindex(columns=columns)
            proba = model.predict_proba(frame)
            out = json.dumps({"predictions": [dict(zip(model.labels, map(float, row))) for row in proba]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def baseline_process(model_dir: str, threads: int | None) -> tuple[subprocess.Popen, int]:
    """The baseline in a process of its own, as it would be deployed (and as Diagnosa's endpoint is, apart from
    this one): (the process, its port)."""
    command = [sys.executable, __file__, "--model", model_dir, "--serve-baseline"]
    if threads is not None:
        command += ["--baseline-threads", str(threads)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout else ""
    if not line.strip().isdigit():
        process.kill()
        raise RuntimeError(f"the baseline server did not start (it printed {line!r})")
    return process, int(line)


def load(port: int, path: str, body: bytes, seconds: float, connections: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as body_file:
        body_file.write(body)
        body_file.flush()
        out = subprocess.run([sys.executable, "-c", LOAD, "127.0.0.1", str(port), path, body_file.name, str(seconds),
                              str(connections)], capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    lat = sorted(result["latencies"])
    n = len(lat)
    return {"requests": n, "errors": result["errors"], "p50_ms": 1000 * lat[n // 2],
            "p99_ms": 1000 * lat[min(n - 1, int(n * 0.99))], "rps": n / seconds}


def main() -> None:
    from inference.server import EndpointServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a trained model folder")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per server and round")
    parser.add_argument("--rounds", type=int, default=3, help="turns each server takes per request size")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None,
                        help="Diagnosa's worker processes (default: as `diagnosa serve`, one per core; 0: in process)")
    parser.add_argument("--baseline-threads", type=int, default=None,
                        help="the baseline classifier's math threads (default: the model's own)")
    parser.add_argument("--seed", type=int, default=8, help="seed of the cohort the 100-patient body is drawn from")
    parser.add_argument("--repeated", action="store_true",
                        help="the 100-patient body repeats one patient (the figures before 2026-12-01's second run)")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)  # the baseline's process
    args = parser.parse_args()
    if args.serve_baseline:
        server = baseline_server(args.model, args.baseline_threads)
        print(server.server_address[1], flush=True)
        threading.Event().wait()  # until the benchmark ends this process
    if args.seconds <= 0 or args.rounds < 1 or args.connections < 1:
        parser.error("--seconds must be > 0, --rounds and --connections >= 1")
    from inference.handler import freeze_loaded, limit_process_threads
    from inference.workers import default_workers

    workers = args.workers if args.workers is not None else default_workers()
    limit_process_threads()  # the endpoint's process as `diagnosa serve` runs it
    endpoint = EndpointServer(args.model, port=0, capture=None, workers=workers)
    endpoint.start()
    endpoint.wait_until_ready(60)
    freeze_loaded()
    baseline, baseline_port = baseline_process(args.model, args.baseline_threads)
    servers = {"diagnosa": endpoint.port, "naive baseline": baseline_port}
    batch = [PATIENT] * 100 if args.repeated else cohort_batch(100, args.seed)
    cases = {"1 patient": json.dumps(PATIENT).encode(), "100 patients": json.dumps({"instances": batch}).encode()}
    distinct = len({tuple(patient.get("symptoms", ())) for patient in batch})
    print(f"100-patient body: {'one patient 100 times' if args.repeated else f'100 patients of a cohort (seed {args.seed})'}"
          f", {distinct} distinct symptom lists")
    threads = "the model's own" if args.baseline_threads is None else str(args.baseline_threads)
    print(f"{args.connections} connections, {args.rounds} rounds of {args.seconds:g} s per server and request size, "
          f"load from a separate process; Diagnosa with {workers} worker process(es), the baseline with {threads} "
          f"classifier threads; load average {load_average()}\n")
    for port in servers.values():  # one-off costs (the baseline loads the HPO ontology on its first request)
        for body in cases.values():
            warm_up(port, body)
    print("| request | server | p50 ms | p99 ms | requests/s | errors |\n|---|---|---:|---:|---:|---:|")
    for name, body in cases.items():
        rounds: dict[str, list[dict]] = {label: [] for label in servers}
        for _ in range(args.rounds):
            for label, port in servers.items():
                rounds[label].append(load(port, "/invocations", body, args.seconds, args.connections))
        for label, results in rounds.items():
            p50, p99, rps = (statistics.median(r[key] for r in results) for key in ("p50_ms", "p99_ms", "rps"))
            print(f"| {name} | {label} | {p50:.2f} | {p99:.2f} | {rps:.0f} | {sum(r['errors'] for r in results)} |")
        ratios = [ours["rps"] / naive["rps"] for ours, naive in zip(rounds["diagnosa"], rounds["naive baseline"])]
        print(f"| {name} | **ratio** | | | **{statistics.median(ratios):.1f}x** | rounds: "
              f"{', '.join(f'{r:.1f}' for r in ratios)} |", flush=True)
    print(f"\nload average {load_average()}")
    endpoint.stop()
    baseline.terminate()
    baseline.wait()


def warm_up(port: int, body: bytes) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"the server on port {port} answered {response.status} to a warm-up request")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
