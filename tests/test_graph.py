"""Step order from a definition: data edges, DependsOn, condition branches; bad graphs refused."""
from __future__ import annotations

import pytest

from pipelines.graph import DefinitionError, build_graph, order


def step(name, kind="Processing", depends=(), **arguments):
    return {"Name": name, "Type": kind, "Arguments": arguments, **({"DependsOn": list(depends)} if depends else {})}


DEFINITION = {"Version": "2020-12-01", "Steps": [
    step("Preprocess"),
    step("TrainA", "Training", Input={"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}),
    step("TrainB", "Training", Input={"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}),
    step("Select", A={"Get": "Steps.TrainA.ModelArtifacts.S3ModelArtifacts"},
         B={"Get": "Steps.TrainB.ModelArtifacts.S3ModelArtifacts"}),
    step("Evaluate", Model={"Get": "Steps.Select.ProcessingOutputConfig.Outputs['champion'].S3Output.S3Uri"}),
    {"Name": "Gate", "Type": "Condition", "Arguments": {
        "Conditions": [{"Type": "GreaterThanOrEqualTo", "RightValue": 0.8, "LeftValue": {"Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Report"}, "Path": "a"}}}],
        "IfSteps": [step("Register", "RegisterModel"), step("Deploy", "Endpoint", depends=["Register"])],
        "ElseSteps": [step("Stop", "Fail", ErrorMessage="recall too low")]}},
]}


def test_waves_follow_data_edges_dependson_and_branches():
    graph = build_graph(DEFINITION)
    assert order(graph) == [["Preprocess"], ["TrainA", "TrainB"], ["Select"], ["Evaluate"], ["Gate"],
                            ["Register", "Stop"], ["Deploy"]]
    assert graph["Register"].branch_of == ("Gate", True) and graph["Stop"].branch_of == ("Gate", False)
    assert graph["Gate"].needs == {"Evaluate"}


@pytest.mark.parametrize("steps, message", [
    ([step("A"), step("A")], "two steps are named 'A'"),
    ([step("A", "Transform")], "type 'Transform', which the local executor does not run"),
    ([step("A", X={"Get": "Steps.Ghost.Prop"})], "refers to unknown step\\(s\\): Ghost"),
    ([step("A", depends=["B"]), step("B", depends=["A"])], "wait for each other"),
    ([{"Type": "Processing"}], "Steps\\[0\\]: Name must be a string, got None"),
    ([step("A", depends=["B"]), 5], "Steps\\[1\\]: a step is an object with a Name and a Type, got 5"),
])
def test_bad_definitions_fail_before_anything_runs(steps, message):
    with pytest.raises(DefinitionError, match=message):
        build_graph({"Steps": steps})
    with pytest.raises(DefinitionError, match="no Steps list"):
        build_graph({})
