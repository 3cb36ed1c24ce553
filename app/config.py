"""Which endpoint the app calls, and with which model's request schema.

``diagnosa app`` passes the configuration to the Streamlit process through environment variables
(``DIAGNOSA_APP_*``), which is also how a deployment sets it:

| variable | meaning |
|---|---|
| ``DIAGNOSA_APP_ENDPOINT_URL`` | the local endpoint, e.g. ``http://127.0.0.1:8080``; unset for a real SageMaker endpoint |
| ``DIAGNOSA_APP_ENDPOINT_NAME`` | the endpoint's name, SageMaker's or the local endpoint's (default: the endpoint of the |
|  | model's dataset, :func:`model_endpoint_name`; ``diagnosa`` for the built-in cohort) |
| ``DIAGNOSA_APP_REGION`` | the AWS region of a SageMaker endpoint (else the AWS SDK's default) |
| ``DIAGNOSA_APP_MODEL`` | a model folder (``metadata.json``) whose request schema shapes the form |
| ``DIAGNOSA_APP_LAKE`` | the data lake (folder or ``s3://bucket/prefix``) confirmed diagnoses go to when the endpoint has |
|  | no feedback route (SageMaker) |
| ``DIAGNOSA_APP_TIMEOUT`` | seconds to wait for the endpoint's answer, each socket read (default 70: over SageMaker's |
|  | 60 s limit on a model's answer; at most a day); a connection waits at most 10 s of it. A read timeout is not |
|  | retried (the request was delivered: a retry would run the model again); a call gives up after ``TIMEOUT`` x |
|  | ``ATTEMPTS`` seconds in all (:attr:`AppConfig.deadline`) |
| ``DIAGNOSA_APP_ATTEMPTS`` | attempts per call, retries included (default 2): a connection that fails, throttling, a 5xx |
| ``DIAGNOSA_APP_TOP_K`` | categories listed in the top-k, at most the model's labels (default: the endpoint's, 3 or all |
|  | the labels of a model with fewer) |
| ``DIAGNOSA_APP_DIFFERENTIAL`` | rare diseases listed as decision support under the diagnosis (default 5; 0: none) |
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from diagnosa.net import MAX_TIMEOUT
from inference.limits import INVOKE_TIMEOUT, printable_line

PREFIX = "DIAGNOSA_APP_"
DEFAULT_ENDPOINT_NAME = "diagnosa"
DEFAULT_TIMEOUT = INVOKE_TIMEOUT  # past SageMaker's 60 s limit on a model's answer (inference.limits)
DEFAULT_ATTEMPTS = 2
DEFAULT_DIFFERENTIAL = 5
MAX_DIFFERENTIAL = 20  # the endpoint's limit
MAX_SETTING_CHARS = 32  # of a numeric setting: '1e999', 5,000 digits and the like are refused, quoted in part


class ConfigError(ValueError):
    """A configuration value the app cannot use; the message names the variable."""


def model_endpoint_name(model: str | None) -> str:
    """The endpoint that serves a model when none is named: its dataset's, as the pipeline and ``diagnosa run
    --local`` deploy it (:func:`diagnosa.data.schema.resource_name`); without a model, the built-in cohort's."""
    if model is None:
        return DEFAULT_ENDPOINT_NAME
    from diagnosa.model import ModelLoadError, model_endpoint

    try:
        return model_endpoint(model)
    except ModelLoadError as err:
        raise ConfigError(f"cannot name the model's endpoint: {err}") from None


# The page's text colour (Streamlit's theme) and its chart's: dark enough that a caption, drawn in it at 60 %
# opacity, is 4.9:1 on white (WCAG AA asks 4.5:1; Streamlit's default made 3.9:1, its chart axes 3.7:1).
TEXT_COLOR = "#0e1117"
DESCRIBED_CHARS = 80  # of an endpoint's name, URL or region in the words that say where predictions come from


def _described(text: str) -> str:
    return printable_line(text[:DESCRIBED_CHARS]) + ("…" if len(text) > DESCRIBED_CHARS else "")


