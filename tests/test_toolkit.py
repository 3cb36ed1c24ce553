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


def test_a_server_fault_is_a_500_with_an_incident_id_and_no_internals(caplog):
    ctx = context()
    body, media = toolkit.transform_fn(object(), b'{"age": 40}', "application/json", "application/json", ctx)
    assert ctx.get_response_status(0) == (500, "Internal Server Error")
    payload = json.loads(body)
    assert payload["error"] == "internal error" and len(payload["incident"]) == 32 and media == "application/json"
    assert "Traceback" not in body.decode()
    assert payload["incident"] in caplog.text and "Traceback" in caplog.text  # the traceback goes to the log


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
