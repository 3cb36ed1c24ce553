"""Client for applications: ``predict(patients) -> results`` over the SageMaker runtime API.

The same code talks to a real SageMaker endpoint (region + endpoint name, credentials from the
usual AWS chain) and to the local endpoint (``endpoint_url="http://127.0.0.1:8080"``). Timeouts and
retries come from botocore: "standard" retry mode retries throttling, connection failures and transient
5xx errors with exponential backoff; a read timeout of InvokeEndpoint is not retried (the request was
delivered: a retry would run the model again); a rejected request (the model's 4xx) is not retried and
surfaces as :class:`PredictionRejected` with the field errors the endpoint sent.

An answer is taken only when it is one valid prediction per patient sent (:func:`prediction_problem`);
anything else is :class:`InvalidAnswer`, naming what is wrong.
"""
from __future__ import annotations

import csv
import http.client
import io
import json
import math
import os
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore import UNSIGNED
from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
)
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    IncompleteReadError,
    NoAuthTokenError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSOError,
    TokenRetrievalError,
)

from diagnosa.aws import resolve_region
from diagnosa.data.csv_cells import is_blank_row
from diagnosa.data.validate import shown
from inference.limits import (
    CAPTURE_HEADER,
    INVOKE_TIMEOUT,
    MAX_BODY_BYTES,
    MAX_LISTED_PROBLEMS,
    MAX_REFUSAL_BYTES,
    TOKEN_ENV,
    token_problem,
)

if TYPE_CHECKING:  # imported where used: the feedback module is not needed to predict
    from inference.feedback import StoredFeedback

JSON = "application/json"
CSV = "text/csv"
DEFAULT_ATTEMPTS = 4  # attempts of a call, retries included, unless the caller says otherwise
DEFAULT_TIMEOUT = INVOKE_TIMEOUT  # seconds a socket read waits for the answer (inference.limits)
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds a connection waits at most (less when the timeout is shorter)
PROBABILITY_SUM_TOLERANCE = 1e-3  # how far a prediction's probabilities may sum from 1 (the endpoint rounds each to 6 places)
# A container's statuses that say "not now", not "not this": its queue is full (429), it did not get the request in
# time (408), it has no worker free (503). SageMaker's codes that say so of the endpoint or the service.
BUSY_STATUSES = frozenset({408, 429, 503})
BUSY_CODES = frozenset({"ModelNotReadyException", "ThrottlingException", "Throttling", "ThrottledException",
                        "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottled",
                        "RequestThrottledException", "SlowDown"})
# AWS's codes for a call whose credentials are missing, expired or invalid, or whose identity may not invoke the endpoint.
PERMISSION_CODES = frozenset({"AccessDeniedException", "AccessDenied", "NotAuthorized"})
CREDENTIAL_CODES = frozenset({"ExpiredTokenException", "ExpiredToken", "UnrecognizedClientException",
                              "InvalidSignatureException", "IncompleteSignature", "IncompleteSignatureException",
                              "MissingAuthenticationToken", "MissingAuthenticationTokenException",
                              "InvalidClientTokenId", "SignatureDoesNotMatch", "RequestExpired"})
# botocore's errors for credentials that could not be had (none configured, a credential_process or an SSO token that
# failed, half a key pair).
CREDENTIAL_ERRORS: tuple[type[BotoCoreError], ...] = (NoCredentialsError, PartialCredentialsError,
                                                      CredentialRetrievalError, TokenRetrievalError, NoAuthTokenError,
                                                      SSOError)
# The most read or kept of an error reply is MAX_REFUSAL_BYTES, the endpoint's own refusals' size: a proxy or a wrong
# URL answering 400 with megabytes of field errors made `diagnosa feedback --file` write gigabytes of them.
MAX_FIELD_ERRORS = 20  # a refused feedback record's field problems kept; the rest are counted
MAX_MESSAGE_CHARS = 1000  # an endpoint's error message, as kept in an exception


def overall_deadline(timeout: float, attempts: int = DEFAULT_ATTEMPTS) -> float:
    """The longest a call may take in all (every attempt and the reading of its answer), for a client whose
    ``timeout`` bounds each connection and socket read: ``timeout`` x ``attempts``. The rule of the CLI's calls (and
    the app's, :attr:`app.config.AppConfig.deadline`): a per-read timeout alone never fires for an endpoint that
    trickles its answer a byte every few seconds, which held a command for days."""
    return timeout * attempts


STOP_GRACE = 1.0  # seconds a call past its deadline is given to end once its connection is shut


