"""The endpoint's request limits, shared by the handler that enforces them and the clients that stay within them;
and what counts as text in a request (no lone UTF-16 surrogate), for every reader of one: the handler's JSON
bodies, feedback from the route, the CLI and its files."""
from __future__ import annotations

from typing import Any

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's real-time invocation payload limit
MAX_RECORDS = 10_000  # patients per request: work stays proportional to what a caller can mean
MAX_LISTED_PROBLEMS = 100  # problems listed in a refusal; the message says how many more there were


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate (a JSON ``\\ud800`` escape, a command-line argument Python
    decoded with surrogateescape): no UTF-8 writer (the lake, a file, a UTF-8 terminal) can write it."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def not_text(what: str = "a string") -> str:
    """The problem of a string (or of ``what``) that holds a lone surrogate, as every refusal words it."""
    return f"{what} holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not Unicode text"


def surrogate_path(data: Any) -> str | None:
    """Where the first string (key or value) holding a lone surrogate is, e.g. 'instances[3].symptoms[0]'."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if has_surrogate(value):
                return path or "the body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if has_surrogate(str(key)):
                    return f"{path}.<key>" if path else "a key"
                stack.append((item, f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
    return None


def printable(text: str) -> str:
    """``text`` with each lone surrogate written as its ``\\udXXX`` escape, other characters kept ('Größe'): safe to
    print or write as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
