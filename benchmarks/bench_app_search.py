"""Benchmark: the doctors' app symptom search (app/terms.py), time per query and to build the index.

Target (docs/app.md): well under 10 ms a query, under the app's 250 ms typing pause.

Usage: python benchmarks/bench_app_search.py [--repeat 25]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUERIES = ["fever", "short breath", "abd pain", "seizure", "cough", "hyper", "weight loss", "rash", "a", "ab"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=25, help="times each query is timed")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    from app.terms import build_index

    started = time.perf_counter()
    index = build_index(preferred=["HP:0012735"])
    print(f"index built in {time.perf_counter() - started:.2f} s")
    print("| query | median ms | max ms |\n|---|---:|---:|")
    for query in QUERIES:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            index.search(query)
            times.append(1e3 * (time.perf_counter() - started))
        print(f"| {query!r} | {statistics.median(times):.3f} | {max(times):.3f} |")


if __name__ == "__main__":
    main()
