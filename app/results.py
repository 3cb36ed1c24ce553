"""Calling the endpoint through Diagnosa's client, and what the doctor reads back.

:func:`diagnose` never raises: it returns an :class:`Outcome` holding either the prediction or a
:class:`Failure` whose ``kind`` tells the cases apart, each with its own message:

| kind | when |
|---|---|
| ``unreachable`` | nothing listens at the endpoint address (down, wrong URL, no network), or the connection broke |
|  | after the request was sent |
| ``timeout`` | the endpoint took longer than the configured timeout to answer |
| ``rejected`` | the endpoint refused the input (4xx); the field errors go next to the fields (a refusal naming |
|  | no field of the form does not ask the doctor to correct the fields) |
| ``unavailable`` | the endpoint is up but cannot serve now: busy (the container's 429, 408, 503; throttled; the |
|  | model not ready), the local endpoint's model loading, SageMaker's service unavailable |
| ``server_error`` | the endpoint failed while scoring (5xx) |
| ``not_found`` | no endpoint of that name (a configuration problem) |
| ``not_authorized`` | the app's AWS credentials are missing, could not be obtained, expired or invalid, or its |
|  | identity may not invoke the endpoint: a fixed message (AWS's names the role and the account: logged) |
| ``failed`` | an answer that is not a diagnosis (:func:`prediction_problem`: a category that is not text, |
|  | probabilities that are not numbers from 0 to 1 or do not sum to 1, an incomplete top-k...), one the page |
|  | cannot show (:func:`display_problem`: a negative differential score...), one of another model's categories |
|  | (:func:`labels_problem`), one whose category the model's decision rule cannot give from its probabilities |
|  | (:func:`decision_problem`), and anything else, in neutral words: what the client said (AWS's words may name |
|  | accounts, roles, log URLs) is logged |

Nothing here logs or prints patient values; failure texts name the endpoint, never the record, and never what AWS
said (logged, with the ``app.results`` logger, for the administrator).
"""
from __future__ import annotations

import functools
import logging
import math
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Mapping

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from app.config import MAX_DIFFERENTIAL, TEXT_COLOR, AppConfig
from app.form import MAX_PROBLEMS, FieldErrors, FormSpec, display_text, field_errors, to_correct
from diagnosa.labels import CATEGORIES
from diagnosa.model import ModelLoadError, model_version, read_metadata
from diagnosa.text import markdown_literal, some_of
from inference.capture import redacted_traceback
from inference.client import (
    BUSY_CODES,
    CREDENTIAL_ERRORS,
    DEFAULT_CONNECT_TIMEOUT,
    AnswerLost,
    AnswerTimeout,
    ClientFailure,
    DiagnosaClient,
    EndpointBusy,
    EndpointUnreachable,
    InvalidAnswer,
    ModelTimeout,
    NotAuthorized,
    NotTheEndpoint,
    PredictionRejected,
    is_probability,
    prediction_problem,  # the validity of a prediction: the client's (it refuses an invalid one), and the page's
)
from inference.feedback import Replaced
from inference.limits import surrogate_path

# What the app is told by the client and by AWS, for the administrator (a doctor's page shows none of it).
log = logging.getLogger(__name__)

FailureKind = Literal["unreachable", "timeout", "rejected", "unavailable", "server_error", "not_found",
                      "not_authorized", "failed"]
WARNING = ("This result supports and does not replace clinical judgement: it is a statistical estimate from a model, "
           "to be weighed with the examination, the history and the tests.")
DIFFERENTIAL_LABEL = "Decision support — not a diagnosis"
UNKNOWN_FIELD = "unknown field"  # how the endpoint names an input its model does not have (inference.schema)
# The most categories an answer the page shows may have: a chart of 100,000 took a minute to build and was 17 MB.
MAX_CATEGORIES = 100
MAX_LISTED_CODES = 20  # unlearned codes named in one warning; the rest counted


def markdown_text(value: object, limit: int = 200) -> str:
    """Text a markdown renderer shows as is (st.table renders markdown and HTML in its cells): quoted as
    :func:`app.form.display_text` does, then :func:`diagnosa.text.markdown_literal`."""
    return markdown_literal(display_text(value, limit))


HEADER = "Clinical triage support · predictions from the "


def header_caption(config: AppConfig) -> str:
    """The page header's caption: where predictions come from (:attr:`AppConfig.description`, made of what the
    administrator set in ``DIAGNOSA_APP_*``) as :func:`markdown_text`, as the page shows other text: st.caption renders
    markdown, so an endpoint name holding '[x](http://…)' made a link, '![x](…)' an image the browser fetched, a
    newline a line of its own, and a lone surrogate (an environment value that is not UTF-8) a traceback."""
    return HEADER + markdown_text(config.description)


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str
    fields: FieldErrors = FieldErrors()


@dataclass(frozen=True)
class Outcome:
    result: dict[str, Any] | None = None  # the one patient's prediction
    event_id: str | None = None  # the case reference feedback refers to (local endpoint)
    failure: Failure | None = None
    inference_id: str | None = None  # the id the app gave the request (captured as inferenceId, SageMaker's too)
    received_at: str | None = None  # when the answer came, 'HH:MM:SS' (the app server's clock)
    warnings: Mapping[str, list[str]] = field(default_factory=dict)  # inputs the model ignored, by field ('': others)
    # The decision weights of the model that answered, by label (1.0 each: plain argmax), when the app knows them
    # (:func:`answer_decision_weights`): its category was checked against them. None: not known, nothing checked.
    decision_weights: Mapping[str, float] | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


