"""Fuzz and load: hostile requests against the local endpoint, counted by status (loopback only, bounded).

Starts ``inference.server.EndpointServer`` on a trained model (``--model``) on 127.0.0.1 and sends
``--requests`` (default 10,000) hostile requests, generated from a fixed seed, spread over categories
(lone UTF-16 surrogates in values and keys, deep nesting, junk arrays up to the 6 MB limit, wrong
types and impossible values, bad options, malformed JSON and CSV, odd content types and Accept
headers, non-UTF-8 bytes) and over the routes (``/invocations``, the runtime route, ``/feedback``).
Prints the count per category and status; **any 5xx is a failure** (exit 1).

Then the load check of issue 15: while one client sends 6 MB junk arrays back to back, another sends
single-patient requests; prints the junk replies' size and time and the single-patient p50/p99.

Usage: python benchmarks/fuzz_serving.py --model MODEL_DIR [--requests 10000] [--seed 0] [--seconds 10] [--workers N]
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

JSON, CSV = "application/json", "text/csv"
ROUTES = ("/invocations", "/endpoints/diagnosa/invocations", "/feedback")
PATIENT = {"patient_id": "F-1", "age": 67, "sex": "M", "temperature_c": 38.9, "spo2_pct": 90,
           "symptoms": ["HP:0001945", "HP:0012735"]}
FIELDS = ("age", "sex", "temperature_c", "spo2_pct", "symptoms", "prior_diagnoses", "crp_mg_l", "patient_id")


def _surrogate(rng: random.Random) -> str:
    return f"\\u{rng.randint(0xD800, 0xDFFF):04x}"


def _value(rng: random.Random) -> str:
    """A JSON value as text: ordinary, odd, or hostile."""
    return rng.choice([
        lambda: json.dumps(rng.choice([None, True, 0, -1, 1e308, 50, "x", "", [], {}, "HP:0001945"])),
        lambda: '"' + "".join(rng.choice(["a", "é", _surrogate(rng), "\\ud83d\\ude00"]) for _ in range(3)) + '"',
        lambda: "1" + "0" * rng.randint(20, 5000),
        lambda: json.dumps(["HP:0001945", "HP:9999999", "HP:1", rng.random()][: rng.randint(0, 4)]),
    ])()


def _record(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 5)):
        key = rng.choice([*FIELDS, "unknown", "", _surrogate(rng)])
        parts.append('"' + key + '": ' + _value(rng))
    return "{" + ", ".join(parts) + "}"


CATEGORIES: dict[str, Callable[[random.Random], tuple[bytes, str]]] = {
    "surrogate value": lambda r: (('{"patient_id": "' + _surrogate(r) + '", "age": 50}').encode(), JSON),
    "surrogate key": lambda r: (("{\"" + _surrogate(r) + '": 1, "age": 50}').encode(), JSON),
    "deep nesting": lambda r: ((r.choice("[{") * r.randint(1_000, 200_000)).encode(), JSON),
    "junk array": lambda r: (("[" + ",".join([r.choice(["1", "null", '"x"', "[]", "{}"])]
                                             * r.choice([10, 1_000, 20_000, 2_500_000])) + "]").encode(), JSON),
    "random records": lambda r: (("[" + ",".join(_record(r) for _ in range(r.randint(1, 5))) + "]").encode(), JSON),
    "bad options": lambda r: (('{"instances": [' + json.dumps(PATIENT) + '], "top_k": ' + _value(r)
                               + ', "differential": ' + _value(r) + "}").encode(), JSON),
    "malformed json": lambda r: (r.choice([b"{", b"[1,", b'{"age": }', b"nul", b"\"", b"{'a': 1}", b""]), JSON),
    "non-utf8": lambda r: (bytes(r.randrange(128, 256) for _ in range(r.randint(1, 64))), JSON),
    "csv junk": lambda r: ((",".join(r.choice([*FIELDS, "x", ""]) for _ in range(4)) + "\n"
                            + ",".join(r.choice(["1", "abc", "1e999", "", "HP:1;;", "\"unterminated"])
                                       for _ in range(4))).encode(), CSV),
    "odd content type": lambda r: (json.dumps(PATIENT).encode(), r.choice(["text/plain", "", "*/*", "image/png",
                                                                          "application/json; charset=latin-1"])),
}


def _post(conn: http.client.HTTPConnection, path: str, body: bytes, content_type: str,
          accept: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type} if content_type else {}
    if accept:
        headers["Accept"] = accept
    conn.request("POST", path, body, headers)
    response = conn.getresponse()
    return response.status, response.read()


def fuzz(port: int, requests: int, seed: int) -> Counter[tuple[str, int]]:
    rng = random.Random(seed)
    counts: Counter[tuple[str, int]] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    names = list(CATEGORIES)
    for i in range(requests):
        name = names[i % len(names)]
        body, content_type = CATEGORIES[name](rng)
        path = ROUTES[rng.randrange(len(ROUTES))]
        accept = rng.choice([None, JSON, CSV, "application/xml", "*/*"])
        try:
            status, _ = _post(conn, path, body, content_type, accept)
        except (ConnectionError, http.client.HTTPException):  # the server closed after a refusal: reconnect
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status = -1
        counts[(name, status)] += 1
    conn.close()
    return counts


CLIENT = r"""
import http.client, json, sys, time
mode, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
body = (b"[" + b"1," * (3 * 1024 * 1024 - 2) + b"1]") if mode == "junk" else sys.argv[4].encode()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
times, sizes, statuses = [], [], []
end = time.perf_counter() + seconds
while time.perf_counter() < end:
    started = time.perf_counter()
    conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    reply = response.read()
    times.append(time.perf_counter() - started)
    sizes.append(len(reply))
    statuses.append(response.status)