class _Call:
    """A call run by :func:`within_deadline` in its worker thread: the HTTP connections that thread sent requests on
    (the client's connections are :class:`_Stoppable`), how many requests it sent and when the last, and whether its
    deadline passed (:meth:`stop`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[_Stoppable] = []
        self.stopped = False
        self.sent = 0  # requests sent, retries included
        self.last_sent: float | None = None  # time.monotonic() when the last was sent

    def sending(self, connection: _Stoppable) -> None:
        with self._lock:
            if self.stopped:  # a retry after the deadline: not sent
                raise ConnectionAbortedError("the call's deadline passed: no further request is sent")
            self._connections.append(connection)

    def sent_one(self, connection: _Stoppable) -> None:
        with self._lock:
            self.sent += 1
            self.last_sent = time.monotonic()
            stopped = self.stopped
        if stopped:  # stopped while the request was being sent (its socket perhaps not yet made): shut it now
            _shut(connection)

    def stop(self) -> int:
        """Shut the connections of this call's requests, which ends their reads at once (and tells the endpoint):
        a per-read timeout never fires for an answer trickling a byte every few seconds, and the call's thread and
        socket stayed for as long as the endpoint trickled. Returns how many were shut; no further request is sent
        (:meth:`sending`, and botocore is not to retry: :func:`_no_retry_after_read_timeout`)."""
        with self._lock:
            self.stopped = True
            connections, self._connections = self._connections, []
        # A pooled connection given back, then taken by another call's thread, is that call's: left alone.
        return sum(_shut(c) for c in connections if c.diagnosa_call is self)

    def finish(self) -> None:
        """The call returned: its connections (back in botocore's pool) are no longer its to shut."""
        with self._lock:
            self._connections = []


def _shut(connection: Any) -> bool:
    """Shut down a connection's socket for reading and writing (from any thread): a read blocked in it returns at once
    with the end of the stream, and the endpoint sees the connection closed; the thread reading it closes it. A
    close() alone does not end a read blocked in another thread (Linux), and would free the descriptor under it."""
    # urllib lets go of the connection's socket once the answer's headers are read (its answer reads it): the socket
    # the request was sent on (_Stoppable.request) then.
    sock = getattr(connection, "sock", None) or getattr(connection, "diagnosa_sock", None)
    if not isinstance(sock, socket.socket):
        return False
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the TCP connection's, under TLS too (its state left alone)
    except OSError:  # already closed, or never connected
        return False
    return True


_running = threading.local()  # .call: the _Call the current thread runs (within_deadline's worker), else None


def _stopped() -> bool:
    """Whether the current thread runs a call whose deadline passed."""
    call: _Call | None = getattr(_running, "call", None)
    return call is not None and call.stopped


class _Stoppable:
    """An HTTP connection (botocore's, or urllib's for ``/ping`` and ``/feedback``) whose requests made in a call of
    :func:`within_deadline` are the call's: shut when its deadline passes, and counted for its message."""

    diagnosa_call: _Call | None = None  # the call of the request last sent on the connection
    diagnosa_sock: Any = None  # the socket it was sent on

    def request(self, *args: Any, **kwargs: Any) -> Any:
        call: _Call | None = getattr(_running, "call", None)
        self.diagnosa_call = call
        self.diagnosa_sock = None
        if call is None:
            return super().request(*args, **kwargs)  # type: ignore[misc]  # a mixin: the connection class's request
        call.sending(self)
        result = super().request(*args, **kwargs)  # type: ignore[misc]  # (as above)
        self.diagnosa_sock = getattr(self, "sock", None)
        call.sent_one(self)
        return result


class _StoppableAWSHTTPConnection(_Stoppable, AWSHTTPConnection):  # type: ignore[misc]  # botocore's own mix (its stubs say so)
    pass


class _StoppableAWSHTTPSConnection(_Stoppable, AWSHTTPSConnection):  # type: ignore[misc]  # botocore's own mix (its stubs say so)
    pass


class _StoppableAWSHTTPConnectionPool(AWSHTTPConnectionPool):
    ConnectionCls = _StoppableAWSHTTPConnection


class _StoppableAWSHTTPSConnectionPool(AWSHTTPSConnectionPool):
    ConnectionCls = _StoppableAWSHTTPSConnection


class _StoppableHTTPConnection(_Stoppable, http.client.HTTPConnection):
    pass


class _StoppableHTTPSConnection(_Stoppable, http.client.HTTPSConnection):
    pass


class _StoppableHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_StoppableHTTPConnection, req)


class _StoppableHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_StoppableHTTPSConnection, req)  # the default TLS context, as urlopen's


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the HTTPError it is, never followed: the endpoint answers none, and urllib would
    resend a POST as a GET without its body, with the feedback token's ``Authorization`` header, wherever it points."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None


def _urlopen(request: urllib.request.Request | str, timeout: float) -> Any:
    """``urllib.request.urlopen(request, timeout=timeout)`` (the same handlers, proxies from the environment) but for
    redirects (:class:`_NoRedirects`), on a connection :func:`within_deadline` shuts when its deadline passes."""
    return urllib.request.build_opener(_StoppableHTTPHandler, _StoppableHTTPSHandler, _NoRedirects).open(
        request, timeout=timeout)


def _stoppable_transport(runtime: Any) -> bool:
    """Make a botocore client's requests :class:`_Stoppable` (its connection pools' connection class); False when it
    is not a botocore client or its transport is not botocore's own (left alone: its calls past a deadline are then
    left to end on their own). botocore has no means to end a request in flight, nor a total deadline on an answer
    (urllib3's read timeout is per read): its session's pool classes are the one place to reach the connection."""
    session = getattr(getattr(runtime, "_endpoint", None), "http_session", None)
    classes = getattr(session, "_pool_classes_by_scheme", None)
    if not isinstance(classes, dict):
        return False
    if classes.get("http") is _StoppableAWSHTTPConnectionPool:
        return True
    if classes.get("http") is not AWSHTTPConnectionPool or classes.get("https") is not AWSHTTPSConnectionPool:
        return False
    # The dict botocore's pool managers (proxy ones too) take their pool classes from.
    classes.update(http=_StoppableAWSHTTPConnectionPool, https=_StoppableAWSHTTPSConnectionPool)
    close = getattr(session, "close", None)
    if callable(close):  # pools a used client made before keep their class: dropped (idle connections closed)
        close()
    return True


def _timeout_message(what: str, deadline: float, sent: int, since: float | None, shut: int) -> str:
    """What happened to a call whose deadline passed: how many requests it made, how long the last had waited."""
    head = f"{what} gave no complete answer within {deadline:g} s"
    if sent == 0:
        return f"{head}: no request was sent in that time"
    closed = "its connection was closed" if shut else "it is left to end on its own"
    waited = f"{since:.1f} s after it was sent" if since is not None else "when the deadline passed"
    if sent == 1:
        return (f"{head}: 1 request was made, and its answer was still not complete {waited} (an answer coming slowly "
                f"or not at all); {closed}")
    return (f"{head}: {sent} requests were made (retries included), and the answer to the last was still not complete "
            f"{waited}; {closed}")


def within_deadline(call: Any, deadline: float | None, what: str) -> Any:
    """``call()``'s result within ``deadline`` seconds (or its exception); :class:`AnswerTimeout` past it, saying
    that ``what`` gave no complete answer in that time and how many requests were made. None: no deadline.

    The call runs in a daemon thread. When the deadline passes, the connection of its request in flight is shut
    (for the client's own connections, :class:`_Stoppable`: botocore's and urllib's), which ends the read the thread
    is blocked in and tells the endpoint; no further request (retry) is sent, and the thread is given STOP_GRACE
    seconds to end. An endpoint trickling its answer a byte at a time never lets a per-read timeout fire: a thread
    and an open socket were left for as long as it trickled, on every call, in a long-lived process (the app)."""
    if deadline is None:
        return call()
    box: dict[str, Any] = {}
    state = _Call()

    def run() -> None:
        _running.call = state
        try:
            box["value"] = call()
        except BaseException as err:  # noqa: BLE001  (re-raised in the caller's thread)
            box["error"] = err
        finally:
            _running.call = None
            state.finish()

    worker = threading.Thread(target=run, name="diagnosa-client-call", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        sent, last = state.sent, state.last_sent
        since = None if last is None else time.monotonic() - last
        shut = state.stop()
        if shut:  # its read ends at once: the thread is gone when the caller is told
            worker.join(STOP_GRACE)
        raise AnswerTimeout(_timeout_message(what, deadline, sent, since, shut), attempts=sent)
    if "error" in box:
        raise box["error"]
    return box["value"]


def _clipped(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit:,} more characters)"


