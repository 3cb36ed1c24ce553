"""The endpoint's request limits, shared by the handler that enforces them and the clients that stay within them;
and how a request's JSON is read and what counts as text in it (no lone UTF-16 surrogate, no key given twice), for
every reader of one: the handler's JSON bodies, feedback from the route, the CLI and its files."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

# Seconds a client waits for an InvokeEndpoint answer (socket read): over SageMaker's own 60 s limit on a model's answer,
# as AWS advises (70 s), so a slow model's answer, or SageMaker's ModelError when it gives up on the model, arrives. At
# 10 s (a read timeout retried) a model taking 10 to 60 s was asked 2 to 4 times per request and never answered. The
# default of the client, `diagnosa predict --timeout` and the doctors' app (here: this module loads no boto3).
INVOKE_TIMEOUT = 70.0

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's real-time invocation payload limit
MAX_RECORDS = 10_000  # patients per request: work stays proportional to what a caller can mean
MAX_LISTED_PROBLEMS = 100  # problems listed in a refusal; the message says how many more there were
MAX_REFUSAL_BYTES = 64 * 1024  # a refusal's size: its problems are listed up to it, the rest counted (more_errors)


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate (a JSON ``\\ud800`` escape, a command-line argument Python
    decoded with surrogateescape): no UTF-8 writer (the lake, a file, a UTF-8 terminal) can write it."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def not_text(what: str = "a string") -> str:
    """The problem of a string (or of ``what``) that holds a lone surrogate, as every refusal words it."""
    return f"{what} holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not Unicode text"


def surrogate_path(data: Any) -> str | None:
    """Where the first string (key or value) holding a lone surrogate is, e.g. 'instances[3].symptoms[0]'. Each
    value waits with a link to its parent, the path written only for the one found: paths built for every value
    cost a long key's length per item of a list under it (a 140 KB body took 2 GB)."""
    stack: list[tuple[Any, Any]] = [(data, None)]  # (value, (parent link, its key or index)) or None at the top
    while stack:
        value, link = stack.pop()
        if isinstance(value, str):
            if has_surrogate(value):
                return _path(link) or "the body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if has_surrogate(str(key)):
                    return f"{_path(link)}.<key>" if link else "a key"
                stack.append((item, (link, key)))
        elif isinstance(value, list):
            stack.extend((item, (link, i)) for i, item in enumerate(value))
    return None


def _path(link: Any) -> str:
    parts: list[str] = []
    while link is not None:
        link, step = link
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    path = "".join(reversed(parts))
    return path[1:] if path.startswith(".") else path


class RepeatedKeys(dict[str, Any]):
    """A JSON object that named a key more than once (``{"age": 200, "age": 40}``): the last value is kept, as
    ``json`` keeps it, and ``repeated`` names the keys, so a reader can refuse what it cannot tell apart."""

    repeated: list[str]


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) == len(pairs):
        return record
    out = RepeatedKeys(record)
    out.repeated = [key for key, count in Counter(key for key, _ in pairs).items() if count > 1]
    return out


def loads(text: str) -> Any:
    """JSON text as ``json.loads`` reads it, but an object that repeats a key is a :class:`RepeatedKeys`."""
    return json.loads(text, object_pairs_hook=_object)


def json_problem(err: BaseException, *, lines: bool = True) -> str:
    """What is wrong with JSON that ``json.loads`` refused, in the words of a request's author (Python's own advice,
    ``sys.set_int_max_str_digits()``, is the server's to follow, not theirs); where, by line and column or, for
    one line of JSON Lines (``lines=False``), by character."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at line {err.lineno} column {err.colno}" if lines else f"{err.msg} at character {err.pos + 1}"
    return "a number with too many digits (over 4,300)" if "digits" in str(err) else str(err)


def printable(text: str) -> str:
    """``text`` with each lone surrogate written as its ``\\udXXX`` escape, other characters kept ('Größe'): safe to
    print or write as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


CAPTURE_HEADER = "X-Diagnosa-Capture"  # the local endpoint's "failed": an answer whose capture line was not written


TOKEN_ENV = "DIAGNOSA_FEEDBACK_TOKEN"  # the local endpoint's feedback token (server and clients), when it checks one
# The longest feedback token sent (and the most of a token file read): a token is a few dozen characters; it travels in
# the request's header block, which the endpoint takes up to 64 KB of (inference.server.MAX_HEADER_BYTES).
MAX_TOKEN_CHARS = 4096


def token_problem(token: str) -> str | None:
    """Why ``token`` (stripped) cannot be a feedback token, or None. It is sent as ``Authorization: Bearer <token>``:
    an HTTP header holds printable ASCII portably (the stdlib's client encodes it as latin-1: a token with "€" failed
    there, after the record was made, and was reported as the endpoint's answer not being JSON), and no control
    character (the endpoint refuses a header that holds one). The message never quotes the token, only where."""
    if not token:
        return "is empty"
    if len(token) > MAX_TOKEN_CHARS:
        return f"is {len(token):,} characters long, over the {MAX_TOKEN_CHARS:,} a token may have"
    for position, char in enumerate(token, start=1):
        if not " " <= char <= "~":
            kind = "a control character" if char < " " or char == "\x7f" else "not ASCII"
            return (f"holds a character that is {kind} (character {position} of {len(token):,}): a feedback token is "
                    "sent in an HTTP header, so it is printable ASCII (letters, digits, punctuation, spaces inside)")
    return None


def printable_line(text: str) -> str:
    """``text`` as one line safe to print: each character Python would not print as itself (a newline, a control or
    format character, a lone surrogate) written as its escape (``\\n``, ``\\u202e``, ``\\ud800``), the rest kept
    ('Größe'). For text a command shows from a file others wrote: it can neither forge a line nor crash the print."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def printable_lines(text: str) -> str:
    """``text`` of several lines, each made :func:`printable_line`: its line breaks kept, every other control or
    format character escaped. For a report a command prints whose lines quote others' text."""
    return "\n".join(map(printable_line, text.split("\n")))
