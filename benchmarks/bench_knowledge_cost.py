"""Benchmark: what the knowledge-base similarity block costs a served prediction (issue 14's bound: 1.5x).

Two champions of the same cohort, split and family that differ only in
``FeatureParams.phenotype_similarity`` (the features before issue 14, and the default), trained by the
pipeline's own job functions (``bench_real.diagnosa_inprocess``), answer the same requests through the
endpoint's handler (``inference.handler.invoke``, in process, one thread), taking turns request by
request so that both see the same machine, and through two local endpoints (``inference.server``, as
``diagnosa serve`` runs them), under load in turns as ``bench_serving.py`` loads one. Prints the medians per
request size and their ratio.

    python benchmarks/bench_knowledge_cost.py [--patients 20000] [--family xgboost] [--requests 400] [--rounds 5]
                                              [--seconds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real import cohort_table, diagnosa_inprocess  # noqa: E402  (also puts the project on sys.path)
from bench_serving import PATIENT, cohort_batch, load, warm_up  # noqa: E402

CONFIGS = {"without the similarity block": False, "with it (the default)": True}


WORKERS, CONNECTIONS = 2, 2


def endpoint_p50(model_dirs: list[str], batch: list[dict], rounds: int, seconds: float) -> dict[str, list[float]]:
    """Per request size, each model's endpoint p50 (ms, median over rounds): one local endpoint per model, loaded in
    turns."""
    from inference.server import EndpointServer

    endpoints = [EndpointServer(model_dir, port=0, capture=None, workers=WORKERS) for model_dir in model_dirs]
    try:
        for endpoint in endpoints:
            endpoint.start()
            endpoint.wait_until_ready(120)
        cases = {"1 patient": json.dumps(PATIENT).encode(), "100 patients": json.dumps({"instances": batch}).encode()}
        out = {}
        for size, body in cases.items():
            p50s: list[list[float]] = [[] for _ in endpoints]
            for endpoint in endpoints:
                warm_up(endpoint.port, body)
            for _ in range(rounds):
                for i, endpoint in enumerate(endpoints):
                    p50s[i].append(load(endpoint.port, "/invocations", body, seconds, CONNECTIONS)["p50_ms"])
            out[f"{size} (HTTP)"] = [statistics.median(v) for v in p50s]
        return out
    finally:
        for endpoint in endpoints:
            endpoint.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20_000, help="cohort size (default 20000, as make run)")
    parser.add_argument("--family", default="xgboost", help="the one candidate family trained (default xgboost)")
    parser.add_argument("--requests", type=int, default=400, help="single-patient requests per model and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each round's median is one figure")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds of load per endpoint, request size and round (0: no endpoint figures)")
    args = parser.parse_args(argv)
    from diagnosa.data.cohort import MAX_PATIENTS, MIN_PATIENTS
    from training.models import FAMILIES

    if args.family not in FAMILIES:
        parser.error(f"unknown family {args.family!r} (known: {', '.join(FAMILIES)})")
    if not MIN_PATIENTS <= args.patients <= MAX_PATIENTS:
        parser.error(f"--patients must be between {MIN_PATIENTS:,} and {MAX_PATIENTS:,}, got {args.patients}")
    if args.requests < 1 or args.rounds < 1 or args.seconds < 0:
        parser.error("--requests and --rounds must be at least 1, --seconds at least 0")

    from inference.handler import invoke, limit_threads, load_service
    from processing.features import FeatureParams
    from processing.preprocess import PreprocessParams

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        frame, manifest = cohort_table(args.patients, work)
        services, folders = {}, {}
        for name, similarity in CONFIGS.items():
            params = PreprocessParams(features=FeatureParams(phenotype_similarity=similarity), seed=0)
            folder = work / ("knowledge" if similarity else "plain")
            diagnosa_inprocess(frame, manifest, 0, [args.family], folder, params)
            folders[name] = str(folder / "champion")
            services[name] = load_service(folders[name])
            limit_threads(services[name].model, 1)
        patients = cohort_batch(max(args.requests, 100), seed=8)
        bodies = {"1 patient": [json.dumps(p) for p in patients[: args.requests]],
                  "100 patients": [json.dumps(patients[:100])] * max(1, args.requests // 20)}
        for service in services.values():  # warm-up: caches, lazy imports
            for body in bodies["1 patient"][:50]:
                invoke(service, body, "application/json", None)
        medians: dict[tuple[str, str], list[float]] = {(s, n): [] for s in bodies for n in services}
        for _ in range(args.rounds):
            for size, requests in bodies.items():
                times: dict[str, list[float]] = {name: [] for name in services}
                for body in requests:
                    for name, service in services.items():  # turns, request by request
                        t0 = time.perf_counter()
                        invoke(service, body, "application/json", None)
                        times[name].append(time.perf_counter() - t0)
                for name in services:
                    medians[(size, name)].append(1000 * statistics.median(times[name]))
        endpoint = endpoint_p50(list(folders.values()), patients[:100], args.rounds, args.seconds) if args.seconds else {}
    print(f"# The knowledge block's serving cost: {args.family} champions of a {args.patients:,}-patient cohort "
          f"(seed 0); medians of {args.rounds} rounds\n")
    print("| request | measured | " + " | ".join(f"{name} (ms)" for name in services) + " | ratio |")
    print("|---|---|" + "---:|" * (len(services) + 1))
    rows = [(size, "`invoke` in process, one thread, median", [statistics.median(medians[(size, name)])
                                                               for name in services]) for size in bodies]
    rows += [(size, f"endpoint p50, {WORKERS} workers, {CONNECTIONS} connections", figures)
             for size, figures in endpoint.items()]
    for size, how, figures in rows:
        print(f"| {size} | {how} | " + " | ".join(f"{f:.3f}" for f in figures) + f" | {figures[1] / figures[0]:.2f}x |")
    print(f"\ndone in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
