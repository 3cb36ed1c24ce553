"""Text for messages: how an error lists what it names, bounded whatever the input holds; others' text as markdown
that shows as written."""
from __future__ import annotations

import re
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


def fixed(x: float | None, digits: int = 3) -> str:
    """A report's number: ``x`` with ``digits`` decimals, or ``n/a`` when there is none."""
    return "n/a" if x is None else f"{x:.{digits}f}"


_MARKDOWN_CHARACTERS = frozenset("\\`*_{}[]()#+-.!|<>~:@$&")
# A run of text GFM makes a link of by itself ('http://…', 'www.…', 'a@b.c'): GitHub does, and Streamlit 1.67 links it
# in st.markdown, st.error and a widget's label even with each of its characters backslash-escaped.
_LINK_LIKE = re.compile(r"\S*(?:://|@|www\.)\S*", re.IGNORECASE)


def markdown_literal(text: str, *, table_cell: bool = False) -> str:
    """``text`` (a label, a column name, an endpoint's message: anyone's) as markdown that GitHub, Studio and Streamlit
    show as written, never formatted, linked or typeset: each run of non-space characters that would be a link by
    itself in a code span (shown as written, in code type), every markdown and HTML character elsewhere
    backslash-escaped ('$' starts LaTeX, '&' an entity, '<' HTML). ``table_cell``: the text goes in a GFM table's
    cell, where a '|' ends the cell even inside a code span unless escaped there too."""
    out, end = [], 0
    for found in _LINK_LIKE.finditer(text):
        out.append(_escaped(text[end:found.start()]))
        out.append(_code_span(found.group().replace("|", "\\|") if table_cell else found.group()))
        end = found.end()
    out.append(_escaped(text[end:]))
    return "".join(out)


def _escaped(text: str) -> str:
    return "".join("\\" + c if c in _MARKDOWN_CHARACTERS else c for c in text)


def _code_span(run: str) -> str:
    """``run`` (no spaces) as a code span: fenced by one backtick more than its longest run of them, padded with a
    space that CommonMark strips when the fence is longer than one."""
    longest = max((len(ticks) for ticks in re.findall("`+", run)), default=0)
    return f"`{run}`" if not longest else f"{'`' * (longest + 1)} {run} {'`' * (longest + 1)}"


__all__ = ["ITEM_CHARS", "LISTED", "markdown_literal", "some_of"]
