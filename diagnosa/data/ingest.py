"""Ingestion: raw zone → validated, versioned curated dataset; every rejected row to quarantine.

Guarantees:
- a raw object is never modified (user files are first copied into ``raw/`` write-once);
- for every source, rows read = rows accepted + rows quarantined, and each quarantined row keeps its
  original content and the list of reasons;
- a curated version is identified by the hash of its inputs and schema, so ingesting the same raw
  data twice yields the same version and writes nothing new; its ``manifest.json`` is written last,
  so a version without a manifest is incomplete and never read.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from diagnosa.data.csv_cells import container_kind, fit_to_header, hides_characters, is_blank_row, named_width
from diagnosa.data.hpo import Ontology, load_ontology
from diagnosa.data.leakage import LEAKAGE_KEYS, leakage_notes
from diagnosa.data.schema import (
    ANSWER_ID,
    BUILTIN_DATASET,
    CLINICAL_RECORD_FIELDS,
    LAB_RESULT_FIELDS,
    NUMBER_TEXT,
    SAMPLE_CELLS,
    CsvDialect,
    Schema,
    SchemaError,
    clean_text,
    cohort_schema,
    config_slice,
    csv_dialect,
    grouping,
    inferred_kind,
    load_dataset_config,
    missing_markers,
    near_spelling,
    number_counts,
    number_spelling,
    number_text,
    other_delimiter,
    repeated,
    resource_name,
    schema_from_config,
    too_small_classes,
    ungrouped,
)
from diagnosa.data.validate import clip, implausible_numbers, shown, validate_frame
from diagnosa.files import not_a_regular_file
from diagnosa.lake import DataLake, LakeError, ObjectExists, ObjectNotFound
from diagnosa.text import some_of

# Bump when ingestion writes anything else for the same input, so a file ingested before is curated again, not
# reused (tests/test_ingest_version.py records what each number writes). 2: data in parts; 3: the fixes since,
# an empty cell of a boolean slice column written False among them (it was left empty, and retraining failed),
# and implausible numbers quarantined (validate.implausible_numbers).
INGEST_VERSION = "3"
# The curated rows are written as several Parquet objects of at most this many rows (data/part-NNNNN.parquet),
# so a processing job of N instances can take a share each (S3 sharding by key: pipelines/definition.py). The
# default cohort (20k) makes four parts, a million patients 200.
ROWS_PER_PART = 5_000
LATEST_ATTEMPTS = 50  # reads of LATEST.json by one ingest while other ingests keep rewriting it
REPORT_LISTED = 20  # columns (markers, labels) a line of the ingestion report names before "and N more"
RECORDS_SOURCE = "clinical_records"
LABS_SOURCE = "lab_results"
BATCH_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")  # \Z: "$" also matches before a final "\n"
# Told what ingestion is doing as it goes, (phase, detail): for a live display; ingestion itself prints nothing.
Phase = Callable[..., None]
log = logging.getLogger(__name__)


def _no_phase(name: str, detail: str = "") -> None:
    """The default :data:`Phase`: nobody is watching."""


class IngestError(ValueError):
    """Ingestion cannot start: missing or unreadable input, bad config. Nothing was written."""


@dataclass
class SourceCounts:
    source: str
    key: str
    sha256: str
    read: int
    accepted: int
    quarantined: int

    def __post_init__(self) -> None:
        assert self.read == self.accepted + self.quarantined, f"{self.key}: counts do not add up"


@dataclass
class IngestReport:
    dataset: str
    version: str
    rows: int
    sources: list[SourceCounts]
    reasons: dict[str, int]  # reason kind → rows
    data_keys: list[str]  # the curated rows, in order: data/part-00000.parquet, ...
    manifest_key: str
    quarantine_keys: list[str] = field(default_factory=list)
    reused: bool = False  # the version existed already: no data was written
    relatest: str | None = None  # reused and made the latest again: the version it replaced ("" when none was)
    seconds: float = 0.0
    missing_cells: dict[str, int] = field(default_factory=dict)  # marker ('NA', ...) → cells read as missing
    labels_read_as_numbers: dict[str, str] = field(default_factory=dict)  # '4.0' → '4'
    cleaned_cells: int = 0  # cells read trimmed of spaces or with their accents composed
    numbers_read_as_categories: dict[str, dict[str, Any]] = field(default_factory=dict)  # column → counts, examples
    overtaken_by: str | None = None  # written, not made the latest: another ingest's version became it meanwhile
    # Columns not declared that were inferred as no feature, or as a category for their text: column → kind ('date',
    # 'text', 'identifier', 'empty', 'code') and an example cell.
    inferred_columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    read_notes: list[str] = field(default_factory=list)  # how the file was read beyond its [csv] (csv.notes)
    # Columns not declared, read as numbers from their sampled cells, with text further down: column → the rows
    # so quarantined and the first one's line.
    text_below_the_sample: dict[str, dict[str, int]] = field(default_factory=dict)
    # Reason kind → the first such row's reason ('line 7: unknown label: ...'), shown beside its count. Only in the
    # report of the ingest that wrote the version: the manifest keeps kinds, never a cell's value.
    reason_examples: dict[str, str] = field(default_factory=dict)
    # What the accepted rows can teach a model that new patients do not bring (diagnosa.data.leakage): repeated rows,
    # columns that tell the label, constant columns. Notes, in the manifest too.
    leakage: dict[str, Any] = field(default_factory=dict)

    def summary(self, *, values: bool = True) -> str:
        """The report for a person; ``values=False`` leaves out every example cell (a quarantine reason's, a column's),
        for a job's log: it goes to CloudWatch, read by more people than the lake's quarantine, which keeps them."""
        lines = [f"dataset {self.dataset} version {self.version}" + (" (already ingested)" if self.reused else "")
                 + ("" if self.relatest is None else "; the latest version again" + (
                     f", in place of {self.relatest}" if self.relatest else ""))]
        for s in self.sources:
            lines.append(f"  {s.source}: read {s.read:,} / accepted {s.accepted:,} / quarantined {s.quarantined:,}")
        for reason, count in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            example = self.reason_examples.get(reason) if values else None
            lines.append(f"    quarantined for {reason}: {count:,}" + (f" (e.g. {example})" if example else ""))
        if self.labels_read_as_numbers:
            lines.append("  labels read as numbers: " + some_of((f"{text!r} as {label!r}"
                                                                  for text, label in self.labels_read_as_numbers.items()),
                                                                 REPORT_LISTED))
        if self.numbers_read_as_categories:
            lines.append("  read as categories though mostly numbers (declare a column a number to quarantine the rows "
                         "with other text instead, or add the text to missing_values): " + some_of((
                             f"{column} ({c['numbers']:,} of {c['cells']:,} sampled cells are numbers"
                             + ("; not: " + ", ".join(map(repr, c["others"])) if values else "")
                             + (f"; {c['spelled']:,} spell a number otherwise" + (
                                 f", e.g. {c['spelled_example']!r} with {c['spelled_as']}" if values else "")
                                + ": write them as plain numbers" if c.get("spelled") else "") + ")"
                             for column, c in self.numbers_read_as_categories.items()), REPORT_LISTED))
        if self.text_below_the_sample:
            lines.append(f"  not declared and read as numbers from their first {SAMPLE_CELLS:,} non-empty cells, with "
                         "other text further down (those rows quarantined; declare [columns.<name>] type = "
                         "\"category\" to keep the cells as text, or list the text in missing_values): " + some_of((
                             f"{column} ({c['rows']:,} rows from line {c['line']})"
                             for column, c in self.text_below_the_sample.items()), REPORT_LISTED))
        unlearned = {c: k for c, k in self.inferred_columns.items() if k["kind"] != "code"}
        if unlearned:
            lines.append("  not declared, kept as metadata (in the curated data, never a model's input; declare "
                         "[columns.<name>] type = \"category\" to learn from one, or \"integer\" or \"number\" for "
                         "numbers): " + some_of((
                             f"{column} ({INFERRED_WHY[k['kind']]}" + (f", e.g. {clip(k['example'], 40)!r}"
                                                                         if values and k.get("example") else "") + ")"
                             for column, k in unlearned.items()), REPORT_LISTED))
        codes = [column + (f" (e.g. {k['example']!r})" if values else "") for column, k in self.inferred_columns.items()
                 if k["kind"] == "code"]
        if codes:
            lines.append("  read as categories, not numbers, for their leading zeros (declare [columns.<name>] type = "
                         "\"number\" if they are amounts): " + some_of(codes, REPORT_LISTED))
        for note in self.read_notes:
            lines.append(f"  {note}")
        lines += leakage_lines(self.leakage)
        if self.cleaned_cells:
            lines.append(f"  cells read without the spaces around them or with composed accents: {self.cleaned_cells:,}")
        if self.missing_cells:
            lines.append("  cells read as missing: " + some_of((f"{marker!r} {n:,}"
                                                                 for marker, n in self.missing_cells.items()), REPORT_LISTED))
        if self.overtaken_by:
            lines.append(f"  not made the latest version: another ingest of {self.dataset} made {self.overtaken_by} the "
                         "latest while this one ran (ingest this file again to make it the latest)")
        where = self.data_keys[0].rsplit("/", 1)[0] + "/" if self.data_keys else "nothing"
        lines.append(f"  curated rows: {self.rows:,} → {where} ({len(self.data_keys)} part{'s' * (len(self.data_keys) != 1)})")
        if self.quarantine_keys:
            lines.append(f"  quarantined rows (as written, with their line and reasons) → {', '.join(self.quarantine_keys)}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ readers

class JsonLines:
    """A JSON Lines object held once in memory and parsed chunk by chunk (bounded extra memory)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
        self.starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
        self.ends = np.concatenate([newlines, [len(data)]]).astype(np.int64)
        if len(data) == 0 or data.endswith(b"\n"):  # the final newline ends a line, it does not start one
            self.starts, self.ends = self.starts[:-1], self.ends[:-1]

    def __len__(self) -> int:
        return len(self.starts)

    def raw(self, number: int) -> bytes:
        """Line ``number`` (1-based) exactly as stored."""
        return self.data[self.starts[number - 1]:self.ends[number - 1]]

    def text(self, number: int) -> str:
        return self.raw(number).decode("utf-8", errors="replace").rstrip("\r")

    def chunks(self, size: int = 100_000) -> Iterator[tuple[list[dict[str, Any]], list[int], dict[int, list[str]]]]:
        """(records, their 1-based line numbers, reasons of the lines that are not records) per chunk."""
        decoder = json.JSONDecoder()
        for first in range(0, len(self), size):
            records: list[dict[str, Any]] = []
            numbers: list[int] = []
            errors: dict[int, list[str]] = {}
            for number in range(first + 1, min(first + size, len(self)) + 1):
                try:
                    line = self.raw(number).decode("utf-8").rstrip("\r")
                except UnicodeDecodeError as err:
                    errors[number] = [f"line is not valid UTF-8 (byte {err.start})"]
                    continue
                if not line.strip():
                    errors[number] = ["empty line"]
                    continue
                try:
                    obj = decoder.decode(line)
                except json.JSONDecodeError as err:
                    errors[number] = [f"malformed JSON: {err.msg} at column {err.colno}"]
                    continue
                if not isinstance(obj, dict):
                    errors[number] = [f"a record must be a JSON object, got {type(obj).__name__}"]
                    continue
                records.append(obj)
                numbers.append(number)
            yield records, numbers, errors


@dataclass
class CsvRead:
    """A CSV's rows as exact strings (nothing coerced; empty cells stay empty strings), with each row's first line
    in the file, and the rows whose cells do not match the header (line → why), which no column can hold."""

    frame: pd.DataFrame
    lines: np.ndarray  # the file's line each row of ``frame`` starts on (blank lines and multi-line cells counted)
    malformed: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # how the file was read beyond its dialect, for the report