def _not_the_endpoint(where: str, status: int, headers: Mapping[str, str]) -> ClientFailure:
    """What an answer in another server's words means (a redirect was read as a failure of the endpoint, a proxy's
    503 page as the model still loading)."""
    if 300 <= status < 400:
        target = urllib.parse.urlsplit(str(headers.get("location") or ""))
        to = f" to {shown(f'{target.scheme}://{target.netloc}', 120)}" if target.netloc else ""  # not its path or query
        return NotTheEndpoint(f"{where}: its address answered a redirect (HTTP {status}{to}), not the endpoint: the "
                              "endpoint URL is likely wrong (https:// for http://? a sign-in page in front of it?)")
    if status in (502, 503, 504):  # a gateway's "the server behind me is not answering": down or restarting
        return EndpointBusy(f"{where}: something in front of it (a proxy or load balancer) answered HTTP {status}, "
                            "not the endpoint: the endpoint may be down or restarting; ask again in a moment")
    return NotTheEndpoint(f"{where}: its address answered HTTP {status} with a page that is not the endpoint's answer: "
                          "check the endpoint URL")


def _problems(raw: Any, more: Any) -> tuple[list[dict[str, Any]], int]:
    """A refusal's ``errors`` as an endpoint sent them, kept as the endpoint itself lists them: the objects only
    (not a string, a null or a number), at most MAX_LISTED_PROBLEMS and those up to MAX_REFUSAL_BYTES; and the
    number of problems not kept, ``more`` (the endpoint's ``more_errors``) included when it is a count."""
    items = raw if isinstance(raw, list) else []
    listed: list[dict[str, Any]] = []
    size = 0
    for item in items:
        if not isinstance(item, dict):
            continue
        try:
            size += len(json.dumps(item, ensure_ascii=False, default=str)) + 2
        except (TypeError, ValueError, RecursionError):
            continue
        if len(listed) >= MAX_LISTED_PROBLEMS or size > MAX_REFUSAL_BYTES:
            break
        listed.append(item)
    dropped = sum(1 for item in items if isinstance(item, dict)) - len(listed)
    counted = more if isinstance(more, int) and not isinstance(more, bool) and more > 0 else 0
    return listed, dropped + counted


class ClientFailure(RuntimeError):
    """The endpoint could not be reached or failed; the message says which and why."""


class EndpointUnreachable(ClientFailure):
    """The endpoint could not be reached at all (nothing listening, no route to it, no answer in time): the next
    request would fare no better."""


class AnswerTimeout(EndpointUnreachable):
    """The request was sent but no complete answer came in time (a socket read, or the call's overall deadline): the
    endpoint may have processed it (a feedback record may be stored, a prediction captured). ``attempts``: the
    requests the call had made (retries included) when its overall deadline passed; None when not counted (a socket
    read's timeout: one request)."""

    def __init__(self, message: str, *, attempts: int | None = None):
        super().__init__(message)
        self.attempts = attempts


class ModelTimeout(ClientFailure):
    """SageMaker stopped waiting for the model's answer (its 60 s limit on a container's reply: a ModelError whose
    original status is 0, "Received server error (0) ... Your invocation timed out"). Nothing is wrong with the input:
    the model was overloaded or the request too large to answer in time; a later or smaller request may be answered."""


class AnswerLost(ClientFailure):
    """The connection broke after the request was sent (closed before the answer, or in the middle of it): the
    endpoint may have processed it; no answer came."""


class EndpointBusy(ClientFailure):
    """The endpoint could not take the request now, for nothing in it: the model's container answered 429 (its queue
    is full), 408 (the request did not reach it in time) or 503 (no worker free), the model is not ready yet
    (ModelNotReadyException) or SageMaker throttled the call (after botocore's retries). The same request asked again
    in a moment may be answered. (Not :class:`diagnosa.services.EndpointBusy`, a deploy's.)"""


class FeedbackNotStored(EndpointBusy):
    """The endpoint took the feedback record but could not store it (its data lake could not be written: a full disk,
    a failing one, other writers rewriting the record's object): nothing was stored, nothing is wrong with the record,
    and the same record sent again later may be stored. The endpoint answers so with 503 and ``Retry-After``."""


class NotAuthorized(ClientFailure):
    """AWS refused the call for who makes it: no credentials, credentials that could not be obtained (a failing
    credential_process, an expired SSO token), expired or invalid ones (``credentials``), or an identity its policy
    does not allow to invoke the endpoint (not ``credentials``). The message is AWS's, which names the identity's role
    and account: for an engineer's terminal or a server log, not for a doctor's page."""

    def __init__(self, message: str, *, credentials: bool = True):
        super().__init__(message)
        self.credentials = credentials


class InvalidAnswer(ClientFailure):
    """The endpoint answered, but not with one valid prediction per patient sent (not JSON, another number of
    predictions, a prediction that is not one: :func:`prediction_problem`). ``problem`` says what is wrong quoting
    at most a clipped value of the answer, never the answer at length (a proxy's sign-in page)."""

    def __init__(self, message: str, problem: str):
        super().__init__(message)
        self.problem = problem


class NotTheEndpoint(ClientFailure):
    """The endpoint's address answered, but not as the endpoint or AWS answers (a redirect, another server's error
    page: botocore names such an answer by its bare HTTP status): the address is wrong, or something in front of the
    endpoint (a sign-in page, a proxy) answers for it."""


class InvalidInput(ClientFailure, ValueError):
    """What the caller passed cannot be sent at all (not a patient record or a list of them)."""


@dataclass
class PredictionRejected(ClientFailure):
    """The endpoint refused the input (4xx); ``errors`` lists row, field and problem."""

    message: str
    status: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    more_errors: int = 0  # problems the endpoint counted but did not list

    SHOWN = 10  # problems a message lists; a file of thousands of bad rows still gives one readable line

    def __str__(self) -> str:
        # Objects only: a PredictionRejected made by hand (or an old caller's) may hold anything in ``errors``.
        problems = [e for e in self.errors if isinstance(e, Mapping)] if isinstance(self.errors, list) else []
        details = "; ".join(f"row {e.get('row')} {e.get('field') or ''}: {e.get('problem')}".replace("  ", " ")
                            for e in problems[:self.SHOWN])
        more = self.more_errors if isinstance(self.more_errors, int) else 0
        hidden = max(0, len(problems) - self.SHOWN) + more
        if hidden:
            details += f"; … and {hidden:,} more problem(s)"
        return f"{self.message} ({details})" if details else self.message


