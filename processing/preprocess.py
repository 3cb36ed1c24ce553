"""Preprocessing job: curated dataset → split, fitted feature pipeline, resampled training matrix.

Container contract (SageMaker Processing): input ``/opt/ml/processing/input/curated`` holds a
curated version (``data.parquet`` + ``manifest.json``); outputs go to
``/opt/ml/processing/output/{train,validation,test,transformer}``, and the monitoring data baseline
(``statistics.json`` + ``constraints.json`` of the training split's raw feature fields, SageMaker
Model Monitor layout: ``processing/baseline.py``) into ``--baseline-dir`` — by default
``/opt/ml/processing/output/baseline`` when that folder exists (the pipeline declares it as an
output), else no baseline is written. Parameters arrive as arguments. The entry point is thin: ``preprocess`` does
the work and tests call it directly.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import joblib
import numpy as np
import pandas as pd

from diagnosa.data.schema import Schema
from diagnosa.logs import configure_logging
from processing.entry import job_parser
from processing.features import REDUCTIONS, FeatureParams, binary_columns, build_feature_pipeline
from processing.resample import METHODS, Resampled, resample
from processing.split import DEFAULT_FRACTIONS, DEFAULT_UNSEEN_SHARE, GROUPS_FILE, Splits, split_dataset
from processing.trainset import TRAIN_FILE, VALIDATION_FEATURES_FILE, write_train

log = logging.getLogger("diagnosa.preprocess")
OUTPUTS = ("train", "validation", "test", "transformer")


@dataclass(frozen=True)
class PreprocessParams:
    features: FeatureParams = field(default_factory=FeatureParams)
    resampling: str = "class_weights"  # chosen from benchmarks/bench_models.py (docs/model-benchmark.md)
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    unseen_share: float = DEFAULT_UNSEEN_SHARE  # of the slice's groups held out of training (processing/split.py)

    def validate(self) -> None:
        self.features.validate()
        if self.resampling not in METHODS:
            raise ValueError(f"resampling must be one of {', '.join(METHODS)}, got {self.resampling!r}")
        if not 0.0 <= self.unseen_share < 1.0:
            raise ValueError(f"unseen share must be in [0, 1), got {self.unseen_share}")

    def to_dict(self) -> dict[str, Any]:
        return {**self.features.to_dict(), "resampling": self.resampling, "seed": self.seed,
                "fractions": list(self.fractions), "unseen_share": self.unseen_share}


@dataclass
class Preprocessed:
    splits: Splits
    pipeline: Any  # fitted on the training split only
    train: Resampled
    feature_names: list[str]
    labels: list[str]
    timings: dict[str, float]
    # The validation split's features and label indices, transformed once here rather than in every training job
    # (at a million patients the 200k validation rows cost each job ~85 s: the knowledge-base similarity).
    validation_X: Any = None
    validation_y: np.ndarray | None = None


def _feature_names(pipeline: Any, width: int) -> list[str]:
    try:
        return [str(n) for n in pipeline.get_feature_names_out()]
    except (AttributeError, ValueError):
        return [f"f{i}" for i in range(width)]


def preprocess(frame: pd.DataFrame, schema: Schema, params: PreprocessParams | None = None) -> Preprocessed:
    params = params or PreprocessParams()
    params.validate()
    missing = [f.name for f in schema.fields if f.role in ("id", "target") and f.name not in frame.columns]
    missing += [name for name in schema.features() if name not in frame.columns]
    if missing:
        raise ValueError(f"the dataset lacks columns the schema declares: {', '.join(missing)}")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    splits = split_dataset(frame, schema, fractions=params.fractions, seed=params.seed,
                           unseen_share=params.unseen_share)
    timings["split"] = time.perf_counter() - started

    labels = list(schema.labels)
    index = {label: i for i, label in enumerate(labels)}
    y = splits.train[schema.target].map(index).to_numpy(dtype=np.int64)
    started = time.perf_counter()
    pipeline = build_feature_pipeline(schema, params.features, seed=params.seed)
    X = pipeline.fit_transform(splits.train, y)
    timings["fit_features"] = time.perf_counter() - started

    started = time.perf_counter()
    categorical = binary_columns(X) if params.resampling == "smote" else None
    train = resample(X, y, params.resampling, seed=params.seed, categorical=categorical)
    timings["resample"] = time.perf_counter() - started

    started = time.perf_counter()
    validation_X = pipeline.transform(splits.validation)
    validation_y = splits.validation[schema.target].map(index).to_numpy(dtype=np.int64)
    timings["transform_validation"] = time.perf_counter() - started
    return Preprocessed(splits, pipeline, train, _feature_names(pipeline, X.shape[1]), labels, timings,
                        validation_X, validation_y)


def fingerprint(result: Preprocessed, manifest: dict[str, Any], params: PreprocessParams) -> str:
    """Identifies the training data: dataset version, parameters and the exact split membership."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"dataset": manifest.get("dataset"), "version": manifest.get("version"),
                              "params": params.to_dict()}, sort_keys=True).encode())
    id_column = Schema.from_dict(manifest["schema"]).id_column
    for name, part in result.splits.items():
        digest.update(name.encode() + b"\0" + "\n".join(map(str, part[id_column])).encode())
    return digest.hexdigest()