EXCEL_SEP_LINE = re.compile(r"sep=(.)")  # the first line a spreadsheet may write to name its delimiter
# The longest cell read (Python's csv module stops at 131,072 characters: one long note refused the whole file). A
# cell is at most the file's length, which is in memory already; beyond this it is refused, naming its row.
CELL_LIMIT = 64 * 1024 * 1024
C1_CONTROLS = re.compile("[\u0080-\u009f]")  # latin-1's reading of cp1252's – ‘ ’ “ ” € …


# UTF-32's marks first: UTF-32-LE's starts with UTF-16-LE's.
WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
             (codecs.BOM_UTF16_BE, "utf-16"))


def _codec(encoding: str) -> str:
    return codecs.lookup(encoding).name


def _wide(encoding: str) -> bool:
    """UTF-16 or UTF-32: NUL bytes are part of every ASCII character."""
    return _codec(encoding).startswith(("utf-16", "utf-32"))


def _word_at(text: str, position: int) -> str:
    """The word (a cell's text between delimiters, spaces and quotes) around ``position`` in ``text``, at most 40
    characters, for a message."""
    stops = ',;\t|"\r\n '
    start = position
    while start > 0 and text[start - 1] not in stops and position - start < 20:
        start -= 1
    end = position
    while end < len(text) and text[end] not in stops and end - position < 20:
        end += 1
    return text[start:end]


def encoding_problem(data: bytes, source: str, dialect: CsvDialect) -> str | None:
    """Why ``data`` is not text in the config's encoding though it may decode without an error: the mix-ups that
    garble text silently (a UTF-8 file read as cp1252: 'PediatrÃ­a'; a cp1252 file read as latin-1: control
    characters for its dashes and quotes; UTF-16 without a byte-order mark read as UTF-8: a NUL between letters)."""
    container = container_kind(data[:16], data[-4:])
    if container:  # no encoding reads these: the advice to set one would lead nowhere
        return f"{source} is not a CSV text file: it is {container}"
    head = data[:4096]
    wide = _wide(dialect.encoding)
    wide_bom = next((name for mark, name in WIDE_BOMS if data.startswith(mark)), None)
    if wide_bom and not wide:
        return (f"{source} is {wide_bom.upper()} text (it starts with {wide_bom.upper()}'s byte-order mark"
                + (", as a spreadsheet's 'Unicode text' is saved" if wide_bom == "utf-16" else "")
                + f"): set encoding = \"{wide_bom}\" under [csv] in the config"
                + ("" if dialect.utf8 else f" (it reads the file as {dialect.encoding})"))
    if wide and wide_bom is None and head.strip() and 0 not in head:  # a CSV in UTF-16 or -32 has NULs: in its commas
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None  # decoding says where
        return (f"{source} is not {dialect.encoding} text: it has no NUL byte, which every delimiter and digit in "
                f"{dialect.encoding} has, and it reads as UTF-8"
                + (" (it starts with UTF-8's byte-order mark)" if data.startswith(codecs.BOM_UTF8) else "")
                + ": leave encoding out of [csv] (UTF-8 is the default) or set encoding = \"utf-8\"")
    if not wide and len(head) >= 4 and head.count(0) >= len(head) // 4:
        odd, even = head[1::2].count(0), head[0::2].count(0)
        if odd > 4 * even or even > 4 * odd:
            codec = "utf-16-le" if odd > even else "utf-16-be"
            return (f"{source} looks like UTF-16 text without a byte-order mark (every other byte of its start is NUL, "
                    f"as SQL Server's bcp -w and some exports write it): set encoding = \"{codec}\" under [csv] in the "
                    "config, or save it as CSV UTF-8")
    if dialect.utf8 or _wide(dialect.encoding) or data.isascii():
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:  # a cp1252 or latin-1 text almost never decodes as UTF-8: 'í' would have to be 'Ã' + '­'
        bom = text.startswith("\ufeff")
        body = text.removeprefix("\ufeff")
        position = next((i for i, ch in enumerate(body) if ord(ch) > 127), None)
        if position is None:
            name = body.split("\n", 1)[0].split(dialect.delimiter, 1)[0][:20]
            example = f"its first column's name {name!r} would be read as {'ï»¿' + name!r}"
        else:
            word = _word_at(body, position)
            garbled = word.encode("utf-8").decode(dialect.encoding, errors="replace")
            example = f"{word!r} would be curated as {garbled!r}"
        return (f"{source} is UTF-8 text" + (" (it starts with UTF-8's byte-order mark)" if bom else "")
                + f" but the config reads it as {dialect.encoding}, so {example}: leave encoding out of [csv] (UTF-8 "
                "is the default) or set encoding = \"utf-8\"")
    if _codec(dialect.encoding) == "cp1252":
        return None
    try:
        decoded = data.decode(dialect.encoding)
    except UnicodeError:  # UnicodeDecodeError, or a codec's own (punycode's, idna's): decoding says where
        return None
    control = C1_CONTROLS.search(decoded)
    if control is None:
        return None
    line = decoded.count("\n", 0, control.start()) + 1
    word = _word_at(decoded, control.start())
    try:
        fixed = f", which reads it as {word.encode(dialect.encoding).decode('cp1252')!r}"
    except (UnicodeDecodeError, UnicodeEncodeError):
        fixed = ""
    return (f"{source} read as {dialect.encoding} holds control characters (U+0080 to U+009F; line {line}: {word!r}): "
            f"a Windows file is cp1252, where those bytes are dashes, quotes and '€'{fixed}: set encoding = "
            "\"cp1252\" under [csv] in the config")


def read_csv_rows(data: bytes, source: str, dialect: CsvDialect | None = None) -> CsvRead:
    """Read as ``dialect`` says (its delimiter and encoding; default a comma-separated UTF-8 file, with or without a
    byte-order mark), with every line ending a spreadsheet writes (CR LF, LF, and the old Mac's lone CR). The
    header is checked as written; a row with fewer or more cells than the header is set aside, not padded. Empty
    trailing cells (a spreadsheet's) are dropped, and so are trailing header columns without a name that are empty
    in every row; a row whose cells read right only past a space before a quote (``a, "b, c"``) is so read."""
    dialect = dialect or CsvDialect()
    problem = encoding_problem(data, source, dialect)
    if problem:
        raise IngestError(problem)
    try:
        text = data.decode(dialect.decoding)
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        hint = (" (a spreadsheet saved on Windows is often cp1252: set encoding = \"cp1252\" under [csv] in the "
                "config, or save it as CSV UTF-8)" if dialect.encoding == CsvDialect.encoding else "")
        raise IngestError(f"{source} is not {dialect.encoding} text (byte {err.start}, line {line}){hint}") from None
    except UnicodeError as err:  # a codec that fails otherwise (punycode, idna): no byte to name
        raise IngestError(f"{source} is not {dialect.encoding} text ({err}): set encoding under [csv] in the config "
                          "to the file's ('utf-8', 'cp1252', 'utf-16')") from None
    # A byte-order mark is no text: 'utf-8-sig' and 'utf-16' drop theirs, 'utf-16-le' and the like keep it, and a file
    # saved twice by a tool that adds one has two. Left in, the first column's name has an invisible character.
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise IngestError(f"{source} is empty: a CSV needs a header row")
    # The text's lines as io.StringIO(text, newline="") gives them, one at a time: a StringIO held a copy of the text
    # at 4 bytes a character (502 MB for a 125 MB file).
    stream = text_lines(text)
    first = next(stream, "")
    sep = EXCEL_SEP_LINE.fullmatch(first.rstrip("\r\n"))
    skipped = 1
    if sep is None:
        stream = itertools.chain([first], stream)
        skipped = 0
    elif sep.group(1) != dialect.delimiter:
        raise IngestError(f"{source}: its first line {first.rstrip()!r} says the cells are {sep.group(1)!r}-separated: "
                          f"set delimiter = \"{sep.group(1)}\" under [csv] in the config")
    offsets: np.ndarray | None = None  # where each of the file's lines starts in the text, found when a row is reread

    def reread(first_line: int, last_line: int) -> list[str] | None:
        """The row on the stream's lines ``first_line`` to ``last_line`` (1-based) read with a space before a quote
        skipped, or None when it does not read so."""
        nonlocal offsets
        if offsets is None:
            offsets = np.fromiter((m.start() for m in _LINE.finditer(text)), dtype=np.int64)
        begin, stop = skipped + first_line - 1, skipped + last_line
        end = int(offsets[stop]) if stop < len(offsets) else len(text)
        try:
            rows = list(csv.reader(text_lines(text[int(offsets[begin]):end]), delimiter=dialect.delimiter,
                                   skipinitialspace=True, strict=True))
        except csv.Error:
            return None
        return rows[0] if len(rows) == 1 else None

    nul = "\x00" in text
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, min(len(text) + 1, CELL_LIMIT)))
    # strict: a quote never closed is an error, not the rest of the file read into one cell
    reader = csv.reader(stream, delimiter=dialect.delimiter, strict=True)
    end = 0
    respaced = 0
    holding: int | None = None  # the first line with text under a trailing header column without a name
    try:
        header = next(reader, [])
        width = named_width(header)
        rows: list[list[str]] = []  # the rows read since the last chunk: as Python strings, ~55 bytes a cell
        chunks: list[pd.DataFrame] = []  # the rows before, as compact (arrow) string columns
        lines: list[int] = []
        malformed: dict[int, str] = {}
        end = reader.line_num
        for cells in reader:
            start, line, end = end + 1, end + 1 + skipped, reader.line_num
            if is_blank_row(cells):
                continue
            fitted = fit_to_header(cells, width)  # a spreadsheet's empty trailing cells: nothing in them to lose
            if fitted is not None:
                cells = fitted
            elif holding is None and width < len(header) and len(cells) > width:
                holding = line
            if fitted is None and any('"' in cell for cell in cells):
                again = reread(start, end)
                again = fit_to_header(again, width) if again is not None else None
                if again is not None:
                    cells = again
                    respaced += 1
            if len(cells) != width:
                malformed[line] = (f"wrong number of cells: {len(cells)} where the header has {width} (a cell "
                                   "holding the delimiter without quotes, or a line cut short)")
                continue
            if nul and any("\x00" in cell for cell in cells):
                column = next(i for i, cell in enumerate(cells) if "\x00" in cell)
                malformed[line] = (f"a NUL character (byte 0) in column {column + 1} ('{clean_text(header[column])}'): "
                                   "the file is damaged there, or was not written as text")
                continue
            lines.append(line)
            rows.append(cells)
            if len(rows) == ROWS_PER_CHUNK:
                chunks.append(pd.DataFrame(rows, dtype=str))
                rows = []
    except csv.Error as err:
        why = (f"a cell is over {CELL_LIMIT // 1024 // 1024} MiB, the longest one read (keep such text out of the "
               "CSV, or cut it)" if "field larger than field limit" in str(err) else str(err))
        raise IngestError(f"{source} cannot be parsed as CSV (the row starting on line {end + 1 + skipped}): {why}") \
            from None
    finally:
        csv.field_size_limit(limit)
    written = header
    header = [clean_text(name) for name in header]  # as cells are read ('Sex ' is Sex) and the config's names
    if any("\x00" in name for name in header):
        raise IngestError(f"{source}: its header holds a NUL character (byte 0): the file is damaged, or is not text "
                          f"in the config's encoding ({dialect.encoding})")
    unnamed = [str(i + 1) for i, name in enumerate(header) if not name]
    trailing = [str(i + 1) for i in range(width, len(header))]
    notes = []
    if unnamed and unnamed == trailing and holding is None and (lines or malformed):
        notes.append(f"header column{'s' * (len(trailing) > 1)} {some_of(trailing)} without a name and empty in "
                     "every row (a spreadsheet's delimiters at the end of its lines): dropped")
        header, written, unnamed = header[:width], written[:width], []
    if unnamed and width == 1 and holding is not None and len(header) > 2:
        raise IngestError(f"{source}: its first line has text in its first cell only ({clip(header[0], 60)!r}), and "
                          f"line {holding} has cells under its other {len(header) - 1} columns: the first line looks "
                          "like a title above the table, not its header. Delete the lines above the column names, "
                          "so that the first line names every column")
    if unnamed:
        raise IngestError(f"{source}: column{'s' * (len(unnamed) > 1)} {some_of(unnamed)} of the header "
                          f"{'have' if len(unnamed) > 1 else 'has'} no name (a spreadsheet's empty columns, or a "
                          "delimiter at the end of the header)"
                          + (f"; line {holding} has text under {'them' if len(trailing) > 1 else 'it'}"
                             if holding is not None and unnamed == trailing else "")
                          + ": name or delete them")
    if respaced:
        notes.append(f"rows read with a space between a delimiter and a quoted cell (', \"a, b\"': the cell is what "
                     f"the quotes hold): {respaced:,}")
    # Repeats are looked for in the header as read (trimmed), not as pandas would rename them: 'age.group' beside
    # 'age' is a column of its own, 'age ' beside 'age' the same name twice.
    duplicated = repeated(header)
    if duplicated:
        spaced = sorted({w for w, name in zip(written, header) if name in duplicated and w != name})
        raise IngestError(f"{source}: duplicated column names in the header: {some_of(map(repr, duplicated))}"
                          + (f" (names are read without the spaces around them and with accents composed; written "
                             f"{some_of(map(repr, spaced))})" if spaced else ""))
    if not lines and not malformed:
        raise IngestError(f"{source} has a header but no rows")
    if rows:
        chunks.append(pd.DataFrame(rows, dtype=str))
    del rows
    if chunks:
        frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
        frame.columns = header
    else:
        frame = pd.DataFrame(columns=header, dtype=str)
    return CsvRead(frame, np.asarray(lines, dtype=np.int64), malformed, notes)


