"""The model artifact's entry module for SageMaker's serving toolkits (``model.tar.gz/code/serve_endpoint.py``).

The PyTorch inference image serves ``SAGEMAKER_PROGRAM`` through TorchServe →
``sagemaker_pytorch_serving_container.handler_service`` → ``sagemaker_inference.transformer.Transformer``.
That Transformer's calling convention decides the shape of these functions:

- it counts each handler's parameters and, when there is one more than it supplies, passes its
  request *context* in that slot (``_run_handler_function``). So ``model_fn`` takes exactly the
  model folder, ``model_warmup_fn`` the folder and the model, and ``transform_fn`` the four values
  the toolkit supplies plus ``context``;
- it turns any exception into an error response whose body is the message *followed by the
  traceback* (``Transformer.handle_error``), and only its own ``BaseInferenceToolkitError`` keeps a
  4xx status. A refused request is therefore answered here: the status goes through the same
  ``context.set_response_status`` call ``handle_error`` makes, and the body is the JSON the local
  endpoint sends (``{"error": ..., "errors": [{row, field, problem}]}``), with no traceback. Without a
  context (another toolkit) the refusal is raised as the toolkit's own error class, which keeps the
  status. A fault of the server itself is logged with its traceback and answered 500 with an id to
  find it in the logs.

The toolkit decodes ``application/json`` and ``text/csv`` bodies as UTF-8 *before* calling us, so a
body that is not UTF-8 under exactly those types is refused by the toolkit itself (500): see
docs/design/sagemaker-sdk-v3.md §11.
"""
from __future__ import annotations

import json
import logging
import uuid
from http import HTTPStatus
from typing import Any

from inference.capture import redacted_traceback
from inference.handler import JSON, RequestError, Service, freeze_loaded, invoke, limit_process_threads, load_service, warm_up

log = logging.getLogger("diagnosa.serving")


def model_fn(model_dir: str) -> Service:
    limit_process_threads()  # a TorchServe worker serves one request at a time; the workers share the cores
    return load_service(model_dir)


def model_warmup_fn(model_dir: str, model: Service) -> None:  # noqa: ARG001  (the toolkit's signature)
    warm_up(model)
    freeze_loaded()  # a TorchServe worker process holds one model for its life


def transform_fn(model: Service, input_data: bytes | str, content_type: str | None, accept: str | None,
                 context: Any = None) -> tuple[bytes, str]:
    try:
        return invoke(model, input_data, content_type, accept)
    except RequestError as err:
        return refuse(err.status, err.body(), context)
    except Exception as err:  # noqa: BLE001  (logged with an id, its messages redacted; the client gets no internals)
        incident = uuid.uuid4().hex
        log.error("invocation failed unexpectedly (incident %s):\n%s", incident, redacted_traceback(err))
        return refuse(500, {"error": "internal error", "incident": incident}, context)


def refuse(status: int, body: dict[str, Any], context: Any) -> tuple[bytes, str]:
    """An error answer with ``status`` and the JSON ``body``, through the context when the toolkit gave one."""
    text = json.dumps(body, ensure_ascii=True)  # escaped: a lone surrogate a client sent must not break the answer
    if context is not None and hasattr(context, "set_response_status"):
        context.set_response_status(code=status, phrase=HTTPStatus(status).phrase)
        return text.encode("utf-8"), JSON
    raise toolkit_error(status, text)


def toolkit_error(status: int, text: str) -> Exception:
    """The serving toolkit's own error class (its only 4xx path), or :class:`RequestError` outside a toolkit."""
    try:
        from sagemaker_inference.errors import BaseInferenceToolkitError
    except ImportError:
        return RequestError(status, text)
    return BaseInferenceToolkitError(status, text, HTTPStatus(status).phrase)
