"""The CDK app's Lambda functions loaded as Lambda loads them (plain modules, their folder the task root)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

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
    return module


# The pipeline definition Diagnosa builds for the built-in cohort, as reviewed (pinned by test_definition's snapshot
# test): what the retrain function reads the declared parameters from, with DescribePipeline.
DEFINITION = Path(__file__).resolve().parent / "snapshots" / "pipeline-definition.json"


def create_pipeline(sagemaker: object, name: str, definition: str | None = None) -> None:
    """Create pipeline ``name`` (moto's SageMaker) with ``definition``, by default the reviewed built-in one."""
    sagemaker.create_pipeline(  # type: ignore[attr-defined]
        PipelineName=name, RoleArn=f"arn:aws:iam::123456789012:role/{name}-pipeline",
        PipelineDefinition=definition if definition is not None else DEFINITION.read_text(encoding="utf-8"))