# A line of text as io.StringIO(text, newline="") splits it (csv's own reading): ended by CR LF, LF or a lone CR, the
# ending kept; the last one may have none.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
# Rows held as Python strings before they are made columns: a 1M-row export held them all (3.8 GB, then a crash).
ROWS_PER_CHUNK = 20_000


def text_lines(text: str) -> Iterator[str]:
    """``text``'s lines, one at a time, as ``io.StringIO(text, newline="")`` reads them (without its copy)."""
    return (match.group() for match in _LINE.finditer(text))


def read_csv_text(data: bytes, source: str, dialect: CsvDialect | None = None) -> pd.DataFrame:
    """A CSV whose every row matches its header (the cohort's lab results), as exact strings."""
    read = read_csv_rows(data, source, dialect)
    if read.malformed:
        line, why = next(iter(read.malformed.items()))
        raise IngestError(f"{source} cannot be parsed as CSV: line {line}: {why}")
    return read.frame


def delimiter_hint(header: list[str], dialect: CsvDialect) -> str | None:
    """What to set when the header, read with the config's delimiter, is one column holding another one."""
    other = other_delimiter(header, dialect.delimiter)
    if other is None:
        return None
    shown = "\\t" if other == "\t" else other
    return (f"the header is one column, {header[0]!r}: the file looks '{shown}'-separated; set "
            f"delimiter = \"{shown}\" under [csv] in the config")


# ------------------------------------------------------------------------------------------------ helpers

def _reason_kind(reason: str) -> str:
    """A reason without its specifics (the text before ':'), for counting."""
    return reason.split(":", 1)[0]


def _duplicates(ids: pd.Series, content: Callable[[int], Hashable]) -> dict[int, list[str]]:
    """Exact repeats: keep the first, quarantine the copies. Same id, other content: quarantine all.

    ``content(position)`` gives a row's original content; it is only called for repeated ids.
    """
    out: dict[int, list[str]] = {}
    valid = ids.notna()
    dup = ids[valid & ids.duplicated(keep=False)]
    for key, group in dup.groupby(dup, sort=False):
        positions = list(group.index)
        if len({content(p) for p in positions}) == 1:
            for pos in positions[1:]:
                out[pos] = [f"duplicate row: same content as an earlier row for id '{key}'"]
        else:
            for pos in positions:
                out[pos] = [f"conflicting rows: {len(positions)} rows with different content for id '{key}'"]
    return out


def rejection_summary(quarantined: Sequence[Mapping[str, Any]], top: int = 3) -> str:
    """The commonest reasons rows were rejected, with counts and one example each, in bounded length.

    Reasons of one kind (``_reason_kind``, as the ingestion report counts them: "conflicting rows: ... for id 'a'"
    and "... for id 'b'") count once, so a wrong ``id_column`` or a unit mismatch reads as one cause however many
    rows it hit.
    """
    kinds: dict[str, tuple[int, str, int]] = {}  # kind -> (rows, the first such reason, its line)
    for entry in quarantined:
        first_of_kind: dict[str, str] = {}
        for reason in entry["reasons"]:
            first_of_kind.setdefault(_reason_kind(reason), reason)
        for kind, reason in first_of_kind.items():
            n, example, line = kinds.get(kind, (0, reason, int(entry["line"])))
            kinds[kind] = (n + 1, example, line)
    ranked = sorted(kinds.values(), key=lambda v: -v[0])
    parts = [f"{n:,} row{'s' * (n != 1)} like line {line}: {clip(example)}" for n, example, line in ranked[:top]]
    if len(ranked) > top:
        parts.append(f"{len(ranked) - top} other kind{'s' * (len(ranked) - top != 1)} of problem")
    return "; ".join(parts)


def _merge(*parts: dict[int, list[str]]) -> dict[int, list[str]]:
    merged: dict[int, list[str]] = {}
    for part in parts:
        for pos, reasons in part.items():
            merged.setdefault(pos, []).extend(reasons)
    return merged


def _quarantine_bytes(entries: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in entries).encode("utf-8")


def _parquet_bytes(frame: pd.DataFrame, schema: Schema) -> bytes:
    arrow_fields = []
    for f in schema.fields:
        if f.type in ("number",):
            t = pa.float64()
        elif f.type == "integer":
            t = pa.int64()
        elif f.type == "boolean":
            t = pa.bool_()
        elif f.type in ("hpo_terms", "codes"):
            t = pa.list_(pa.string())
        else:
            t = pa.string()
        arrow_fields.append(pa.field(f.name, t))
    table = pa.Table.from_pandas(frame[[f.name for f in schema.fields]], schema=pa.schema(arrow_fields),
                                 preserve_index=False)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _version(schema: Schema, hashes: list[str]) -> str:
    digest = hashlib.sha256("|".join([INGEST_VERSION, schema.fingerprint(), *hashes]).encode()).hexdigest()
    return digest[:12]


def curated_prefix(dataset: str, version: str) -> str:
    return f"curated/{dataset}/{version}"


def lake_datasets(lake: DataLake) -> list[str]:
    """The datasets with a curated version in the lake (a LATEST.json under curated/<name>/)."""
    return sorted({key.split("/")[1] for key in lake.list("curated/")
                   if key.count("/") == 2 and key.endswith("/LATEST.json")})


def datasets_deploying_to(lake: DataLake, resource: str) -> list[str]:
    """The datasets (the built-in cohort's and the lake's) whose endpoint and model package group are ``resource``
    (``resource_name``: '_' written '-'; ingestion refuses two that share one)."""
    return [name for name in sorted({BUILTIN_DATASET, *lake_datasets(lake)}) if resource_name(name) == resource]


def spelled_as_endpoint(lake: DataLake, dataset: str) -> str:
    """A hint for a dataset name that is not one but another's endpoint name (``mi-hospital`` for ``mi_hospital``,
    ``diagnosa`` for the built-in cohort's ``patients``); empty when it is not."""
    named = [name for name in datasets_deploying_to(lake, dataset) if name != dataset]
    return (f"; '{dataset}' is the endpoint and model package group of dataset '{named[0]}': give --dataset "
            f"{named[0]}") if named else ""


# A curated version's id as ingestion writes it (hex digits of a content hash; the AWS retrain function holds
# LATEST.json to the same rule): naming anything else (a path such as ../../x) it is damaged, never followed.
VERSION_ID = re.compile(r"[0-9a-f]{6,64}")
DAMAGED_LATEST = "(damaged LATEST.json)"


def unfinished_note(lake: DataLake, dataset: str) -> str:
    """For a dataset with no curated version: "" or what an ingest killed mid-way left of it (version folders
    without a manifest, never read), and what to do — "no curated dataset" alone sent the user to ingest again
    without a word about them."""
    try:
        versions = sorted({key.split("/")[2] for key in lake.list(f"curated/{dataset}/") if key.count("/") >= 3})
    except (LakeError, ValueError, OSError):  # a note to an error: it never takes that error's place
        return ""
    if not versions:
        return ""
    return (f"; curated/{dataset}/ holds {len(versions):,} version folder(s) an ingest did not finish (no "
            f"manifest.json: one still running, or killed mid-way), e.g. {clip(versions[0], 80)}: run the same "
            "ingest again to complete it, or remove them")


def latest_key(dataset: str) -> str:
    """The object naming a dataset's latest curated version; written last, after the version's manifest."""
    return f"curated/{dataset}/LATEST.json"


def curated_uri(bucket: str, dataset: str, version: str) -> str:
    """A curated version as the pipeline's InputDataUri (the one place that URI is spelled)."""
    return f"s3://{bucket}/{curated_prefix(dataset, version)}"


def _existing(lake: DataLake, dataset: str, version: str, asked_at: str,
              latest_before: tuple[str | None, str | None]) -> IngestReport | None:
    """The report of a version already in the lake, made the dataset's latest again: ingesting a file is asking
    to train on it (the earlier file after a newer one; an ingest killed between its manifest and LATEST). Already
    the latest, it is asked for again (``asked_at``): an ingest of another file asked for earlier and still running
    does not take its place. Another ingest asked for after this one that made its version the latest since
    ``latest_before`` was read keeps it (``_overtaken``), as with a version written anew."""
    key = f"{curated_prefix(dataset, version)}/manifest.json"
    if not lake.exists(key):
        return None
    manifest = lake.get_json(key)
    present = _version_objects(lake, dataset, version)
    missing = [name for name in [*curated_data_keys(manifest), *manifest["quarantine_keys"]] if name not in present]
    if missing:  # removed since (by hand, or a failed ingest's clean-up racing another's finish): written again whole
        log.warning("version %s of '%s' lists %d object(s) the lake no longer holds (%s): writing the version again",
                    version, dataset, len(missing), some_of(missing, 3))
        return None
    overtaken, before = _move_latest(lake, dataset, version, key, asked_at, latest_before, again=True)
    return IngestReport(
        dataset=dataset, version=version, rows=manifest["rows"],
        sources=[SourceCounts(**s) for s in manifest["sources"]], reasons=manifest["quarantine_reasons"],
        data_keys=curated_data_keys(manifest), manifest_key=key, quarantine_keys=manifest["quarantine_keys"], reused=True,
        missing_cells=manifest.get("missing_cells", {}),
        labels_read_as_numbers=manifest.get("labels_read_as_numbers", {}),
        relatest=(before or "") if before != version and overtaken is None else None, overtaken_by=overtaken,
        cleaned_cells=manifest.get("cleaned_cells", 0),
        numbers_read_as_categories=manifest.get("numbers_read_as_categories", {}),
        inferred_columns=manifest.get("inferred_columns", {}), read_notes=manifest.get("read_notes", []),
        text_below_the_sample=manifest.get("text_below_the_sample", {}),
        leakage={key: manifest[key] for key in LEAKAGE_KEYS if key in manifest},
    )


