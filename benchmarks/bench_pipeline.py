"""Wall time and peak memory of generate → ingest → `diagnosa run --local`, per step, for a few cohort sizes.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_pipeline.py [--patients 20000 100000 1000000]
        [--repeat 1] [--workspace-root /tmp]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_pipeline.py --patients 20000 --instances 2

With ``--instances N`` each size runs twice on the same cohort, side by side: on one instance, then with
ProcessingInstanceCount=N and TrainingInstanceCount=N (the Transform step as N processes with a share of
the curated parts each, XGBoost across N processes; docs/pipeline.md, Scale-out), printing each step's
time and peak and each class's test recall of both runs.

Each size gets a fresh workspace (step cache empty): the cohort is generated and ingested through the CLI,
then the full pipeline definition runs with the local executor exactly as `make run` runs it (the default
candidate families, four since 2026-12-01, approval → local endpoint). A sampler polls this process and all its children every
0.25 s (psutil): a step's peak is the largest sum of resident memory of the processes working in its run
folder (the job and its children, e.g. the training toolkit and the program it starts); the run's peak is
the largest sum over the whole process tree (this process holds the executor, the lake copies and the
definition build). Prints, per size, each step's seconds and peak MiB, end to end, and the median over
repeats; with two sizes or more, each step's scaling exponent log(t2/t1)/log(n2/n1) between consecutive
sizes. Targets (issue 16): 100k patients end to end <= 120 s, 1M <= 15 min with peak <= 8 GiB, every step's
exponent <= 1.1 between 100k and 1M; the default cohort (20k) under 2 minutes (issue 5).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import psutil

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIB = 2**20


class TreeMemory:
    """Peak resident memory of this process tree, in total and per label (a step's run folder, or a phase)."""

    def __init__(self, every: float = 0.25):
        self.every = every
        self.phase: str | None = None  # label for processes outside a step's run folder (generate, ingest)
        self.peaks: dict[str, int] = defaultdict(int)
        self.total_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def reset(self) -> None:
        """Start new peaks (the next run's), keeping the sampler running."""
        self.peaks, self.total_peak = defaultdict(int), 0

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _label(cwd: str) -> str | None:
        parts = Path(cwd).parts
        if "steps" in parts and parts.index("steps") + 1 < len(parts):
            return parts[parts.index("steps") + 1].split(".attempt")[0]
        return None

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.every):
            total, labelled = 0, defaultdict(int)
            for process in [me, *me.children(recursive=True)]:
                try:
                    rss, cwd, child = process.memory_info().rss, process.cwd(), process.pid != me.pid
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                total += rss
                label = self._label(cwd) or (self.phase if child else None)
                if label:
                    labelled[label] += rss
            self.total_peak = max(self.total_peak, total)
            for label, rss in labelled.items():
                self.peaks[label] = max(self.peaks[label], rss)


class Run(NamedTuple):
    total: float  # seconds end to end (the pipeline)
    steps: dict[str, tuple[float, int]]  # step (and generate, ingest): seconds, peak resident bytes
    peak: int  # the whole process tree's peak
    recall: dict[str, Any]  # the champion and its test recall per class


