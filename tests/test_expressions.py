"""Definition expressions resolved as SageMaker Pipelines resolves them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipelines.expressions import (
    ExpressionError,
    Resolver,
    evaluate_condition,
    path_tokens,
    registration_gate,
    step_references,
    walk,
)

PROPERTIES = {
    "Preprocess": {"ProcessingOutputConfig": {"Outputs": {"train": {"S3Output": {"S3Uri": "s3://b/run/train"}}}}},
    "Train": {"ModelArtifacts": {"S3ModelArtifacts": "s3://b/run/model.tar.gz"}},
}
REPORT = {"diagnosa": {"per_class": {"ENFERMEDAD TERMINAL": {"recall": 0.91}}, "slices": {"orphan": {"macro_recall": 0.7}}},
          "list": [{"v": 1}, {"v": 2}]}


@pytest.fixture
def resolve():
    return Resolver({"Threshold": 0.8, "Bucket": "b", "Deploy": True}, {"PipelineExecutionId": "exec-1"},
                    lambda step: PROPERTIES[step], lambda step, name: REPORT)


def test_paths():
    assert path_tokens("a.b[0]['c d'].e") == ["a", "b", 0, "c d", "e"]
    assert path_tokens("ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri") == [
        "ProcessingOutputConfig", "Outputs", "train", "S3Output", "S3Uri"]
    assert walk(REPORT, "list[1].v") == 2
    with pytest.raises(ExpressionError, match="not found"):
        walk(REPORT, "list[5]")


def test_gets_joins_and_json_gets(resolve):
    args = {
        "Out": {"Std:Join": {"On": "/", "Values": ["s3:/", {"Get": "Parameters.Bucket"},
                                                   {"Get": "Execution.PipelineExecutionId"}, "eval"]}},
        "Train": {"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"},
        "Model": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
        "Recall": {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Report"},
                                   "Path": "diagnosa.per_class['ENFERMEDAD TERMINAL'].recall"}},
        "Flags": [{"Std:Join": {"On": ",", "Values": [{"Get": "Parameters.Deploy"}, 3]}}],
    }
    assert resolve(args) == {"Out": "s3://b/exec-1/eval", "Train": "s3://b/run/train",
                             "Model": "s3://b/run/model.tar.gz", "Recall": 0.91, "Flags": ["true,3"]}
    assert step_references(args) == {"Preprocess", "Train", "Evaluate"}


@pytest.mark.parametrize("expression, message", [
    ({"Get": "Parameters.Nope"}, "unknown parameter 'Nope'"),
    ({"Get": "Execution.Nope"}, "unknown execution variable"),
    ({"Get": "Steps.Train.Missing.Path"}, "not found"),
    ({"Get": "Steps.Evaluate.PropertyFiles.Report"}, "read it with Std:JsonGet"),
    ({"Std:JsonGet": {"PropertyFile": {"Get": "Parameters.X"}, "Path": "a"}}, "PropertyFile must be"),
    ({"Get": "Whatever"}, "cannot resolve"),
])
def test_unresolvable_expressions_name_the_problem(resolve, expression, message):
    with pytest.raises(ExpressionError, match=message):
        resolve(expression)


def test_conditions(resolve):
    recall = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Report"},
                              "Path": "diagnosa.slices.orphan.macro_recall"}}
    threshold = {"Get": "Parameters.Threshold"}
    assert not evaluate_condition({"Type": "GreaterThanOrEqualTo", "LeftValue": recall, "RightValue": threshold}, resolve)
    assert evaluate_condition({"Type": "LessThan", "LeftValue": recall, "RightValue": threshold}, resolve)
    assert evaluate_condition({"Type": "Not", "Expression": {"Type": "Equals", "LeftValue": 1, "RightValue": 2}}, resolve)
    assert evaluate_condition({"Type": "Or", "Conditions": [
        {"Type": "Equals", "LeftValue": 1, "RightValue": 2},
        {"Type": "In", "QueryValue": {"Get": "Parameters.Bucket"}, "Values": ["a", "b"]}]}, resolve)
    with pytest.raises(ExpressionError, match="unknown condition type"):
        evaluate_condition({"Type": "Between"}, resolve)
    with pytest.raises(ExpressionError, match="compares numbers"):
        evaluate_condition({"Type": "GreaterThan", "LeftValue": "x", "RightValue": 1}, resolve)


# ------------------------------------------------------------------------------------------ registration_gate

SNAPSHOT = Path(__file__).parent / "snapshots" / "pipeline-definition.json"


def _gate_step(definition):
    return next(s for s in definition["Steps"] if s["Type"] == "Condition")


def test_the_registration_gate_is_the_conditions_before_register_at_the_parameters_defaults():
    definition = json.loads(SNAPSHOT.read_text())
    defaults = {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}
    gate = registration_gate(definition)
    conditions = _gate_step(definition)["Arguments"]["Conditions"]
    assert [c["path"] for c in gate] == [c["LeftValue"]["Std:JsonGet"]["Path"] for c in conditions]
    assert [c["at_least"] for c in gate] == [defaults[c["parameter"]] for c in gate]
    assert gate[3] == {"path": "diagnosa.per_class['ENFERMEDAD CRÓNICA'].recall", "at_least": 0.8,
                       "keys": ["diagnosa", "per_class", "ENFERMEDAD CRÓNICA", "recall"],
                       "parameter": "RecallThresholdEnfermedadCronica"}
    # a literal threshold is read as it is
    _gate_step(definition)["Arguments"]["Conditions"][0]["RightValue"] = 0.25
    assert registration_gate(definition)[0] | {"keys": None} == {
        "path": "diagnosa.per_class['NO ENFERMO'].recall", "at_least": 0.25, "parameter": "", "keys": None}


def _broken(change):
    definition = json.loads(SNAPSHOT.read_text())
    change(definition, _gate_step(definition))
    return definition


@pytest.mark.parametrize("change, message", [
    (lambda d, g: g["Arguments"]["Conditions"][0].update(Type="GreaterThan"),
     "only 'property-file value >= threshold' conditions can be checked again"),
    (lambda d, g: g["Arguments"]["Conditions"].append({"Type": "Not", "Expression": {}}),
     "only 'property-file value >= threshold' conditions"),
    (lambda d, g: next(p for p in d["Parameters"] if p["Name"] == "RecallThresholdNoEnfermo").update(
        DefaultValue="0.8"), "the threshold of \"diagnosa.per_class['NO "
                                                                 "ENFERMO'].recall\" is not a number"),
    (lambda d, g: g["Arguments"]["IfSteps"][0]["Arguments"]["ModelMetrics"]["ModelQuality"]["Statistics"].update(
        S3Uri="s3://elsewhere/evaluation.json"), "the registry would not hold what was gated"),
    (lambda d, g: next(s for s in d["Steps"] if s["Name"] == "Evaluate")["PropertyFiles"][0].update(
        FilePath="other.json"), "the registry would not hold what was gated"),
    (lambda d, g: g["Arguments"].update(IfSteps=[]), "expected one Condition step leading to a RegisterModel step, "
                                                     "found 0"),
])
def test_a_gate_that_cannot_be_checked_again_from_the_registry_is_refused(change, message):
    with pytest.raises(ExpressionError, match=re.escape(message)):
        registration_gate(_broken(change))
