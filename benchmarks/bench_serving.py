"""Benchmark: the local endpoint against a naive baseline server, side by side in one run.

Load comes from a separate process over loopback (keep-alive HTTP/1.1 connections, bounded in
time). For single-patient JSON requests and 100-patient batches it prints p50/p99 latency and
throughput for Diagnosa's endpoint (validation in plain Python, one DataFrame per request) and for
a naive server (pandas parses the JSON, then ``predict_proba``), and the throughput ratio.
Targets (issue 4): single-patient p50 < 5 ms, p99 < 20 ms, and >= 3x the baseline's throughput.

Usage: python benchmarks/bench_serving.py --model MODEL_DIR [--seconds 10] [--connections 2] [--workers N]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
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


def baseline_server(model_dir: str) -> ThreadingHTTPServer:
    """What a first version usually looks like: pandas parses the body, then predict_proba."""
    import pandas as pd

    from diagnosa.model import DiagnosaModel

    model = DiagnosaModel.load(model_dir)
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


def load(port: int, path: str, body: bytes, seconds: float, connections: int) -> dict:
    body_file = Path("/tmp/diagnosa-bench-body.json")
    body_file.write_bytes(body)
    out = subprocess.run([sys.executable, "-c", LOAD, "127.0.0.1", str(port), path, str(body_file), str(seconds),
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
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None,
                        help="Diagnosa's worker processes (default: as `diagnosa serve`, one per core; 0: in process)")
    args = parser.parse_args()
    from inference.workers import default_workers

    workers = args.workers if args.workers is not None else default_workers()
    endpoint = EndpointServer(args.model, port=0, capture=None, workers=workers)
    endpoint.start()
    endpoint.wait_until_ready(60)
    baseline = baseline_server(args.model)
    cases = {"1 patient": json.dumps(PATIENT).encode(), "100 patients": json.dumps({"instances": [PATIENT] * 100}).encode()}
    print(f"{args.connections} connections, {args.seconds:g} s per cell, load from a separate process; "
          f"Diagnosa with {workers} worker process(es)\n")
    print("| request | server | p50 ms | p99 ms | requests/s | errors |\n|---|---|---:|---:|---:|---:|")
    for name, body in cases.items():
        ours = load(endpoint.port, "/invocations", body, args.seconds, args.connections)
        naive = load(baseline.server_address[1], "/invocations", body, args.seconds, args.connections)
        for label, r in (("diagnosa", ours), ("naive baseline", naive)):
            print(f"| {name} | {label} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | {r['errors']} |")
        print(f"| {name} | **ratio** | | | **{ours['rps'] / naive['rps']:.1f}x** | |", flush=True)
    endpoint.stop()
    baseline.shutdown()


if __name__ == "__main__":
    main()
