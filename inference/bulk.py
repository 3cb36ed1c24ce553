"""A file of patients sent to an endpoint: read as a stream, sent in requests, one outcome per record.

``read_records`` reads JSON (one document: a record, a list, or ``{"instances": [...]}``), JSON Lines
and CSV; JSON Lines and CSV are read line by line, so a file of any size streams. ``predict_stream``
sends the records in requests of at most ``PREDICT_CHUNK`` patients and under the endpoint's body
limit, and yields, per record, its answer (:class:`Answered`) or each of its problems
(:class:`Refused`). A request the endpoint refuses for some of its records is sent again without
them, so one bad record never costs the others their answer; a refusal that is not about records
(a bad ``top_k``, ``differential``...) ends the stream with :class:`PredictionRejected`.
"""
from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Collection, Iterable, Iterator

from diagnosa.data.csv_cells import csv_problem, fit_to_header, header_problem, is_blank_row, misfit_problem, named_width
from diagnosa.data.schema import other_delimiter
from inference.client import DiagnosaClient, InvalidAnswer, PredictionRejected
from inference.limits import (
    MAX_BODY_BYTES,
    MAX_LISTED_PROBLEMS,
    RepeatedKeys,
    json_problem,
    loads,
    not_text,
    printable,
    printable_line,
    surrogate_path,
)

MAX_JSON_DOCUMENT_CHARS = 64 * 2**20  # a JSON document is parsed whole: ~15x this in memory (14 MB took 214 MB)
# A line of JSON Lines, or a CSV row (a quoted cell may span lines), is read whole to be parsed: one longer than what an
# endpoint request may carry (MAX_BODY_BYTES, and a character is at least a byte) could never be sent. Unbounded,
# /dev/zero (no line end) was read into memory until a MemoryError.
MAX_RECORD_CHARS = MAX_BODY_BYTES

PREDICT_CHUNK = MAX_LISTED_PROBLEMS  # patients per request: a refusal then usually names every problem at once


class JsonNotCsv(ValueError):
    """Input read as CSV whose first line opens JSON (a '.csv' file that holds a JSON document or JSON Lines)."""


@dataclass(frozen=True)
class InputRecord:
    """One record of the input and where it is ("line 12", "record 3"); ``problem`` when it could not be read."""

    where: str
    record: Any = None
    problem: str | None = None


@dataclass(frozen=True)
class Answered:
    where: str
    result: dict[str, Any]
    event_id: str | None  # the event id of the request that answered it (what feedback refers to)
    event_row: int = 0  # its position in that request (feedback's event_row)


@dataclass(frozen=True)
class Refused:
    where: str
    field: str | None
    problem: str

    @property
    def kind(self) -> str:
        return problem_kind(self.field, self.problem)

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "field": self.field, "problem": self.problem}


# The words of a problem before the value it echoes: "impossible value -1 (...)" → "impossible value".
_VALUE_STARTS = re.compile(r",?\s+got\b|\s['\"(\[\d-]|:")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)  # its ':' is no value's start
_HTTP_STATUS = re.compile(r"\s*\(([1-5]\d\d)\)")  # "refused the feedback (404): ..."


def problem_kind(field_name: str | None, problem: Any) -> str:
    """A problem's kind for counting: its field and the words before any value, e.g. 'age: impossible value'; an
    endpoint's refusal by its HTTP status right after those words, e.g. 'endpoint <URL> refused the feedback (404)'
    (cut at a URL's ':', every refusal was one kind, 'endpoint http', whatever its status)."""
    text = _URL.sub("<URL>", str(problem))
    head = _VALUE_STARTS.split(text, maxsplit=1)[0]
    status = _HTTP_STATUS.match(text, len(head))
    head = head.strip(" ,;") or text[:60]
    if status:
        head += f" ({status.group(1)})"
    return f"{field_name}: {head}" if field_name else head


# ------------------------------------------------------------------------------------------------ reading

