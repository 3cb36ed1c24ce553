"""SageMaker's request shapes from botocore's service model: the authority on what a request may hold."""
from __future__ import annotations

import functools
from typing import Any

import botocore.session
from botocore.validate import ParamValidator


@functools.lru_cache(maxsize=1)
def _sagemaker() -> Any:
    return botocore.session.get_session().get_service_model("sagemaker")


def request_problems(operation: str, arguments: dict[str, Any]) -> str | None:
    """botocore's report of what ``arguments`` break in ``operation``'s request shape, or None if valid."""
    report = ParamValidator().validate(arguments, _sagemaker().operation_model(operation).input_shape)
    return report.generate_report() if report.has_errors() else None
