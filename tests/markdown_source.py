"""How the markdown the app hands Streamlit reads, for tests of its source (``streamlit.testing`` gives the source,
not the page): code spans, shown as written, and the rest, where a backslash escapes the character after it
(the two CommonMark rules ``diagnosa.text.markdown_literal`` relies on). What Chromium shows of it is checked by
``tests/test_app_e2e.py``."""
from __future__ import annotations

import re
from collections.abc import Iterator


def _pieces(source: str) -> Iterator[tuple[bool, str, str]]:
    """``source`` as (a code span?, as written, as read) pieces, left to right."""
    i = 0
    while i < len(source):
        if source[i] == "\\" and i + 1 < len(source):  # an escape: the next character as itself, a backtick too
            yield False, source[i:i + 2], source[i + 1]
            i += 2
            continue
        if source[i] == "`":
            fence = re.match("`+", source[i:]).group()  # type: ignore[union-attr]
            close = re.compile(f"(?<!`){fence}(?!`)").search(source, i + len(fence))
            if close is not None:
                code = source[i + len(fence):close.start()]
                padded = len(code) > 2 and code.startswith(" ") and code.endswith(" ")
                yield True, source[i:close.end()], code[1:-1] if padded else code
                i = close.end()
                continue
            yield False, fence, fence  # never closed: the backticks are text
            i += len(fence)
            continue
        yield False, source[i], source[i]
        i += 1


def outside_code(source: str) -> str:
    """``source`` as written, each code span replaced by a space: where markdown could still format or link."""
    return "".join(" " if code else written for code, written, _ in _pieces(source))


def read_as(source: str) -> str:
    """What a reader sees of ``source``: a code span's text as written (one space of padding each side removed, as
    CommonMark does), a backslash escape elsewhere as the character it escapes."""
    return "".join(read for _, _, read in _pieces(source))
