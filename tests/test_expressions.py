"""Definition expressions resolved as SageMaker Pipelines resolves them."""
from __future__ import annotations

import pytest

from pipelines.expressions import ExpressionError, Resolver, evaluate_condition, path_tokens, step_references, walk

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