def make_client(config: AppConfig) -> DiagnosaClient:
    """Diagnosa's client for the configured endpoint.

    The local endpoint checks no AWS signature, but botocore refuses to send a request it cannot
    sign: without credentials in the environment, the local endpoint gets placeholder ones (a real
    SageMaker endpoint always uses the AWS credential chain).
    """
    runtime = None
    if config.is_local and not _has_credentials():
        runtime = boto3.client("sagemaker-runtime", endpoint_url=config.endpoint_url,
                               region_name=config.region or "eu-west-1", aws_access_key_id="local",
                               aws_secret_access_key="local",
                               config=Config(connect_timeout=min(config.timeout, DEFAULT_CONNECT_TIMEOUT),
                                             read_timeout=config.timeout,
                                             retries={"total_max_attempts": config.attempts, "mode": "standard"}))
    extra: dict[str, Any] = {}
    if config.lake:  # where feedback goes when the endpoint has no feedback route (a SageMaker endpoint)
        from diagnosa.lake import DataLake

        extra["lake"] = DataLake.from_uri(config.lake)
    return DiagnosaClient(config.endpoint_name, endpoint_url=config.endpoint_url, region=config.region,
                          timeout=config.timeout, max_attempts=config.attempts, runtime=runtime,
                          deadline=config.deadline, **extra)


def _has_credentials() -> bool:
    """Whether the AWS credential chain gives credentials (False too when a provider fails: a local endpoint checks no
    signature, so a failing credential_process is no reason not to call it)."""
    try:
        return boto3.Session().get_credentials() is not None
    except BotoCoreError:
        return False


def client_failure(err: BaseException, config: AppConfig) -> Failure:
    """What the doctor reads when the client could not be made (:func:`make_client` raised): the AWS credentials
    could not be obtained (a credential_process exiting 1, an expired SSO token, none at all), resolved by botocore
    as it makes its client. The page still shows its form; AWS's own words go to the log."""
    log.warning("no client for the %s: %s: %s", config.description, type(err).__name__, err)
    if isinstance(err, (NotAuthorized, *CREDENTIAL_ERRORS)):
        return Failure("not_authorized", _credentials_message(config))
    return Failure("failed", f"The app cannot call the {config.description} ({type(err).__name__}). Tell the "
                             "administrator (the app's log says why).")


def make_client_or_failure(config: AppConfig) -> DiagnosaClient | Failure:
    """:func:`make_client`'s client, or the :class:`Failure` saying why there is none (:func:`client_failure`)."""
    try:
        return make_client(config)
    except (BotoCoreError, ClientFailure) as err:
        return client_failure(err, config)


def _credentials_message(config: AppConfig) -> str:
    return (f"The app cannot call the {config.description}: its AWS credentials are missing, expired or invalid. "
            "Tell the administrator. No diagnosis was received; nothing is wrong with the patient's values.")


def _cause(err: BaseException) -> BaseException | None:
    """The botocore error a ClientFailure was raised from (the client raises ``from None``, keeping the context)."""
    return err.__cause__ or err.__context__