print(json.dumps({"times": times, "sizes": sizes, "statuses": statuses}))
"""


def load_check(port: int, seconds: float) -> dict[str, float]:
    """6 MB junk from one client while another sends single patients: two processes, so neither client
    competes with the server for its interpreter lock."""
    def client(mode: str, duration: float) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", CLIENT, mode, str(port), str(duration), json.dumps(PATIENT)],
                                stdout=subprocess.PIPE, text=True)

    junk = client("junk", seconds + 1.0)  # junk runs for the whole of the patient client's time
    time.sleep(0.5)
    patient = client("patient", seconds)
    junk_out, patient_out = (json.loads(p.communicate(timeout=seconds + 120)[0]) for p in (junk, patient))
    assert set(patient_out["statuses"]) == {200}, Counter(patient_out["statuses"])
    latencies = sorted(patient_out["times"])
    return {"junk requests": len(junk_out["times"]), "junk statuses": dict(Counter(junk_out["statuses"])),
            "junk reply bytes (max)": max(junk_out["sizes"] or [0]),
            "junk seconds (median)": sorted(junk_out["times"])[len(junk_out["times"]) // 2],
            "junk seconds (max)": max(junk_out["times"] or [0.0]), "patient requests": len(latencies),
            "patient p50 ms": 1e3 * latencies[len(latencies) // 2],
            "patient p99 ms": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


# Small bodies whose work grew with more than their size (a probe's finds, fixed): each is parsed in this process,
# its peak allocation traced. Body → (content type, what it does).
AMPLIFIERS: dict[str, Callable[[], tuple[bytes, str]]] = {
    "a surrogate beside a 100,000-char key over 20,000 items (140 KB)": lambda: (
        b'{"z": "\\ud800", "' + b"A" * 100_000 + b'": [' + b",".join([b"0"] * 20_000) + b"]}", JSON),
    "CSV: 100,000 unknown columns x 56 rows (6 MB)": lambda: (
        (",".join(f"c{i}" for i in range(100_000)) + "\n" + ("," * 99_999 + "x\n") * 56).encode(), CSV),
    "JSON: 10,000 records x 60 unknown keys (4.7 MB)": lambda: (
        json.dumps([{f"k{j}": 1 for j in range(60)} for _ in range(10_000)]).encode(), JSON),
}


def amplifiers(model: str) -> list[tuple[str, int, float, float, str]]:
    """Each amplifying body parsed in process: (name, bytes, seconds, peak MiB traced, the refusal's first line)."""
    import tracemalloc

    from inference.handler import RequestError, load_service, parse_request

    service = load_service(model)
    rows = []
    for name, make in AMPLIFIERS.items():
        body, content_type = make()
        tracemalloc.start()
        started = time.perf_counter()
        try:
            parse_request(body, content_type, service)
            outcome = "accepted"
        except RequestError as err:
            reply = json.dumps(err.body())
            outcome = f"{err.status} {err.message} ({len(reply):,} B reply)"
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rows.append((name, len(body), seconds, peak, outcome))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model folder")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the load check")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes for the fuzz run (default: as `diagnosa serve`, one per core)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.seconds <= 0 or (args.workers is not None and args.workers < 0):
        parser.error("--requests must be >= 1, --seconds > 0 and --workers >= 0")
    if not Path(args.model).is_dir():
        parser.error(f"--model {args.model} is not a folder")
    from inference.handler import limit_process_threads
    from inference.server import EndpointServer
    from inference.workers import default_workers

    limit_process_threads()  # as `diagnosa serve` does
    print("| amplifying body (parsed in process) | bytes | seconds | peak MiB | outcome |\n|---|---:|---:|---:|---|")
    for name, size, seconds, peak, outcome in amplifiers(args.model):
        print(f"| {name} | {size:,} | {seconds:.2f} | {peak:,.0f} | {outcome} |")
    print()
    workers = args.workers if args.workers is not None else default_workers()
    loads: dict[str, dict[str, Any]] = {}
    counts: Counter[tuple[str, int]] = Counter()
    fuzz_seconds = 0.0
    # The load check side by side: scoring in the server process, then in worker processes (serve's default).
    for setting in dict.fromkeys((0, workers)):
        endpoint = EndpointServer(args.model, endpoint_name="diagnosa", port=0, workers=setting).start()
        endpoint.wait_until_ready(120)
        try:
            if setting == workers:
                started = time.perf_counter()
                counts = fuzz(endpoint.port, args.requests, args.seed)
                fuzz_seconds = time.perf_counter() - started
            loads[f"workers={setting}"] = load_check(endpoint.port, args.seconds)
        finally:
            endpoint.stop()
    statuses = sorted({s for _, s in counts})
    print(f"{sum(counts.values()):,} hostile requests in {fuzz_seconds:.1f} s (seed {args.seed}, "
          f"{workers} worker(s))\n")
    print("| category | " + " | ".join(str(s) for s in statuses) + " |")
    print("|---|" + "---:|" * len(statuses))
    for name in CATEGORIES:
        print(f"| {name} | " + " | ".join(str(counts[(name, s)]) for s in statuses) + " |")
    fives = sum(n for (_, s), n in counts.items() if s >= 500 or s < 0)
    print(f"\n5xx (or dropped connections): {fives}\n")
    print("| load check (one junk client, one single-patient client) | " + " | ".join(loads) + " |")
    print("|---|" + "---:|" * len(loads))
    for key in next(iter(loads.values())):
        cells = [loads[name][key] for name in loads]
        print(f"| {key} | " + " | ".join(f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int)
                                         else str(v) for v in cells) + " |")
    return 1 if fives else 0


if __name__ == "__main__":
    sys.exit(main())
