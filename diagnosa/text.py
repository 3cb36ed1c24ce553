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


_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_SHORTCODE = re.compile(r":[\w+\-/]+:")  # ':smile:', ':+1:', ':100:', ':material/home:' (the closing ':' is escaped)
_THEMATIC_BREAK = re.compile(r"([-*_])(?:[ \t]*\1){2,}[ \t]*")
# In a label, a link-like run and ':material_<name>:' (an icon whatever is escaped in it) go in a code span.
_LABEL_CODE = re.compile(_LINK_LIKE.pattern + r"|\S*:material_\S*", re.IGNORECASE)


def label_literal(text: str) -> str:
    """``text`` (a one-line widget label: a column's title, anyone's words) as the markdown Streamlit 1.67 shows as
    written in a widget's label, with a backslash only where its label markdown would act: Streamlit copies the label
    source into the input's ``aria-label``, so each backslash of :func:`markdown_literal` ('Age \\(years\\)') was read
    out by screen readers. What the label markdown acts on was checked in Chromium (tests/test_app_accessibility.py):
    '*', '~' and '_' that could open or close emphasis or strikethrough (not one between spaces, nor '_' inside a
    word), '`', '$' when there are two (LaTeX), ':' before a letter (a colour directive ':red[x]', ':red' alone, an
    icon ':material/…:') and the closing ':' of a shortcode (':smile:' is an emoji even with its first ':' escaped),
    '/' after ':material' (Streamlit makes ':material/x:' an icon before reading the markdown), '<' before a letter
    (an autolink '<abc:1>'), '&' of an entity ('&amp;'), '(' after ']' (a link '[a](b)' or an
    image), a '[' that starts the label (a link definition '[a]: b' shows nothing), a thematic break ('---'), and a
    backslash before punctuation. HTML shows as text there, and Streamlit escapes a block marker at the start ('#',
    '-', '+', '>', '1.') itself. Leading spaces are dropped (four made a code block). A run that GFM links by itself
    goes in a code span, as in :func:`markdown_literal`, and so does one with ':material_' (an icon whatever is
    escaped); text of more than one line is :func:`markdown_literal`'s.
    Not prevented (by either): Streamlit's arrows and dashes ('->' shows '→', ' -- ' '—'), text-level replacements
    that no escape undoes."""
    if "\n" in text or "\r" in text:
        return markdown_literal(text)
    text = text.lstrip()
    many_dollars = text.count("$") > 1
    closing = {found.end() - 1 for found in _SHORTCODE.finditer(text)}
    escape: set[int] = set(closing)
    if _THEMATIC_BREAK.fullmatch(text):
        escape.add(0)
    for i, c in enumerate(text):
        before = text[i - 1] if i else " "
        after = text[i + 1] if i + 1 < len(text) else " "
        if c == "\\":
            hit = after in _PUNCTUATION
        elif c == "`":
            hit = True
        elif c in "*~_":
            hit = not (before.isspace() and after.isspace()) and not (c == "_" and before.isalnum() and after.isalnum())
        elif c == "[":
            hit = i == 0
        elif c == "(":
            hit = before == "]"
        elif c == ":":
            hit = after.isascii() and after.isalpha()
        elif c == "<":
            hit = after.isascii() and after.isalpha()
        elif c == "&":
            hit = bool(_ENTITY.match(text, i))
        elif c == "$":
            hit = many_dollars
        elif c == "/":
            hit = text.endswith(":material", 0, i)  # ':material/' is made ':material_' before the markdown is read
        else:
            hit = False
        if hit:
            escape.add(i)
    out, end = [], 0
    for found in _LABEL_CODE.finditer(text):
        out.append(_escaped_at(text, end, found.start(), escape))
        out.append(_code_span(found.group()))
        end = found.end()
    out.append(_escaped_at(text, end, len(text), escape))
    return "".join(out)


def _escaped_at(text: str, start: int, end: int, escape: set[int]) -> str:
    return "".join("\\" + text[i] if i in escape else text[i] for i in range(start, end))


__all__ = ["ITEM_CHARS", "LISTED", "label_literal", "markdown_literal", "some_of"]