def explain_failure(err: BaseException, config: AppConfig, spec: FormSpec) -> Failure:
    """One clear message per kind of failure (see the module docstring)."""
    where = config.description
    if isinstance(err, PredictionRejected):
        fields = field_errors(spec, err.errors, err.message)
        unknown = [name for name, problems in fields.by_field.items() if any(p.startswith(UNKNOWN_FIELD) for p in problems)]
        if unknown:
            # The served model has no such input: the form is another model's (another dataset's, or the endpoint was
            # restarted with another model). No value the doctor could type fixes that: no field is blamed.
            general = [f"{name}: {p}" for name, problems in fields.by_field.items() for p in problems] + fields.general
            return Failure("rejected", f"The model the {where} serves does not take this form's fields "
                                       f"({', '.join(unknown)}): the form was made for another model. Nothing is "
                                       "wrong with the patient's values; tell the administrator (the app's --model "
                                       "or --endpoint-name does not match the endpoint's model).",
                           FieldErrors({}, general))
        if fields.by_field:
            return Failure("rejected", f"The endpoint did not accept these values: {to_correct(spec, fields)} and ask "
                                       f"again (HTTP {err.status}).", fields)
        # Nothing in the form to correct (the request's settings, or a model other than the form's): say so.
        return Failure("rejected", f"The {where} refused the request (HTTP {err.status}) for a reason that is not a "
                                   "value in the form (below). Tell the administrator: the app's configuration or "
                                   "its --model may not match the endpoint's model.", fields)
    cause = _cause(err)
    if isinstance(err, NotAuthorized):  # AWS's words name the role and the account: logged, not shown
        log.warning("the %s refused the app's call: %s", where, err)
        if err.credentials:
            return Failure("not_authorized", _credentials_message(config))
        return Failure("not_authorized", f"The app is not authorized to call the {where} (its AWS identity may not "
                                         "invoke it). Tell the administrator. Nothing is wrong with the patient's "
                                         "values.")
    if isinstance(err, EndpointBusy) or (isinstance(cause, ClientError)
                                         and _code(cause.response) in BUSY_CODES):
        log.info("the %s is busy: %s", where, err)
        return Failure("unavailable", f"The {where} is busy or still starting: ask again in a moment. Nothing is "
                                      "wrong with the patient's values; no diagnosis was received.")
    if isinstance(cause, ReadTimeoutError):  # one socket read: not retried (a retry would run the model again)
        return Failure("timeout", f"The {where} did not answer within {config.timeout:g} s. It may be overloaded: "
                                  "wait a moment and ask again. No diagnosis was received.")
    if isinstance(err, AnswerTimeout):  # the call's overall deadline: an answer trickling in, or every attempt slow
        # What happened, not the formula: a trickling answer used the whole deadline on its one request.
        sent = err.attempts
        attempts = ("" if sent is None else " (no request could be sent in that time)" if sent == 0 else
                    " (one request, its answer still incomplete)" if sent == 1 else f" ({sent} requests, retries included)")
        return Failure("timeout", f"The {where} did not answer within {config.deadline:g} s{attempts}. It may be "
                                  "overloaded: wait a moment and ask again. No diagnosis was received.")
    if isinstance(err, ModelTimeout):  # SageMaker's own limit on the model's answer (60 s), not the app's timeout
        return Failure("timeout", f"The model behind the {where} took longer than the endpoint allows and gave no "
                                  "diagnosis. It may be overloaded: wait a moment and ask again. Nothing is wrong with "
                                  "the patient's values.")
    if isinstance(err, AnswerLost) or isinstance(cause, (ConnectionClosedError, ResponseStreamingError,
                                                         IncompleteReadError)):
        return Failure("unreachable", f"The connection to the {where} broke after the request was sent: no "
                                      "diagnosis was received (the endpoint may have processed the request). Ask "
                                      "again.")
    if isinstance(err, EndpointUnreachable) or isinstance(cause, (EndpointConnectionError, ConnectTimeoutError)):
        return Failure("unreachable", f"Cannot reach the {where}: it is down or the address is wrong. "
                                      "Check that the endpoint is running, then ask again.")
    if isinstance(err, NotTheEndpoint):  # a redirect, another server's page: the app's endpoint address is wrong
        log.warning("no diagnosis from the %s: %s", where, err)
        return Failure("not_found", f"The address the app calls for the {where} answered something that is not the "
                                    "endpoint (a redirect, or another server's page). No diagnosis was received: tell "
                                    "the administrator to check the app's endpoint address.")
    if isinstance(err, InvalidAnswer):
        log.warning("the %s answered something that is not a diagnosis: %s", where, err)
        return Failure("failed", f"The {where} answered something that is not a diagnosis ({err.problem}). No "
                                 "diagnosis was received: tell the administrator, the endpoint may be faulty or not a "
                                 "Diagnosa endpoint.")
    if isinstance(cause, ClientError):
        response: Mapping[str, Any] = cause.response
        code = _code(response)
        status = int(response.get("OriginalStatusCode") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                     or 0)
        if code == "ServiceUnavailable" or (code != "ModelError" and status == 503):
            log.warning("the %s is unavailable: %s", where, err)
            if config.is_local:  # the local endpoint answers so while its model loads (or after it failed to load)
                return Failure("unavailable", f"The {where} is up but cannot serve yet: its model is still loading, "
                                              "or failed to load. Ask again in a few seconds; tell the administrator "
                                              "if it persists.")
            return Failure("unavailable", f"SageMaker's service is unavailable at the moment: the {where} cannot be "
                                          "called. Ask again in a moment; tell the administrator if it persists.")
        if code == "ValidationError" and "not found" in str(response.get("Error", {}).get("Message", "")):
            place = f"The {where} serves no endpoint named '{config.endpoint_name}'" if config.is_local else \
                f"SageMaker has no endpoint named '{config.endpoint_name}' in {config.region or 'the default AWS region'}"
            return Failure("not_found", f"{place}: check the app's endpoint name (--endpoint-name; by default the "
                                        "endpoint of the model's dataset, as `diagnosa run` and `diagnosa serve` name "
                                        "it unless given another).")
        if code == "ModelError" or status >= 500:
            log.warning("the %s failed: %s", where, err)
            return Failure("server_error", f"The {where} failed while computing the diagnosis (HTTP {status or 500}). "
                                           "This is not caused by the patient's values; try again, and tell the "
                                           "administrator if it persists.")
    # Anything else: what the client said may be AWS's words (an account, a role, a log URL) or a stranger's answer,
    # which the log keeps for the administrator; the doctor reads that no diagnosis came and whom to tell.
    log.warning("no diagnosis from the %s: %s: %s", where, type(err).__name__, err)
    return Failure("failed", f"The {where} could not give a diagnosis. Tell the administrator (the app's log says "
                             "why). Nothing is wrong with the patient's values as far as the app can tell.")


