"""Plots that show others' text as written: labels, column names and category values come from a user's dataset.

matplotlib typesets the text between two '$' as TeX math by default: a label 'Grade $^^$' stopped Evaluate with a
ValueError from its math parser after every model had trained, and a category value '$10k-$50k' was drawn as
'10k-50k' in italics. Every plot of the project is drawn inside :func:`plain_text`.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


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


__all__ = ["plain_text"]
