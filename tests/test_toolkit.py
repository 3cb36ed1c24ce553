"""inference/toolkit.py with the toolkits' own classes: the refusal and fault paths that TorchServe cannot provoke."""
from __future__ import annotations

import inspect
import json

import pytest
from sagemaker_inference.errors import BaseInferenceToolkitError
from ts.context import Context, RequestProcessor

from inference import toolkit


def context() -> Context:
    ctx = Context("model", "/opt/ml/model", None, 1, None, "0.12.0")
    ctx.request_processor = [RequestProcessor({"Content-Type": "application/json"})]
    return ctx


def test_arities_match_the_transformers_calling_convention():
    # sagemaker_inference's Transformer passes its context to a handler with one parameter more than it supplies.
    assert len(inspect.signature(toolkit.model_fn).parameters) == 1  # (model_dir)
    assert len(inspect.signature(toolkit.model_warmup_fn).parameters) == 2  # (model_dir, model)
    assert len(inspect.signature(toolkit.transform_fn).parameters) == 5  # (model, data, type, accept) + context


def test_without_a_context_a_refusal_is_the_toolkits_own_error_class():
    with pytest.raises(BaseInferenceToolkitError) as err:
        toolkit.refuse(415, {"error": "unsupported content type", "errors": []}, None)
    assert err.value.status_code == 415 and err.value.phrase == "Unsupported Media Type"
    assert json.loads(err.value.message)["error"] == "unsupported content type"


def test_a_refusal_naming_a_lone_surrogate_is_still_valid_json():
    ctx = context()
    body, _ = toolkit.refuse(400, {"error": "1 problem(s)", "errors": [{"row": 0, "field": "\ud800", "problem": "x"}]},
                             ctx)
    assert json.loads(body.decode("utf-8"))["errors"][0]["field"] == "\ud800"
    assert ctx.get_response_status(0)[0] == 400


def test_a_server_fault_through_the_toolkits_own_transformer_is_a_500_with_an_incident_id(tmp_path, monkeypatch,
                                                                                        caplog):
    """The fault path TorchServe cannot provoke, through sagemaker_inference's Transformer as TorchServe drives it:
    the user module found by SAGEMAKER_PROGRAM, the body decoded as the toolkit decodes it, the context handed over
    by the toolkit's arity rule. Only the model is faulty (an object that cannot score)."""
    from sagemaker_inference.transformer import Transformer

    (tmp_path / "faulty_serving.py").write_text(
        "from inference.toolkit import transform_fn  # noqa: F401  (the serving program's own)\n\n\n"
        "def model_fn(model_dir):\n    return object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "faulty_serving.py")
    ctx = Context("model", str(tmp_path), None, 1, None, "0.12.0")
    ctx.request_processor = [RequestProcessor({"Content-Type": "application/json", "Accept": "application/json"})]
    [body] = Transformer().transform([{"body": b'{"age": 40}'}], ctx)
    assert ctx.get_response_status(0) == (500, "Internal Server Error")
    payload = json.loads(body)
    assert payload["error"] == "internal error" and len(payload["incident"]) == 32
    assert "Traceback" not in (body if isinstance(body, str) else body.decode())
    assert payload["incident"] in caplog.text and "Traceback" in caplog.text
    assert "builtins.AttributeError: '…' object has no attribute '…'" in caplog.text  # messages redacted in the log
