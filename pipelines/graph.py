"""The step graph of a pipeline definition: which step waits for which, checked before anything runs.

Edges come from data (an argument reads ``Steps.X...``), from ``DependsOn``, and from condition
branches (a step in a Condition's ``IfSteps``/``ElseSteps`` waits for the condition and runs only on
its branch). A malformed document (``definition_problems``), unknown step types, references to missing steps,
duplicate names and cycles are reported at once with the names involved, so a bad definition fails before any step
runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from diagnosa.data.validate import clip, shown
from inference.limits import not_text, surrogate_path
from pipelines.expressions import step_references
from pipelines.service_model import name_problem

SUPPORTED_TYPES = ("Processing", "Training", "Condition", "Fail", "RegisterModel", "Model", "CreateModel",
                   "EndpointConfig", "Endpoint")


class DefinitionError(ValueError):
    """The definition cannot be run; the message names the step and the problem."""


@dataclass
class StepNode:
    name: str
    type: str
    arguments: dict[str, Any]
    definition: dict[str, Any]
    needs: set[str] = field(default_factory=set)
    branch_of: tuple[str, bool] | None = None  # (condition step, True for IfSteps / False for ElseSteps)


def _flatten(steps: list[dict[str, Any]], branch: tuple[str, bool] | None, out: list[StepNode]) -> None:
    for step in steps:  # shapes checked by definition_problems
        node = StepNode(step["Name"], step["Type"], step.get("Arguments", {}), step, branch_of=branch)
        out.append(node)
        if step["Type"] == "Condition":
            _flatten(node.arguments.get("IfSteps", []), (node.name, True), out)
            _flatten(node.arguments.get("ElseSteps", []), (node.name, False), out)


def definition_problems(definition: Any) -> list[str]:
    """What is wrong with the document itself, all of it (CreatePipeline checks a definition before it stores it):
    its shape (a Steps list of step objects, a Parameters list), the names of steps and parameters (SageMaker's
    ``StepName`` and ``PipelineParameterName`` shapes), the types of ``Arguments``, ``DependsOn`` and a condition's
    branches, and text no UTF-8 writer can write (a lone surrogate, anywhere)."""
    if not isinstance(definition, dict):
        return ["a pipeline definition is a JSON object"]
    where = surrogate_path(definition) if _has_surrogate(definition) else None
    problems = [f"{where}: {not_text()}"] if where else []
    problems += declared_parameter_problems(definition, surrogates=False)
    if not isinstance(definition.get("Steps"), list):
        problems.append("the definition has no Steps list")
    else:
        _step_problems(definition["Steps"], "Steps", problems)
    return _at_most(problems)


def _at_most(problems: list[str]) -> list[str]:
    if len(problems) > MAX_PROBLEMS:
        return [*problems[:MAX_PROBLEMS], f"(the first {MAX_PROBLEMS} problems; there are more)"]
    return problems


def _has_surrogate(document: Any) -> bool:
    """Whether any key or value holds a lone surrogate: one pass in C (surrogate_path keeps a link per value: a
    definition of 3 million junk steps took 750 MB), before the path of the first one is looked for."""
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# Problems named at most: a definition of 9 MB of junk steps made a 200 MB message (1.2 GB to build).
MAX_PROBLEMS = 20


def declared_parameter_problems(definition: dict[str, Any], *, surrogates: bool = True) -> list[str]:
    """What is wrong with the definition's ``Parameters``: a list of objects named within SageMaker's
    ``PipelineParameterName``, each once, each DefaultValue an instance of its Type (an Integer within 64 bits); the
    values given for them are the executor's ``resolve_parameters`` to check."""
    parameters = definition.get("Parameters", [])
    if not isinstance(parameters, list):
        return [f"Parameters must be a list of parameter objects, got {type(parameters).__name__}"]
    where = surrogate_path(parameters) if surrogates and _has_surrogate(parameters) else None
    problems = [f"Parameters{'' if where.startswith('[') else '.'}{where}: {not_text()}"] if where else []
    seen: dict[str, int] = {}
    for i, parameter in enumerate(parameters):
        if len(problems) > MAX_PROBLEMS:
            break
        problem = (name_problem("PipelineParameterName", parameter.get("Name")) if isinstance(parameter, dict)
                   else "must be an object with a Name and a Type")
        if problem:
            problems.append(f"Parameters[{i}]: {'Name ' if isinstance(parameter, dict) else ''}{problem}")
            continue
        if parameter["Name"] in seen:  # the last one won, silently
            problems.append(f"Parameters[{i}]: Name {shown(parameter['Name'], 80)} is declared twice (also Parameters"
                            f"[{seen[parameter['Name']]}]): a pipeline's parameter names are unique")
        seen.setdefault(parameter["Name"], i)
        wrong = _default_problem(parameter)
        if wrong:
            problems.append(f"Parameters[{i}] ({clip(parameter['Name'], 80)}): {wrong}")
    return _at_most(problems)


# A parameter's DefaultValue as its JSON type, as SageMaker asks ("The default value must be an instance matching the
# parameter type"): text "5" for an Integer or "true" for a Boolean was read as the value, and an Integer as large as
# 2**70, which no --param can give (parameter_from_text: 64 bits), was accepted.
DEFAULT_TYPES: dict[str, tuple[type, ...]] = {"String": (str,), "Integer": (int,), "Float": (int, float),
                                              "Boolean": (bool,)}
