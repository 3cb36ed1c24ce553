"""The CDK app's Lambda functions loaded as Lambda loads them (plain modules, their folder the task root), their
entry points answering through Lambda's own runtime code."""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

FUNCTIONS = Path(__file__).resolve().parents[1] / "infra" / "functions"


def load_function(name: str) -> ModuleType:
    """``<name>/handler.py``, or ``jobs/<name>.py`` for the functions that start processing jobs (monitor, retrain),
    whose folder goes on the path as Lambda's task root is, for their shared ``job_request``."""
    path = FUNCTIONS / name / "handler.py"
    if not path.exists():
        path = FUNCTIONS / "jobs" / f"{name}.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"diagnosa_fn_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for entry in ENTRY_POINTS:
        if hasattr(module, entry):
            setattr(module, entry, as_lambda_answers(getattr(module, entry)))
    return module


ENTRY_POINTS = ("handler", "resources")  # the template's handlers: handler.handler, handler.resources, retrain.handler, …
# What AWS_EXECUTION_ENV names in the stack's runtime (infra/stack.py RUNTIME); test_functions_in_lambda_runtime.py
# holds the template to it. From python3.12 on, the runtime's encoder writes non-ASCII text as it is.
RUNTIME = "python3.14"


def as_lambda_answers(entry: Callable[..., Any]) -> Callable[..., Any]:
    """``entry``, its result or its exception also put through what Lambda's runtime (awslambdaric) does with them
    before the invoker hears: the result encoded by its marshaller and sent as UTF-8, an exception made into its error
    document, written to the log and sent. A result or message the runtime cannot send (a lone surrogate, an object
    JSON has no form for) fails the test here: on AWS it ended the runtime (Runtime.ExitError, and an asynchronous
    event retried) after the function had done its work. The runtime itself runs the functions in
    tests/infra/test_functions_in_lambda_runtime.py."""
    @functools.wraps(entry)
    def answered(*args: Any, **kwargs: Any) -> Any:
        from awslambdaric import bootstrap, lambda_runtime_marshaller

        runtime = mock.patch.dict(os.environ, {"AWS_EXECUTION_ENV": f"AWS_Lambda_{RUNTIME}"})  # its encoder reads it
        try:
            result = entry(*args, **kwargs)
        except Exception as err:
            document = bootstrap.make_error(str(err), type(err).__name__, [], "test-request")
            with runtime:
                lambda_runtime_marshaller.to_json(document).encode("utf-8")  # as post_invocation_error sends it
            raise
        with runtime:
            body, _ = lambda_runtime_marshaller.LambdaMarshaller().marshal_response(result)
        if not isinstance(body, bytes):
            body.encode("utf-8")  # as post_invocation_result sends it
        return result
    return answered


# The pipeline definition Diagnosa builds for the built-in cohort, as reviewed (pinned by test_definition's snapshot
# test): what the retrain function reads the declared parameters from, with DescribePipeline.
DEFINITION = Path(__file__).resolve().parent / "snapshots" / "pipeline-definition.json"


def create_pipeline(sagemaker: object, name: str, definition: str | None = None) -> None:
    """Create pipeline ``name`` (moto's SageMaker) with ``definition``, by default the reviewed built-in one."""
    sagemaker.create_pipeline(  # type: ignore[attr-defined]
        PipelineName=name, RoleArn=f"arn:aws:iam::123456789012:role/{name}-pipeline",
        PipelineDefinition=definition if definition is not None else DEFINITION.read_text(encoding="utf-8"))