def read_records(stream: IO[str], fmt: str, name: str) -> tuple[Iterator[InputRecord], list[str] | None]:
    """The records of ``stream`` in format ``json``, ``jsonl`` or ``csv``; for CSV also its header (the fields).

    A JSON document is parsed whole (one document); a line of JSON Lines or a CSV row that cannot be read
    becomes a record with its ``problem``, and reading goes on. ValueError: a JSON document that is not
    JSON, a CSV without a header, CSV that opens JSON (:class:`JsonNotCsv`), or input with no patient records
    at all (raised by the records' iterator at its end for JSON Lines and CSV, which are read as they go)."""
    if fmt == "jsonl":
        return _json_lines(stream, name), None
    if fmt == "csv":
        return _csv_rows(stream, name)
    text = stream.read(MAX_JSON_DOCUMENT_CHARS + 1)  # read whole to be parsed: bounded (/dev/zero is endless)
    if len(text) > MAX_JSON_DOCUMENT_CHARS:
        raise ValueError(f"{name} is over {MAX_JSON_DOCUMENT_CHARS // 2**20} MiB: a JSON document is read whole; write "
                         "it as JSON Lines (.jsonl, one record per line), which is read as it goes")
    if not text.removeprefix("\ufeff").strip():  # as JSON Lines and CSV say it, not "Expecting value at line 1"
        raise ValueError(f"{name}: no patient records in the input (it is empty)")
    try:
        data = loads(text.removeprefix("\ufeff"))  # a byte-order mark, as Windows' Notepad saves
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} is not valid JSON: {err.msg} at line {err.lineno}") from None
    except (ValueError, RecursionError) as err:  # a number of over 4,300 digits; arrays nested thousands deep
        raise ValueError(f"{name} is not JSON this reads: {json_problem(err)}") from None
    instances = isinstance(data, dict) and "instances" in data
    if instances and isinstance(data, RepeatedKeys) and "instances" in data.repeated:
        raise ValueError(f"{name}: 'instances' given twice")
    if instances:
        data = data["instances"]
    records = data if isinstance(data, list) else [data]
    if not records:
        raise ValueError(f"{name}: no patient records in the input ({'its instances are' if instances else 'it is'} "
                         "an empty list)")
    return (InputRecord(f"record {number}", record) for number, record in enumerate(records, start=1)), None


class _BoundedLines:
    """The lines of ``stream`` as iterating it gives them (line ends kept), each read with at most ``limit`` + 1
    characters in memory: a line longer than ``limit``, or a record of several lines (a CSV row whose quoted cell spans
    lines) longer in all since :meth:`new_record`, raises ValueError naming the line and the limit. ``number`` is the
    last line read."""

    def __init__(self, stream: IO[str], name: str, limit: int = MAX_RECORD_CHARS):
        self.stream, self.name, self.limit = stream, name, limit
        # Lines given as an iterable (a list of them: in memory already) are taken as they come, and checked alike.
        self._lines = None if hasattr(stream, "readline") else iter(stream)
        self.number = 0
        self._record_start = 1
        self._record_chars = 0

    def new_record(self) -> None:
        """The next line read starts a record."""
        self._record_start, self._record_chars = self.number + 1, 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.stream.readline(self.limit + 1) if self._lines is None else next(self._lines, "")
        if not line:
            raise StopIteration
        self.number += 1
        self._record_chars += len(line)
        if self._record_chars > self.limit:
            what = (f"line {self.number}" if self._record_start == self.number else
                    f"the record of lines {self._record_start:,} to {self.number:,} (a quoted cell spans lines)")
            raise ValueError(f"{self.name}: {what} is over {self.limit:,} characters, more than an endpoint request "
                             f"may carry ({MAX_BODY_BYTES // 2**20} MB): reading stopped there (is it a text file of "
                             "one record per line?)")
        return line


def _json_lines(stream: IO[str], name: str) -> Iterator[InputRecord]:
    number = read = 0
    lines = _BoundedLines(stream, name)
    for number, line in enumerate(lines, start=1):
        lines.new_record()
        if not line.strip():
            continue
        read += 1
        try:
            yield InputRecord(f"line {number}", loads(line.removeprefix("\ufeff") if number == 1 else line))
        except (ValueError, RecursionError) as err:
            yield InputRecord(f"line {number}", problem=f"not JSON: {json_problem(err, lines=False)}")
    if not read:
        raise ValueError(f"{name}: no patient records in the input ({'only blank lines' if number else 'it is empty'})")