def asked_now() -> str:
    """When an ingest was asked for (UTC, to the microsecond; ISO strings of one format compare as times): kept in
    LATEST.json, so of two ingests of a dataset at once the one asked for last stays the latest."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def latest_record(lake: DataLake, dataset: str) -> tuple[str | None, str | None]:
    """(``current_latest``, when the ingest that wrote it was asked for), from one read of LATEST.json: an ingest
    reads it when it starts, and again before it makes its version the latest, to see whether another ingest wrote
    it meanwhile. The time is None when LATEST.json does not say (written before it did, or damaged)."""
    return _latest_tagged(lake, dataset)[0]


def _latest_tagged(lake: DataLake, dataset: str) -> tuple[tuple[str | None, str | None], str | None]:
    """``latest_record`` and the tag of the LATEST.json it read, for the conditional write that moves it (None: none)."""
    try:
        data, tag = lake.read_tagged(latest_key(dataset))
    except ObjectNotFound:
        return (None, None), None
    try:
        record = json.loads(data.decode("utf-8"))
        version, asked = record.get("version"), record.get("asked_at")
    except (ValueError, RecursionError, AttributeError):  # not JSON, or JSON but not an object
        return (DAMAGED_LATEST, None), tag
    return (version if isinstance(version, str) and VERSION_ID.fullmatch(version) else DAMAGED_LATEST,
            asked if isinstance(asked, str) else None), tag


def _move_latest(lake: DataLake, dataset: str, version: str, manifest_key: str, asked_at: str,
                 latest_before: tuple[str | None, str | None], *, again: bool = False) -> tuple[str | None, str | None]:
    """Make ``version`` the dataset's latest unless another ingest asked for after this one made another version the
    latest since ``latest_before`` was read (``_overtaken``); with ``again`` (a version already in the lake), not
    when it already is the latest, asked for no earlier than ``asked_at``. Returns (the version that overtook it,
    None when none did; what LATEST.json named when last read). The write is conditional: LATEST.json rewritten by
    another ingest between the read and the write (another process or host) is read again and judged again, instead
    of being overwritten by an ingest asked for before it."""
    for _ in range(LATEST_ATTEMPTS):
        now, tag = _latest_tagged(lake, dataset)
        before, recorded = now
        overtaken = _overtaken(now, latest_before, version, asked_at)
        if overtaken is not None or (again and before == version and recorded is not None and recorded >= asked_at):
            return overtaken, before
        if lake.put_json_if(latest_key(dataset), {"version": version, "manifest": manifest_key, "asked_at": asked_at},
                            tag):
            return None, before
    raise LakeError(f"{lake.uri.rstrip('/')}/{latest_key(dataset)} was rewritten by other ingests {LATEST_ATTEMPTS} "
                    f"times while version {version} was being made the latest; the version is whole in the lake, "
                    "ingest the file again to make it the latest")


def _overtaken(now: tuple[str | None, str | None], latest_before: tuple[str | None, str | None], version: str,
               asked_at: str) -> str | None:
    """The version another ingest made the latest since ``latest_before`` was read (``now``, a ``latest_record``), when
    it keeps the latest from ``version``: it was asked for after this ingest (``asked_at``), or does not say when.
    None when LATEST.json did not change meanwhile (whatever the clocks say), names ``version``, or the other ingest was
    asked for before this one and merely finished first."""
    latest_now, other = now
    if now == latest_before or latest_now == version:
        return None
    return None if other is not None and other < asked_at else latest_now


def current_latest(lake: DataLake, dataset: str) -> str | None:
    """What the dataset's LATEST.json names, None when there is none; DAMAGED_LATEST when it names nothing an
    ingest wrote (not JSON, no version, a version id that is a path). Ingestion rewrites it; readers go
    through ``latest_version``, which refuses it."""
    return latest_record(lake, dataset)[0]


def _commit(lake: DataLake, schema: Schema, version: str, curated: pd.DataFrame, sources: list[SourceCounts],
            quarantine: dict[str, list[dict[str, Any]]], started: float, extra: dict[str, Any],
            latest_before: tuple[str | None, str | None], asked_at: str) -> IngestReport:
    """Write the version (quarantine, parts, manifest), then make it the latest — unless another ingest of the dataset
    asked for after this one (``asked_at``, when it read ``latest_before``, a ``latest_record``) made another version
    the latest meanwhile, or asked again for the latest: the one asked for last stays. One asked for earlier that
    merely finished first does not keep it. Times are compared only when LATEST.json changed meanwhile: one ingest
    after another takes the latest whatever the two machines' clocks say."""
    prefix = curated_prefix(schema.name, version)
    manifest_key = f"{prefix}/manifest.json"
    written: dict[str, bytes] = {}  # what this ingest wrote of the version (or tried to), in order
    try:
        manifest, reasons, examples = _write_version(lake, schema, version, curated, sources, quarantine, extra, written)
        _rewrite_removed(lake, schema.name, version, written)
        lake.put_json(manifest_key, manifest)
    except BaseException as err:  # a full disk, S3 refusing, a Ctrl-C: the version has no manifest, so it is never read
        _remove_incomplete(lake, schema.name, version, manifest_key, written, err)
        raise
    data_keys, quarantine_keys = manifest["data_keys"], manifest["quarantine_keys"]
    overtaken = _move_latest(lake, schema.name, version, manifest_key, asked_at, latest_before)[0]
    return IngestReport(schema.name, version, len(curated), sources, dict(reasons), data_keys, manifest_key,
                        quarantine_keys, seconds=time.perf_counter() - started,
                        missing_cells=extra.get("missing_cells", {}),
                        labels_read_as_numbers=extra.get("labels_read_as_numbers", {}),
                        cleaned_cells=extra.get("cleaned_cells", 0),
                        numbers_read_as_categories=extra.get("numbers_read_as_categories", {}),
                        inferred_columns=extra.get("inferred_columns", {}), read_notes=extra.get("read_notes", []),
                        text_below_the_sample=extra.get("text_below_the_sample", {}),
                        leakage={key: extra[key] for key in LEAKAGE_KEYS if key in extra},
                        overtaken_by=overtaken, reason_examples=examples)


def _write_version(lake: DataLake, schema: Schema, version: str, curated: pd.DataFrame, sources: list[SourceCounts],
                   quarantine: dict[str, list[dict[str, Any]]], extra: dict[str, Any], written: dict[str, bytes]
                   ) -> tuple[dict[str, Any], Counter[str], dict[str, str]]:
    """Write the version's quarantine and parts, each key put in ``written`` (with its bytes) before its write; the
    manifest to write last, the reasons' counts and examples."""
    prefix = curated_prefix(schema.name, version)
    reasons: Counter[str] = Counter()
    examples: dict[str, str] = {}  # reason kind → its first row's reason, for the summary (not in the manifest)
    quarantine_keys = []
    for source, entries in quarantine.items():
        if not entries:
            continue
        key = f"quarantine/{schema.name}/{version}/{source}.jsonl"
        written[key] = _quarantine_bytes(entries)
        lake.put_bytes(key, written[key])
        quarantine_keys.append(key)
        for entry in entries:
            kinds = {_reason_kind(r): r for r in reversed(entry["reasons"])}  # each kind's first reason in the row
            reasons.update(kinds.keys())
            for kind, reason in kinds.items():
                if reason != kind:  # only where the reason says more than its kind
                    examples.setdefault(kind, f"line {entry['line']}: {clip(reason)}")
    data_keys = []
    for number, start in enumerate(range(0, max(len(curated), 1), ROWS_PER_PART)):
        data_keys.append(f"{prefix}/data/part-{number:05d}.parquet")
        written[data_keys[-1]] = _parquet_bytes(curated.iloc[start:start + ROWS_PER_PART], schema)
        lake.put_bytes(data_keys[-1], written[data_keys[-1]])
    target = schema.target
    manifest = {
        "dataset": schema.name,
        "version": version,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ingest_version": INGEST_VERSION,
        "rows": len(curated),
        "label_counts": {str(k): int(v) for k, v in curated[target].value_counts().reindex(schema.labels, fill_value=0).items()},
        # The split's unit when the dataset names a patient column: the run's preflight checks these.
        **({"patient_counts": label_patients(curated, schema)} if schema.patient_column else {}),
        "schema": schema.to_dict(),
        "sources": [asdict(s) for s in sources],
        "quarantine_keys": quarantine_keys,
        "quarantine_reasons": dict(sorted(reasons.items())),
        "data_keys": data_keys,
        **extra,
    }
    return manifest, reasons, examples


def _rewrite_removed(lake: DataLake, dataset: str, version: str, written: dict[str, bytes]) -> None:
    """Before the manifest names them: write again what this ingest wrote and is gone -- removed by a failed ingest
    of the same data (the same version, the same keys) that cleaned up while this one was writing. One listing of
    each of the version's two folders."""
    present = _version_objects(lake, dataset, version)
    for key, data in written.items():
        if key not in present:
            log.warning("%s was removed while this ingest wrote version %s (another ingest of the same data failed "
                        "and cleaned up): writing it again", key, version)
            lake.put_bytes(key, data)


def _version_objects(lake: DataLake, dataset: str, version: str) -> set[str]:
    """The keys a version's data and quarantine folders hold now: one listing of each."""
    return set(lake.list(f"{curated_prefix(dataset, version)}/data/")) | set(lake.list(f"quarantine/{dataset}/{version}/"))


def _remove_incomplete(lake: DataLake, dataset: str, version: str, manifest_key: str, written: dict[str, bytes],
                       err: BaseException) -> None:
    """After a failed write of a version (no manifest: never read), remove the objects this ingest wrote of it, so
    they take no space; said in a warning and in a note on ``err``. Nothing of another version is touched (a
    version's keys are its own), nor the raw objects (write-once, and other versions' manifests name them).
    Another ingest of the same data writes the same keys: once the version has a manifest (that ingest finished;
    or this one's own write of it failed on its answer though S3 stored it) it is whole and nothing is removed."""
    if not written:
        return
    where = lake.uri.rstrip("/")
    removed: list[str] = []
    left: list[str] = []
    problem = ""
    completed = False
    for number, key in enumerate(reversed(written)):
        try:
            # Checked before each removal: an ingest of the same data may finish meanwhile (or this one's manifest
            # was stored though its write failed on the answer): the version is whole, its objects stay.
            completed = lake.exists(manifest_key)
            if completed:
                left = list(reversed(written))[number:]
                break
            lake.delete(key)
            # And after: a manifest written between the check and the removal names this object (the other ingest
            # finished then), and its version was left the latest with a part missing. The same bytes go back.
            if lake.exists(manifest_key):
                lake.put_bytes(key, written[key])
                completed = True
                left = list(reversed(written))[number:]
                break
        except Exception as failure:  # noqa: BLE001  (best effort: the ingest's own error is the one raised)
            left.append(key)
            problem = problem or (failure.strerror if isinstance(failure, OSError) and failure.strerror
                                  else str(failure) or type(failure).__name__)
        else:
            removed.append(key)
    said = (f"ingest of version {version} of '{dataset}' failed before its manifest was written: removed the "
            f"{len(removed)} object(s) it had written of it from {where}")
    if completed:
        said += (f"; version {version} has its manifest now (another ingest of the same data wrote it, or this "
                 f"one's write of it was stored though it failed): its {len(left)} {'other ' if removed else ''}object(s) "
                 "are kept")
    elif left:
        said += (f"; {len(left)} could not be removed ({clip(problem, 200)}): {some_of(left, 3)} (a version without "
                 "a manifest is never read; an ingest of the same data writes them again, or remove them)")
    log.warning("%s", said)
    err.add_note(said)


# ------------------------------------------------------------------------------------------------ cohort

