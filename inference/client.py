"""Client for applications: ``predict(patients) -> results`` over the SageMaker runtime API.

The same code talks to a real SageMaker endpoint (region + endpoint name, credentials from the
usual AWS chain) and to the local endpoint (``endpoint_url="http://127.0.0.1:8080"``). Timeouts and
retries come from botocore: "standard" retry mode retries throttling and transient 5xx errors with
exponential backoff; a rejected request (the model's 4xx) is not retried and surfaces as
:class:`PredictionRejected` with the field errors the endpoint sent.
"""
from __future__ import annotations

import json
import os
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from diagnosa.aws import resolve_region
from inference.limits import MAX_LISTED_PROBLEMS, MAX_REFUSAL_BYTES

if TYPE_CHECKING:  # imported where used: the feedback module is not needed to predict
    from inference.feedback import StoredFeedback

JSON = "application/json"
CSV = "text/csv"
TOKEN_ENV = "DIAGNOSA_FEEDBACK_TOKEN"  # the local endpoint's feedback token, when it checks one
DEFAULT_ATTEMPTS = 4  # attempts of a call, retries included, unless the caller says otherwise
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


def within_deadline(call: Any, deadline: float | None, what: str) -> Any:
    """``call()``'s result within ``deadline`` seconds (or its exception); :class:`AnswerTimeout` past it, saying
    that ``what`` gave no complete answer in that time. None: no deadline.

    The call runs in a daemon thread that is left to end on its own (its socket reads still time out): the
    caller is not held by it."""
    if deadline is None:
        return call()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as err:  # noqa: BLE001  (re-raised in the caller's thread)
            box["error"] = err

    worker = threading.Thread(target=run, name="diagnosa-client-call", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        raise AnswerTimeout(f"{what} gave no complete answer within {deadline:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _clipped(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit:,} more characters)"


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
    endpoint may have processed it (a feedback record may be stored, a prediction captured)."""


class ModelTimeout(ClientFailure):
    """SageMaker stopped waiting for the model's answer (its 60 s limit on a container's reply: a ModelError whose
    original status is 0, "Received server error (0) ... Your invocation timed out"). Nothing is wrong with the input:
    the model was overloaded or the request too large to answer in time; a later or smaller request may be answered."""


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
    import urllib.error
    import urllib.request

    try:
        url = check_endpoint_url(endpoint_url)
    except ValueError:  # the client made for the URL says what is wrong with it
        return None

    def ping() -> bytes:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as response:
                return bytes(response.read(MAX_REFUSAL_BYTES))
        except urllib.error.HTTPError as err:  # loading (503) or failed (500): the body still names the endpoint
            return bytes(err.read(MAX_REFUSAL_BYTES))

    try:
        body = within_deadline(ping, overall_deadline(timeout, 1), f"{url}/ping")
        name = json.loads(body).get("endpoint_name")
    except AnswerTimeout:
        raise
    except (OSError, ValueError, AttributeError, RecursionError):  # URLError is an OSError; not JSON; not an object
        return None
    return name if isinstance(name, str) and name else None


class DiagnosaClient:
    def __init__(self, endpoint_name: str = "diagnosa", *, endpoint_url: str | None = None, region: str | None = None,
                 timeout: float = 10.0, max_attempts: int = DEFAULT_ATTEMPTS, runtime: Any = None, lake: Any = None,
                 feedback_token: str | None = None, deadline: float | None = None):
        """``timeout`` bounds each connection and each socket read, ``max_attempts`` the attempts of a call (retries
        included); ``deadline``, when given, the whole call in seconds, every attempt and the reading of the answer
        included: an endpoint trickling its answer a few bytes at a time never lets one read time out, and held the
        caller for as long as it trickled (:class:`AnswerTimeout` when it passes)."""
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
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
        # A local endpoint needs no AWS credentials: with none configured, requests to an explicit
        # endpoint URL go unsigned (the local server does not check signatures).
        unsigned = endpoint_url is not None and runtime is None and boto3.session.Session().get_credentials() is None
        config = Config(connect_timeout=timeout, read_timeout=timeout,
                        retries={"total_max_attempts": max_attempts, "mode": "standard"},
                        **({"signature_version": UNSIGNED} if unsigned else {}))
        self.runtime = runtime or boto3.client("sagemaker-runtime", endpoint_url=endpoint_url,
                                               region_name=resolve_region(region) or boto3.session.Session().region_name
                                               or "eu-west-1",
                                               config=config)

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
            answer = response["Body"].read()  # a read timeout here is the call's too
        except ClientError as err:
            raise self._failure(err) from None
        except NoCredentialsError:
            raise ClientFailure(f"no AWS credentials to call the SageMaker endpoint '{self.endpoint_name}': configure "
                                "them (aws configure, AWS_PROFILE), or for a local endpoint give its URL "
                                "(--endpoint-url http://127.0.0.1:8080)") from None
        except BotoCoreError as err:
            raise ClientFailure(f"could not reach endpoint '{self.endpoint_name}': {err}") from None
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return answer, headers

    def predict(self, patients: dict[str, Any] | list[dict[str, Any]], *, top_k: int | None = None,
                differential: int | None = None, inference_id: str | None = None) -> Prediction:
        """Predictions for one or more patients; ``differential`` (1-20) also asks, per patient, for the rare
        diseases whose HPO annotations best match the symptoms (decision support, ``result["differential"]``)."""
        return self.predict_body(self.json_body(patients, top_k=top_k, differential=differential), inference_id)

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

    def predict_body(self, body: str, inference_id: str | None = None) -> Prediction:
        """Predictions for a JSON request body as ``json_body`` writes it."""
        return self._results(*self.invoke(body, JSON, JSON, inference_id))

    def predict_csv(self, text: str, *, inference_id: str | None = None) -> Prediction:
        return self._results(*self.invoke(text.encode("utf-8"), CSV, JSON, inference_id))

    @staticmethod
    def _results(body: bytes, headers: dict[str, str]) -> Prediction:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ClientFailure(f"the endpoint answered something that is not JSON: {body[:200]!r}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("predictions"), list):
            raise ClientFailure(f"the endpoint answered JSON without a list of predictions: {body[:200]!r}")
        return Prediction(payload["predictions"], headers.get("x-diagnosa-event-id"))

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
        capture, 413 for a record too big); an endpoint that cannot be reached, :class:`EndpointUnreachable`.
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
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
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
            # The URL's endpoint, whatever this client's (default) endpoint name says.
            message = f"endpoint {self.endpoint_url} refused the feedback ({err.code}): {error or err.reason}"
            # This record's event id was not captured (404; 409: answered, its capture failed), or it is too big.
            if err.code in (404, 409, 413):
                raise FeedbackRejected(message, err.code) from None
            raise ClientFailure(message) from None
        except urllib.error.URLError as err:  # not sent: nothing listens, no route, the connection not made in time
            raise EndpointUnreachable(f"could not send feedback to {self.endpoint_url}: "
                                      f"{getattr(err, 'reason', None) or err}") from None
        except (OSError, http.client.HTTPException) as err:  # sent, then no complete answer: it may be stored
            raise AnswerTimeout(f"sent the feedback to {self.endpoint_url} but got no complete answer: "
                                f"{getattr(err, 'strerror', None) or err or type(err).__name__}") from None
        except ValueError as err:
            raise ClientFailure(f"endpoint {self.endpoint_url} answered the feedback with something that is not "
                                f"JSON: {err}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("key"), str):
            raise ClientFailure(f"endpoint {self.endpoint_url} answered the feedback without the key it stored")
        return StoredFeedback(answer["key"], Replaced.from_reply(answer.get("replaced")))

    def _failure(self, err: ClientError) -> ClientFailure:
        code = err.response.get("Error", {}).get("Code", "")
        message = err.response.get("Error", {}).get("Message", str(err))
        if code == "ModelError":
            # the keys sagemaker-runtime adds to a ModelError (botocore-stubs declare only the common ones)
            model_error: Mapping[str, Any] = err.response
            original = str(model_error.get("OriginalMessage") or "{}")
            try:
                detail = json.loads(original)
            except (ValueError, RecursionError):
                detail = {"error": original}
            # Whatever answered (a proxy, another server) may send any JSON: only what has the endpoint's shape is
            # read, and no more than the endpoint itself would send.
            detail = detail if isinstance(detail, dict) else {"error": original}
            error = _clipped(detail["error"] if isinstance(detail.get("error"), str) else str(message))
            # Only the container's own 4xx is a refusal of the input. SageMaker's timeout has 0; a reply without the
            # status (a proxy's) says nothing about the input: both were once read as 400, and the app told the
            # doctor the request was refused, `diagnosa predict` that the input was wrong (exit 2).
            try:
                status: int | None = int(model_error["OriginalStatusCode"])
            except (KeyError, TypeError, ValueError):
                status = None
            if status is not None and 400 <= status < 500:
                errors, more = _problems(detail.get("errors"), detail.get("more_errors"))
                return PredictionRejected(error, status, errors, more)
            if status == 0:
                return ModelTimeout(f"endpoint '{self.endpoint_name}': the model gave no answer within SageMaker's "
                                    f"limit (ModelError, original status 0): {error}")
            return ClientFailure(f"the model failed ({'no status given' if status is None else status}): {error}")
        if code == "ValidationError":
            return ClientFailure(f"endpoint '{self.endpoint_name}' rejected the call: {message}")
        return ClientFailure(f"endpoint '{self.endpoint_name}' failed: {code} {message}")


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
