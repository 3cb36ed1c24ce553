"""Benchmark: generate + ingest wall time and peak memory, through the real CLI, per cohort size.

Each command runs in its own process so peak RSS is that command's own. Prints a Markdown table.
Target (issue 2): 1M patients generated and ingested in under 2 minutes and under 4 GiB.
Usage: python benchmarks/bench_data.py [--sizes 20000,100000,1000000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, resource, sys, time
from diagnosa.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["code"] != 0:
        raise SystemExit(f"diagnosa {' '.join(argv)} failed")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size below 1M (1M runs once)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print("| patients | generate s (median) | ingest s (median) | total s | peak MiB | runs |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        runs = 1 if size >= 1_000_000 else args.repeats
        gen, ing, peak = [], [], []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as ws:
                g = measure("--workspace", ws, "data", "generate", "--patients", str(size))
                i = measure("--workspace", ws, "data", "ingest")
            gen.append(g["seconds"])
            ing.append(i["seconds"])
            peak.append(max(g["peak_mib"], i["peak_mib"]))
        g, i = statistics.median(gen), statistics.median(ing)
        print(f"| {size:,} | {g:.1f} | {i:.1f} | {g + i:.1f} | {max(peak):,.0f} | {runs} |", flush=True)


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"benchmark took {time.perf_counter() - started:.0f} s")
