"""Wall time of `diagnosa run --local` per step, for the default cohort and a larger one.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_pipeline.py [--patients 20000 100000] [--repeat 1]

Each size gets a fresh workspace: the cohort is generated and ingested first (not timed here;
benchmarks/bench_data.py measures that), then the full pipeline definition runs with the local
executor exactly as `make run` runs it (three candidate families, approval → local endpoint).
Prints each step's duration and the end-to-end time, and the median over repeats. Target from
issue 5: under 2 minutes end to end for the default cohort on a 2-core machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_once(patients: int, seed: int) -> tuple[float, dict[str, float]]:
    from diagnosa.data.schema import BUILTIN_DATASET
    from diagnosa.lake import DataLake
    from diagnosa.services import LOCAL_BUCKET, latest_input, local_definition
    from pipelines.executor import open_local
    from pipelines.local_endpoints import LocalEndpoints
    from pipelines.local_jobs import LakeMapping

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as folder:
        workspace = Path(folder)
        cli = [sys.executable, "-m", "diagnosa.cli", "--workspace", str(workspace), "data"]
        subprocess.run([*cli, "generate", "--patients", str(patients), "--seed", str(seed)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*cli, "ingest", "--batch", f"cohort-n{patients}-s{seed}"], check=True, stdout=subprocess.DEVNULL)
        lake = DataLake.from_uri(str(workspace / "lake"))
        endpoints = LocalEndpoints(workspace, LakeMapping(LOCAL_BUCKET, lake), port=0)
        executor = open_local(workspace, lake, LOCAL_BUCKET, endpoints=endpoints, progress=lambda line: None)
        started = time.perf_counter()
        definition = local_definition(lake)
        build = time.perf_counter() - started
        record = executor.start(definition, {
            "InputDataUri": latest_input(lake, BUILTIN_DATASET, LOCAL_BUCKET),
            "ModelApprovalStatus": "Approved"})
        total = time.perf_counter() - started
        for endpoint in endpoints.list():
            endpoints.stop(endpoint["EndpointName"])
        if record.status != "Succeeded":
            print(f"  execution {record.status}: {record.data.get('FailureReason')}")
        steps = {"(definition build)": build}
        steps |= {name: step.get("DurationSeconds", 0.0) for name, step in
                  sorted(record.steps.items(), key=lambda item: item[1]["StartTime"])}
        return total, steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    for patients in args.patients:
        totals = []
        for attempt in range(args.repeat):
            total, steps = run_once(patients, args.seed)
            totals.append(total)
            print(f"\n{patients:,} patients, run {attempt + 1}: {total:.1f} s end to end")
            for name, seconds in steps.items():
                print(f"  {name:<28} {seconds:8.1f} s")
        print(f"{patients:,} patients: median {statistics.median(totals):.1f} s over {len(totals)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
