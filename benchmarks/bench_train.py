"""Wall time of one training job's library call (``training.train.train``) per cohort size, old vs new side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py [--patients 20000 100000] [--family xgboost]
        [--repeat 3] [--seed 0] [--compare-dense]

Each size gets a fresh workspace: the cohort is generated (seed 7) and ingested through the CLI, then the
Preprocess job's entry point writes train/validation/test/transformer as the pipeline's does (not timed);
then ``train()`` runs on those channels exactly as the training job calls it, ``--repeat`` times. With
``--compare-dense`` (xgboost) every repeat also runs on the dense matrix (what training did before issue
16; ``training.models.XGBOOST_SPARSE`` off), alternating with the sparse encoding so both see the same
machine load. Prints per run: seconds of ``train()``, its search phase (the fits), the regime, and the
validation (train's out-of-sample summary) and test per-class recall of the shipped model; then medians.
One thread per job, as the local executor gives each of two concurrent trainings on a 2-core machine.
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

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prepare(workspace: Path, patients: int, seed: int) -> Path:
    """Generate + ingest the cohort, run the Preprocess entry point; returns its output folder."""
    from diagnosa.data.ingest import latest_version
    from diagnosa.lake import DataLake

    cli = [sys.executable, "-m", "diagnosa.cli", "--workspace", str(workspace), "data"]
    subprocess.run([*cli, "generate", "--patients", str(patients), "--seed", "7"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*cli, "ingest", "--batch", f"cohort-n{patients}-s7"], check=True, stdout=subprocess.DEVNULL)
    lake = DataLake.from_uri(str(workspace / "lake"))
    version = latest_version(lake, "patients")
    base = workspace / "processing"
    (base / "input").mkdir(parents=True)
    (base / "input" / "curated").symlink_to(workspace / "lake" / "curated" / "patients" / version)
    subprocess.run([sys.executable, "-m", "processing.preprocess", "--base-dir", str(base), "--seed", str(seed)],
                   check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return base / "output"


def run_once(out: Path, family: str, seed: int, dense: bool) -> dict:
    import numpy as np

    import training.models
    from training.train import train

    saved = training.models.XGBOOST_SPARSE
    training.models.XGBOOST_SPARSE = not dense
    try:
        started = time.perf_counter()
        result = train(out / "train", out / "validation", out / "transformer", family, {}, seed)
        seconds = time.perf_counter() - started
    finally:
        training.models.XGBOOST_SPARSE = saved
    meta = result.model.metadata
    from processing.split import read_split

    test = read_split(out / "test")
    truth = test[meta["target"]].astype(str).to_numpy()
    predicted = np.array(result.model.predict(test.drop(columns=[meta["target"]])))
    return {"seconds": seconds, "search": meta["search_seconds"], "regime": meta["search"]["regime"],
            "validation": {k: round(v, 4) for k, v in meta["validation"]["per_class_recall"].items()},
            "test": {label: round(float((predicted[truth == label] == label).mean()), 4) for label in meta["labels"]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--family", default="xgboost")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="split and model seed (the pipeline's default: 0)")
    parser.add_argument("--compare-dense", action="store_true",
                        help="xgboost: alternate with 0 read as a value (the behaviour before issue 16)")
    args = parser.parse_args()
    variants = [("current", False)] + ([("dense (before)", True)] if args.compare_dense else [])
    print(f"cores: {os.cpu_count()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    for patients in args.patients:
        with tempfile.TemporaryDirectory(prefix="bench-train-") as folder:
            out = prepare(Path(folder), patients, args.seed)
            shape = json.loads((out / "transformer" / "preprocess.json").read_text())
            print(f"\n{patients:,} patients: {shape['rows']['train']:,} training rows x "
                  f"{len(shape['feature_names']):,} features")
            times: dict[str, list[float]] = {name: [] for name, _ in variants}
            for attempt in range(args.repeat):
                for name, dense in variants:
                    run = run_once(out, args.family, args.seed, dense)
                    times[name].append(run["seconds"])
                    print(f"  run {attempt + 1} {name:<15} {run['seconds']:7.1f} s (search {run['search']:.1f} s, "
                          f"{run['regime']}); recall validation {list(run['validation'].values())} "
                          f"test {list(run['test'].values())}", flush=True)
            for name, values in times.items():
                print(f"  {args.family} {name}: median {statistics.median(values):.1f} s over {len(values)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
