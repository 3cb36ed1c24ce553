"""The step graph of a pipeline definition: which step waits for which, checked before anything runs.

Edges come from data (an argument reads ``Steps.X...``), from ``DependsOn``, and from condition
branches (a step in a Condition's ``IfSteps``/``ElseSteps`` waits for the condition and runs only on
its branch). Unknown step types, references to missing steps, duplicate names and cycles are
reported at once with the names involved, so a bad definition fails before any step runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.expressions import step_references

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
    for step in steps:
        if not isinstance(step, dict) or "Name" not in step or "Type" not in step:
            raise DefinitionError(f"a step needs a Name and a Type, got {str(step)[:80]}")
        node = StepNode(step["Name"], step["Type"], step.get("Arguments", {}), step, branch_of=branch)
        out.append(node)
        if step["Type"] == "Condition":
            _flatten(node.arguments.get("IfSteps", []), (node.name, True), out)
            _flatten(node.arguments.get("ElseSteps", []), (node.name, False), out)


def build_graph(definition: dict[str, Any]) -> dict[str, StepNode]:
    if not isinstance(definition.get("Steps"), list):
        raise DefinitionError("the definition has no Steps list")
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
