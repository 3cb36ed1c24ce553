"""SageMaker Pipelines definition expressions, resolved the way the service resolves them.

A definition (schema version 2020-12-01) refers to values it only knows at run time:
``{"Get": "Parameters.X"}``, ``{"Get": "Execution.PipelineExecutionId"}``,
``{"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}``, ``{"Std:Join": {"On": "/", "Values": [...]}}``
and ``{"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Report"}, "Path": "a.b[0]"}}``.
The local executor resolves them with this module; it also lists which steps an expression reads,
which is how step order is derived from data edges.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

STEP_REF = re.compile(r"^Steps\.([^.\[]+)\.(.+)$")
PATH_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]|\['([^']+)'\]|\[\"([^\"]+)\"\]")


class ExpressionError(ValueError):
    """An expression that cannot be resolved; the message names it."""


def path_tokens(path: str) -> list[str | int]:
    """``a.b[0]['c d']`` → ["a", "b", 0, "c d"] (SageMaker property and JsonGet paths)."""
    tokens: list[str | int] = []
    position = 0
    while position < len(path):
        match = PATH_TOKEN.match(path, position)
        if not match or match.end() == position:
            raise ExpressionError(f"cannot parse path {path!r} at position {position}")
        name, index, quoted, dquoted = match.groups()
        tokens.append(int(index) if index is not None else (name or quoted or dquoted))
        position = match.end()
    return tokens


def walk(value: Any, path: str) -> Any:
    current = value
    for token in path_tokens(path):
        try:
            current = current[token]
        except (KeyError, IndexError, TypeError):
            raise ExpressionError(f"path {path!r} not found (stopped at {token!r})") from None
    return current


def step_references(value: Any) -> set[str]:
    """Names of the steps an argument tree reads (its data dependencies)."""
    found: set[str] = set()
    if isinstance(value, dict):
        if set(value) == {"Get"} and isinstance(value["Get"], str):
            match = STEP_REF.fullmatch(value["Get"])
            if match:
                found.add(match.group(1))
        for item in value.values():
            found |= step_references(item)
    elif isinstance(value, list):
        for item in value:
            found |= step_references(item)
    return found


class Resolver:
    """Replaces expressions by values: parameters, execution variables, step properties."""

    def __init__(self, parameters: Mapping[str, Any], execution: Mapping[str, Any],
                 step_properties: Callable[[str], Mapping[str, Any]],
                 property_file: Callable[[str, str], Any]):
        self.parameters = parameters
        self.execution = execution
        self.step_properties = step_properties  # step name → its properties (DescribeXxx-shaped)
        self.property_file = property_file  # (step name, property file name) → parsed JSON

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Get"}:
            return self._get(value["Get"])
        if set(value) == {"Std:Join"}:
            spec = value["Std:Join"]
            if not isinstance(spec, dict) or not isinstance(spec.get("On", ""), str) \
                    or not isinstance(spec.get("Values", []), list):
                raise ExpressionError(f"Std:Join needs On (a string) and Values (a list), got {spec!r:.120}")
            return str(self(spec.get("On", ""))).join(self._text(self(v)) for v in spec.get("Values", []))
        if set(value) == {"Std:JsonGet"}:
            return self._json_get(value["Std:JsonGet"])
        return {key: self(item) for key, item in value.items()}

    @staticmethod
    def _text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)

    def _get(self, reference: str) -> Any:
        if not isinstance(reference, str):
            raise ExpressionError(f"a Get needs a string reference, got {reference!r}")
        head, _, rest = reference.partition(".")
        if head == "Parameters":
            if rest not in self.parameters:
                raise ExpressionError(f"unknown parameter {rest!r} in {reference!r}")
            return self.parameters[rest]
        if head == "Execution":
            if rest not in self.execution:
                raise ExpressionError(f"unknown execution variable {rest!r}")
            return self.execution[rest]
        match = STEP_REF.fullmatch(reference)
        if match:
            step, path = match.groups()
            if path.startswith("PropertyFiles."):
                raise ExpressionError(f"{reference!r} is a property file: read it with Std:JsonGet")
            return walk(self.step_properties(step), path)
        raise ExpressionError(f"cannot resolve {reference!r}")

    def _json_get(self, spec: Mapping[str, Any]) -> Any:
        path = spec.get("Path")
        if not isinstance(path, str):
            raise ExpressionError(f"Std:JsonGet needs a Path, got {spec!r}")
        source = spec.get("PropertyFile")
        if isinstance(source, dict) and set(source) == {"Get"}:
            match = STEP_REF.fullmatch(source["Get"])
            if not match or not match.group(2).startswith("PropertyFiles."):
                raise ExpressionError(f"Std:JsonGet PropertyFile must be Steps.<step>.PropertyFiles.<name>, "
                                      f"got {source['Get']!r}")
            document = self.property_file(match.group(1), match.group(2).removeprefix("PropertyFiles."))
        else:
            raise ExpressionError(f"unsupported Std:JsonGet source {spec!r}")
        return walk(document, path)


CONDITIONS = ("Equals", "GreaterThan", "GreaterThanOrEqualTo", "LessThan", "LessThanOrEqualTo", "In", "Not", "Or")


def evaluate_condition(condition: Mapping[str, Any], resolve: Resolver) -> bool:
    kind = condition.get("Type")
    if kind == "Not":
        return not evaluate_condition(condition["Expression"], resolve)
    if kind == "Or":
        return any(evaluate_condition(c, resolve) for c in condition["Conditions"])
    if kind == "In":
        return resolve(condition["QueryValue"]) in [resolve(v) for v in condition["Values"]]
    if kind not in CONDITIONS:
        raise ExpressionError(f"unknown condition type {kind!r} (known: {', '.join(CONDITIONS)})")
    left, right = resolve(condition["LeftValue"]), resolve(condition["RightValue"])
    if kind == "Equals":
        return left == right
    if left is None or right is None:  # a JsonGet of a JSON null: SageMaker documents no outcome for it
        raise ExpressionError(f"{kind} compares numbers, got {left!r} and {right!r}: an undefined value (JSON null, "
                              "e.g. a recall with no test patient to measure it on) has no defined outcome on "
                              "SageMaker either, so the condition step fails")
    try:
        left, right = float(left), float(right)
    except (TypeError, ValueError):
        raise ExpressionError(f"{kind} compares numbers, got {left!r} and {right!r}") from None
    return {"GreaterThan": left > right, "GreaterThanOrEqualTo": left >= right,
            "LessThan": left < right, "LessThanOrEqualTo": left <= right}[kind]


def registration_gate(definition: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checks a version must pass before the definition registers it, with the parameters' defaults: one
    ``{"path", "keys", "at_least", "parameter"}`` per condition of the Condition step that leads to the RegisterModel
    step. ``path`` is read from the evaluation file the registered version names as its ModelQuality statistics (the
    function checks that the gate's property file is that file), so another stage can gate a registered version again
    from the registry alone (the promote function does: docs/deploy.md). Only ``>=`` between a property-file value
    and a parameter or number is understood; anything else is refused, never skipped."""
    steps = {str(s.get("Name")): s for s in all_steps(definition.get("Steps", []))}
    defaults = {p.get("Name"): p.get("DefaultValue") for p in definition.get("Parameters", [])}
    gates = [s for s in steps.values() if s.get("Type") == "Condition"
             and any(t.get("Type") == "RegisterModel" for t in all_steps(s.get("Arguments", {}).get("IfSteps", [])))]
    if len(gates) != 1:
        raise ExpressionError(f"expected one Condition step leading to a RegisterModel step, found {len(gates)}")
    arguments = gates[0]["Arguments"]
    register = next(t for t in all_steps(arguments.get("IfSteps", [])) if t.get("Type") == "RegisterModel")
    checks = []
    for condition in arguments.get("Conditions", []):
        left, right = condition.get("LeftValue"), condition.get("RightValue")
        if condition.get("Type") != "GreaterThanOrEqualTo" or not isinstance(left, dict) \
                or set(left) != {"Std:JsonGet"}:
            raise ExpressionError(f"{gates[0]['Name']}: only 'property-file value >= threshold' conditions can be "
                                  f"checked again, got {json.dumps(condition)}")
        spec = left["Std:JsonGet"]
        _gated_file_is_registered(steps, spec.get("PropertyFile"), register)
        if isinstance(right, dict) and set(right) == {"Get"} and str(right["Get"]).startswith("Parameters."):
            parameter = right["Get"].removeprefix("Parameters.")
            threshold = defaults.get(parameter)
        else:
            parameter, threshold = "", right
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ExpressionError(f"{gates[0]['Name']}: the threshold of {spec.get('Path')!r} is not a number "
                                  f"({parameter or 'literal'}: {threshold!r})")
        checks.append({"path": spec["Path"], "keys": path_tokens(spec["Path"]), "at_least": float(threshold),
                       "parameter": parameter})
    return checks


