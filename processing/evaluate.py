"""Evaluation job: the champion model on the untouched test split → evaluation.json + report.

Container contract (SageMaker Processing): ``input/model/model.tar.gz`` (the training job's
artifact, or an extracted model folder) and ``input/test/`` (the test split: one Parquet part per curated part); writes
``output/evaluation/evaluation.json`` (SageMaker model-quality layout plus Diagnosa's sections;
the pipeline's condition gate reads it through a PropertyFile) and ``output/report/``. Beside
evaluation.json go the monitoring baselines of the model's outputs (``processing/baseline.py``):
``prediction_baseline.json`` (predicted-category distribution, per-class test quality, orphan
slice, the gate thresholds) and ``model_quality_constraints.json`` (SageMaker's multiclass
model-quality constraints).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from diagnosa.data.schema import BUILTIN_SLICE, Schema, seen_slice, unseen_slice
from diagnosa.files import job_reason, write_job_failure, write_text_atomic
from diagnosa.labels import ascii_words
from diagnosa.logs import configure_logging
from diagnosa.model import DiagnosaModel, ModelLoadError, apply_calibration, unpack_model
from diagnosa.text import some_of
from processing.baseline import EVALUATION
from processing.calibration import honest_section
from processing.entry import job_parser, stops_on_sigterm
from processing.metrics import evaluate, recall_gate, slice_scores, write_report
from processing.phenotype import find_similarity
from processing.split import (
    SPLITS,
    effective_rows,
    patient_keys,
    read_split,
    read_train_groups,
    share_departures,
    unseen_mask,
)

log = logging.getLogger("diagnosa.evaluate")


def evaluate_model(model: DiagnosaModel, test: pd.DataFrame,
                   train_groups: frozenset[str] | None = None) -> dict[str, Any]:
    """Scores of ``model`` on ``test``: per class, per orphan/common slice, ordinal, calibration.

    ``train_groups`` (the slice's groups with training patients, from the split's groups.json) adds the
    seen and unseen sub-slices (the cohort's: orphan diseases with and without training patients)."""
    schema = Schema.from_dict(model.metadata["schema"]) if "schema" in model.metadata else None
    target = schema.target if schema else model.metadata.get("target", "label")
    slice_column = schema.slice_column if schema else model.metadata.get("slice_column")
    slice_name = (schema.slice if schema else None) or BUILTIN_SLICE
    if target not in test.columns:
        raise ValueError(f"the test split has no target column '{target}'")
    raw = model.predict_proba_raw(test)
    proba = apply_calibration(raw, model.metadata.get("calibration"))  # what the endpoint serves
    decided = model.decide(proba)
    in_slice = (test[slice_column].fillna(False).to_numpy(dtype=bool)
                if slice_column and slice_column in test.columns else None)
    unseen = unseen_mask(test, schema, train_groups) if schema is not None and in_slice is not None else None
    result = evaluate(test[target].tolist(), proba, model.labels, orphan=in_slice, slice_name=slice_name,
                      predicted=decided, unseen=unseen, ordinal=schema.ordinal if schema else True)
    if schema is not None and in_slice is not None:
        reference = knowledge_reference(model, test, schema, in_slice, unseen)
        if reference is not None:
            result["diagnosa"]["knowledge_reference"] = reference
    index = {label: i for i, label in enumerate(model.labels)}
    patients = patient_keys(test, schema) if schema is not None and schema.patient_column in test.columns else None
    if patients is not None and schema is not None:
        result["diagnosa"]["patients"] = int(len(np.unique(patients)))
        # Rows naming no patient (feedback on a request that named none): each a patient of its own to the split,
        # which cannot say whether its patient had a row in training.
        result["diagnosa"]["rows_without_patient"] = int(test[schema.patient_column].isna().sum())
        result["diagnosa"]["effective_rows"] = round(effective_rows(patients), 3)
    split = split_summary(model.metadata)
    if split is not None:
        result["diagnosa"]["split"] = split
    result["diagnosa"]["honest"] = honest_section(
        np.array([index[str(v)] for v in test[target]]), raw, proba, decided, model.labels,
        model.decision_weights, model.metadata.get("calibration"), patients, vote=bool(model.metadata.get("members")))
    for label, row in result["diagnosa"]["honest"]["recall"].items():
        result["diagnosa"]["per_class"][label]["recall_ci95"] = row["recall_ci95"]
    result["model"] = {k: model.metadata.get(k) for k in ("model_version", "family", "hyperparameters", "fingerprint",
                                                          "dataset", "validation", "calibration", "decision_weights")
                       if k in model.metadata}
    return result


def split_summary(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The rows of each split the model's Preprocess made, the fractions asked, and the splits whose share lies far
    from its fraction (:func:`processing.split.share_departures`); None for a model that recorded no rows per split
    (trained before they were, or a vote of such models)."""
    rows, params = metadata.get("split_rows"), metadata.get("preprocess_params")
    fractions = params.get("fractions") if isinstance(params, dict) else None
    if not (isinstance(rows, dict) and all(isinstance(rows.get(name), int) for name in SPLITS)
            and isinstance(fractions, list) and len(fractions) == len(SPLITS)):
        return None
    counts = {name: int(rows[name]) for name in SPLITS}
    schema = metadata.get("schema")
    schema = schema if isinstance(schema, dict) else {}
    return {"rows": counts, "asked": [float(f) for f in fractions], "unit": "patient" if schema.get("patient_column")
            else "row", "groups": bool(schema.get("group_column")), "far": share_departures(counts, fractions)}


REFERENCE_METHOD = ("the category of the best-matching knowledge-base disease other than the patient's own "
                    "(processing/phenotype.py, Resnik best-match average); no model, no training data")
# The same lookup with the patient's own disease left in: what the model's similarity features see too (they score
# every knowledge-base disease). With a generated cohort, whose orphan patients are drawn from the annotations of
# their disease, it is close to an upper bound a model need not beat; on real patients it measures how far the
# phenotype alone names the disease.
LOOKUP_METHOD = ("the category of the best-matching knowledge-base disease, the patient's own included (the "
                 "similarity features see it too); no model, no training data")


def knowledge_reference(model: DiagnosaModel, test: pd.DataFrame, schema: Schema, in_slice: np.ndarray,
                        unseen: np.ndarray | None) -> dict[str, Any] | None:
    """Recall of the knowledge-only reference on the slice (and its seen/unseen parts), beside the model's.

    Defined when the model carries a knowledge-base similarity, the slice has a group column naming each
    patient's disease, and the knowledge base's categories are labels of the model; else None."""
    similarity, field = find_similarity(model.features)
    group = schema.group_column
    if similarity is None or group is None or group not in test.columns or field not in test.columns \
            or not set(similarity.categories_) <= set(model.labels):
        return None
    rows = np.flatnonzero(in_slice)
    own = [g if isinstance(g, str) and g else None for g in test[group].iloc[rows]]
    index = {label: i for i, label in enumerate(model.labels)}
    truth = np.array([index[str(v)] for v in test[schema.target]])
    name = schema.slice or BUILTIN_SLICE  # as evaluate_model names the slice
    masks = {name: in_slice}
    if unseen is not None:
        masks |= {seen_slice(name): in_slice & ~unseen, unseen_slice(name): unseen}

    def scores(excluded: list[str | None]) -> dict[str, Any]:
        predicted = np.full(len(test), -1, dtype=np.int64)  # -1: no match (no known term), a miss
        predicted[rows] = [index.get(c, -1) if c is not None else -1
                           for c in similarity.nearest_category(test[field].iloc[rows], excluded)]
        return {name: slice_scores(truth[m], predicted[m], list(model.labels)) for name, m in masks.items()}

    return {"method": REFERENCE_METHOD, "slices": scores(own),
            "own_disease_included": {"method": LOOKUP_METHOD, "slices": scores([None] * len(rows))}}


def _is_share(value: float) -> bool:
    """A recall threshold: a finite number in [0, 1] (nan compared false with every recall, so a gate of nan
    passed, and inf could not be written to evaluation.json)."""
    return math.isfinite(value) and 0.0 <= value <= 1.0


def _thresholds(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--thresholds must be a JSON object: {err.msg}") from None
    except ValueError:  # an integer of over 4,300 digits
        raise argparse.ArgumentTypeError("--thresholds must be a JSON object: it holds a number with too many "
                                         "digits (over 4,300)") from None
    except RecursionError:  # valid nesting deeper than Python's recursion limit ([[[[...]]]]): was a traceback
        raise argparse.ArgumentTypeError("--thresholds must be a JSON object: it is nested too deeply") from None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in value.values()):
        raise argparse.ArgumentTypeError('--thresholds must map labels to numbers, e.g. {"NO ENFERMO": 0.8}')
    bad = [f"{k}: {v}" for k, v in value.items() if not _is_share(_number(v))]
    if bad:
        raise argparse.ArgumentTypeError(f"--thresholds must be numbers in [0, 1], got {some_of(bad)}")
    return {str(k): float(v) for k, v in value.items()}


def _number(value: int | float) -> float:
    """``value`` as a float; inf for an integer too large for one (float() raised OverflowError: a traceback)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _share(flag: str) -> Callable[[str], float]:
    """The parser of ``flag NUMBER``: a finite number in [0, 1]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not _is_share(value):
            raise argparse.ArgumentTypeError(f"{flag} takes a number in [0, 1], got {text!r}")
        return value
    return parse


def _named_threshold(flag: str) -> Callable[[str], tuple[str, float]]:
    """The parser of ``flag NAME=NUMBER`` (a name holds no '='; the number in [0, 1])."""
    def parse(text: str) -> tuple[str, float]:
        name, sep, value = text.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes NAME=NUMBER, got {text!r}") from None
        if not _is_share(number):
            raise argparse.ArgumentTypeError(f"{flag} takes NAME=NUMBER with the number in [0, 1], got {text!r}")
        return name, number
    return parse


def recall_thresholds(labels: list[str], named: list[tuple[str, float]]) -> dict[str, float]:
    """Label → threshold from ``(name, value)`` pairs naming each label by its ASCII spelling
    (``diagnosa.labels.ascii_words``, as the label's pipeline parameter spells it): what the pipeline passes, short
    arguments however many and long the labels. ValueError naming the names the model's labels have."""
    by_name = {ascii_words(label): label for label in labels}
    unknown = [name for name, _ in named if name not in by_name]
    if unknown:
        raise ValueError(f"--recall-threshold names no label of the model: {', '.join(unknown)} (its labels are "
                         + ", ".join(f"{name} ({label})" for name, label in by_name.items()) + ")")
    return {by_name[name]: value for name, value in named}


def gate_section(result: dict[str, Any], thresholds: dict[str, float], orphan: float | None,
                 slices: dict[str, float] | None = None) -> dict[str, Any]:
    """The recall gate's verdict and a message naming each miss and by how much (the FailStep shows it)."""
    failures = (recall_gate(result, thresholds, orphan, slices) if thresholds or orphan is not None or slices
                else [])
    if not failures:
        return {"passed": True, "failures": [], "message": "recall gate passed"}
    parts = [f"{f['check']} {'undefined' if f['value'] is None else format(f['value'], '.3f')} < "
             f"{f['threshold']:.3f} (short by {f['shortfall']:.3f})" for f in failures]
    return {"passed": False, "failures": failures, "message": _within(FAILURE_REASON_MAX, "recall gate failed: ", parts)}


# The FailStep shows the gate's message as the step's FailureReason, which SageMaker holds to 1,024 characters
# (botocore's PipelineExecutionStep.FailureReason); a gate over 90 labels can miss more than that says.
FAILURE_REASON_MAX = 1024


def _within(limit: int, head: str, parts: list[str]) -> str:
    """``head`` and as many of ``parts`` as fit in ``limit`` characters, then how many more there are."""
    for count in range(len(parts), -1, -1):
        rest = len(parts) - count
        more = f"{'; ' if count else ''}… and {rest} more (evaluation.json: gate.failures)" if rest else ""
        text = head + "; ".join(parts[:count]) + more
        if len(text) <= limit:
            return text
    return head[:limit]


def _model_dir(path: Path, scratch: Path) -> Path:
    if path.is_dir() and (path / "model.tar.gz").is_file():
        path = path / "model.tar.gz"
    return unpack_model(path, scratch) if path.is_file() else path


def _write_monitoring_baselines(result: dict[str, Any], thresholds: dict[str, float], orphan: float | None,
                                unseen: float | None, trained_groups: frozenset[str] | None, out_eval: Path) -> None:
    """prediction_baseline.json and model_quality_constraints.json beside evaluation.json."""
    from processing.baseline import (
        MODEL_QUALITY_CONSTRAINTS,
        PREDICTIONS,
        model_quality_constraints,
        prediction_baseline,
        write_json,
    )

    for path in (write_json(out_eval / PREDICTIONS, prediction_baseline(result, thresholds, orphan, unseen,
                                                                       trained_groups)),
                 write_json(out_eval / MODEL_QUALITY_CONSTRAINTS, model_quality_constraints(result))):
        log.info("wrote monitoring baseline %s", path)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    parser = job_parser(
        "processing.evaluate", "Diagnosa evaluation job: the champion (<base-dir>/input/model/model.tar.gz) on the "
        "untouched test split (<base-dir>/input/test/: every *.parquet part, and groups.json if any)\n-> "
        "output/evaluation/evaluation.json (with the gate's verdict) and output/report/ (docs/pipeline.md).",
        "Evaluate", "--orphan-threshold 0.5")
    parser.add_argument("--thresholds", type=_thresholds, default={},
                        help='per-class test recall thresholds as JSON, e.g. {"ENFERMEDAD TERMINAL": 0.8}')
    parser.add_argument("--recall-threshold", type=_named_threshold("--recall-threshold"), action="append", default=[],
                        help="NAME=VALUE: test recall threshold of the label NAME spells in ASCII (EnfermedadCronica "
                             "for ENFERMEDAD CRÓNICA, as its pipeline parameter; repeatable; what the pipeline passes)")
    parser.add_argument("--orphan-threshold", type=_share("--orphan-threshold"), default=None,
                        help="orphan-slice macro recall threshold, in [0, 1]")
    parser.add_argument("--slice-threshold", type=_named_threshold("--slice-threshold"), action="append", default=[],
                        help="NAME=VALUE: minimum macro recall on the dataset's slice NAME (repeatable)")
    args = parser.parse_args(argv)
    base = Path(args.base_dir)
    out_eval, out_report = base / "output" / "evaluation", base / "output" / "report"
    with stops_on_sigterm(base, [base / "output"]):
        return _evaluate(args, base, out_eval, out_report)


def _evaluate(args: argparse.Namespace, base: Path, out_eval: Path, out_report: Path) -> int:
    """The job's body: 0, or 1 with its reason written for the service."""
    try:
        for folder in (out_eval, out_report):
            if folder.exists() and any(folder.iterdir()):
                raise FileExistsError(f"output folder {folder} is not empty: refusing to overwrite another run's outputs")
        test_dir = base / "input" / "test"
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            model = DiagnosaModel.load(_model_dir(base / "input" / "model", Path(scratch)))
            test = read_split(test_dir, "test input")
            if not len(test):
                raise ValueError(f"the test input {test_dir} has no rows (its parts hold a header only): the test "
                                 "split is empty, so there is nothing to evaluate")
            log.info("read model (%s) and %s test rows in %.2f s", model.metadata.get("family"), len(test),
                     time.perf_counter() - started)
            started = time.perf_counter()
            trained_groups = read_train_groups(test_dir)
            result = evaluate_model(model, test, trained_groups)
            args.thresholds |= recall_thresholds(list(model.labels), args.recall_threshold)
            result["gate"] = gate_section(result, args.thresholds, args.orphan_threshold, dict(args.slice_threshold))
            log.info("evaluated in %.2f s", time.perf_counter() - started)
        out_eval.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False) + "\n"  # refused here, not half-written
        _write_monitoring_baselines(result, args.thresholds, args.orphan_threshold,
                                    dict(args.slice_threshold).get(unseen_slice(BUILTIN_SLICE)), trained_groups, out_eval)
        paths = write_report(result, out_report)
        # Last, and whole or not at all: the gate's condition reads it, so it exists only when every output does.
        write_text_atomic(out_eval / EVALUATION, text)
        d = result["diagnosa"]
        log.info("test macro recall %.4f, worst class %s %.4f; wrote %s and %s", d["macro"]["recall"],
                 d["worst_class_recall"]["label"], d["worst_class_recall"]["recall"], out_eval / EVALUATION,
                 paths["report"])
        for label, scores in d["per_class"].items():
            print(f"test:recall[{label}]={np.nan if scores['recall'] is None else scores['recall']:.4f}")
        return 0
    except Exception as err:  # noqa: BLE001  (the job's failure reason must say what was wrong, whatever it was)
        known = isinstance(err, (ValueError, ModelLoadError))  # SplitError too: messages written to be read
        message = str(err) if known else f"{type(err).__name__}: {err}"
        log.error("evaluation failed: %s", job_reason(message), exc_info=not known)
        write_job_failure(base, message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