def run_once(patients: int, seed: int, workspace_root: str | None, instances: tuple[int, ...] = (1,)) -> list[Run]:
    """Generate, ingest, then the pipeline once per instance count on that cohort (no step cache between them)."""
    from diagnosa.data.schema import BUILTIN_DATASET
    from diagnosa.lake import DataLake
    from diagnosa.services import LOCAL_BUCKET, latest_input, local_definition
    from pipelines.executor import open_local
    from pipelines.local_endpoints import LocalEndpoints
    from pipelines.local_jobs import LakeMapping

    prepared: dict[str, tuple[float, int]] = {}
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=workspace_root) as folder, TreeMemory() as memory:
        workspace = Path(folder)
        cli = [sys.executable, "-m", "diagnosa.cli", "--workspace", str(workspace), "data"]
        for phase, args in (("(generate)", ["generate", "--patients", str(patients), "--seed", str(seed)]),
                            ("(ingest)", ["ingest", "--batch", f"cohort-n{patients}-s{seed}"])):
            memory.phase = phase
            started = time.perf_counter()
            subprocess.run([*cli, *args], check=True, stdout=subprocess.DEVNULL)
            prepared[phase] = (time.perf_counter() - started, memory.peaks.get(phase, 0))
        memory.phase = None
        lake = DataLake.from_uri(str(workspace / "lake"))
        endpoints = LocalEndpoints(workspace, LakeMapping(LOCAL_BUCKET, lake), port=0)
        # No step cache: runs side by side would share the steps whose requests are equal (Preprocess, Select).
        executor = open_local(workspace, lake, LOCAL_BUCKET, endpoints=endpoints, progress=lambda line: None,
                              use_cache=False)
        for count in instances:
            memory.reset()
            steps = dict(prepared)
            started = time.perf_counter()
            definition = local_definition(lake)
            steps["(definition build)"] = (time.perf_counter() - started, 0)
            record = executor.start(definition, {
                "InputDataUri": latest_input(lake, BUILTIN_DATASET, LOCAL_BUCKET), "ModelApprovalStatus": "Approved",
                "ProcessingInstanceCount": str(count), "TrainingInstanceCount": str(count)})
            total = time.perf_counter() - started
            for endpoint in endpoints.list():
                if endpoint["EndpointStatus"] == "InService":
                    endpoints.stop(endpoint["EndpointName"])
            if record.status != "Succeeded":
                print(f"  execution {record.status}: {record.data.get('FailureReason')}")
            for name, step in sorted(record.steps.items(), key=lambda item: item[1]["StartTime"]):
                steps[name] = (step.get("DurationSeconds", 0.0), memory.peaks.get(name, 0))
            runs.append(Run(total, steps, memory.total_peak, _test_recall(lake, record)))
    return runs


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
    parser.add_argument("--patients", type=int, nargs="+", default=[20_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workspace-root", default=None, help="where the temporary workspaces go (default: $TMPDIR)")
    parser.add_argument("--instances", type=int, default=None,
                        help="also run with this many processing and training instances, beside one instance")
    args = parser.parse_args()
    if args.instances is not None and args.instances < 2:
        parser.error(f"--instances must be 2 or more (the run beside one instance), got {args.instances}")
    if args.workspace_root is not None:  # a folder not there yet was a traceback at the first size's start
        try:
            os.makedirs(args.workspace_root, exist_ok=True)
        except OSError as err:
            parser.error(f"--workspace-root {args.workspace_root}: {err.strerror or err}")
    print(f"cores: {os.cpu_count()}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    counts = (1,) if args.instances is None else (1, args.instances)
    medians: dict[int, dict[str, float]] = {}
    for patients in args.patients:
        totals, per_step = [], defaultdict(list)
        for attempt in range(args.repeat):
            runs = run_once(patients, args.seed, args.workspace_root, counts)
            totals.append(runs[0].total)
            print(f"\n{patients:,} patients, run {attempt + 1}; load average {os.getloadavg()[0]:.2f}")
            for count, run in zip(counts, runs):
                print(f"  {count} instance(s): {run.total:.1f} s end to end (pipeline), "
                      f"peak {run.peak / MIB:,.0f} MiB (whole process tree)")
            print(f"  {'step':<28}" + "".join(f"{f'{c} inst. s':>11} {'peak MiB':>9}" for c in counts))
            for name in runs[0].steps:
                per_step[name].append(runs[0].steps[name][0])
                cells = []
                for run in runs:
                    seconds, rss = run.steps.get(name, (float("nan"), 0))
                    cells.append(f"{seconds:11.1f} {rss / MIB:9,.0f}" if rss else f"{seconds:11.1f} {'':>9}")
                print(f"  {name:<28}" + "".join(cells))
            print(f"  {'test recall':<28}" + "".join(f"{f'{c} instance(s)':>21}" for c in counts))
            print(f"  {'champion':<28}" + "".join(f"{r.recall.get('champion', '?'):>21}" for r in runs))
            for label in [name for name in runs[0].recall if name != "champion"]:
                print(f"  {label:<28}" + "".join(f"{r.recall.get(label, float('nan')):21.4f}" for r in runs))
        medians[patients] = {name: statistics.median(values) for name, values in per_step.items()}
        medians[patients]["end to end"] = statistics.median(totals)
        print(f"{patients:,} patients: median {statistics.median(totals):.1f} s over {len(totals)} run(s) on one instance")
    sizes = sorted(medians)
    for small, large in zip(sizes, sizes[1:]):
        print(f"\nscaling exponent {small:,} -> {large:,} patients (log time ratio / log size ratio):")
        for name, seconds in medians[large].items():
            before = medians[small].get(name)
            if before and seconds and before > 0.5:
                print(f"  {name:<28} {math.log(seconds / before) / math.log(large / small):5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
