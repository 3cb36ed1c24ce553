"""How a CSV row's cells are fitted to its header, one rule for ingestion, ``diagnosa predict`` and the endpoint."""
from __future__ import annotations

import csv


def fit_to_header(cells: list[str], width: int) -> list[str] | None:
    """``cells`` as a row of a ``width``-field header: a spreadsheet's empty trailing cells dropped (nothing in
    them to lose; Excel writes 'a,b,,' for a row it once formatted wider), else None when the count differs — a row
    is never padded, nor cut where a cell holds something."""
    if len(cells) > width and not any(cell.strip() for cell in cells[width:]):
        return cells[:width]
    return cells if len(cells) == width else None


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
