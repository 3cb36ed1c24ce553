"""How a CSV file's rows are read -- its blank rows, its header's columns without a name, a row's cells fitted to
the header, a file that is no text -- one rule for ingestion, ``diagnosa predict`` and the endpoint."""
from __future__ import annotations

import csv
import unicodedata
from collections import Counter
from collections.abc import Sequence


def fit_to_header(cells: list[str], width: int) -> list[str] | None:
    """``cells`` as a row of a ``width``-field header: a spreadsheet's empty trailing cells dropped (nothing in
    them to lose; Excel writes 'a,b,,' for a row it once formatted wider), else None when the count differs — a row
    is never padded, nor cut where a cell holds something."""
    if len(cells) > width and not any(cell.strip() for cell in cells[width:]):
        return cells[:width]
    return cells if len(cells) == width else None


def is_blank_row(cells: Sequence[str]) -> bool:
    """A row with nothing in it: no cell, or only empty cells and spaces (',,,,': a spreadsheet's formatted empty
    row). Skipped wherever a CSV is read; never a row without id or label."""
    return not any(cell.strip() for cell in cells)


def named_width(header: Sequence[str]) -> int:
    """The header's columns up to its last one with a name: a spreadsheet writes delimiters at the end of its lines
    for columns it once formatted ('id,age,,'); those columns count only where a row has text under them."""
    width = len(header)
    while width > 0 and not header[width - 1].strip():
        width -= 1
    return width


def header_problem(header: Sequence[str], width: int) -> str | None:
    """What makes a header's named columns (up to ``width``, ``named_width``) unreadable as fields, else None: a
    column without a name among them, or a name twice (which value is meant is not known either way)."""
    unnamed = [str(i + 1) for i, name in enumerate(header[:width]) if not name.strip()]
    if unnamed:
        many = len(unnamed) > 1
        return (f"column{'s' * many} {', '.join(unnamed[:10])}{', …' * (len(unnamed) > 10)} of the header "
                f"{'have' if many else 'has'} no name: name {'them' if many else 'it'} or delete "
                f"{'them' if many else 'it'}")
    repeated = [name for name, count in Counter(header[:width]).items() if count > 1]
    if repeated:
        return "the header names a field more than once: " + ", ".join(repr(name[:80]) for name in repeated[:10])
    return None


def hides_characters(name: str) -> bool:
    """Whether ``name`` holds a control or format character (ESC, a tab, a bidi override, a zero-width space): on a
    terminal such a character acts instead of showing ('lab\\x1b]0;…' retitled the window of whoever read a message
    naming the column), and no one sees it to type it in a config or a request."""
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name)


def misfit_problem(cells: Sequence[str], header: Sequence[str], width: int) -> str:
    """Why a row ``fit_to_header(cells, width)`` refused does not fit (``header``: as written, ``width`` its named
    columns)."""
    if width < len(cells) <= len(header):
        column = next(i for i in range(width, len(cells)) if cells[i].strip())
        return (f"text under column {column + 1} of the header, which has no name ({cells[column].strip()[:40]!r}): "
                "name the column or delete what is under it")
    return (f"{'more' if len(cells) > width else 'fewer'} cells than the header has fields ({len(cells)}, the header "
            f"{width}): a row is never padded, nor cut where a cell holds something")


# Files a user may take for a CSV, known by their first bytes (and a Parquet file by its last too: a header may
# start 'PAR1'), and what to do instead.
CONTAINERS = (
    (b"\x1f\x8b", "gzip-compressed (a .gz file): decompress it first (gunzip)"),
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook, or a .zip of files): save the sheet as CSV UTF-8, or unzip "
                    "it"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Excel workbook (.xls): save the sheet as CSV UTF-8"),
    (b"%PDF-", "a PDF document: export the table as CSV UTF-8"),
    (b"PAR1", "a Parquet file: write it as CSV (pandas: read_parquet, then to_csv)"),
)


def container_kind(head: bytes, tail: bytes = b"") -> str | None:
    """What a file starting with ``head`` (and ending with ``tail``) is when it is a format that holds no CSV text
    as it is (CONTAINERS), else None."""
    for signature, what in CONTAINERS:
        if head.startswith(signature) and (signature != b"PAR1" or tail.endswith(b"PAR1")):
            return what
    return None


def csv_problem(err: Exception) -> str:
    """A ``csv.Error`` in a user's words: Python's own ('field larger than field limit (131072)', 'unexpected end of
    data') names no cell or quote."""
    text = str(err)
    if text.startswith("field larger than field limit"):
        limit = csv.field_size_limit()
        return f"a cell over {limit:,} characters (the most one cell may hold)"
    if "end of data" in text:
        return "a quote never closed"
    return text