@dataclass(frozen=True)
class AppConfig:
    endpoint_name: str = DEFAULT_ENDPOINT_NAME
    endpoint_url: str | None = None
    region: str | None = None
    model: str | None = None
    lake: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    attempts: int = DEFAULT_ATTEMPTS
    top_k: int | None = None  # None: not sent, the endpoint's default (3, or all the labels of a model with fewer)
    differential: int = DEFAULT_DIFFERENTIAL  # rare diseases matching the symptoms (decision support); 0: none

    def __post_init__(self) -> None:
        if not self.endpoint_name.strip():
            raise ConfigError("the endpoint name is empty")
        if self.endpoint_url is not None:
            from inference.client import check_endpoint_url

            try:
                object.__setattr__(self, "endpoint_url", check_endpoint_url(self.endpoint_url))
            except ValueError as err:
                raise ConfigError(str(err)) from None
        if self.lake is not None:
            self._check_lake()
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"the timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.timeout > MAX_TIMEOUT:
            raise ConfigError(f"the timeout {self.timeout:g} s is more than a day ({MAX_TIMEOUT:,.0f} s), the longest "
                              "wait taken")
        if not 1 <= self.attempts <= 10:
            raise ConfigError(f"attempts must be from 1 to 10, got {self.attempts!r}")
        if self.top_k is not None and not 1 <= self.top_k:
            raise ConfigError(f"top_k must be a whole number of categories from 1, got {self.top_k!r}")
        if not 0 <= self.differential <= MAX_DIFFERENTIAL:
            raise ConfigError(f"differential must be from 0 to {MAX_DIFFERENTIAL}, got {self.differential!r}")

    def _check_lake(self) -> None:
        """The feedback lake, checked as the app starts: a bad one was found only when a doctor confirmed a diagnosis,
        and a local endpoint's never used (it stores feedback in its own lake)."""
        from diagnosa.lake import LakeError, check_lake_uri

        if self.endpoint_url is not None:
            raise ConfigError(f"the feedback lake {_described(self.lake or '')} (--feedback-lake, DIAGNOSA_APP_LAKE) "
                              "is for a SageMaker endpoint, which has no feedback route; the local endpoint "
                              f"{_described(self.endpoint_url)} stores confirmed diagnoses in its own lake")
        try:
            check_lake_uri(self.lake or "", "feedback lake")
        except LakeError as err:
            raise ConfigError(f"the feedback lake (--feedback-lake, DIAGNOSA_APP_LAKE): {err}") from None

    def top_k_for(self, labels: Sequence[str]) -> int | None:
        """The top_k to ask the endpoint for, given the model's labels: the configured one, at most the number of
        labels (a larger one lists them all; the endpoint refuses more than it has); None when not configured."""
        return None if self.top_k is None else min(self.top_k, len(labels))

    @property
    def deadline(self) -> float:
        """The longest a call waits in all, every attempt included: ``timeout`` x ``attempts`` (the timeout alone
        bounds each socket read, which an endpoint trickling its answer never lets expire): the CLI's rule."""
        from inference.client import overall_deadline

        return overall_deadline(self.timeout, self.attempts)

    @property
    def is_local(self) -> bool:
        return self.endpoint_url is not None

    @property
    def description(self) -> str:
        """Where predictions come from, in words for the page header and the messages that name it: each part one
        printable line of at most DESCRIBED_CHARS (an environment value is the administrator's text: a newline forged
        a line of a message, a lone surrogate — a value that is not UTF-8 — made the page a traceback)."""
        if self.endpoint_url:
            return f"local endpoint {_described(self.endpoint_url)}"
        region = _described(self.region) if self.region else "the default AWS region"
        return f"SageMaker endpoint '{_described(self.endpoint_name or '')}' in {region}"

    @staticmethod
    def settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
        """The numeric settings of ``DIAGNOSA_APP_*`` (timeout, attempts, top_k, differential), checked, and nothing
        else: what `diagnosa app` takes for a flag left out, without reading the model (its --model, or the variable
        through the same resolution as the flag, names that)."""

        def number(name: str, kind: type, default: float | None) -> Any:
            raw = env.get(PREFIX + name, "").strip()
            if not raw:
                return default
            from app.form import display_text

            what = "an integer" if kind is int else "a number"
            if len(raw) > MAX_SETTING_CHARS:  # the message quotes its beginning: it was as long as the value
                raise ConfigError(f"{PREFIX}{name} must be {what} of at most {MAX_SETTING_CHARS} characters, got "
                                  f"'{display_text(raw, 20)}' ({len(raw):,} characters)")
            try:
                return kind(raw)
            except ValueError:
                raise ConfigError(f"{PREFIX}{name} must be {what}, got '{display_text(raw, MAX_SETTING_CHARS)}'") \
                    from None

        settings = {"timeout": float(number("TIMEOUT", float, DEFAULT_TIMEOUT)),
                    "attempts": int(number("ATTEMPTS", int, DEFAULT_ATTEMPTS)),
                    "top_k": number("TOP_K", int, None),
                    "differential": int(number("DIFFERENTIAL", int, DEFAULT_DIFFERENTIAL))}
        for name, value in settings.items():  # the checks, each naming its variable
            try:
                AppConfig(**{name: value})
            except ConfigError as err:
                raise ConfigError(f"{PREFIX}{name.upper()}: {err}") from None
        return settings

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AppConfig:
        def text(name: str) -> str | None:
            value = env.get(PREFIX + name, "").strip()
            return value or None

        settings = cls.settings_from_env(env)
        return cls(endpoint_name=text("ENDPOINT_NAME") or model_endpoint_name(text("MODEL")),
                   endpoint_url=(text("ENDPOINT_URL") or "").rstrip("/") or None,
                   region=text("REGION"), model=text("MODEL"), lake=text("LAKE"), **settings)

    def to_env(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` return this configuration."""
        values = {"ENDPOINT_NAME": self.endpoint_name, "ENDPOINT_URL": self.endpoint_url, "REGION": self.region,
                  "MODEL": self.model, "LAKE": self.lake, "TIMEOUT": f"{self.timeout:g}", "ATTEMPTS": str(self.attempts),
                  "TOP_K": None if self.top_k is None else str(self.top_k), "DIFFERENTIAL": str(self.differential)}
        return {PREFIX + k: v for k, v in values.items() if v is not None}