@dataclass
class FeedbackRejected(ClientFailure):
    """This feedback record was refused, for what it holds (``fields`` maps each bad field to its problem), its event
    id (404: no captured prediction; 409: answered, its capture failed) or its size (413); another record may be
    taken. A refusal of every record (the token, the endpoint's own state) is a plain :class:`ClientFailure`."""

    message: str
    status: int
    fields: dict[str, str] = field(default_factory=dict)  # at most MAX_FIELD_ERRORS, and MORE_FIELDS for the rest
    more_fields: int = 0  # field problems the endpoint sent that are not kept

    MORE_FIELDS = "…"  # the key of the line counting the problems not kept (what lists ``fields`` shows it too)

    def __str__(self) -> str:
        details = "; ".join(f"{k}: {v}" for k, v in self.fields.items())
        return f"{self.message} ({details})" if details else self.message


@dataclass
class Prediction:
    results: list[dict[str, Any]]
    event_id: str | None  # data-capture event id (local endpoint): what feedback refers to
    # The endpoint answered with "X-Diagnosa-Capture: failed": these predictions are valid but were not captured (the
    # monitor will not see them, feedback for their event id is refused with 409). Only the local endpoint says so.
    capture_failed: bool = False


def is_probability(value: Any) -> bool:
    """A probability as an answer may hold one: a number (not a boolean), finite, from 0 to 1."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def _not_finite(value: Any) -> str | None:
    """Where the first number that is NaN or infinite is in ``value`` (e.g. 'differential[0].score'), which JSON cannot
    hold (a writer with allow_nan=False refuses it; one without writes text no JSON reader takes); None: none."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path or "the prediction"
        if isinstance(item, Mapping):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return None


def prediction_problem(result: Any) -> str | None:
    """What makes an endpoint's prediction not a valid one (None when it is valid): the client refuses an answer
    holding such a prediction (:class:`InvalidAnswer`), and the app refuses to show one. An answer that is JSON but
    not a diagnosis crashed the page (a missing category, a null probability, a top-k item without its probability),
    showed wrong numbers (7.5 read 'over 99.9 %', NaN 'nan %', probabilities of 0.95, 0.9 and 0.8 as they came) or
    was written as JSON no reader takes (NaN) by `diagnosa predict`."""
    if not isinstance(result, Mapping):
        return f"the prediction is {type(result).__name__ if result is not None else 'null'}, not an object"
    category = result.get("category")
    if not isinstance(category, str) or not category:
        return "no category (text) in the prediction"
    probabilities = result.get("probabilities")
    if not isinstance(probabilities, Mapping) or not probabilities:
        return "no probabilities in the prediction"
    for name, value in probabilities.items():
        if not isinstance(name, str):
            return "a probability not keyed by a category name"
        if not is_probability(value):
            return f"the probability of {shown(name)} is {shown(value)}, not a number from 0 to 1"
    total = math.fsum(probabilities.values())
    if abs(total - 1) > PROBABILITY_SUM_TOLERANCE:
        return f"its probabilities sum to {total:.4g}, not 1"
    if category not in probabilities:
        return f"the category {shown(category)} has no probability"
    top_k = result.get("top_k", [])
    if not isinstance(top_k, list):
        return "top_k is not a list"
    for item in top_k:
        if not (isinstance(item, Mapping) and isinstance(item.get("category"), str)
                and is_probability(item.get("probability"))):
            return f"a top-k item is not a category with a probability from 0 to 1: {shown(item, 80)}"
        if item["category"] not in probabilities:
            return f"the top-k category {shown(item['category'])} has no probability"
    differential = result.get("differential")
    if differential is not None:
        if not isinstance(differential, list):
            return "the differential is not a list"
        for item in differential:
            score = item.get("score") if isinstance(item, Mapping) else None
            if not (isinstance(item, Mapping) and isinstance(item.get("name"), str)
                    and isinstance(item.get("disease_id"), str) and isinstance(score, (int, float))
                    and not isinstance(score, bool) and math.isfinite(score)):
                return f"a differential item is not a disease with its id and score: {shown(item, 80)}"
    if not isinstance(result.get("differential_note", ""), str):
        return "the differential's note is not text"
    if not isinstance(result.get("model_version", ""), (str, int)):
        return "the model version is not text"
    where = _not_finite(result)
    if where is not None:
        return f"{shown(where, 80)} is not a finite number (NaN or infinity, which JSON cannot hold)"
    return None


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _records_in_json(body: str | bytes) -> int | None:
    """How many patient records a JSON request body holds (``{"instances": [...]}``, a list, or one record); None when
    it cannot be told (the endpoint refuses such a body)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and "instances" in data:
        data = data["instances"]
        return len(data) if isinstance(data, list) else None
    return len(data) if isinstance(data, list) else 1


def _records_in_csv(text: str) -> int | None:
    """How many patient records a CSV request body holds: its rows under the header that are not blank, as the
    endpoint counts them (inference.handler.csv_records); None when it cannot be told."""
    try:
        rows = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=None))
        if next(rows, None) is None:
            return None
        return sum(1 for cells in rows if not is_blank_row(cells))
    except csv.Error:
        return None


def _no_retry_after_read_timeout(caught_exception: Any = None, **_: Any) -> bool | None:
    """botocore's ``needs-retry`` hook for InvokeEndpoint: no retry (False, which wins over the retry handler of the
    service, called after this more specific one) when the attempt's socket read timed out: the request was delivered
    and the model may be computing it, and a retry runs it again (a model taking 10 to 60 s was invoked 2 to 4 times
    per request). Nor after the call's deadline passed (:func:`within_deadline` shut its connection). Connection
    failures, throttling and 5xx answers are retried as botocore's mode says (None)."""
    return False if isinstance(caught_exception, ReadTimeoutError) or _stopped() else None


def check_endpoint_url(url: str) -> str:
    """An endpoint's root URL (``http://host:port``), or ValueError saying what is wrong with it: a space or control
    character, a port that is not one (above 65535), a user name or password (shown wherever the URL is, and
    refused by the feedback route's HTTP client) are refused here rather than on the first call."""
    text = url.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"endpoint URL {url!r} holds a space or a control character")
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"endpoint URL {url!r} must start with http:// or https:// and name a host, "
                         "e.g. http://127.0.0.1:8080")
    if "@" in parsed.netloc:
        raise ValueError(f"endpoint URL {parsed.scheme}://…@{parsed.netloc.rpartition('@')[2]} must not hold a user "
                         "name or password (the URL is shown to every user of it): give the host and port only")
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if port == -1 or port == 0:
        raise ValueError(f"endpoint URL {url!r} has no valid port: a port is a number from 1 to 65535")
    if not parsed.hostname:
        raise ValueError(f"endpoint URL {url!r} must name a host, e.g. http://127.0.0.1:8080")
    path = parsed.path.rstrip("/")
    if path:
        hint = " (the routes /invocations and /endpoints/<name>/invocations are added by the client)" \
            if path.endswith("/invocations") else ""
        raise ValueError(f"endpoint URL {url!r} must be the server's root, like {parsed.scheme}://{parsed.netloc}"
                         f"{hint}")
    if parsed.query or parsed.fragment:
        raise ValueError(f"endpoint URL {url!r} must have no query or fragment")
    return f"{parsed.scheme}://{parsed.netloc}"


