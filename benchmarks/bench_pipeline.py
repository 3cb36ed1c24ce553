"""Wall time of `diagnosa run --local` per step, for the default cohort and a larger one.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_pipeline.py [--patients 20000 100000] [--repeat 1]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_pipeline.py --patients 20000 --instances 2

With ``--instances N`` each size runs twice on the same cohort, side by side: on one instance, then with
ProcessingInstanceCount=N and TrainingInstanceCount=N (the Transform step as N processes with a share of
the curated parts each, XGBoost across N processes; docs/pipeline.md, Scale-out), printing each step's
time and each class's test recall of both runs.

Each size gets a fresh workspace: the cohort is generated and ingested first (not timed here;
benchmarks/bench_data.py measures that), then the full pipeline definition runs with the local
executor exactly as `make run` runs it (three candidate families, approval → local endpoint).
Prints each step's duration and the end-to-end time, and the median over repeats. Target from
issue 5: under 2 minutes end to end for the default cohort on a 2-core machine.
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
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_once(patients: int, seed: int, instances: tuple[int, ...] = (1,)) -> list[tuple[float, dict[str, float],
                                                                                        dict[str, Any]]]:
    """For each instance count: end-to-end seconds, seconds per step, and the champion with its test recall per class."""
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
        # No step cache: the runs side by side share steps whose requests are equal (Preprocess, Select).
        executor = open_local(workspace, lake, LOCAL_BUCKET, endpoints=endpoints, progress=lambda line: None,
                              use_cache=False)
        results = []
        for count in instances:
            started = time.perf_counter()
            definition = local_definition(lake)
            build = time.perf_counter() - started
            record = executor.start(definition, {
                "InputDataUri": latest_input(lake, BUILTIN_DATASET, LOCAL_BUCKET),
                "ModelApprovalStatus": "Approved", "ProcessingInstanceCount": str(count),
                "TrainingInstanceCount": str(count)})
            total = time.perf_counter() - started
            for endpoint in endpoints.list():
                if endpoint["EndpointStatus"] == "InService":
                    endpoints.stop(endpoint["EndpointName"])
            if record.status != "Succeeded":
                print(f"  execution {record.status}: {record.data.get('FailureReason')}")
            steps = {"(definition build)": build}
            steps |= {name: step.get("DurationSeconds", 0.0) for name, step in
                      sorted(record.steps.items(), key=lambda item: item[1]["StartTime"])}
            results.append((total, steps, _test_recall(lake, record)))
        return results


def _test_recall(lake: Any, record: Any) -> dict[str, Any]:
    """The champion's family and its test recall per class."""
    from diagnosa.services import LOCAL_BUCKET

    if "Evaluate" not in record.steps or record.steps["Evaluate"]["StepStatus"] != "Succeeded":
        return {}
    uri = record.steps["Evaluate"]["Properties"]["ProcessingOutputConfig"]["Outputs"]["evaluation"]["S3Output"]["S3Uri"]
    report = json.loads(lake.get_bytes(uri.removeprefix(f"s3://{LOCAL_BUCKET}/") + "/evaluation.json"))
    return {"champion": report["model"]["family"],
            **{label: scores["recall"] for label, scores in report["diagnosa"]["per_class"].items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--instances", type=int, default=None,
                        help="also run with this many processing and training instances, beside one instance")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    for patients in args.patients:
        totals = []
        counts = (1,) if args.instances is None else (1, args.instances)
        for attempt in range(args.repeat):
            results = run_once(patients, args.seed, counts)
            totals.append(results[0][0])
            header = "".join(f"{f'{c} instance(s)':>16}" for c in counts)
            print(f"\n{patients:,} patients, run {attempt + 1}: "
                  + ", ".join(f"{r[0]:.1f} s end to end on {c} instance(s)" for c, r in zip(counts, results)))
            print(f"  {'step':<28}{header}")
            for name in results[0][1]:
                print(f"  {name:<28}" + "".join(f"{r[1].get(name, float('nan')):14.1f} s" for r in results))
            print(f"  {'test recall':<28}{header}")
            print(f"  {'champion':<28}" + "".join(f"{r[2].get('champion', '?'):>16}" for r in results))
            for label in [name for name in results[0][2] if name != "champion"]:
                print(f"  {label:<28}" + "".join(f"{r[2].get(label, float('nan')):16.4f}" for r in results))
        print(f"{patients:,} patients: median {statistics.median(totals):.1f} s over {len(totals)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