def all_steps(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """A definition's steps and, depth first, the steps nested in their Condition branches (If, then Else)."""
    found: list[Mapping[str, Any]] = []
    for step in steps:
        found.append(step)
        arguments = step.get("Arguments", {}) if step.get("Type") == "Condition" else {}
        found += all_steps(arguments.get("IfSteps", [])) + all_steps(arguments.get("ElseSteps", []))
    return found


def _gated_file_is_registered(steps: Mapping[str, Mapping[str, Any]], source: Any,
                              register: Mapping[str, Any]) -> None:
    """The property file a gate condition reads is the file the registered version names as its ModelQuality
    statistics: what the registry holds is what was gated."""
    match = STEP_REF.fullmatch(source.get("Get", "")) if isinstance(source, dict) and set(source) == {"Get"} else None
    if not match or not match.group(2).startswith("PropertyFiles."):
        raise ExpressionError(f"unsupported gate property file {source!r}")
    step, name = match.group(1), match.group(2).removeprefix("PropertyFiles.")
    declared = [f for f in steps.get(step, {}).get("PropertyFiles", []) if f.get("PropertyFileName") == name]
    statistics = register.get("Arguments", {}).get("ModelMetrics", {}).get("ModelQuality", {}) \
        .get("Statistics", {}).get("S3Uri")
    expected = [{"Std:Join": {"On": "/", "Values": [
        {"Get": f"Steps.{step}.ProcessingOutputConfig.Outputs['{f['OutputName']}'].S3Output.S3Uri"}, f["FilePath"]]}}
        for f in declared]
    if statistics not in expected:
        raise ExpressionError(f"the gate reads {step}'s property file {name!r}, but {register.get('Name')} registers "
                              f"{json.dumps(statistics)} as the ModelQuality statistics: the registry would not hold "
                              "what was gated")
