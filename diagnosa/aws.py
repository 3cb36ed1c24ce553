"""AWS settings read the way the AWS CLI and boto3 read them, in one place for every command and client."""
from __future__ import annotations

import os
from typing import Any

from botocore.exceptions import BotoCoreError


def resolve_region(explicit: str | None = None) -> str | None:
    """``explicit`` (a --region flag), else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``; None when none is set."""
    return explicit or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


# A server that accepts the connection and never answers kept a command silent for over five minutes (60 s
# reads, botocore's five legacy attempts). Control-plane answers take seconds; S3 answers a PUT once it has
# the body. Bounded, the worst case is three 30 s waits, then the error names the endpoint.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 30
ATTEMPTS = 3


def client(service: str, region: str | None = None, **kwargs: Any) -> Any:
    """A boto3 client for the commands' AWS calls, with bounded timeouts and retries (``kwargs``: boto3's), that
    refuses an answer its own parser cannot read as :class:`UnreadableAnswer`."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                    retries={"total_max_attempts": ATTEMPTS, "mode": "standard"})
    make: Any = boto3.client  # typed per service by overloads; the service here is a plain string
    made = make(service, region_name=resolve_region(region), config=config, **kwargs)
    made.meta.events.register(f"before-parse.{made.meta.service_model.service_id.hyphenize()}", _refuse_unreadable)
    return made


class UnreadableAnswer(BotoCoreError):
    """An answer botocore's parser cannot read: a JSON ``null`` or list where the service model has an object, a
    string where it has a list, a time or number that is none, XML that is not XML. The parser raised AttributeError,
    ValueError or its own ResponseParserError (no BotoCoreError) from inside the call, a traceback past every
    command's handling of AWS's failures (BotoCoreError, ClientError)."""

    fmt = "the answer to {operation} cannot be read ({problem})"


PROBLEM_CHARS = 200  # of the parser's own words quoted: its ValueError quotes the value whole


def _refuse_unreadable(operation_model: Any, response_dict: dict[str, Any], **_: Any) -> None:
    """botocore's ``before-parse`` hook: the answer parsed once here, as the client is about to, so what the parser
    cannot read is an UnreadableAnswer. A control-plane answer or a listing page is parsed twice (milliseconds beside
    the request); a streamed body (S3's GetObject) is not read here."""
    from botocore.parsers import ResponseParserError, create_parser

    if response_dict.get("status_code", 200) >= 300 or operation_model.has_streaming_output:
        return  # an error's body is botocore's to read (a ClientError either way); a stream is the caller's
    try:
        create_parser(operation_model.service_model.resolved_protocol).parse(response_dict,
                                                                             operation_model.output_shape)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, ResponseParserError) as err:
        problem = f"{type(err).__name__}: {err}"
        raise UnreadableAnswer(operation=operation_model.name, problem=problem[:PROBLEM_CHARS]) from None