def _code(response: Mapping[str, Any]) -> str:
    """An AWS error's code ('com.amazonaws.sagemaker#ThrottlingException' read as 'ThrottlingException')."""
    return str(response.get("Error", {}).get("Code", "")).rpartition("#")[2]


def label_problem(result: Mapping[str, Any], spec: FormSpec) -> str | None:
    """A line when the predicted category is none of the form's model's labels (the endpoint serves another model):
    it cannot be chosen as the confirmed diagnosis either."""
    category = result.get("category")
    if category in spec.labels:
        return None
    return (f"'{display_text(category, 100)}' is not one of the categories of the model this form was made for "
            f"({', '.join(spec.labels)}): the endpoint may serve another model. Tell the administrator.")


def readable_label(label: object, limit: int = 60) -> str:
    """A category name quoted so that two names that look alike on screen read differently: ``display_text`` (control
    and format characters escaped: a zero-width space shows as \\u200b), and each character outside ASCII named by its
    code point ('NО ENFERMO' with a Cyrillic О read exactly as 'NO ENFERMO'): "'NО ENFERMO' (U+041E CYRILLIC CAPITAL
    LETTER O)". At most 3 such characters named, the rest counted."""
    text = label if isinstance(label, str) else str(label)
    shown = repr_label(text, limit)
    odd = list(dict.fromkeys(c for c in text[:limit] if ord(c) > 127 and c.isprintable()))
    if not odd:
        return shown
    named = [f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed character')}" for c in odd[:3]]
    more = f" and {len(odd) - 3} more non-ASCII characters" if len(odd) > 3 else ""
    return f"{shown} ({', '.join(named)}{more})"


def repr_label(label: object, limit: int = 60) -> str:
    """A category name quoted as :func:`display_text` shows it (no code point named)."""
    return f"'{display_text(label, limit)}'"


def labels_problem(result: Mapping[str, Any], spec: FormSpec) -> str | None:
    """What makes an answer another model's (None when it is the form's model's): its categories are not exactly the
    labels of the model the form was made for (``spec.labels``: the --model folder's, or the built-in cohort's). Such
    an answer is no diagnosis of the form's model, whatever its category: a label the form does not know ('FLU'), a
    look-alike ('NО ENFERMO' with a Cyrillic О, its characters outside ASCII named by :func:`readable_label`), or only
    some of the model's categories (2 of its 5: the others' probabilities unknown). The difference is named, bounded."""
    probabilities = result.get("probabilities")
    answered = list(probabilities) if isinstance(probabilities, Mapping) else []
    if set(answered) == set(spec.labels):
        return None
    own = set(spec.labels)
    extra = [c for c in answered if c not in own]
    missing = [c for c in spec.labels if c not in set(answered)]
    parts = []
    if extra:
        parts.append(f"it has {some_of(map(readable_label, extra), 5)}, which the model this form was made for does "
                     "not have")
    if missing:
        # The form's own labels as written (their accents are the model's own): the answer's are the ones marked.
        parts.append(f"it lacks {some_of((repr_label(c) for c in missing), 5)} of that model's {len(spec.labels)}")
    return "; ".join(parts)


@dataclass(frozen=True)
class DecisionRule:
    """How a model decides its category (``diagnosa.model.decide``): argmax of decision weight x calibrated
    probability, the weights from its metadata.json (1.0 each for a model without them: plain argmax)."""
    version: str  # the model version its answers carry (``diagnosa.model.model_version``)
    weights: Mapping[str, float]  # by label


@functools.lru_cache(maxsize=8)
def model_decision(model_dir: str | None) -> DecisionRule | None:
    """The decision rule of the model in ``model_dir`` (the app's --model), None when the app has no model folder or
    cannot read a rule from it (weights that are not a positive finite number for every label: the endpoint could not
    serve such a model, and nothing is assumed)."""
    if model_dir is None:
        return None
    try:
        metadata = read_metadata(model_dir)
        labels = [str(label) for label in metadata["labels"]]
        given = metadata.get("decision_weights")
        if not given:  # a model without them decides by plain argmax (diagnosa.model.DiagnosaModel.decision_weights)
            weights = {label: 1.0 for label in labels}
        else:
            weights = {label: float(given[label]) for label in labels}
    except (ModelLoadError, KeyError, TypeError, ValueError, AttributeError) as err:
        log.warning("no decision rule in the model folder %s: %s: %s", model_dir, type(err).__name__, err)
        return None
    if not labels or not all(math.isfinite(w) and w > 0 for w in weights.values()):
        log.warning("the model folder %s has decision weights that are not positive numbers", model_dir)
        return None
    return DecisionRule(model_version(metadata), weights)


def answer_decision_weights(result: Mapping[str, Any], config: AppConfig) -> Mapping[str, float] | None:
    """The decision weights of the model that gave ``result``, when the app knows them: the app's --model's, when the
    answer carries that model's version (or none). None when the app has no --model, or the endpoint serves another
    version of the model (retrained since: its weights are not the folder's, and nothing is checked)."""
    rule = model_decision(config.model)
    if rule is None:
        return None
    version = result.get("model_version")
    if version not in (None, "") and str(version) != rule.version:
        return None
    probabilities = result.get("probabilities") or {}
    if not all(c in rule.weights for c in probabilities):
        return None
    return rule.weights


# How far an endpoint's rounded probabilities (6 decimals: inference.handler) may be from the ones it decided on.
ROUNDING = 1e-6


def decided_category(probabilities: Mapping[str, float], weights: Mapping[str, float], category: str) -> str | None:
    """None when ``category`` can be the decision (argmax of weight x probability) for these probabilities, rounded to
    6 decimals as the endpoint sends them (a tie either way is no contradiction); else the category the rule gives."""
    weighed = {c: weights[c] * float(p) for c, p in probabilities.items()}
    best = max(weighed, key=lambda c: weighed[c])
    mine = weighed[category]
    if all(mine >= weighed[c] - ROUNDING * (weights[category] + weights[c]) for c in weighed):
        return None
    return best


def decision_problem(result: Mapping[str, Any], weights: Mapping[str, float] | None) -> str | None:
    """What makes an answer's category one its model cannot have decided (None when it can, or when the weights are
    not known): with the model's decision weights, its probabilities give another category. The endpoint's category
    then does not follow from its own probabilities (a faulty or foreign endpoint): not a diagnosis."""
    probabilities: Mapping[str, float] = result.get("probabilities") or {}
    category = result.get("category")
    if weights is None or category not in probabilities:
        return None
    best = decided_category(probabilities, weights, str(category))
    if best is None:
        return None
    return (f"its category {readable_label(category)} ({percent(probabilities[str(category)])}) does not follow "
            f"from its probabilities: the model's decision rule, decision weight x probability (weights "
            f"{_weight(weights[str(category)])} and {_weight(weights[best])}), gives {readable_label(best)} "
            f"({percent(probabilities[best])})")


def _weight(w: float) -> str:
    return f"{w:.3g}"


def input_warnings(result: Mapping[str, Any], spec: FormSpec) -> dict[str, list[str]]:
    """The inputs the model ignored, by field ('' for a field the form does not show): the endpoint's
    ``unknown_values`` (a category value no training patient had, counted as none of the known ones) and
    ``unused_codes`` (codes the model never learned, which change nothing), said under their field."""
    out: dict[str, list[str]] = {}
    names = set(spec.names)
    others = 0  # warnings of fields the form does not show: at most MAX_PROBLEMS listed, the rest counted

    def add(name: Any, text: str) -> None:
        nonlocal others
        name = str(name)
        if name in names:
            out.setdefault(name, []).append(text)
            return
        others += 1
        if others <= MAX_PROBLEMS:
            out.setdefault("", []).append(f"{display_text(name, 80)}: {text}")

    unknown = result.get("unknown_values")
    for name, value in (unknown.items() if isinstance(unknown, Mapping) else ()):
        known = spec.levels.get(str(name))
        add(name, f"'{display_text(value, 80)}' is not a value the model knows: it was counted as none of them, which "
                  "changes the diagnosis" + (f" (known: {', '.join(known)})" if known else "") + ". Check the spelling.")
    unused = result.get("unused_codes")
    for name, codes in (unused.items() if isinstance(unused, Mapping) else ()):
        codes = codes if isinstance(codes, list) else [codes]
        named = some_of((display_text(c, 40) for c in codes), MAX_LISTED_CODES)
        add(name, f"{named}: not learned by the model (too rare in its training data), so it changed nothing "
                  "in the diagnosis.")
    if others > MAX_PROBLEMS:
        out[""].append(f"… and {others - MAX_PROBLEMS:,} more inputs the model ignored, not listed")
    return out


def display_problem(result: Mapping[str, Any]) -> str | None:
    """What makes a valid prediction (:func:`prediction_problem`) one the page cannot show (None when it can): more
    categories than a model's answer may hold, more top-k items than categories, more diseases than the differential
    is asked for, a negative differential score, a category name holding a control character (it would forge a line
    of its own), and a lone UTF-16 surrogate anywhere (a JSON "\\ud800" escape decodes to one; the page cannot send
    it to the browser)."""
    probabilities = result.get("probabilities") or {}
    if len(probabilities) > MAX_CATEGORIES:
        return f"{len(probabilities):,} categories, more than the {MAX_CATEGORIES} a model's answer may hold"
    top_k = result.get("top_k") or []
    if len(top_k) > len(probabilities):
        return f"{len(top_k):,} top-k items, more than its {len(probabilities):,} categories"
    differential = result.get("differential") or []
    if len(differential) > MAX_DIFFERENTIAL:
        return f"{len(differential):,} diseases in the differential, more than the {MAX_DIFFERENTIAL} asked for at most"
    for item in differential:  # prediction_problem refused a score that is not a finite number
        score = item.get("score") if isinstance(item, Mapping) else None
        if isinstance(score, (int, float)) and score < 0:
            return f"a differential score of {score_text(score)}, below 0 (a similarity is never negative)"
    where = surrogate_path(result)
    if where is not None:
        return f"a lone UTF-16 surrogate, not valid text, in {display_text(where, 80)}"
    if any(display_text(c, len(c)) != c for c in probabilities if isinstance(c, str)):
        return "a category name holding a control character"
    return None


def diagnose(client: DiagnosaClient, record: Mapping[str, Any], config: AppConfig, spec: FormSpec) -> Outcome:
    """Send one patient; the prediction or the failure, never an exception."""
    if not record:
        return Outcome(failure=Failure("rejected", "Enter at least one value (age, sex, a vital sign, a lab "
                                                   "result or a symptom) before asking for a diagnosis."))
    # The differential is asked for only when the model scores symptoms and the patient has some.
    terms = spec.terms_field.name if spec.terms_field is not None else None
    differential = config.differential if config.differential and terms and record.get(terms) else None
    top_k = config.top_k_for(spec.labels)
    inference_id = str(uuid.uuid4())
    try:
        try:
            prediction = client.predict(dict(record), top_k=top_k, differential=differential,
                                        inference_id=inference_id)
        except PredictionRejected as err:
            if differential is None or not err.message.startswith("differential"):
                raise
            # An endpoint whose model has no knowledge-base similarity: the diagnosis without the differential.
            inference_id = str(uuid.uuid4())
            prediction = client.predict(dict(record), top_k=top_k, inference_id=inference_id)
    except ClientFailure as err:
        try:
            return Outcome(failure=explain_failure(err, config, spec))
        except Exception as unexplained:  # noqa: BLE001  (an answer not explained: the generic failure, not a traceback)
            log.error("an endpoint's failure could not be explained: %s", redacted_traceback(unexplained))
            return Outcome(failure=Failure("failed", f"The {config.description} did not give a diagnosis, and its "
                                                     f"answer could not be read ({type(unexplained).__name__}): it may not "
                                                     "be a Diagnosa endpoint. Tell the administrator."))
    except Exception as err:  # noqa: BLE001  (a bug must not show a traceback with the patient's values)
        # The operators' trace of it, the patient's values redacted (the page names only the error's kind).
        log.error("a diagnosis failed unexpectedly: %s", redacted_traceback(err))
        return Outcome(failure=Failure("failed", f"The {config.description} could not give a diagnosis "
                                                 f"({type(err).__name__})."))
    if not prediction.results:  # the client refuses such an answer (a prediction per patient): a stand-in's
        return Outcome(failure=Failure("failed", f"The {config.description} answered with no prediction."))
    result = prediction.results[0]
    # The client's check, again for a client that is not Diagnosa's; then what the page can show.
    problem = prediction_problem(result) or display_problem(result)
    if problem is not None:
        return _not_a_diagnosis(config, problem)
    # Another model's categories: no diagnosis of the model the form (and the confirmed-diagnosis form) was made for.
    other = labels_problem(result, spec)
    if other is not None:
        log.warning("the %s answered with another model's categories: %s", config.description, other)
        return Outcome(failure=Failure("failed", f"The {config.description} answered with another model's categories "
                                                 f"({other}). No diagnosis is shown: tell the administrator, the "
                                                 "endpoint serves another model than the one the app's form was "
                                                 "made for (its --model; without one, the built-in cohort's). "
                                                 "Nothing is wrong with the patient's values."))
    weights = answer_decision_weights(result, config)
    contradiction = decision_problem(result, weights)
    if contradiction is not None:
        log.warning("the %s answered a category its model cannot decide: %s", config.description, contradiction)
        return _not_a_diagnosis(config, contradiction)
    event_id = prediction.event_id if isinstance(prediction.event_id, str) and prediction.event_id else None
    shown = dict(result)
    for key in ("model_version", "differential_note"):  # shown as they are: a newline in them forged a line
        if isinstance(shown.get(key), str):
            shown[key] = display_text(shown[key], 500)
    return Outcome(result=shown, event_id=event_id, inference_id=inference_id,
                   received_at=datetime.now().strftime("%H:%M:%S"), warnings=input_warnings(result, spec),
                   decision_weights=weights)


# ------------------------------------------------------------------------------------------------ display

def percent(p: float) -> str:
    """A probability as the doctor reads it: '95.0 %', 'under 0.1 %', 'over 99.9 %' (words: tables render markdown).

    A model's estimate is never a certainty: the endpoint rounds its probabilities to six decimals, so 1.0 and 0.0
    read 'over 99.9 %' and 'under 0.1 %', never '100.0 %' or '0.0 %'.
    """
    if not is_probability(p):  # diagnose() refuses such an answer: never shown as a number
        raise ValueError(f"not a probability: {p!r}")
    value = 100.0 * float(p)
    if value < 0.1:
        return "under 0.1 %"
    if value > 99.9:
        return "over 99.9 %"
    return f"{value:.1f} %"


def probability_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per category in clinical order (the model's own order for other labels), for the chart."""
    probabilities: Mapping[str, float] = result.get("probabilities", {})
    order = [c for c in CATEGORIES if c in probabilities] + [c for c in probabilities if c not in CATEGORIES]
    return [{"category": display_text(c), "probability": float(probabilities[c]), "label": percent(probabilities[c])}
            for c in order]


def top_k_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The top-k table's rows: st.table renders markdown and HTML in its cells, so a category is escaped text (a
    label '[x](http://…)' was a link, '<img …>' HTML)."""
    return [{"rank": i, "category": markdown_text(item["category"]), "probability": percent(item["probability"])}
            for i, item in enumerate(result.get("top_k", []), start=1)]


def _not_a_diagnosis(config: AppConfig, problem: str) -> Outcome:
    """The failure of an answer that is no diagnosis, ``problem`` saying why."""
    return Outcome(failure=Failure("failed", f"The {config.description} answered something that is not a diagnosis "
                                             f"({problem}). No diagnosis was received: tell the administrator, the "
                                             "endpoint may be faulty or not a Diagnosa endpoint."))


def score_text(score: float) -> str:
    """A differential score as the doctor reads it: three decimals ('0.512', as the endpoint rounds them), three
    significant digits from 1,000 on ('1e+308' was a 309-digit number), 'not a number' for NaN and infinities (which
    :func:`diagnose` refuses): at most 10 characters."""
    value = float(score)
    if not math.isfinite(value):
        return "not a number"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"


def differential_rows(result: Mapping[str, Any]) -> list[str]:
    """The rare diseases that best match the symptoms, as the doctor reads them: 'name (ORPHA:123) — 0.512'.

    Diseases with a score of 0 (nothing in common beyond the root of the ontology) are left out; :func:`diagnose`
    refuses an answer with a negative or non-finite score (:func:`display_problem`, :func:`prediction_problem`), and
    a row shows no more than :func:`score_text` of any score.
    """
    return [f"{display_text(d['name'])} ({display_text(d['disease_id'], 60)}) — {score_text(d['score'])}"
            for d in result.get("differential") or [] if float(d.get("score", 0)) > 0]


def headline(result: Mapping[str, Any]) -> str:
    """'ENFERMEDAD AGUDA (95.0 %)': the predicted category and its probability."""
    category = result["category"]
    p = result.get("probabilities", {}).get(category)
    return f"{display_text(category)} ({percent(p)})" if p is not None else display_text(category)


def decision_note(result: Mapping[str, Any], weights: Mapping[str, float] | None = None) -> str | None:
    """A line under the headline when the predicted category is not the most probable one (None when it is).

    The endpoint's category is the model's decision, argmax of decision weight x calibrated probability
    (``decision_weights`` in the model's metadata.json), fitted to find more of every category: it can differ from the
    top-ranked category of the probabilities and the top-k. ``weights``: the answering model's
    (:attr:`Outcome.decision_weights`), when the app knows them: the note states the two weights that made the
    decision, or says that the category does not follow from the probabilities (:func:`diagnose` refuses such an
    answer). Without them the note says that the app cannot tell why, rather than asserting a reason.
    """
    probabilities: Mapping[str, float] = result.get("probabilities", {})
    if not probabilities or result.get("category") not in probabilities:
        return None
    category = str(result["category"])
    top = max(probabilities, key=lambda c: probabilities[c])
    if probabilities[top] <= probabilities[category]:
        return None
    more = f"{display_text(top)} is more probable ({percent(probabilities[top])})"
    if weights is None or category not in weights or top not in weights:
        return (f"{more}. The app does not know the decision weights of the model that answered (it was started "
                "without that model's folder, --model, or the endpoint serves another version), so it cannot tell "
                "whether the category above is the model's decision, which weighs each category's probability so "
                "that fewer cases of any category are missed, or a fault of the endpoint.")
    problem = decision_problem(result, weights)
    if problem is not None:
        return (f"Not a diagnosis: the endpoint's {problem}. Tell the administrator.")
    return (f"{more}: the category above is the model's decision, which weighs each category's probability so that "
            f"fewer cases of any category are missed (decision weight {_weight(weights[category])} x "
            f"{percent(probabilities[category])} against {_weight(weights[top])} x {percent(probabilities[top])}).")


# ------------------------------------------------------------------------------------------------ feedback

def feedback_supported(client: Any) -> bool:
    """Whether this client can record a confirmed diagnosis (the monitoring feedback route)."""
    return callable(getattr(client, "send_feedback", None))


@dataclass(frozen=True)
class FeedbackOutcome:
    key: str | None = None  # where the feedback was stored
    message: str | None = None  # the failure, when not stored
    fields: Mapping[str, str] | None = None  # field errors from a 400
    replaced: Replaced | None = None  # the case's earlier record the stored one replaced (perhaps another doctor's)

    @property
    def ok(self) -> bool:
        return self.key is not None

    @property
    def recorded(self) -> str | None:
        """What the doctor reads when it was stored (None when not): where, and the earlier record it replaced."""
        if self.key is None:
            return None
        return f"Confirmed diagnosis recorded ({self.key})." + (
            "" if self.replaced is None else f" {self.replaced.describe()}")


def record_feedback(client: Any, event_id: str, diagnosis: str | None, note: str | None, config: AppConfig,
                    disease_id: str | None = None, labels: tuple[str, ...] | list[str] | None = None
                    ) -> FeedbackOutcome:
    """Record the confirmed diagnosis for a case reference; never raises. Nothing is assumed: no diagnosis chosen,
    nothing sent. ``labels``: the model's (the form's), which the diagnosis must be one of when the client writes
    straight to the lake (it checked against the built-in cohort's five, refusing every label of a model of one's
    own data)."""
    event_id = event_id.strip()
    if not event_id:
        return FeedbackOutcome(message="Enter the case reference shown with the diagnosis.", fields={"event_id": "required"})
    if not diagnosis:
        return FeedbackOutcome(message="Choose the confirmed diagnosis.", fields={"diagnosis": "required"})
    disease_id = (disease_id or "").strip() or None
    if not feedback_supported(client):
        return FeedbackOutcome(message="Recording a confirmed diagnosis is not available with this version of the client.")
    try:
        stored = client.send_feedback(event_id, diagnosis, note=(note or "").strip() or None,
                                      **({"disease_id": disease_id} if disease_id else {}),
                                      **({"labels": list(labels)} if labels else {}))
    except ClientFailure as err:
        raw = getattr(err, "fields", None) or {}
        fields = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
        errors = getattr(err, "errors", None) or []  # a failure listing (row, field, problem), like PredictionRejected
        if not fields and isinstance(errors, list):
            fields = {str(e.get("field")): str(e.get("problem")) for e in errors
                      if isinstance(e, Mapping) and e.get("field")}
        if isinstance(err, AnswerTimeout):  # sent: the endpoint may have stored it before the answer was lost
            return FeedbackOutcome(message=f"The {config.description} did not confirm the record in time: the "
                                           "confirmed diagnosis may not be recorded. Record it again (a second "
                                           "record of a case replaces the first).")
        if isinstance(err, EndpointUnreachable):  # not sent
            return FeedbackOutcome(message=f"Cannot reach the {config.description}: the confirmed diagnosis was "
                                           "not recorded. Try again when it is running.")
        cause = _cause(err)
        if isinstance(cause, ReadTimeoutError):
            return FeedbackOutcome(message=f"The {config.description} did not answer within {config.timeout:g} s; "
                                           "the confirmed diagnosis may not be recorded. Try again.")
        if isinstance(cause, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
            return FeedbackOutcome(message=f"Cannot reach the {config.description}: the confirmed diagnosis was "
                                           "not recorded. Try again when it is running.")
        return FeedbackOutcome(message=f"The confirmed diagnosis was not recorded: {err}", fields=fields or None)
    except Exception as err:  # noqa: BLE001  (as a diagnosis's: the page names the kind, the log the trace)
        log.error("a confirmed diagnosis failed unexpectedly: %s", redacted_traceback(err))
        return FeedbackOutcome(message=f"The confirmed diagnosis was not recorded ({type(err).__name__}).")
    return FeedbackOutcome(key=str(stored.key), replaced=stored.replaced)


CHART_ROW_PX = 46  # the probability chart's height per category: its name and percentage, then its bar
CHART_BAR_PX = 14
CHART_TEXT_PX = 13


def probability_chart(rows: list[dict[str, Any]]) -> Any:
    """One row per category in clinical order: its name and percentage written above its bar, which runs on a track
    of the chart's whole width (0 to 100 %).

    Every category is named: each row is CHART_ROW_PX high whatever the number of categories (Streamlit's default
    autosize, "fit", squeezed the rows into the height left over by the axes, and Vega then hid the labels that
    overlapped: a 3-label model's middle one), and the chart stretches to the column's width ("fit-x"). The names
    were the y axis's labels, left of the bars: in a tablet's or a phone's narrow result column they took all but
    30-60 px of it, the axis's 0 % and 100 % were printed over each other, a leading bar's percentage was cut at the
    chart's edge, and with the wider letter spacing a reader may set (WCAG 1.4.12) names lost their first letters.
    Written above the bar, from its left edge, a row's text has the whole width, and the bar too.
    """
    import altair as alt

    order = [r["category"] for r in rows]
    y = alt.Y("category:N", sort=order, title=None, axis=None)
    x = alt.X("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1]),
              axis=alt.Axis(format="%", values=[0, 0.5, 1], labelFlush=True, grid=False, labelColor=TEXT_COLOR,
                            titleColor=TEXT_COLOR))
    base = alt.Chart(alt.Data(values=rows)).encode(y=y)
    below = CHART_BAR_PX // 2 + 3  # the bar's centre below the row's: the text sits above it
    track = base.mark_bar(color="#e6eaf0", height=CHART_BAR_PX, yOffset=below, aria=False).encode(x=alt.value(0),
                                                                                                 x2=alt.value("width"))
    # Each bar's own accessible name: the category and the percentage as the page writes it (Vega's default
    # read 'probability: 100.000000%' for a rounded 1.0).
    bars = base.mark_bar(color="#2f6f9f", height=CHART_BAR_PX, yOffset=below).transform_calculate(
        aria="datum.category + ': ' + datum.label").encode(x=x, description="aria:N")
    # The text is hidden from screen readers (aria=False): the bar already says it, and Vega's default name for a
    # text mark read the raw float ('probability: 100.000000%') and the category again.
    names = base.mark_text(align="left", baseline="bottom", dy=-1, fontSize=CHART_TEXT_PX, color=TEXT_COLOR,
                           aria=False).transform_calculate(text="datum.category + ': ' + datum.label").encode(
        x=alt.value(0), text="text:N")
    # What a screen reader says for the chart (its accessible name): each category with its percentage, in words.
    description = "Probability of each category: " + "; ".join(f"{r['category']}: {r['label']}" for r in rows)
    return (track + bars + names).properties(height=alt.Step(CHART_ROW_PX), description=description,
                                             autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))