def served_endpoint_name(endpoint_url: str, timeout: float = 10.0) -> str | None:
    """The name of the endpoint a local server serves (its ``GET /ping``, which names it while the model loads or
    after it failed to); None when the URL does not say (not reachable, or not a Diagnosa server).
    :class:`AnswerTimeout` when no complete answer came within ``overall_deadline(timeout, 1)``: a server trickling
    its answer a byte at a time never lets one read time out."""
    return _ping_says(endpoint_url, "endpoint_name", timeout)


def served_dataset(endpoint_url: str, timeout: float = 10.0) -> str | None:
    """The dataset of the model a local server serves (its ``GET /ping``), as :func:`served_endpoint_name`."""
    return _ping_says(endpoint_url, "dataset", timeout)


def _ping_says(endpoint_url: str, field: str, timeout: float) -> str | None:
    """A text field of a local server's ``GET /ping`` answer; None when the URL does not say it."""
    import urllib.error
    import urllib.request

    try:
        url = check_endpoint_url(endpoint_url)
    except ValueError:  # the client made for the URL says what is wrong with it
        return None

    def ping() -> bytes:
        try:
            with _urlopen(f"{url}/ping", timeout) as response:
                return bytes(response.read(MAX_REFUSAL_BYTES))
        except urllib.error.HTTPError as err:  # loading (503) or failed (500): the body still names the endpoint
            return bytes(err.read(MAX_REFUSAL_BYTES))

    try:
        body = within_deadline(ping, overall_deadline(timeout, 1), f"{url}/ping")
        name = json.loads(body).get(field)
    except AnswerTimeout:
        raise
    except (OSError, ValueError, AttributeError, RecursionError):  # URLError is an OSError; not JSON; not an object
        return None
    return name if isinstance(name, str) and name else None