DEFAULT_SPELLED = {"String": "a JSON string", "Integer": "a JSON integer", "Float": "a JSON number",
                   "Boolean": "JSON true or false"}
INTEGER_RANGE = (-2**63, 2**63 - 1)  # an Integer's 64 bits (pipelines.definition.parameter_from_text)


def _default_problem(parameter: dict[str, Any]) -> str | None:
    """Why a declared parameter's DefaultValue is no value of its Type, or None (no default; a Type the executor
    does not know is resolve_parameters' to refuse; a Float's finiteness, coerce_parameter's)."""
    kind, default = parameter.get("Type", "String"), parameter.get("DefaultValue")
    if "DefaultValue" not in parameter or not isinstance(kind, str) or kind not in DEFAULT_TYPES:
        return None
    if isinstance(default, bool) != (kind == "Boolean") or not isinstance(default, DEFAULT_TYPES[kind]):
        return (f"DefaultValue must be an instance matching the parameter type, {DEFAULT_SPELLED[kind]} for "
                f"{'an' if kind == 'Integer' else 'a'} {kind}; "
                f"got {shown(default, 80)} ({type(default).__name__})")
    if kind == "Integer" and isinstance(default, int) and not INTEGER_RANGE[0] <= default <= INTEGER_RANGE[1]:
        return f"DefaultValue of an Integer must be within 64 bits, got one of {default.bit_length()} bits"
    return None


def _step_problems(steps: list[Any], where: str, problems: list[str]) -> None:
    """Appends the problems of ``steps`` (and of the branches of their conditions) until past MAX_PROBLEMS."""
    for i, step in enumerate(steps):
        if len(problems) > MAX_PROBLEMS:  # enough to say there are more: the rest is not looked at
            return
        at = f"{where}[{i}]"
        if not isinstance(step, dict):
            problems.append(f"{at}: a step is an object with a Name and a Type, got {str(step)[:80]}")
            continue
        name_wrong = name_problem("StepName", step.get("Name"))
        if name_wrong:
            problems.append(f"{at}: Name {name_wrong}")
        else:
            at = f"step {step['Name']!r}"
        if not isinstance(step.get("Type"), str):
            problems.append(f"{at}: Type must be a string, got {step.get('Type')!r:.80}")
        arguments = step.get("Arguments", {})
        if not isinstance(arguments, dict):
            problems.append(f"{at}: Arguments must be an object, got {type(arguments).__name__}")
            arguments = {}
        depends = step.get("DependsOn", [])
        if not isinstance(depends, list) or not all(isinstance(name, str) for name in depends):
            problems.append(f"{at}: DependsOn must be a list of step names, got {depends!r:.80}")
        if step.get("Type") == "Condition":
            conditions = arguments.get("Conditions", [])
            if not isinstance(conditions, list) or not all(isinstance(c, dict) for c in conditions):
                problems.append(f"{at}: Conditions must be a list of condition objects, got {conditions!r:.80}")
            for branch in ("IfSteps", "ElseSteps"):
                if not isinstance(arguments.get(branch, []), list):
                    problems.append(f"{at}: {branch} must be a list of steps, got {arguments[branch]!r:.80}")
                else:
                    _step_problems(arguments.get(branch, []), f"{at} {branch}", problems)


def build_graph(definition: dict[str, Any]) -> dict[str, StepNode]:
    problems = definition_problems(definition)
    if problems:
        raise DefinitionError("; ".join(problems))
    nodes: list[StepNode] = []
    _flatten(definition["Steps"], None, nodes)
    graph: dict[str, StepNode] = {}
    for node in nodes:
        if node.name in graph:
            raise DefinitionError(f"two steps are named {node.name!r}")
        if node.type not in SUPPORTED_TYPES:
            raise DefinitionError(f"step {node.name!r} has type {node.type!r}, which the local executor does not "
                                  f"run (supported: {', '.join(SUPPORTED_TYPES)})")
        graph[node.name] = node
    for node in graph.values():
        arguments = {k: v for k, v in node.arguments.items() if k not in ("IfSteps", "ElseSteps")}
        node.needs = step_references(arguments) | set(node.definition.get("DependsOn", []))
        if node.branch_of:
            node.needs.add(node.branch_of[0])
        node.needs.discard(node.name)
        missing = sorted(node.needs - graph.keys())
        if missing:
            raise DefinitionError(f"step {node.name!r} refers to unknown step(s): {', '.join(missing)}")
    order(graph)  # raises on cycles
    return graph


def order(graph: dict[str, StepNode]) -> list[list[str]]:
    """Steps in waves: every step of a wave can run concurrently once earlier waves are done."""
    remaining = {name: set(node.needs) for name, node in graph.items()}
    waves: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        ready = sorted(name for name, needs in remaining.items() if needs <= done)
        if not ready:
            cycle = ", ".join(sorted(remaining))
            raise DefinitionError(f"the steps {cycle} wait for each other (a cycle)")
        waves.append(ready)
        done.update(ready)
        for name in ready:
            del remaining[name]
    return waves