def _csv_rows(stream: IO[str], name: str) -> tuple[Iterator[InputRecord], list[str]]:
    lines = _BoundedLines(stream, name)
    # A byte-order mark (Excel's "CSV UTF-8", R's write.csv) goes before the reader sees it: left in, it stood in
    # front of a quoted first name ('\ufeff"nhc"'), which then kept its quotes and was an unknown field.
    first = next(lines, "").removeprefix("\ufeff")
    reader = csv.reader(itertools.chain([first], lines))
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise ValueError(f"{name}: malformed CSV header: {csv_problem(err)}") from None
    width = named_width(header or [])  # trailing columns without a name: a spreadsheet's delimiters, as ingestion reads
    if not header or not width:
        raise ValueError(f"{name} has no header row naming the fields")
    opening = header[0].lstrip()[:1]
    if opening in ("{", "["):  # no field's name starts so: JSON, whose rows would each be refused or read as none
        raise JsonNotCsv(f"{name} is read as CSV but looks like JSON (its first line starts with {opening!r})")
    other = other_delimiter(header)
    if other is not None:
        raise ValueError(f"{name}: the header is one field, {header[0][:80]!r}{'…' * (len(header[0]) > 80)}: the cells "
                         f"look {other!r}-separated; "
                         "the endpoint reads comma-separated cells with decimal points (save the file so)")
    problem = header_problem(header, width)
    if problem:  # which column holds a value is not known: ingestion and the endpoint refuse it too
        raise ValueError(f"{name}: {problem}")

    def rows() -> Iterator[InputRecord]:
        read = 0
        start = reader.line_num + 1  # the line the next row starts on
        while True:
            lines.new_record()
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as err:  # the reader goes on at the next line
                read += 1
                yield InputRecord(f"line {start}", problem=f"malformed CSV: {csv_problem(err)}")
                start = reader.line_num + 1
                continue
            where = f"line {start}"  # where the row starts (a quoted cell may span lines), as ingestion names it
            start = reader.line_num + 1
            if is_blank_row(cells):  # a blank line, or a spreadsheet's formatted empty row (',,,'), as ingestion skips
                continue
            read += 1
            fitted = fit_to_header(cells, width)
            if fitted is None:  # a line cut short or run on: never padded (ingestion quarantines it)
                yield InputRecord(where, problem=misfit_problem(cells, header, width))
                continue
            yield InputRecord(where, dict(zip(header, fitted)))
        if not read:
            raise ValueError(f"{name}: no patient records in the input (no rows under the header)")

    return rows(), header[:width]


# ------------------------------------------------------------------------------------------------ sending

def _unsendable(record: Any) -> tuple[str | None, str] | None:
    """(field, problem) of a record the endpoint could not be asked about as read: a key given twice (re-encoded,
    one value would silently be lost) or a lone surrogate (the endpoint's refusal names no record, costing the
    others in its request their answers)."""
    if isinstance(record, RepeatedKeys):
        return str(record.repeated[0]), "given twice"
    where = surrogate_path(record)
    if where is None:
        return None
    if where == "a key" or where.endswith(".<key>"):
        return None, not_text("a field name")
    return (None if where == "the body" else printable(re.split(r"[.\[]", where, maxsplit=1)[0])), not_text()