def cohort_batches(lake: DataLake) -> list[str]:
    """Batches present in the raw zone with both a records and a labs file."""
    records = {k.rsplit("/", 1)[-1].removesuffix(".jsonl") for k in lake.list(f"raw/{RECORDS_SOURCE}/") if k.endswith(".jsonl")}
    labs = {k.rsplit("/", 1)[-1].removesuffix(".csv") for k in lake.list(f"raw/{LABS_SOURCE}/") if k.endswith(".csv")}
    return sorted(records & labs)


def raw_keys(batch: str) -> tuple[str, str]:
    return f"raw/{RECORDS_SOURCE}/{batch}.jsonl", f"raw/{LABS_SOURCE}/{batch}.csv"


def existing_raw_keys(lake: DataLake, batch: str) -> tuple[str, str]:
    """``raw_keys(batch)`` when both are in the lake; else IngestError naming the batches there ('incomplete' only for
    a batch half there: one that is not there at all was called so)."""
    check_batch_name(batch)  # a name that is not a batch's ('../x') was refused by the lake as a bad key
    keys = raw_keys(batch)
    found = [lake.exists(key) for key in keys]
    if not all(found):
        available = ", ".join(cohort_batches(lake)) or "none"
        if not any(found):
            raise IngestError(f"no raw batch '{batch}' in {lake.uri} (batches: {available})")
        missing = keys[0] if not found[0] else keys[1]
        raise IngestError(f"raw batch '{batch}' is incomplete: {lake.url(missing)} does not exist (batches: {available})")
    return keys


def ingest_cohort_files(lake: DataLake, records_path: Path, labs_path: Path, batch: str | None = None, *,
                        phase: Phase = _no_phase) -> IngestReport:
    """A hospital delivery (records JSONL + labs CSV) as a raw batch (write-once) and a curated version. The files
    are checked and curated before anything is written: a delivery refused (an empty labs file, every record
    rejected) leaves no raw batch behind, whose write-once name a corrected delivery could not take."""
    for path, what in ((records_path, "clinical records file (.jsonl)"), (labs_path, "lab results file (.csv)")):
        if not path.is_file():
            raise IngestError(_not_a_file(path, what))
    records_bytes, labs_bytes = records_path.read_bytes(), labs_path.read_bytes()
    if batch is None:
        batch = default_batch_name(records_path.stem, hashlib.sha256(records_bytes + b"\0" + labs_bytes).hexdigest())
    check_batch_name(batch)
    records_key, labs_key = raw_keys(batch)

    def stage() -> None:
        try:
            lake.put_bytes_once(records_key, records_bytes)
            lake.put_bytes_once(labs_key, labs_bytes)
        except ObjectExists as err:
            raise ObjectExists(f"{err}: raw batch '{batch}' {_batch_state(lake, records_key, labs_key)}; raw files "
                               "are write-once: give this delivery another --batch") from None

    return _ingest_cohort_bytes(lake, batch, records_bytes, labs_bytes, phase=phase, stage=stage,
                                sources=(str(records_path), str(labs_path)))


def _batch_state(lake: DataLake, records_key: str, labs_key: str) -> str:
    """What a raw batch that refused a delivery holds: a batch with one of its two files was left by an ingest
    killed between their writes, and nothing else says so."""
    missing = [what for key, what in ((records_key, "clinical records"), (labs_key, "lab results"))
               if not lake.exists(key)]
    if missing:
        return (f"holds another delivery's files, without its {missing[0]} (an ingest stopped between the two "
                "writes: ingesting that delivery's own files again completes it)")
    return "holds another delivery's files"


def default_batch_name(stem: str, digest: str) -> str:
    """A delivery's batch name when none is given: its records file's name, each run of characters a batch name
    cannot hold made one '-' (`my records (ñ).jsonl` → ``my-records``), and the files' digest. The name was the file's
    own, and `data ingest 'my records.jsonl' --labs …` was refused for a batch name the user had not given."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:80]
    return f"{label}-{digest[:12]}" if label else digest[:12]


def check_batch_name(batch: str) -> None:
    """A raw batch's name: it names files and lake keys (``raw/<source>/<batch>.jsonl``), and is typed again later."""
    if not BATCH_NAME.fullmatch(batch):
        raise IngestError(f"batch name {clip(repr(batch), 80)} may hold only letters, digits, '.', '_' and '-'")


def ingest_cohort(lake: DataLake, batch: str, *, ontology: Ontology | None = None,
                  phase: Phase = _no_phase, feedback: dict[str, Any] | None = None,
                  asked: tuple[str, tuple[str | None, str | None]] | None = None) -> IngestReport:
    """The built-in cohort's raw ``batch`` (clinical records + lab results) as a curated version; ``feedback``
    (retraining's: the batch feedback was added to, how many records) is kept in its manifest. ``asked``: when the
    ingest was asked for and the ``latest_record`` it builds on, read earlier by the caller (retraining: when it read
    the version it adds feedback to), else now: a version another ingest made the latest since keeps it
    (``overtaken_by``)."""
    phase("reading the raw batch", batch)
    records_key, labs_key = existing_raw_keys(lake, batch)
    return _ingest_cohort_bytes(lake, batch, lake.get_bytes(records_key), lake.get_bytes(labs_key), ontology=ontology,
                                phase=phase, feedback=feedback, asked=asked)


def _ingest_cohort_bytes(lake: DataLake, batch: str, records_bytes: bytes, labs_bytes: bytes, *,
                         ontology: Ontology | None = None, phase: Phase = _no_phase,
                         feedback: dict[str, Any] | None = None, stage: Callable[[], None] | None = None,
                         sources: tuple[str, str] | None = None,
                         asked: tuple[str, tuple[str | None, str | None]] | None = None) -> IngestReport:
    """``ingest_cohort`` of a batch's bytes; ``stage`` (a delivery's files into raw/) is called once they were
    accepted, before the curated version is written; ``sources`` names the files in errors (default their keys)."""
    started = time.perf_counter()
    asked_at, latest_before = asked or (asked_now(), latest_record(lake, BUILTIN_DATASET))
    records_key, labs_key = raw_keys(batch)
    schema = cohort_schema()
    hashes = [hashlib.sha256(records_bytes).hexdigest(), hashlib.sha256(labs_bytes).hexdigest()]
    version = _version(schema, hashes)
    existing = _existing(lake, schema.name, version, asked_at, latest_before)
    if existing is not None:
        if stage is not None:
            stage()
        return existing
    if ontology is None:
        phase("loading the phenotype ontology")
        ontology = load_ontology()

    # Clinical records, parsed and validated a chunk at a time.
    lines = JsonLines(records_bytes)
    phase("validating clinical records", f"0 of {len(lines):,}")
    parts: list[pd.DataFrame] = []
    line_numbers: list[int] = []
    parse_errors: dict[int, list[str]] = {}
    row_errors: dict[int, list[str]] = {}
    for chunk, numbers, errors in lines.chunks():
        parse_errors.update(errors)
        raw = pd.DataFrame.from_records(chunk) if chunk else pd.DataFrame()
        part, part_errors = validate_frame(raw, CLINICAL_RECORD_FIELDS, text=False, ontology=ontology)
        offset = len(line_numbers)
        row_errors.update({offset + p: r for p, r in part_errors.items()})
        parts.append(part)
        line_numbers.extend(numbers)
        phase("validating clinical records", f"{len(line_numbers) + len(parse_errors):,} of {len(lines):,}")
        del chunk, raw
    typed = pd.concat(parts, ignore_index=True) if parts else \
        validate_frame(pd.DataFrame(), CLINICAL_RECORD_FIELDS, text=False)[0]
    del parts
    row_errors = _merge(row_errors, _duplicates(typed["patient_id"], lambda p: lines.raw(line_numbers[p])))
    bad_rows = np.zeros(len(typed), dtype=bool)
    bad_rows[list(row_errors)] = True
    records = typed[~bad_rows]
    quarantined_records: list[dict[str, Any]] = [
        {"source": records_key, "line": n, "reasons": r, "raw": lines.text(n)} for n, r in parse_errors.items()
    ] + [{"source": records_key, "line": line_numbers[p], "reasons": r, "raw": lines.text(line_numbers[p])}
         for p, r in row_errors.items()]
    quarantined_records.sort(key=lambda e: e["line"])
    rejected_ids = set(typed.loc[bad_rows, "patient_id"].dropna())

    # Lab results.
    phase("validating lab results")
    labs_raw = read_csv_text(labs_bytes, sources[1] if sources else lake.url(labs_key))
    lab_typed, lab_errors = validate_frame(labs_raw, LAB_RESULT_FIELDS, text=True)
    lab_errors = _merge(lab_errors, _duplicates(lab_typed["patient_id"], lambda p: tuple(labs_raw.iloc[p])))
    orphans = ~lab_typed["patient_id"].isin(records["patient_id"]) & lab_typed["patient_id"].notna()
    for pos in np.flatnonzero(orphans.to_numpy()).tolist():
        pid = lab_typed["patient_id"].iat[pos]
        why = (f"clinical record quarantined: patient '{pid}'" if pid in rejected_ids
               else f"no clinical record: patient '{pid}'")
        lab_errors.setdefault(int(pos), []).append(why)
    lab_bad = np.zeros(len(lab_typed), dtype=bool)
    lab_bad[list(lab_errors)] = True
    labs = lab_typed[~lab_bad]
    quarantined_labs = [{"source": labs_key, "line": p + 2, "reasons": r, "raw": labs_raw.iloc[p].to_dict()}
                        for p, r in sorted(lab_errors.items())]

    curated = records.merge(labs, on="patient_id", how="left", validate="one_to_one")
    curated = curated.sort_values("patient_id", kind="stable").reset_index(drop=True)
    counts = [
        SourceCounts(RECORDS_SOURCE, records_key, hashes[0], len(lines), len(records), len(quarantined_records)),
        SourceCounts(LABS_SOURCE, labs_key, hashes[1], len(labs_raw), len(labs), len(quarantined_labs)),
    ]
    if curated.empty:  # an empty version made the latest would hide the last good one (own CSVs are refused so too)
        summary = rejection_summary(quarantined_records or quarantined_labs)
        where = f"{sources[0]}" if sources else f"raw batch '{batch}'"
        raise IngestError(f"{where}: every one of its {len(lines):,} clinical records was rejected, so nothing is left "
                          f"to train on: {summary}. No curated version was written; the latest is unchanged")
    extra = {"batch": batch, "hpo_release": ontology.release,
             "orphan_rows": int(curated["is_orphan"].fillna(False).sum()), **({"feedback": feedback} if feedback else {})}
    if stage is not None:
        stage()
    phase("writing the curated version", version)
    return _commit(lake, schema, version, curated, counts,
                   {RECORDS_SOURCE: quarantined_records, LABS_SOURCE: quarantined_labs}, started, extra, latest_before,
                   asked_at)


# ------------------------------------------------------------------------------------------------ own CSV

def ingest_csv(lake: DataLake, path: Path, config_path: Path, *, phase: Phase = _no_phase) -> IngestReport:
    """A user's own labelled CSV, described by a TOML config (see docs/data.md).

    Everything is checked before anything is written: the config, the header, and the classes the
    accepted rows leave (a label of the config with no rows, or too few for the 70/20/10 split, is
    refused with every such class named).
    """
    started = time.perf_counter()
    try:
        config = load_dataset_config(config_path)
    except SchemaError as err:
        raise IngestError(str(err)) from None
    if not path.is_file():
        raise IngestError(_not_a_file(path))
    phase("reading the CSV", str(path))
    return ingest_csv_data(lake, path.read_bytes(), path.stem, config, source=str(path), config_source=str(config_path),
                           phase=phase, started=started)


RAW_STEM_LIMIT = 100  # bytes (UTF-8) of the file's name kept in its raw object's (a file system holds 255 a name)
NOT_IN_A_KEY = re.compile(r"[\\\x00-\x1f\x7f]")  # a backslash (no key holds one) and control characters


