"""Answers moto does not give (an operation it lacks, an error it never answers), injected through botocore's own
before-call hook on the real client: by then botocore has validated the request against the service's model and
serialized it, and tests/conftest.py has checked its enums and limits. The hook sees the request as it would be
sent; the caller gets what botocore makes of the answer: the parsed response, or for an error status the client's
exception for the code (``client.exceptions.ResourceInUse``, else a plain ``ClientError``), as from the service.
(botocore's retries happen below this hook: an error answered here is the one left after them.)"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse
from moto.sagemaker.models import sagemaker_backends

ACCOUNT = "123456789012"  # moto's default account

Answer = tuple[AWSResponse, dict[str, Any]]


def answer(status: int, parsed: dict[str, Any]) -> Answer:
    """What a before-call handler returns to stand for the service: botocore takes (HTTP response, parsed body) and
    raises the error of ``parsed["Error"]["Code"]`` for a status of 300 or more."""
    metadata = {"HTTPStatusCode": status, "HTTPHeaders": {}, "RetryAttempts": 0}
    return AWSResponse("https://answered.before-call", status, {}, None), {**parsed, "ResponseMetadata": metadata}


def error(code: str, message: str, status: int = 400) -> Answer:
    return answer(status, {"Error": {"Code": code, "Message": message}})


def on_call(client: Any, operation: str, respond: Callable[[dict[str, Any]], Answer | None]) -> None:
    """``respond(request)`` hears every ``operation`` request of ``client`` (a JSON-protocol service's, read back
    from the body botocore serialized); an answer it returns stands for the service's, None lets the request go on
    to moto. It may also raise: the caller dying mid-call."""
    def hook(params: dict[str, Any], **_: Any) -> Answer | None:
        return respond(json.loads(params["body"]))

    client.meta.events.register(f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}", hook)


def update_endpoints(sm: Any, then: Callable[[dict[str, Any]], Answer | None] | None = None) -> list[dict[str, Any]]:
    """UpdateEndpoint, which moto 5.2.5 lacks, answered as SageMaker starts an update: ValidationException for an
    endpoint or endpoint config moto does not have, else the endpoint's ARN. Returns the requests, as botocore
    serialized them, in order. ``then(request)`` runs before the answer: it may change moto's state (the endpoint as
    the update leaves it), raise, or return an answer of its own (``error(...)``). Nothing changes moto's endpoint
    otherwise: a test says what the update did (serves the new config, rolls back) when it matters."""
    updates: list[dict[str, Any]] = []

    def respond(request: dict[str, Any]) -> Answer:
        updates.append(request)
        backend = sagemaker_backends[ACCOUNT][sm.meta.region_name]
        endpoint = backend.endpoints.get(request["EndpointName"])
        if endpoint is None:
            return error("ValidationException", f"Could not find endpoint '{request['EndpointName']}'.")
        if request["EndpointConfigName"] not in backend.endpoint_configs:
            return error("ValidationException",
                         f"Could not find endpoint configuration '{request['EndpointConfigName']}'.")
        return (then(request) if then else None) or answer(200, {"EndpointArn": endpoint.arn})

    on_call(sm, "UpdateEndpoint", respond)
    return updates
