"""Text for messages: how an error lists what it names, bounded whatever the input holds."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

LISTED = 10  # items a message names before "and N more"
ITEM_CHARS = 300  # characters of one item at most (a report line's column with its example fits)


def some_of(items: Iterable[Any], limit: int = LISTED) -> str:
    """``items`` as ``"a, b, c and 7 more"``: the first ``limit``, each cut to ITEM_CHARS, and how many more. A config
    naming 300,000 columns the CSV lacks made a 5.6 MB error; one item per problem must not make a message unbounded."""
    shown: list[str] = []
    more = 0
    for item in items:
        if len(shown) < limit:
            text = str(item)
            shown.append(text if len(text) <= ITEM_CHARS else text[:ITEM_CHARS - 1] + "…")
        else:
            more += 1
    return ", ".join(shown) + (f" and {more:,} more" if more else "")


__all__ = ["ITEM_CHARS", "LISTED", "some_of"]
