"""Benchmark: model family × resampling × reduction → validation recall figures and train time.

Runs the real library functions (preprocess, make_classifier, evaluate) on the default cohort and
prints a Markdown table; the pipeline's defaults are chosen from it (docs/model-benchmark.md).
Scores are on the validation split (never test: choosing defaults is model selection).

Usage: python benchmarks/bench_models.py [--patients 20000] [--families a,b] [--resamplings a,b]
       [--reductions a,b] [--out docs/model-benchmark.md]
Without filters it runs every family with every resampling (no reduction), then every reduction
with every resampling for the two fastest families: the full 120-cell grid takes hours on 2 cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diagnosa.data.cohort import CohortConfig, generate, write_raw  # noqa: E402
from diagnosa.data.ingest import ingest_cohort, load_curated  # noqa: E402
from diagnosa.data.schema import Schema  # noqa: E402
from diagnosa.lake import DataLake  # noqa: E402
from processing.features import REDUCTIONS, FeatureParams  # noqa: E402
from processing.metrics import evaluate  # noqa: E402
from processing.preprocess import PreprocessParams, preprocess  # noqa: E402
from processing.resample import METHODS  # noqa: E402
from training.models import FAMILIES, make_classifier  # noqa: E402

FAST = ("logistic_regression", "xgboost")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--families")
    parser.add_argument("--resamplings")
    parser.add_argument("--reductions")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args()

    if args.families or args.resamplings or args.reductions:
        families = (args.families or ",".join(FAMILIES)).split(",")
        resamplings = (args.resamplings or ",".join(METHODS)).split(",")
        reductions = (args.reductions or "none").split(",")
        grid = [(f, r, d) for d in reductions for r in resamplings for f in families]
    else:
        grid = [(f, r, "none") for r in METHODS for f in FAMILIES]
        grid += [(f, r, d) for d in REDUCTIONS if d != "none" for r in METHODS for f in FAST]

    with tempfile.TemporaryDirectory() as tmp:
        lake = DataLake.from_uri(tmp)
        cohort = generate(CohortConfig(patients=args.patients, seed=args.seed))
        write_raw(cohort, lake, "bench")
        ingest_cohort(lake, "bench")
        frame, manifest = load_curated(lake)
    schema = Schema.from_dict(manifest["schema"])

    rows = []
    header = ("| family | resampling | reduction | macro recall | worst class (recall) | orphan macro recall "
              "| train s | train rows |\n|---|---|---|---:|---|---:|---:|---:|")
    print(f"cohort: {args.patients:,} patients, seed {args.seed}; scores on the validation split\n\n{header}", flush=True)
    prepared: dict[tuple[str, str], object] = {}
    for family, resampling, reduction in grid:
        key = (resampling, reduction)
        if key not in prepared:
            prepared[key] = preprocess(frame, schema, PreprocessParams(
                features=FeatureParams(reduction=reduction), resampling=resampling, seed=0))
        result = prepared[key]
        t = result.train
        classifier = make_classifier(family, seed=0)
        started = time.perf_counter()
        classifier.fit(t.X, t.y, sample_weight=t.sample_weight)
        seconds = time.perf_counter() - started
        validation = result.splits.validation
        proba = np.zeros((len(validation), len(result.labels)))
        proba[:, classifier.classes_] = classifier.predict_proba(result.pipeline.transform(validation))
        d = evaluate(validation[schema.target].tolist(), proba, result.labels,
                     orphan=validation[schema.slice_column].to_numpy(dtype=bool))["diagnosa"]
        worst = d["worst_class_recall"]
        orphan = d["slices"]["orphan"]["macro_recall"]
        row = (f"| {family} | {resampling} | {reduction} | {d['macro']['recall']:.3f} | {worst['label']} "
               f"({worst['recall']:.3f}) | {orphan:.3f} | {seconds:.1f} | {len(t.y):,} |")
        rows.append(row)
        print(row, flush=True)
    if args.out:
        Path(args.out).write_text(f"{header}\n" + "\n".join(rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