def raw_stem(stem: str) -> str:
    """The CSV's name (without .csv) as its raw object's name starts: as it is, but for a backslash or a control
    character ('_' in its place), and of a longer one its first 100 bytes (the object's name adds its hash, and
    a local lake's temporary file more). The hash after it tells files apart."""
    name = NOT_IN_A_KEY.sub("_", stem).encode("utf-8", "surrogateescape")[:RAW_STEM_LIMIT].decode("utf-8", "ignore")
    try:
        os.fsencode(name)
    except UnicodeEncodeError:  # an ASCII file system encoding (LC_ALL=C, PYTHONUTF8=0): 'acción' was a traceback
        name = "".join(char if char.isascii() else "_" for char in name)
    return name


def _not_a_file(path: Path, kind: str = "CSV file") -> str:
    """Why ``path`` is no file to read: missing, or there but a folder, a pipe or a device (nothing to copy into raw/)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return f"input file not found: {path}"
    return (f"{path} is {not_a_regular_file(mode)}, not a {kind}: give the path of the file itself (copy a stream to "
            "a file first)")


def ingest_csv_data(lake: DataLake, data: bytes, stem: str, config: dict[str, Any], *, source: str,
                    config_source: str, phase: Phase = _no_phase, started: float | None = None,
                    feedback: dict[str, Any] | None = None,
                    asked: tuple[str, tuple[str | None, str | None]] | None = None) -> IngestReport:
    """``ingest_csv`` of a file's bytes (``stem`` names its raw object) with a checked config (``source`` and
    ``config_source`` name them in the errors): also how retraining ingests a dataset's file with feedback added
    (``feedback``, kept in the manifest: the file it was added to, and how many rows; ``asked`` as
    ``ingest_cohort``'s)."""
    started = time.perf_counter() if started is None else started
    sharing = [other for other in lake_datasets(lake) if other != config["name"]
               and resource_name(other).lower() == resource_name(config["name"]).lower()]
    if sharing:
        raise IngestError(f"{config_source}: dataset '{config['name']}' would share its model package group and endpoint "
                          f"'{resource_name(config['name'])}' with the dataset '{sharing[0]}' in the lake (SageMaker "
                          "names write '_' as '-', and endpoint names ignore case): name it otherwise, or use that "
                          "name")
    asked_at, latest_before = asked or (asked_now(), latest_record(lake, config["name"]))
    digest = hashlib.sha256(data).hexdigest()
    raw_key = f"raw/{config['name']}/{raw_stem(stem)}-{digest[:12]}.csv"
    dialect = csv_dialect(config)
    read = read_csv_rows(data, source, dialect)
    frame = read.frame
    header = [str(c) for c in frame.columns]
    hint = delimiter_hint(header, dialect)
    if hint:
        raise IngestError(f"{source}: {hint}")
    hidden = [name for name in header if hides_characters(name)]
    if hidden:
        raise IngestError(f"{source}: column names holding a control or invisible format character (shown "
                          f"escaped): {some_of(shown(name, 80) for name in hidden)}: rename them with visible "
                          "characters (a terminal acts on such a character instead of showing it, and a config or a "
                          "request cannot be typed to name the column)")
    if frame.empty:  # no row has the header's cells: how the file is written, not what the config says
        summary = rejection_summary([{"line": line, "reasons": [why]} for line, why in read.malformed.items()])
        raise IngestError(f"{source}: none of its {len(read.malformed):,} rows has as many cells as its header "
                          f"({len(header)}), so nothing is left to train on: {summary}. That is how the file is "
                          "written, not the config: cells holding the delimiter without quotes, another delimiter "
                          f"than the config's ({dialect.delimiter!r}; set delimiter under [csv]), or a header with "
                          "more or fewer columns than its rows"
                          + (f" (its first line, {clip(header[0], 60)!r}, is one cell: a title above the table? Delete "
                             "the lines above the column names)" if len(header) == 1 else "")
                          + ". Nothing was written")
    cells, cleaned = clean_cells(frame)
    cells, missing = read_missing_markers(cells, config)
    cells, respelled = read_numeric_labels(cells, config, dialect)
    sample = first_cells(cells)
    try:
        schema = schema_from_config(config, header, sample)
    except SchemaError as err:
        raise IngestError(f"{config_source}: {err}") from None
    grouped = thousands_columns(schema, config, sample, dialect)
    if grouped:  # 1000 times too small, or each value a level of its own
        raise IngestError(f"{source}: " + thousands_hint(grouped, dialect))
    mostly_numbers = numbers_read_as_categories(schema, config, sample, dialect)
    other_marks = {c: counts for c, counts in mostly_numbers.items() if counts.get("other_decimal")}
    if other_marks:  # each value a level of its own: the model would lose what the numbers say
        raise IngestError(f"{source}: " + decimal_mark_hint(other_marks, dialect))
    inferred = inferred_columns(schema, config, sample, dialect)
    # The gate is no part of the schema (the missing-value markers are), but a run holds the data to it: a version
    # of its own.
    version = _version(schema, [digest, *(["gate:" + json.dumps(config["gate"], sort_keys=True)] if "gate" in config
                                          else []),
                                *([] if dialect.is_default() else ["csv:" + json.dumps(dialect.as_config(),
                                                                                       sort_keys=True)])])
    existing = _existing(lake, schema.name, version, asked_at, latest_before)
    if existing is not None:
        return existing

    rows_read = len(frame) + len(read.malformed)
    phase("validating rows", f"{rows_read:,}")
    kept = frame.drop(columns=list(schema.exclude))
    slice_ = config_slice(config)
    fields = schema.fields
    if slice_ and slice_[2] is not None:  # the marker column is filled here, not read from the CSV
        fields = tuple(f for f in schema.fields if f.name != schema.slice_column)
    # Rows are validated as read (trimmed, composed, markers blanked); the quarantine keeps them as written.
    read_cells = read_grouped_numbers(cells.drop(columns=list(schema.exclude)), schema, dialect)
    typed, errors = validate_frame(read_cells, fields, text=True, decimal=dialect.decimal)
    errors = _merge(errors, _duplicates(typed[schema.id_column], lambda p: tuple(read_cells.iloc[p])))
    errors = _merge(errors, implausible_numbers(typed, fields, refused=errors))
    if slice_ and slice_[2] is not None:
        typed[schema.slice_column] = _slice_marker(typed, read_cells, schema, slice_[1], slice_[2])
    elif slice_ and schema.slice_column in typed:
        # An empty cell of a boolean slice column is "not in the slice", here once for every reader: the checks
        # below read it so, while Train refused the curated column's gaps ("slice column has missing values") — and
        # every retraining's feedback rows have it empty (the endpoint never receives it).
        typed[schema.slice_column] = typed[schema.slice_column].fillna(False)
    bad = np.zeros(len(typed), dtype=bool)
    bad[list(errors)] = True
    # Excluded columns (names, contact details) never reach quarantine either.
    entries = [(int(read.lines[p]), r, kept.iloc[p].to_dict()) for p, r in errors.items()]
    # Cells the header cannot name: none shown (one may be an excluded column's); raw/ keeps them.
    entries += [(line, [why], {}) for line, why in read.malformed.items()]
    quarantined = [{"source": raw_key, "line": line, "reasons": r, "raw": raw} for line, r, raw in sorted(
        entries, key=lambda entry: entry[0])]
    late_text = text_below_the_sample(schema, config, quarantined)
    curated = typed[~bad].reset_index(drop=True)
    problem = too_small_classes(curated[schema.target].value_counts().to_dict(), schema.labels,
                                found=typed[schema.target].value_counts().to_dict())
    if not problem and schema.patient_column:  # the split places patients: each class needs 3 of them
        problem = too_small_classes(label_patients(curated, schema), schema.labels, unit="patient")
    ids = _id_hint(typed[schema.id_column], schema.id_column) if quarantined else ""
    if problem and quarantined and curated.empty:
        # Every row rejected: the config does not match the data (a label list, a column's type or values, the
        # slice column); listing each class as too small would bury that.
        raise IngestError(f"{source} (config {config_source}): every one of its {rows_read:,} rows was rejected, so "
                          f"nothing is left to train on: {rejection_summary(quarantined)}"
                          + (f" ({ids})" if ids else "") + ". The commonest reasons "
                          "say what in the config does not match the data (its labels, a column's type, values or "
                          "limits, the slice column). Nothing was written")
    if problem:
        why = f" ({rejection_summary(quarantined)})" if quarantined else ""
        raise IngestError(f"{source} (config {config_source}), after {len(quarantined):,} of {rows_read:,} rows were "
                          f"rejected{why}: {problem}" + (f". Also: {ids}" if ids else "") + ". Nothing was written")
    if slice_ and not curated[schema.slice_column].fillna(False).astype(bool).any():
        raise IngestError(f"{source}: no accepted row is in the slice '{schema.slice}' (column '{slice_[1]}'"
                          + (f" = {slice_[2]!r}){_values_hint(read_cells[slice_[1]], slice_[2])}"
                             if slice_[2] is not None else " true)") + ". Nothing was written")
    if slice_ and schema.group_column:
        in_slice = curated[schema.slice_column].fillna(False).astype(bool)
        groups = curated.loc[in_slice, schema.group_column].dropna().astype(str).nunique()
        if groups < 2:
            # The split holds a share of the groups out of training and the gate measures them on test: with one
            # group none can be held out, the unseen recall is undefined and every run fails the gate.
            raise IngestError(f"{source}: the slice '{schema.slice}' has {groups} group{'s' * (groups != 1)} in its "
                              f"group column '{schema.group_column}' among the accepted rows; holding groups out of "
                              "training (the unseen-group recall the gate checks) needs at least 2. Leave `group` out "
                              "of the [slice] in the dataset config, or give the slice's rows their groups. Nothing "
                              "was written")
    notes = leakage_notes(curated, schema, [int(read.lines[p]) for p in np.flatnonzero(~bad).tolist()],
                          cells.loc[~bad, [c for c in schema.exclude if c in cells.columns]])
    phase("writing the curated version", version)
    lake.put_bytes_once(raw_key, data)
    sources = [SourceCounts(schema.name, raw_key, digest, rows_read, len(curated), len(quarantined))]
    return _commit(lake, schema, version, curated, sources, {schema.name: quarantined}, started,
                   {"config": config, "missing_cells": missing, "labels_read_as_numbers": respelled,
                    "cleaned_cells": cleaned, "numbers_read_as_categories": mostly_numbers,
                    **({"text_below_the_sample": late_text} if late_text else {}),
                    **({"inferred_columns": inferred} if inferred else {}),
                    **({"read_notes": read.notes} if read.notes else {}),
                    **({"feedback": feedback} if feedback else {}), **notes}, latest_before, asked_at)


def read_numeric_labels(cells: pd.DataFrame, config: dict[str, Any],
                        dialect: CsvDialect | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Target cells that spell a numeric label otherwise ('4.0' for the label '4': pandas writes an integer column
    with gaps as floats; '4,0' in a file with decimal commas) read as that label; the spellings so read, for the
    report. A cell is read as a number as validation reads one in this file (its decimal mark and thousands
    separator; not '1_0' or other scripts' digits, which Python's float() takes). A cell equal to no label, or to
    two, stays as written (and is quarantined as an unknown label)."""
    dialect = dialect or CsvDialect()
    target, labels = config["target"], config["labels"]
    numeric: dict[float, list[str]] = {}
    for label in labels:  # the config is TOML: its labels are written with decimal points
        if NUMBER_TEXT.fullmatch(label):
            numeric.setdefault(float(label), []).append(label)
    if not numeric or target not in cells.columns:
        return cells, {}
    column = cells[target].str.strip()
    spelled = {}
    for text in column[~column.isin(labels)].unique():
        number = number_text(text, dialect.decimal, dialect.thousands)
        if number is None or not NUMBER_TEXT.fullmatch(number):
            continue
        matches = numeric.get(float(number), [])
        if len(matches) == 1:
            spelled[text] = matches[0]
    if not spelled:
        return cells, {}
    cells = cells.copy()
    cells[target] = column.replace(spelled).where(column.isin(list(spelled)), cells[target])
    return cells, dict(sorted(spelled.items()))


def first_cells(cells: pd.DataFrame, limit: int = SAMPLE_CELLS) -> dict[str, list[str]]:
    """Each column's first ``limit`` non-empty cells (as read: trimmed, missing-value markers emptied), however far
    down the file they are: a lab first recorded in row 5,000 is sampled by its values, not by 1,000 empty cells."""
    sample = {}
    for column, values in cells.items():  # numpy per column: see validate._missing
        array = values.to_numpy(dtype=object)
        sample[str(column)] = array[array != ""][:limit].tolist()
    return sample


def _undeclared_features(schema: Schema, config: dict[str, Any]) -> Iterator[Any]:
    declared = config.get("columns") or {}
    for f in schema.fields:
        if f.role == "feature" and f.type in ("number", "category") and f.name not in declared:
            yield f


SMALL_INTEGER = re.compile(r"[+-]?\d{1,3}", re.ASCII)


def _reads_as_number(text: str, decimal: str, thousands: str = "") -> bool:
    number = number_text(text, decimal, thousands)
    return number is not None and NUMBER_TEXT.fullmatch(number) is not None


def thousands_columns(schema: Schema, config: dict[str, Any], sample: dict[str, list[str]],
                      dialect: CsvDialect) -> dict[str, dict[str, Any]]:
    """Columns the config does not declare whose sampled cells are numbers written in groups of three digits
    ('8.830,0', '1,336.0', '1 234,5', '228,300', '1.234.567') in a way the config does not read: curated, each would
    be a category level of its own, or (every cell '7.915' in a file read with decimal points) 1000 times too small.
    Column → how many cells, the mark, an example and whether it is ambiguous (a single group without decimals may
    as well be a decimal mark)."""
    out: dict[str, dict[str, Any]] = {}
    # A number with the decimal mark and other than three digits after it ('37.5', '0.25') says the mark is the
    # file's decimal one: then '1.025' (a urine specific gravity) is a decimal, never ambiguous.
    fraction = re.compile(rf"[-+]?\d*{re.escape(dialect.decimal)}(\d{{1,2}}|\d{{4,}})")
    decimal_shown = any(fraction.fullmatch(v) for values in sample.values() for v in values)
    for f in _undeclared_features(schema, config):
        values = sample.get(f.name, [])
        if not values:
            continue
        groups = {v: g for v in set(values) if (g := grouping(v)) is not None and g[0] != dialect.thousands}
        if not groups:
            continue
        grouped = sum(1 for v in values if v in groups)
        if f.type == "number":
            # Every cell a number with the file's decimal mark, written like an integer in thousands ('7.915') or an
            # integer under a thousand ('950'): a Spanish file's counts read with decimal points.
            if dialect.thousands or decimal_shown or not all(
                    v in groups and groups[v][1:] == (None, 1) or SMALL_INTEGER.fullmatch(v) for v in values):
                continue
            out[f.name] = {"cells": len(values), "grouped": grouped, "mark": dialect.decimal, "decimal": None,
                           "example": next(v for v in values if v in groups), "ambiguous": True, "read": "number"}
            continue
        numbers = sum(1 for v in values if v not in groups and _reads_as_number(v, dialect.decimal, dialect.thousands))
        if numbers + grouped <= len(values) / 2:
            continue
        other = "," if dialect.decimal == "." else "."
        if any(v not in groups and not _reads_as_number(v, dialect.decimal, dialect.thousands)
               and _reads_as_number(v, other) for v in values):
            continue  # '36.5' in a file read with decimal commas: the other decimal mark (decimal_mark_hint)
        mark = Counter(groups[v][0] for v in values if v in groups).most_common(1)[0][0]
        marked = [v for v in values if v in groups and groups[v][0] == mark]
        certain = [v for v in marked if groups[v][1] is not None or groups[v][2] > 1]
        decimals = Counter(groups[v][1] for v in marked if groups[v][1] is not None)
        out[f.name] = {"cells": len(values), "grouped": grouped, "mark": mark,
                       "decimal": decimals.most_common(1)[0][0] if decimals else None,
                       "example": (certain or marked)[0], "ambiguous": not certain, "read": "category"}
    return out


def _plain(text: str, mark: str, decimal: str | None) -> str:
    """A number cell's text read with ``mark`` as the thousands separator and ``decimal`` as the decimal mark, as
    a plain number ('8.830,0' → '8830')."""
    digits = re.sub("[ \u00a0\u202f]" if mark == " " else re.escape(mark), "", text)
    value = float(digits.replace(decimal, ".") if decimal else digits)
    return format(value, "f").rstrip("0").rstrip(".") if value % 1 else str(int(value))


MARK_NAMES = {".": "point", ",": "comma", " ": "space", "'": "apostrophe"}


def thousands_hint(columns: dict[str, dict[str, Any]], dialect: CsvDialect) -> str:
    """Why a file with numbers written in thousands groups the config does not read is refused, and the ways on:
    the setting that reads them, or (an ambiguous cell: '7.915') how to say the mark is a decimal one."""
    parts = []
    for column, c in columns.items():
        mark, example = c["mark"], c["example"]
        shown = "' ' (a space)" if mark == " " else repr(mark)
        if c["read"] == "number":
            other = "," if mark == "." else "."
            seen = (f"every one of its {c['cells']:,} sampled cells is" if c["grouped"] == c["cells"] else
                    f"{c['grouped']:,} of its {c['cells']:,} sampled cells (the others integers under a thousand) are")
            parts.append(f"{column!r}: {seen} written like {example!r}, which "
                         f"the config reads as {_plain(example, '', mark)} (decimal = \"{mark}\") but is "
                         f"{_plain(example, mark, None)} if {shown} separates thousands; if it does, the file's "
                         f"decimal mark is the {MARK_NAMES[other]}: set decimal = \"{other}\" and thousands = "
                         f"\"{mark}\" under [csv]; if {shown} is the decimal mark, declare [columns.{column}] type = "
                         "\"number\"")
            continue
        decimal = c["decimal"] or dialect.decimal
        if mark == dialect.decimal or decimal != dialect.decimal:
            setting = f"set decimal = \"{decimal}\" and thousands = \"{mark}\" under [csv]"
        else:
            setting = f"set thousands = \"{mark}\" under [csv]"
        seen = f"{c['grouped']:,} of {c['cells']:,} sampled cells"
        if not c["ambiguous"]:
            parts.append(f"{column!r} ({seen} are numbers with {shown} between groups of three digits, e.g. "
                         f"{example!r} = {_plain(example, mark, c['decimal'])}): {setting}")
            continue
        if dialect.decimal == ".":
            as_decimal = (f"set decimal = \"{mark}\" under [csv]"
                          + (" with another delimiter (the file's cells are ','-separated)"
                             if mark == "," and dialect.delimiter == "," else ""))
        else:
            as_decimal = (f"write them with a decimal {MARK_NAMES[dialect.decimal]} as the file's other numbers are, "
                          f"or read the file with decimal = \"{mark}\" if all its numbers have that mark")
        parts.append(f"{column!r} ({seen} are written like {example!r}: {_plain(example, mark, None)} if {shown} "
                     f"separates thousands, {_plain(example, '', mark)} if it is a decimal "
                     f"{MARK_NAMES[mark]}): if it separates thousands, {setting}; if it is a decimal mark, "
                     f"{as_decimal}")
    return (f"numbers written in groups of three digits in {len(columns)} column(s) that the config does not read "
            "as such (curated, they would be 1000 times off or text): " + "; ".join(parts)
            + "; or declare such a column type = \"category\" under [columns.<name>] to keep its cells as text")


def read_grouped_numbers(cells: pd.DataFrame, schema: Schema, dialect: CsvDialect) -> pd.DataFrame:
    """With [csv] thousands, every number column's cells written in thousands groups read without their
    separators ('8.830,0' → '8830,0'), as validation then reads them; a separator anywhere else ('1.23,4') is left
    for validation to refuse."""
    if not dialect.thousands:
        return cells
    out = cells
    for f in schema.fields:
        if f.type not in ("number", "integer") or f.name not in cells.columns:
            continue
        values = cells[f.name]
        mapping = {v: plain for v in pd.unique(values)
                   if isinstance(v, str) and (plain := ungrouped(v, dialect.decimal, dialect.thousands)) is not None}
        if mapping:
            if out is cells:
                out = cells.copy()
            out[f.name] = values.map(lambda v, m=mapping: m.get(v, v))
    return out


def leakage_lines(leakage: dict[str, Any]) -> list[str]:
    """The report's lines for what ``leakage`` (diagnosa.data.leakage's notes) found."""
    lines = []
    repeated = leakage.get("repeated_rows")
    if repeated:
        pairs = ", ".join(f"line {a} and {b}" for a, b in repeated["example_lines"])
        lines.append(f"  note: {repeated['rows']:,} rows repeat an earlier row's every feature, "
                     f"{some_of(repeated['columns'], 5)} included, whose values few rows share "
                     f"(e.g. {pairs}): the same patient twice, under another id? Split apart, one lands in training "
                     "and its copy in test, and the evaluation's recall is higher than new patients get: keep one")
    told = leakage.get("label_columns")
    if told:
        lines.append("  note: columns that tell every row's label, each of their values going with one label: "
                     + some_of(f"{name} ({count:,} values)" for name, count in told.items())
                     + ": the label under another name, or known only once the diagnosis is made? The model learns "
                     "it and new patients do not have it: put it in exclude")
    constant = leakage.get("constant_columns")
    if constant:
        lines.append("  note: columns with one value in every row, which teach the model nothing and which the "
                     f"endpoint still takes: {some_of(constant)} (put them in exclude)")
    for name, seen in (leakage.get("patient_columns") or {}).items():
        lines.append(f"  note: column '{name}'{' (excluded)' if seen.get('excluded') else ''} looks like a patient's "
                     f"number over several rows: its {seen['values']:,} "
                     f"values each hold rows next to each other (up to {seen['most_rows']:,}), and "
                     f"{some_of(seen['constant'])} hold{'s' * (len(seen['constant']) == 1)} one value within each. "
                     "Several rows (visits) of one patient? "
                     "Split by row, a patient's visits land in training and in test, and the evaluation's recall is "
                     + (f"higher than new patients get: rename it (the endpoint's answers give each row's id as "
                        f"'{ANSWER_ID}') and name it in patient_column (patient_column = \"patient\", say)"
                        if name == ANSWER_ID else
                        f"higher than new patients get: name it in patient_column (patient_column = \"{name}\""
                        + (", and take it out of exclude)" if seen.get("excluded") else ")")))
    if leakage.get("rows_without_patient"):
        n = leakage["rows_without_patient"]
        lines.append(f"  note: {n:,} row{'s' * (n != 1)} without a patient in the patient column: each is a patient "
                     "of its own to the split, which cannot keep it with the patient's other rows")
    heavy = leakage.get("heavy_patients")
    if heavy:
        shown_ = ", ".join(f"{shown(name, 40)} {n:,}" for name, n in heavy["examples"])
        many = heavy["patients"] != 1
        lines.append(f"  note: {heavy['patients']:,} patient{'s' * many} hold{'s' * (not many)} "
                     f"{heavy['rows']:,} of the {heavy['of_rows']:,} rows ({shown_}): the split keeps a patient's rows "
                     "in one split, so such a patient decides the row shares of training, validation and test (far "
                     "from 70/20/10), and the monitor's windows with its many rows are worth little. A placeholder for "
                     "patients not known? Leave those cells empty: each row is then a patient of its own")
    alike = leakage.get("patients_but_for_case")
    if alike:
        lines.append(f"  note: {alike['patients']:,} patient{'s' * (alike['patients'] != 1)} written otherwise but for "
                     "case in the patient column ("
                     + "; ".join(" and ".join(repr(x) for x in names) for names in alike["examples"])
                     + "): each spelling is a patient of its own to the split; one patient? write it one way")
    return lines


INFERRED_WHY = {"date": "dates", "text": "free text, almost every value distinct", "empty": "empty in every row",
                "identifier": "an identifier? almost every value distinct", "code": "leading zeros"}


def inferred_columns(schema: Schema, config: dict[str, Any], sample: dict[str, list[str]],
                     dialect: CsvDialect) -> dict[str, dict[str, Any]]:
    """Columns the config does not declare that inference made no feature (dates, free text, empty in every row)
    or a category for their leading zeros ('08001'), each with an example cell: the report names them."""
    declared = config.get("columns") or {}
    keys = {config["id_column"], config["target"], config.get("patient_column"),
            *(((config.get("slice") or {}).get(k) for k in ("group",)))}
    slice_ = config_slice(config)
    if slice_:
        keys.add(slice_[1])
    out: dict[str, dict[str, Any]] = {}
    for f in schema.fields:
        if f.name in declared or f.name in keys or f.name not in sample:
            continue
        kind = inferred_kind(sample[f.name], dialect.decimal, dialect.thousands)
        if kind in INFERRED_WHY:
            values = sample[f.name]
            example = next((v for v in values if kind != "code" or v.lstrip("+-").startswith("0")), "")
            out[f.name] = {"kind": kind, **({"example": example} if example else {})}
    return out


def label_patients(rows: pd.DataFrame, schema: Schema) -> dict[str, int]:
    """Patients per label of the schema (0 for a label without rows); a row without a patient is one of its own."""
    assert schema.patient_column is not None
    labels, patients = rows[schema.target].astype(str), rows[schema.patient_column]
    known = patients.notna().to_numpy()
    pairs = pd.DataFrame({"label": labels[known].to_numpy(), "patient": patients[known].astype(str).to_numpy()})
    counts = pairs.drop_duplicates()["label"].value_counts().add(labels[~known].value_counts(), fill_value=0)
    return {label: int(counts.get(label, 0)) for label in schema.labels}


def _id_hint(ids: pd.Series, column: str) -> str:
    """'the id column ... has only 2 distinct values in 200 rows ...' when the id column repeats most of its
    values: the wrong column named id_column, which makes every row a conflict."""
    present = ids.dropna()
    distinct = int(present.nunique())
    if len(present) < 4 or distinct > len(present) / 2:
        return ""
    return (f"the id column '{column}' has only {distinct:,} distinct value{'s' * (distinct != 1)} in "
            f"{len(present):,} rows: id_column must name the column that identifies a row (when a patient has "
            "several rows, visits or samples, name the patient's column in patient_column and give each row an id of "
            "its own)")


def _values_hint(cells: pd.Series, value: Any) -> str:
    """": 'H' but for case" or ": the column holds 'H', 'M'" when a slice value matches no row."""
    present = [v for v in pd.unique(cells) if isinstance(v, str) and v != ""]
    near = near_spelling(str(value).strip(), present)
    if near:
        return f": {near[0]!r} {near[1]}"
    shown = ", ".join(map(repr, present[:10])) + (f", … ({len(present):,} values)" if len(present) > 10 else "")
    return f": the column holds {shown}" if present else ": the column is empty"


def text_below_the_sample(schema: Schema, config: dict[str, Any],
                          quarantined: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Columns the config does not declare, inferred as numbers from their first SAMPLE_CELLS non-empty cells, whose
    rows further down were quarantined for text ('hemolizada' in row 5,000 of a lab): the rows and the first line,
    for the report -- the reason alone does not say the type was a guess."""
    guessed = {f"wrong type for '{f.name}'": f.name for f in _undeclared_features(schema, config) if f.type == "number"}
    out: dict[str, dict[str, int]] = {}
    for entry in quarantined:
        for reason in entry["reasons"]:
            column = guessed.get(_reason_kind(reason))
            if column is not None:
                found = out.setdefault(column, {"rows": 0, "line": int(entry["line"])})
                found["rows"] += 1
    return out


def numbers_read_as_categories(schema: Schema, config: dict[str, Any], sample: dict[str, list[str]],
                               dialect: CsvDialect) -> dict[str, dict[str, Any]]:
    """Columns the config does not declare that were inferred as categories though most sampled cells are numbers:
    one '<0.1' or '#DIV/0!' among a lab's values makes the whole column a category (each value a level), which
    the report must say."""
    decimal = dialect.decimal
    out: dict[str, dict[str, Any]] = {}
    for f in _undeclared_features(schema, config):
        if f.type != "category":
            continue
        values = sample.get(f.name, [])
        numbers, others = number_counts(values, decimal, dialect.thousands)
        if numbers and not others:
            continue  # digits with leading zeros: a code, kept as text on purpose (inferred_columns)
        other_mark = "," if decimal == "." else "."
        with_other, not_other_numbers = number_counts(values, other_mark)
        # Numbers spelled otherwise ('124 mg/dL', '94%', '−2.7' with a word processor's minus): each a level too.
        spelled = [(v, why) for v in others for why in [number_spelling(v)] if why]
        if numbers > len(others) or with_other > len(values) / 2 or numbers + len(spelled) > len(values) / 2:
            out[f.name] = {"numbers": numbers, "cells": numbers + len(others), "others": list(dict.fromkeys(others))[:3]}
            if spelled:
                out[f.name].update(spelled=len(spelled), spelled_example=spelled[0][0], spelled_as=spelled[0][1])
            if with_other > numbers:  # numbers, written with the other decimal mark than the file is read with
                not_numbers = set(not_other_numbers)
                out[f.name]["other_decimal"] = with_other
                out[f.name]["example"] = next(v for v in others if v not in not_numbers)
    return out


def decimal_mark_hint(columns: dict[str, dict[str, Any]], dialect: CsvDialect) -> str:
    """Why a file whose numbers are written with another decimal mark than the config reads is refused (each
    number a category level of its own, what it says lost to the model), and the ways on."""
    listed = ", ".join(f"{column!r} ({c['other_decimal']:,} of {c['cells']:,} sampled cells, e.g. "
                       f"{c['example']!r})" for column, c in columns.items())
    keep = ", or declare such a column type = \"category\" under [columns.<name>] to keep its cells as text"
    if dialect.decimal == ".":
        return (f"numbers written with a decimal comma in {len(columns)} column(s) read with decimal points: "
                f"{listed}; set decimal = \",\" under [csv]"
                + (" with another delimiter (the file's cells are ','-separated)" if dialect.delimiter == "," else "")
                + keep)
    return (f"numbers written with a decimal point in {len(columns)} column(s) of a file read with decimal commas "
            f"(decimal = \",\" under [csv]): {listed}; write them with a decimal comma as the file's other numbers "
            "are, or read the file with decimal = \".\" if all its numbers have points" + keep)


def clean_cells(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Every cell as compared and curated (``schema.clean_text``: trimmed, composed), and how many changed: 'leve '
    is the label 'leve', 'P001 ' the id 'P001', an accent typed on a Mac the same letter (the quarantine and raw/
    keep the cells as written)."""
    cells, changed = frame, 0
    for column, values in frame.items():
        mapping = {v: c for v in pd.unique(values.to_numpy(dtype=object)) if isinstance(v, str)
                   and (c := clean_text(v)) != v}
        if mapping:
            if cells is frame:
                cells = frame.copy()
            changed += int(values.isin(list(mapping)).sum())
            cells[column] = values.map(lambda v, m=mapping: m.get(v, v))
    return cells, changed


def read_missing_markers(frame: pd.DataFrame, config: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The CSV's cells that spell a missing value (``schema.missing_markers``) made empty, as an empty cell is
    read; and how many cells each marker emptied (the report says so: a column of 'NA' is no longer a category
    silently, nor its rows quarantined as the wrong type)."""
    cells, counts = frame, Counter[str]()
    for column, values in frame.items():  # trimmed by clean_cells; numpy per column: see validate._missing
        markers = missing_markers(config, str(column))
        if not markers:
            continue
        array = values.to_numpy(dtype=object)
        hit = np.isin(array, sorted(markers))
        if hit.any():
            if cells is frame:
                cells = frame.copy()
            counts.update(array[hit])
            cells.loc[hit, column] = ""
    return cells, dict(sorted(counts.items()))


def _slice_marker(typed: pd.DataFrame, cells: pd.DataFrame, schema: Schema, column: str, value: Any) -> pd.Series:
    """True where ``column`` holds ``value`` (numerically for a number column: 4 matches '4.0')."""
    kind = schema.field(column).type
    if kind in ("number", "integer") and not isinstance(value, str) or kind in ("number", "integer") and parses_as_float(value):
        target = float(value)
        return pd.Series(pd.to_numeric(typed[column], errors="coerce").eq(target).to_numpy(), index=typed.index)
    return pd.Series(cells[column].astype(str).str.strip().eq(str(value)).to_numpy(), index=typed.index)


def parses_as_float(text: str) -> bool:
    """Whether Python reads ``text`` as a number (``float``)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ readers of curated data

class NoCuratedData(IngestError):
    """The dataset has no curated version in the lake (no LATEST.json): nothing was ingested yet."""


def read_manifest(lake: DataLake, dataset: str, version: str) -> dict[str, Any] | None:
    """A curated version's manifest, None when the version has none; IngestError naming it when it is damaged."""
    key = f"{curated_prefix(dataset, version)}/manifest.json"
    if not lake.exists(key):
        return None
    try:
        manifest = lake.get_json(key)
    except LakeError as err:
        raise IngestError(f"curated version {version} of '{dataset}' is damaged: {err}") from None
    if not isinstance(manifest, dict):
        raise IngestError(f"curated version {version} of '{dataset}' is damaged: {key} is not a JSON object")
    return manifest


def latest_manifest(lake: DataLake, dataset: str) -> tuple[str, dict[str, Any]]:
    """The dataset's latest curated version and its manifest, read once; NoCuratedData when there is none, IngestError
    naming what is wrong (a damaged LATEST.json, a version whose manifest is missing or damaged), before anything
    trains on it."""
    version = current_latest(lake, dataset)
    if version is None:
        raise NoCuratedData(f"no curated dataset '{dataset}' in {lake.uri}: run `diagnosa data ingest` first"
                            + unfinished_note(lake, dataset))
    where = f"{lake.uri.rstrip('/')}/{latest_key(dataset)}"
    if version == DAMAGED_LATEST:
        raise IngestError(f"{where} names no curated version (not what an ingest writes): ingest the data again "
                          "(`diagnosa data ingest` rewrites it) or repair it")
    manifest = read_manifest(lake, dataset, version)
    if manifest is None:
        raise IngestError(f"{where} names version {version}, which has no manifest: ingest the data again "
                          "(`diagnosa data ingest` rewrites it)")
    return version, manifest


def latest_version(lake: DataLake, dataset: str) -> str:
    """``latest_manifest``'s version."""
    return latest_manifest(lake, dataset)[0]


def load_curated(lake: DataLake, dataset: str = BUILTIN_DATASET,
                 version: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    if not version:
        manifest = latest_manifest(lake, dataset)[1]
    else:
        manifest = lake.get_json(f"{curated_prefix(dataset, version)}/manifest.json")
    tables = [pq.read_table(io.BytesIO(lake.get_bytes(key))) for key in curated_data_keys(manifest)]
    return pa.concat_tables(tables).to_pandas(), manifest


def curated_data_keys(manifest: dict[str, Any]) -> list[str]:
    """The curated version's data objects in row order (a version written before parts holds one, data_key)."""
    return list(manifest["data_keys"]) if "data_keys" in manifest else [manifest["data_key"]]