def write_outputs(result: Preprocessed, manifest: dict[str, Any], params: PreprocessParams, out: dict[str, Path]) -> None:
    """Write each output folder; a non-empty folder is refused so no run overwrites another's outputs."""
    for path in out.values():
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"output folder {path} is not empty: refusing to overwrite another run's outputs")
    for path in out.values():
        path.mkdir(parents=True, exist_ok=True)
    t = result.train
    write_train(out["train"] / TRAIN_FILE, t.X, t.y, t.sample_weight)
    result.splits.validation.to_parquet(out["validation"] / "validation.parquet", index=False)
    if result.validation_X is not None:
        write_train(out["validation"] / VALIDATION_FEATURES_FILE, result.validation_X, result.validation_y,
                    np.ones(len(result.validation_y)))
    result.splits.test.to_parquet(out["test"] / "test.parquet", index=False)
    if result.splits.train_groups is not None:
        groups = {"column": Schema.from_dict(manifest["schema"]).group_column,
                  "in_train": sorted(result.splits.train_groups)}
        for name in ("validation", "test"):
            (out[name] / GROUPS_FILE).write_text(json.dumps(groups, ensure_ascii=False) + "\n", encoding="utf-8")
    joblib.dump(result.pipeline, out["transformer"] / "feature_pipeline.joblib", compress=3)
    summary = {
        "labels": result.labels,
        "schema": manifest["schema"],
        "params": params.to_dict(),
        "dataset": {"name": manifest.get("dataset"), "version": manifest.get("version")},
        "feature_names": result.feature_names,
        "fingerprint": fingerprint(result, manifest, params),
        "rows": {name: len(part) for name, part in result.splits.items()} | {"train_resampled": len(t.y)},
        "resampling": t.info,
        "timings_seconds": {k: round(v, 3) for k, v in result.timings.items()},
    }
    (out["transformer"] / "preprocess.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                                         encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = job_parser(
        "processing.preprocess", "Diagnosa preprocessing job: a curated dataset "
        "(<base-dir>/input/curated/{data.parquet,manifest.json})\n-> split, fitted feature pipeline and resampled "
        "training matrix in <base-dir>/output/{train,validation,test,transformer}/ (docs/pipeline.md).",
        "Preprocess", "--resampling smote")
    parser.add_argument("--reduction", choices=REDUCTIONS, default="none",
                        help="dimensionality reduction after the features (pca keeps --pca-components of the "
                             "variance) (default: %(default)s)")
    parser.add_argument("--resampling", choices=METHODS, default=PreprocessParams.resampling,
                        help="how the training split's class imbalance is handled (default: %(default)s)")
    parser.add_argument("--hpo-rollup", choices=("true", "false"), default="true",
                        help="light each HPO term's ancestors too (default: %(default)s)")
    parser.add_argument("--min-term-count", type=int, default=5,
                        help="indicator columns seen fewer times in train are dropped (default: %(default)s)")
    parser.add_argument("--pca-components", type=float, default=0.95, help="share of variance PCA keeps (default: %(default)s)")
    parser.add_argument("--phenotype-similarity", choices=("true", "false"), default="true",
                        help="score HPO lists against the knowledge base's rare diseases (processing/phenotype.py) "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split, the features and resampling (default: %(default)s)")
    parser.add_argument("--unseen-share", type=float, default=DEFAULT_UNSEEN_SHARE,
                        help="share of the slice's groups (orphan diseases) held out of training, in [0, 1) "
                             "(default: %(default)s)")
    parser.add_argument("--baseline-dir", default=None,
                        help="where to write the monitoring baseline (default: <base-dir>/output/baseline if it exists)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = parse_args(argv)
    base = Path(args.base_dir)
    try:
        params = PreprocessParams(
            features=FeatureParams(reduction=args.reduction, hpo_rollup=args.hpo_rollup == "true",
                                   min_term_count=args.min_term_count, pca_components=args.pca_components,
                                   phenotype_similarity=args.phenotype_similarity == "true"),
            resampling=args.resampling, seed=args.seed, unseen_share=args.unseen_share)
        params.validate()
        source = base / "input" / "curated"
        manifest_path, data_path = source / "manifest.json", source / "data.parquet"
        for path in (manifest_path, data_path):
            if not path.is_file():
                raise FileNotFoundError(f"input {path} does not exist")
        started = time.perf_counter()
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        frame = pd.read_parquet(data_path)
        log.info("read %s rows from %s (dataset %s version %s) in %.2f s", len(frame), data_path,
                 manifest.get("dataset"), manifest.get("version"), time.perf_counter() - started)
        result = preprocess(frame, Schema.from_dict(manifest["schema"]), params)
        for phase, seconds in result.timings.items():
            log.info("phase %s took %.2f s", phase, seconds)
        log.info("splits: %s; train after %s: %s rows x %s features", {n: len(p) for n, p in result.splits.items()},
                 params.resampling, len(result.train.y), result.train.X.shape[1])
        started = time.perf_counter()
        out = {name: base / "output" / name for name in OUTPUTS}
        baseline_dir = Path(args.baseline_dir) if args.baseline_dir else base / "output" / "baseline"
        write_baseline = args.baseline_dir is not None or baseline_dir.is_dir()
        if write_baseline and baseline_dir.exists() and any(baseline_dir.iterdir()):
            raise FileExistsError(f"output folder {baseline_dir} is not empty: refusing to overwrite another run's outputs")
        write_outputs(result, manifest, params, out)
        log.info("wrote %s in %.2f s", ", ".join(str(p) for p in out.values()), time.perf_counter() - started)
        if write_baseline:
            from processing.baseline import write_data_baseline

            started = time.perf_counter()
            paths = write_data_baseline(result.splits.train, Schema.from_dict(manifest["schema"]), baseline_dir)
            log.info("wrote the monitoring baseline %s in %.2f s", ", ".join(map(str, paths)),
                     time.perf_counter() - started)
        else:
            log.info("no monitoring baseline written (%s does not exist; pass --baseline-dir)", baseline_dir)
        return 0
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        log.error("preprocessing failed: %s", err)
        failure = base / "output" / "failure"  # what the run's status shows
        try:
            failure.parent.mkdir(parents=True, exist_ok=True)
            failure.write_text(str(err) + "\n", encoding="utf-8")
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
