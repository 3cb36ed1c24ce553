"""SageMaker's request shapes from botocore's service model: the authority on what a request may hold."""
from __future__ import annotations

import functools
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

# Instance counts of the jobs' clusters (botocore's shapes; the service's own bounds). botocore allows a
# training count of 0 — the count of a heterogeneous cluster lives in its InstanceGroups — but a
# ResourceConfig without InstanceGroups, the pipeline's, needs at least one instance.
INSTANCE_COUNT_SHAPES = {"processing": "ProcessingInstanceCount", "training": "TrainingInstanceCount"}
MIN_INSTANCES = 1


@functools.lru_cache(maxsize=1)
def _sagemaker() -> Any:
    return botocore.session.get_session().get_service_model("sagemaker")


def instance_count_range(kind: str) -> tuple[int, int | None]:
    """(least, most) instances a ``kind`` ("processing" or "training") job may have; most None: no bound."""
    metadata = _sagemaker().shape_for(INSTANCE_COUNT_SHAPES[kind]).metadata
    return max(MIN_INSTANCES, int(metadata.get("min", MIN_INSTANCES))), metadata.get("max")


def instance_count_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` is not an instance count of a ``kind`` job, or None."""
    least, most = instance_count_range(kind)
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number, got {value!r}"
    if value < least or (most is not None and value > most):
        return f"must be {least} to {most}, got {value}" if most is not None else f"must be at least {least}, got {value}"
    return None


def request_problems(operation: str, arguments: dict[str, Any]) -> str | None:
    """botocore's report of what ``arguments`` break in ``operation``'s request shape, or None if valid."""
    report = ParamValidator().validate(arguments, _sagemaker().operation_model(operation).input_shape)
    problems = report.generate_report().splitlines() if report.has_errors() else []
    resources = arguments.get("ResourceConfig") if operation == "CreateTrainingJob" else None
    if isinstance(resources, dict) and not resources.get("InstanceGroups") \
            and isinstance(resources.get("InstanceCount"), int) and resources["InstanceCount"] < MIN_INSTANCES:
        problems.append(f"Invalid value for parameter ResourceConfig.InstanceCount, value: {resources['InstanceCount']}, "
                        f"valid min value: {MIN_INSTANCES} (a cluster without InstanceGroups)")
    return "\n".join(problems) or None