def _csv_body(header: list[str], records: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def predict_stream(client: DiagnosaClient, records: Iterable[InputRecord], *, csv_header: list[str] | None = None,
                   top_k: int | None = None, differential: int | None = None,
                   chunk: int = PREDICT_CHUNK) -> Iterator[Answered | Refused]:
    """Each record's answer or problems, sending ``chunk`` records per request (CSV as CSV when ``csv_header``);
    a record's problems are yielded together.

    Raises :class:`PredictionRejected` for a refusal that names no record (the request itself is wrong) and
    :class:`~inference.client.ClientFailure` when the endpoint cannot be reached or fails. A ValueError of
    ``records`` (the input stops being readable: a line too long, bytes that are not UTF-8) is raised once the
    records read before it are answered."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    batch: list[InputRecord] = []
    items = iter(records)
    stopped: ValueError | None = None
    while True:
        try:
            item = next(items)
        except StopIteration:
            break
        except ValueError as err:  # the input stops being readable (a line too long, not UTF-8 from there on)
            stopped = err  # the records read before it are sent first: they were dropped with the unsent batch
            break
        if item.problem is not None:
            yield Refused(item.where, None, item.problem)
            continue
        refusal = _unsendable(item.record)
        if refusal is not None:
            yield Refused(item.where, *refusal)
            continue
        batch.append(item)
        if len(batch) == chunk:
            yield from _send(client, batch, csv_header, top_k, differential)
            batch = []
    if batch:
        yield from _send(client, batch, csv_header, top_k, differential)
    if stopped is not None:
        raise stopped


def _send(client: DiagnosaClient, batch: list[InputRecord], csv_header: list[str] | None, top_k: int | None,
          differential: int | None) -> Iterator[Answered | Refused]:
    pending = [batch]
    while pending:
        items = pending.pop(0)
        body = _csv_body(csv_header, [i.record for i in items]) if csv_header is not None else \
            client.json_body([i.record for i in items], top_k=top_k, differential=differential)
        if len(body.encode("utf-8")) > MAX_BODY_BYTES:
            if len(items) == 1:
                yield Refused(items[0].where, None, f"the record is over the {MAX_BODY_BYTES // 2**20} MB an endpoint "
                                                    "request may carry")
            else:
                pending[:0] = [items[:len(items) // 2], items[len(items) // 2:]]
            continue
        try:
            # The client takes an answer only when it is one valid prediction per record sent (InvalidAnswer else):
            # zipped as it came, an answer short of one stopped at the shorter, and a patient went without an
            # answer, or with another's, and the command said 0.
            prediction = client.predict_csv(body, records=len(items)) if csv_header is not None else \
                client.predict_body(body, records=len(items))
        except PredictionRejected as err:
            refused = _refused_rows(err, len(items))
            if not refused and err.status == 413:  # too much at once (the answer would be over the limit): halve
                if len(items) == 1:
                    yield Refused(items[0].where, None, err.message)
                else:
                    pending[:0] = [items[:len(items) // 2], items[len(items) // 2:]]
                continue
            if not refused:
                raise
            for row in sorted(refused):
                for found in refused[row]:
                    yield Refused(items[row].where, found.get("field"), str(found.get("problem", err.message)))
            rest = [item for row, item in enumerate(items) if row not in refused]
            if rest:
                pending.insert(0, rest)
            continue
        for row, (item, result) in enumerate(zip(items, prediction.results, strict=True)):
            yield Answered(item.where, result, prediction.event_id, row)


def _refused_rows(err: PredictionRejected, size: int) -> dict[int, list[dict[str, Any]]]:
    """The rows a refusal names completely, with their problems. When the endpoint listed only part of the
    problems, the last row it named may have more: it is sent again (its problems then all listed)."""
    rows: dict[int, list[dict[str, Any]]] = {}
    for problem in err.errors:
        row = problem.get("row")
        if isinstance(row, int) and not isinstance(row, bool) and 0 <= row < size:
            rows.setdefault(row, []).append(problem)
    if err.more_errors and len(rows) > 1:
        rows.pop(max(rows))
    return rows


# ------------------------------------------------------------------------------------------------ reporting

OTHER_FIELD = "(other field)"  # the kind's field of a problem of a field not among ProblemSummary's known_fields
_COUNT = re.compile(r"\A\d[\d,]*\s+")  # "1,990 more field problem(s) ...": a count that opens a problem


@dataclass
class ProblemSummary:
    """Problems counted by kind, with each kind's first occurrence and the first ``shown`` problems kept for the
    message. Once there are more than ``shown``, every problem also goes, one JSON line each, to the file
    ``open_sink()`` opens (the first ones included); with ``per_record``, one JSON line per refused record instead,
    ``{"where", "problems": [{"field", "problem"}...]}`` (at most MAX_LISTED_PROBLEMS of them, ``more_problems``
    counting the rest). ``known_fields``: the fields a record may hold; a problem of any other field (a name the
    input invented) is counted under the kind of ``OTHER_FIELD``, not one kind per name."""

    open_sink: Callable[[], IO[str]] | None = None
    shown: int = 10
    sink: IO[str] | None = None
    first: list[Refused] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    examples: dict[str, Refused] = field(default_factory=dict)
    records: int = 0  # refused records: a record's problems arrive together (predict_stream)
    _last: str | None = None
    known_fields: Collection[str] | None = None
    per_record: bool = False
    _record: list[Refused] = field(default_factory=list)  # per_record: the problems of the record being added
    _record_more: int = 0  # per_record: its problems beyond MAX_LISTED_PROBLEMS, counted
    _held: list[str] = field(default_factory=list)  # per_record: the lines of the records before the sink opened

    def kind(self, problem: Refused) -> str:
        """The kind ``problem`` is counted under."""
        if self.known_fields is None or problem.field is None or problem.field in self.known_fields:
            return problem.kind
        return problem_kind(OTHER_FIELD, _COUNT.sub("", problem.problem))

    def add(self, problem: Refused) -> None:
        kind = self.kind(problem)
        self.kinds[kind] += 1
        self.examples.setdefault(kind, problem)
        new = problem.where != self._last
        if new:
            self.records, self._last = self.records + 1, problem.where
        if self.per_record:
            if len(self.first) < self.shown:
                self.first.append(problem)
            if new:
                self._end_record()
            if len(self._record) < MAX_LISTED_PROBLEMS:
                self._record.append(problem)
            else:
                self._record_more += 1
            return
        if len(self.first) < self.shown:
            self.first.append(problem)
            return
        if self.sink is None and self.open_sink is not None:
            self.sink = self.open_sink()
            self._write("".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in self.first))
        if self.sink is not None:
            self._write(json.dumps(problem.to_dict(), ensure_ascii=False) + "\n")

    def _end_record(self) -> None:
        """per_record: the line of the record added so far, to the sink (opened once there are more than ``shown``
        problems) or held until then."""
        if not self._record:
            return
        item: dict[str, Any] = {"where": self._record[0].where,
                                "problems": [{"field": p.field, "problem": p.problem} for p in self._record]}
        if self._record_more:
            item["more_problems"] = self._record_more
        self._record, self._record_more = [], 0
        if self.open_sink is None:
            return
        line = json.dumps(item, ensure_ascii=False) + "\n"
        if self.sink is None and self.total <= self.shown:
            self._held.append(line)  # at most ``shown`` records: each has a problem
            return
        if self.sink is None:
            self.sink = self.open_sink()
            self._write("".join(self._held))
            self._held = []
        self._write(line)

    def _write(self, text: str) -> None:
        """Into the sink; a failure (a full disk, /dev/full) names the file, which the machine's answer did not."""
        assert self.sink is not None
        try:
            self.sink.write(text)
        except OSError as err:
            raise OSError(err.errno, err.strerror, getattr(self.sink, "name", None)) from None

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def lines(self) -> list[str]:
        """Every problem when there are at most ``shown``; else the ``shown`` most frequent kinds with their
        counts and first occurrences (a long message repeated by every record is printed once). Each line is
        printable (:func:`printable_line`): a problem quotes the file's field names and the endpoint's words, and an
        ESC among them would act on the terminal that shows it."""
        if self.total <= len(self.first):
            out = [f"  {_describe(p)}" for p in self.first]
        else:
            out = ["by kind, with its first occurrence:"]
            for kind, count in self.kinds.most_common(self.shown):
                out += [f"  {count:>7,}  {kind}", f"           {_describe(self.examples[kind])}"]
            rest = self.kinds.most_common()[self.shown:]
            if rest:
                out.append(f"  {sum(c for _, c in rest):>7,}  of {len(rest)} other kind(s)")
        return [printable_line(line) for line in out]

    def close(self) -> None:
        if self.per_record:
            self._end_record()  # the last record's line (which may open the sink)
        if self.sink is not None:
            try:
                self.sink.close()  # its last buffered lines are written here
            except OSError as err:
                raise OSError(err.errno, err.strerror, getattr(self.sink, "name", None)) from None


def _describe(problem: Refused) -> str:
    return f"{problem.where}: {problem.field + ': ' if problem.field else ''}{problem.problem}"


class PredictionsDocument:
    """``{"predictions": [...], "event_id": ...}`` written as the answers arrive, one prediction per line.

    Each prediction carries the ``event_id`` of the request that answered it and its ``event_row`` there (the two
    name the patient in feedback: a request holds up to PREDICT_CHUNK patients); the top-level ``event_id`` is
    that of the only request, or null when the input took several. Nothing is written until a first answer."""

    def __init__(self, out: IO[str]):
        self.out = out
        self.count = 0
        self.event_ids: list[str | None] = []
        # JSON between programs is UTF-8 (RFC 8259): written to a stream of another encoding (a Latin-1 locale), the
        # labels' 'Ó' was a byte no JSON reader takes (jq showed 'CR\ufffdNICA'); there every non-ASCII character is
        # written as JSON's \u escape, the same text in any reader.
        encoding = getattr(out, "encoding", None) or "utf-8"
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            pass
        self.ascii = encoding != "utf-8"

    def add(self, answer: Answered) -> None:
        try:  # JSON has no NaN or Infinity: written as Python writes them by default, no JSON reader took the output
            line = json.dumps({**answer.result, "event_id": answer.event_id, "event_row": answer.event_row},
                              ensure_ascii=self.ascii, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InvalidAnswer(f"the prediction of {answer.where} cannot be written as JSON: {err}",
                                "a prediction that cannot be written as JSON") from None
        self.out.write(('{"predictions": [\n  ' if not self.count else ",\n  ") + line)
        self.count += 1
        if not self.event_ids or self.event_ids[-1] != answer.event_id:
            self.event_ids.append(answer.event_id)

    def close(self) -> None:
        if self.count:
            only = self.event_ids[0] if len(self.event_ids) == 1 else None
            self.out.write(f'\n], "event_id": {json.dumps(only)}}}\n')
        self.out.flush()
