"""Plots that show others' text as written: labels, column names and category values come from a user's dataset.

matplotlib typesets the text between two '$' as TeX math by default: a label 'Grade $^^$' stopped Evaluate with a
ValueError from its math parser after every model had trained, and a category value '$10k-$50k' was drawn as
'10k-50k' in italics. Every plot of the project is drawn inside :func:`plain_text`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def tick_labels(texts: Sequence[str], limit: int) -> list[str]:
    """``texts`` as an axis names them: each cut to ``limit`` characters with '…' (a 300-character label ran across
    the confusion matrix it names; the report's table gives it whole), numbered in their order when cutting made
    two of them the same."""
    cut = [text if len(text) <= limit else text[:limit - 1].rstrip() + "…" for text in texts]
    if len(set(cut)) < len(set(texts)):
        cut = [f"{i}. {text}" for i, text in enumerate(cut, start=1)]
    return cut


def plain_text(draw: Callable[P, R]) -> Callable[P, R]:
    """``draw`` (a function that makes and saves a figure) run with matplotlib showing every text as written."""
    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> R:
        import matplotlib

        # Read as matplotlib makes each text (a tick label too, made as the figure is saved): the whole drawing runs
        # under them, saving included.
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return draw(*args, **kwargs)

    return drawn


__all__ = ["plain_text", "tick_labels"]