class DiagnosaClient:
    def __init__(self, endpoint_name: str = "diagnosa", *, endpoint_url: str | None = None, region: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_attempts: int = DEFAULT_ATTEMPTS, runtime: Any = None,
                 lake: Any = None, feedback_token: str | None = None, deadline: float | None = None,
                 connect_timeout: float | None = None):
        """``timeout`` bounds each socket read (default 70 s: over SageMaker's 60 s limit on the model's answer) and
        ``connect_timeout`` each connection (default the timeout, at most 10 s); ``max_attempts`` the attempts of a
        call (retries included; a read timeout of a prediction is not retried); ``deadline``, when given, the whole
        call in seconds, every attempt and the reading of the answer included: an endpoint trickling its answer a few
        bytes at a time never lets one read time out, and held the caller for as long as it trickled
        (:class:`AnswerTimeout` when it passes, and the request in flight is stopped: :func:`within_deadline`).

        The AWS credentials are resolved here (botocore does it as it makes its client): a provider that fails (a
        credential_process exiting 1, an expired SSO token) raises its :class:`~botocore.exceptions.BotoCoreError`
        (one of CREDENTIAL_ERRORS), for a SageMaker endpoint; a local endpoint is then called unsigned."""
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if connect_timeout is not None and not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if deadline is not None and not deadline > 0:
            raise ValueError(f"deadline must be positive, got {deadline}")
        self.endpoint_name = endpoint_name
        self.endpoint_url = check_endpoint_url(endpoint_url) if endpoint_url else None
        self.timeout = timeout
        self.deadline = deadline
        self.lake = lake  # a diagnosa.lake.DataLake: where feedback goes when the endpoint has no feedback route
        # Sent as "Authorization: Bearer" on POST /feedback; never logged or put in a message.
        self.feedback_token = (feedback_token if feedback_token is not None else os.environ.get(TOKEN_ENV) or "").strip() \
            or None
        self._token_given = feedback_token is not None  # else $DIAGNOSA_FEEDBACK_TOKEN's, which a refusal names
        # The patients of the answers this client took, and of those the ones whose capture failed (the endpoint's
        # X-Diagnosa-Capture: failed): what `diagnosa predict` reports.
        self.answered = 0
        self.uncaptured = 0
        self._counts = threading.Lock()
        # A local endpoint needs no AWS credentials: with none configured, requests to an explicit
        # endpoint URL go unsigned (the local server does not check signatures).
        unsigned = endpoint_url is not None and runtime is None and not _has_credentials()
        connect = min(timeout, DEFAULT_CONNECT_TIMEOUT) if connect_timeout is None else connect_timeout
        config = Config(connect_timeout=connect, read_timeout=timeout,
                        retries={"total_max_attempts": max_attempts, "mode": "standard"},
                        **({"signature_version": UNSIGNED} if unsigned else {}))
        self.runtime = runtime or boto3.client("sagemaker-runtime", endpoint_url=endpoint_url,
                                               region_name=resolve_region(region) or boto3.session.Session().region_name
                                               or "eu-west-1",
                                               config=config)
        events = getattr(getattr(self.runtime, "meta", None), "events", None)
        if events is not None:  # a botocore client (a test's stand-in may be none)
            events.register_first("needs-retry.sagemaker-runtime.InvokeEndpoint", _no_retry_after_read_timeout,
                                  unique_id="diagnosa-no-retry-after-read-timeout")
        # Its requests are shut when the call's deadline passes (within_deadline); False: a transport not botocore's.
        self.stoppable = _stoppable_transport(self.runtime)

    def _within_deadline(self, call: Any, what: str) -> Any:
        """``call()``'s result within ``self.deadline`` seconds (:func:`within_deadline`)."""
        return within_deadline(call, self.deadline, what)

    def invoke(self, body: bytes | str, content_type: str = JSON, accept: str = JSON,
               inference_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        return self._within_deadline(lambda: self._invoke(body, content_type, accept, inference_id),
                                     f"endpoint '{self.endpoint_name}'")

    def _invoke(self, body: bytes | str, content_type: str, accept: str,
                inference_id: str | None) -> tuple[bytes, dict[str, str]]:
        kwargs: dict[str, Any] = {"EndpointName": self.endpoint_name, "Body": body, "ContentType": content_type,
                                  "Accept": accept}
        if inference_id:
            kwargs["InferenceId"] = inference_id
        try:
            response = self.runtime.invoke_endpoint(**kwargs)
        except ClientError as err:
            raise self._failure(err) from None
        except BotoCoreError as err:
            raise self._transport_failure(err) from None
        stream = response["Body"]
        try:
            # At most SageMaker's own limit on an answer, and a byte to tell a longer one: read whole, a 400 MB answer
            # took the app from 122 MB to 1.3 GB. Read to its end (an empty read), where botocore checks that the
            # answer came whole (its Content-Length): a connection broken in it is told. A read timeout here is the
            # call's too.
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_BODY_BYTES:
                chunk = stream.read(MAX_BODY_BYTES + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            answer = b"".join(chunks)
        except BotoCoreError as err:
            raise self._transport_failure(err) from None
        finally:
            stream.close()
        if len(answer) > MAX_BODY_BYTES:
            limit = f"{MAX_BODY_BYTES // 2**20} MB"
            raise InvalidAnswer(f"endpoint '{self.endpoint_name}' answered over {limit}, SageMaker's limit on an "
                                "answer: not read", f"an answer of over {limit}")
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return answer, headers

    def _transport_failure(self, err: BotoCoreError) -> ClientFailure:
        """The failure of a call that got no AWS answer (botocore's ``err``), saying whether the request was sent."""
        where = f"endpoint '{self.endpoint_name}'"
        if isinstance(err, NoCredentialsError):
            return NotAuthorized(f"no AWS credentials to call the SageMaker endpoint '{self.endpoint_name}': configure "
                                 "them (aws configure, AWS_PROFILE), or for a local endpoint give its URL "
                                 "(--endpoint-url http://127.0.0.1:8080)")
        if isinstance(err, CREDENTIAL_ERRORS):
            return NotAuthorized(f"the AWS credentials to call the SageMaker endpoint '{self.endpoint_name}' could not "
                                 f"be obtained: {err}")
        if isinstance(err, ReadTimeoutError):
            return AnswerTimeout(f"{where} gave no answer within {self.timeout:g} s (the request was sent and may "
                                 "have been processed; a read timeout is not retried, as a retry would run the model "
                                 "again)")
        if isinstance(err, (ConnectionClosedError, ResponseStreamingError, IncompleteReadError)):
            return AnswerLost(f"the connection to {where} broke after the request was sent: no complete answer came, "
                              f"and the endpoint may have processed the request ({err})")
        if isinstance(err, (EndpointConnectionError, ConnectTimeoutError)):
            return EndpointUnreachable(f"could not reach endpoint '{self.endpoint_name}': {err}")
        return ClientFailure(f"could not call endpoint '{self.endpoint_name}': {err}")

    def predict(self, patients: dict[str, Any] | list[dict[str, Any]], *, top_k: int | None = None,
                differential: int | None = None, inference_id: str | None = None) -> Prediction:
        """Predictions for one or more patients; ``differential`` (1-20) also asks, per patient, for the rare
        diseases whose HPO annotations best match the symptoms (decision support, ``result["differential"]``)."""
        sent = 1 if isinstance(patients, dict) else len(patients) if isinstance(patients, (list, tuple)) else None
        return self.predict_body(self.json_body(patients, top_k=top_k, differential=differential), inference_id,
                                 records=sent)

    @staticmethod
    def json_body(patients: dict[str, Any] | list[dict[str, Any]], *, top_k: int | None = None,
                  differential: int | None = None) -> str:
        """The JSON request ``predict`` sends; :class:`InvalidInput` for what is not patient records or not JSON."""
        if isinstance(patients, dict):
            records = [patients]
        elif isinstance(patients, (list, tuple)):
            records = list(patients)
        else:
            raise InvalidInput(f"patients must be a patient record (a JSON object) or a list of them, "
                               f"got {type(patients).__name__}")
        payload: dict[str, Any] = {"instances": records}
        if top_k is not None:  # else the endpoint's default (3, or every label of a model with fewer)
            payload["top_k"] = top_k
        if differential is not None:
            payload["differential"] = differential
        # ASCII escapes: any text can be sent (a lone surrogate too); the endpoint judges it and says why.
        try:
            return json.dumps(payload, ensure_ascii=True)
        except (TypeError, ValueError) as err:  # a set, a date...: not JSON
            raise InvalidInput(f"the patients cannot be written as JSON: {err}") from None

    def predict_body(self, body: str, inference_id: str | None = None, *, records: int | None = None) -> Prediction:
        """Predictions for a JSON request body as ``json_body`` writes it, holding ``records`` patients (None: counted
        in the body); :class:`InvalidAnswer` unless the answer is one valid prediction per patient."""
        sent = _records_in_json(body) if records is None else records
        return self._results(*self.invoke(body, JSON, JSON, inference_id), sent)

    def predict_csv(self, text: str, *, inference_id: str | None = None, records: int | None = None) -> Prediction:
        """Predictions for a CSV request body of ``records`` patients (None: its rows, counted as the endpoint does)."""
        sent = _records_in_csv(text) if records is None else records
        return self._results(*self.invoke(text.encode("utf-8"), CSV, JSON, inference_id), sent)

    def _results(self, body: bytes, headers: dict[str, str], sent: int | None) -> Prediction:
        """The predictions of an answer to ``sent`` patients (None: a number not known), each checked
        (:func:`prediction_problem`): a count that is not the patients' left patients without an answer, or paired a
        patient with another's, and `diagnosa predict` said nothing (zip stopped at the shorter)."""
        where = f"endpoint '{self.endpoint_name}'"
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deeply
            raise InvalidAnswer(f"{where} answered something that is not JSON: {body[:200]!r}", "not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("predictions"), list):
            raise InvalidAnswer(f"{where} answered JSON without a list of predictions: {body[:200]!r}",
                                "JSON without a list of predictions")
        predictions: list[Any] = payload["predictions"]
        if sent is not None and len(predictions) != sent:
            counts = f"{_plural(len(predictions), 'prediction')} for {_plural(sent, 'patient')}"
            raise InvalidAnswer(f"{where} answered {counts}: which answer is whose cannot be told, so none is taken",
                                f"it answered {counts}")
        categories: set[str] | None = None
        for number, result in enumerate(predictions, start=1):
            problem = prediction_problem(result)
            if problem is None:
                names = set(result["probabilities"])
                categories = names if categories is None else categories
                if names != categories:
                    problem = "its categories are not those of the first prediction"
            if problem is not None:
                which = f"prediction {number:,} of {len(predictions):,}" if len(predictions) > 1 else "the prediction"
                raise InvalidAnswer(f"{where} answered something that is not a valid prediction ({which}): {problem}",
                                    problem if len(predictions) == 1 else f"{which}: {problem}")
        failed = _capture_failed(headers)
        with self._counts:
            self.answered += len(predictions)
            self.uncaptured += len(predictions) if failed else 0
        return Prediction(predictions, headers.get("x-diagnosa-event-id"), failed)

    def send_feedback(self, event_id: str, diagnosis: str, note: str | None = None,
                      disease_id: str | None = None, source: str | None = None,
                      labels: Sequence[str] | None = None, event_row: int | None = None) -> StoredFeedback:
        """Send a doctor's confirmed diagnosis for a prediction (by its event id, and ``event_row``, the patient's
        position in the request, 0 for the first, when the request held several); returns what was stored: the lake
        key written and the earlier record of the patient it replaced, if any (:class:`inference.feedback.Replaced`;
        None too from an endpoint that does not say).

        The local endpoint takes it on ``POST /feedback``. A SageMaker endpoint has no such route: the
        record is then written straight to the lake's ``feedback/`` zone if the client was given a
        ``lake``; otherwise :class:`ClientFailure` says so. A refused record raises
        :class:`FeedbackRejected` with the problem of each field (or the endpoint's 404 for an event id it did not
        capture, 413 for a record too big); an endpoint that cannot be reached, :class:`EndpointUnreachable`; one
        that could not store it (its lake full or failing: 503 with Retry-After, nothing stored),
        :class:`FeedbackNotStored`, to be sent again later.
        ``labels``: the model's, which the diagnosis must be one of when the record goes straight to the lake
        (default the built-in cohort's); the local endpoint holds it to the labels of the model it serves.
        """
        from diagnosa.labels import CATEGORIES
        from inference.feedback import FeedbackError, parse_feedback, store_feedback

        body: dict[str, Any] = {"event_id": event_id, "diagnosis": diagnosis}
        if event_row is not None:
            body["event_row"] = event_row
        if note is not None:
            body["note"] = note
        if disease_id is not None:  # ORPHA:/OMIM:/DECIPHER: puts the case in the live orphan slice
            body["disease_id"] = disease_id
        if source is not None:
            body["source"] = source
        try:
            feedback = parse_feedback(body, None if self.endpoint_url else (labels or CATEGORIES))
        except FeedbackError as err:
            raise FeedbackRejected("invalid feedback", 400, fields=err.fields) from None
        if self.endpoint_url is None:
            if self.lake is None:
                raise ClientFailure(f"endpoint '{self.endpoint_name}' is a SageMaker endpoint, which has no feedback "
                                    "route: give the client the data lake (DiagnosaClient(..., lake=DataLake.from_uri("
                                    "'s3://bucket/prefix'))) so feedback is written to its feedback/ zone")
            return store_feedback(self.lake, self.endpoint_name, feedback)
        problem = token_problem(self.feedback_token) if self.feedback_token else None
        if problem:  # checked before sending: it failed as it was sent, blamed on the endpoint's answer
            source = "" if self._token_given else f" (from ${TOKEN_ENV})"
            raise InvalidInput(f"the feedback token{source} {problem}; nothing was sent to {self.endpoint_url}")
        return self._within_deadline(lambda: self._post_feedback(body), f"endpoint {self.endpoint_url}")

    def _post_feedback(self, body: dict[str, Any]) -> StoredFeedback:
        import http.client
        import urllib.error
        import urllib.request

        from inference.feedback import Replaced, StoredFeedback

        request = urllib.request.Request(f"{self.endpoint_url}/feedback", method="POST",
                                         data=json.dumps(body, ensure_ascii=True).encode("ascii"),
                                         headers={"Content-Type": JSON, "Accept": JSON,
                                                  **({"Authorization": f"Bearer {self.feedback_token}"}
                                                     if self.feedback_token else {})})
        try:
            with _urlopen(request, self.timeout) as response:
                reply = response.read(MAX_REFUSAL_BYTES + 1)  # a stored record's key: a few hundred bytes
                if len(reply) > MAX_REFUSAL_BYTES:
                    raise ValueError(f"an answer of over {MAX_REFUSAL_BYTES // 1024} KB")
                answer = json.loads(reply)
        except urllib.error.HTTPError as err:
            # Read up to the endpoint's own cap on a refusal: more is not its answer (a proxy's, a wrong URL's).
            try:
                raw_body = err.read(MAX_REFUSAL_BYTES + 1)
            except (OSError, http.client.HTTPException):
                raw_body = b""
            oversized = len(raw_body) > MAX_REFUSAL_BYTES
            try:
                detail = {} if oversized else json.loads(raw_body)
            except (ValueError, RecursionError):
                detail = {}
            detail = detail if isinstance(detail, dict) else {}
            error = _clipped(detail["error"]) if isinstance(detail.get("error"), str) else \
                f"an answer of over {MAX_REFUSAL_BYTES // 1024} KB, not read" if oversized else None
            if err.code == 400:
                raw = detail.get("fields")
                items = list(raw.items()) if isinstance(raw, dict) else []
                fields = {_clipped(str(k), 200): _clipped(str(v), 500) for k, v in items[:MAX_FIELD_ERRORS]}
                more = len(items) - len(fields)
                if more:
                    fields[FeedbackRejected.MORE_FIELDS] = f"{more:,} more field problem(s) not listed"
                raise FeedbackRejected(error or "invalid feedback", 400, fields=fields, more_fields=more) from None
            if 300 <= err.code < 400:  # not followed (_NoRedirects): nothing was stored, the token went nowhere else
                location = err.headers.get("Location") if err.headers is not None else None
                raise _not_the_endpoint(f"feedback not sent to endpoint {self.endpoint_url}", err.code,
                                        {"location": location or ""}) from None
            # The URL's endpoint, whatever this client's (default) endpoint name says.
            message = f"endpoint {self.endpoint_url} refused the feedback ({err.code}): {error or err.reason}"
            # This record's event id was not captured (404; 409: answered, its capture failed), or it is too big.
            if err.code in (404, 409, 413):
                raise FeedbackRejected(message, err.code) from None
            # The endpoint could not store it (its lake full or failing), saying when to try again: not this record's
            # fault, and nothing stored. A 503 without Retry-After (an endpoint without a data lake) is for good.
            if err.code == 503 and err.headers is not None and err.headers.get("Retry-After"):
                raise FeedbackNotStored(f"feedback not stored by endpoint {self.endpoint_url} ({err.code}, a storage "
                                        f"failure: try again later): {error or err.reason}") from None
            raise ClientFailure(message) from None
        except urllib.error.URLError as err:  # not sent: nothing listens, no route, the connection not made in time
            raise EndpointUnreachable(f"could not send feedback to {self.endpoint_url}: "
                                      f"{getattr(err, 'reason', None) or err}") from None
        except (OSError, http.client.HTTPException) as err:  # sent, then no complete answer: it may be stored
            raise AnswerTimeout(f"sent the feedback to {self.endpoint_url} but got no complete answer: "
                                f"{getattr(err, 'strerror', None) or err or type(err).__name__}") from None
        except UnicodeEncodeError as err:  # a header HTTP cannot carry (the token is checked before): never sent
            raise InvalidInput(f"could not send feedback to {self.endpoint_url}: a header of the request holds a "
                               f"character HTTP cannot carry ({err.reason}); nothing was sent") from None
        except ValueError as err:
            raise ClientFailure(f"endpoint {self.endpoint_url} answered the feedback with something that is not "
                                f"JSON: {err}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("key"), str):
            raise ClientFailure(f"endpoint {self.endpoint_url} answered the feedback without the key it stored")
        return StoredFeedback(answer["key"], Replaced.from_reply(answer.get("replaced")))

    def _failure(self, err: ClientError) -> ClientFailure:
        error = err.response.get("Error", {})
        code = str(error.get("Code", "")).rpartition("#")[2]  # '__type' may come as 'com.amazonaws.sagemaker#Code'
        message = _clipped(str(error.get("Message") or ""))
        where = f"endpoint '{self.endpoint_name}'"
        if code == "ModelError":
            # the keys sagemaker-runtime adds to a ModelError (botocore-stubs declare only the common ones)
            model_error: Mapping[str, Any] = err.response
            raw = model_error.get("OriginalMessage")
            original = raw if isinstance(raw, str) else ""
            try:
                detail = json.loads(original) if original.strip() else {}
            except (ValueError, RecursionError):
                detail = {}
            # Whatever answered (a proxy, another server) may send any JSON: only what has the endpoint's shape is
            # read, and no more than the endpoint itself would send.
            detail = detail if isinstance(detail, dict) else {}
            # The container's own words: its "error", else its reply as sent (clipped). Never SageMaker's Message,
            # which names the AWS account and the endpoint's CloudWatch log group.
            said = _clipped(detail["error"]) if isinstance(detail.get("error"), str) else \
                shown(original, 300) if original.strip() else "the model's container said nothing more"
            # Only the container's own 4xx is a refusal of the input. SageMaker's timeout has 0; a reply without the
            # status (a proxy's) says nothing about the input: both were once read as 400, and the app told the
            # doctor the request was refused, `diagnosa predict` that the input was wrong (exit 2).
            try:
                status: int | None = int(model_error["OriginalStatusCode"])
            except (KeyError, TypeError, ValueError):
                status = None
            if status in BUSY_STATUSES:  # "not now", not "not this": was PredictionRejected, bad input (exit 2)
                why = {429: "its queue is full", 408: "the request did not reach it in time",
                       503: "it has no worker free"}[status]
                return EndpointBusy(f"{where}: the model's container could not take the request now ({why}, HTTP "
                                    f"{status}): {said}; nothing is wrong with the input: ask again in a moment")
            if status is not None and 400 <= status < 500:
                errors, more = _problems(detail.get("errors"), detail.get("more_errors"))
                return PredictionRejected(said, status, errors, more)
            if status == 0:
                return ModelTimeout(f"{where}: the model gave no answer within SageMaker's limit (ModelError, "
                                    f"original status 0): {said}")
            return ClientFailure(f"the model failed ({'no status given' if status is None else status}): {said}")
        if code in PERMISSION_CODES:
            return NotAuthorized(f"{where}: AWS refused the call: the caller's identity may not invoke the endpoint "
                                 f"({code}): {message}", credentials=False)
        if code in CREDENTIAL_CODES:
            return NotAuthorized(f"{where}: AWS refused the call's credentials, expired or invalid ({code}): {message}")
        if code in BUSY_CODES:
            return EndpointBusy(f"{where} is busy or not ready yet ({code}: {message}): ask again in a moment")
        if code == "ValidationError":
            return ClientFailure(f"{where} rejected the call: {message}")
        if code.isdigit():  # botocore's code for an answer that is neither AWS's error nor the endpoint's
            return _not_the_endpoint(where, int(code), err.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}))
        return ClientFailure(f"{where} failed: {code} {message}")


def _capture_failed(headers: Mapping[str, Any]) -> bool:
    """Whether an answer's headers say its capture failed (``X-Diagnosa-Capture: failed``, set by the local endpoint
    for the whole request: every patient of it). botocore gives the names in lower case; a stand-in may not."""
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == CAPTURE_HEADER.lower():
            return isinstance(value, str) and value.strip().lower() == "failed"
    return False


def _has_credentials() -> bool:
    """Whether the AWS credential chain gives credentials: False too when a provider fails (a credential_process
    exiting 1), which for a local endpoint (no signature checked) only means the requests go unsigned."""
    try:
        return boto3.session.Session().get_credentials() is not None
    except BotoCoreError:
        return False


@dataclass
class RawBatch:
    """A raw cohort batch as the requests a hospital system would send (one record per patient), the labels
    kept aside (for feedback demonstrations), and the lines that were not JSON records."""

    records: list[dict[str, Any]]
    labels: list[str | None]
    unreadable: int = 0


def raw_batch_requests(lake: Any, batch: str) -> RawBatch:
    """The records + labs of raw batch ``batch`` (``diagnosa data generate`` writes them, drifted ones too) joined
    per patient and cut to the fields the built-in cohort's endpoint accepts. Values are sent as recorded:
    a defect the batch carries is the endpoint's to refuse."""
    from diagnosa.data.ingest import cohort_schema, existing_raw_keys, read_csv_text
    from inference.schema import RequestSchema

    records_key, labs_key = existing_raw_keys(lake, batch)
    schema = cohort_schema()
    fields = RequestSchema(schema).fields
    labs = read_csv_text(lake.get_bytes(labs_key), labs_key)
    by_patient = {str(row[schema.id_column]): row for row in labs.to_dict("records")}
    out = RawBatch([], [])
    for line in lake.get_bytes(records_key).decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError:
            out.unreadable += 1
            continue
        if not isinstance(raw, dict):
            out.unreadable += 1
            continue
        pid = raw.get(schema.id_column)
        merged = {**by_patient.get(str(pid), {}), **raw}
        record = {schema.id_column: pid}
        for name, spec in fields.items():
            value = merged.get(name)
            if value is None or value == "" or (isinstance(value, float) and value != value):  # absent or NaN
                continue
            if spec.type in ("number", "integer") and isinstance(value, str):  # the labs CSV holds text
                try:
                    value = float(value)
                except ValueError:
                    pass  # sent as recorded: the endpoint names the defect
                else:
                    value = int(value) if spec.type == "integer" and value.is_integer() else value
            record[name] = value
        out.records.append(record)
        out.labels.append(raw.get(schema.target))
    return out
