"""Data capture in SageMaker's layout, written to the lake's ``capture/`` zone off the request path.

SageMaker Model Monitor (and our own monitoring jobs) read captured traffic as JSON Lines under
``<capture prefix>/<endpoint>/<variant>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl``, one event per
line. Writing the same layout locally means the monitoring code cannot tell the local endpoint
from a real one.

Nothing answered is lost: :meth:`DataCapture.record` appends the event's line to a local
write-ahead spool (one ``os.write`` on an ``O_APPEND`` file, before the reply is sent), so a line
that reached the kernel survives a SIGKILL of the server. A background thread seals spool
segments and ships each to the lake (one object per hour it spans, with a key derived from the
segment's name, so shipping again after a crash rewrites the same objects instead of duplicating
them), then deletes the segment. A new ``DataCapture`` on the same spool ships what a killed one
left; a line torn by a kill mid-write is dropped and counted, never written. ``fsync=True`` also
survives power loss, at the price of one fsync per request.

Refused requests go to a second stream, ``capture-errors/<endpoint>/YYYY/MM/DD/HH/``: status,
route, message and problems, with the values that messages echo removed (no request body).
"""
from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import secrets
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter, OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Collection, Generator, Iterable, Iterator, Mapping

from diagnosa.data.schema import RESOURCE_NAME
from diagnosa.data.validate import clip, shown
from diagnosa.lake import DataLake
from inference.answers import answer_predictions
from inference.limits import printable, printable_line

log = logging.getLogger("diagnosa.capture")

ZONE = "capture"
ERRORS_ZONE = "capture-errors"
SPOOL_DIRNAME = ".capture-spool"  # under a local lake's root: not a zone, never listed as one
DEFAULT_VARIANT = "AllTraffic"
EVENT_VERSION = "0"
_KEY = re.compile(r"capture/(?P<endpoint>[^/]+)/(?P<variant>[^/]+)/(?P<y>[0-9]{4})/(?P<m>[0-9]{2})/(?P<d>[0-9]{2})/"
                  r"(?P<h>[0-9]{2})/[^/]+\.jsonl")  # always fullmatch
_JSON_TYPES = ("application/json",)
_CSV_TYPES = ("text/csv",)
_SEGMENT = ".seg"
LONE_SURROGATE_ID = "eventId holds a lone UTF-16 surrogate, which no UTF-8 text can hold"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_KEY_NAMESPACE = uuid.UUID("6f1c1d2e-8a35-4f5e-9c1b-2d7f1e0a9b44")  # object keys from segment names
_EVENT_ID_IN_LINE = re.compile(rb'"eventId"\s*:\s*"([^"\\]{1,128})"')
MAX_ERROR_PROBLEMS = 20  # problems kept per refused request in the errors stream
MAX_ERROR_TEXT = 300  # characters kept of a refusal's message (and of each problem)
SHOWN_CHARS = 80  # characters of a value a read's problem quotes (a 20 MB inferenceTime was quoted whole)
RECENT_EVENTS = 200_000  # event ids remembered in memory for the feedback check (besides the lake)
UNCOUNTED = -1  # a captured event whose patients are not known (a previous process's spool)
CAPTURE_FAILED = -2  # an answered, sampled event whose capture line was not written (spool full or failing, closed)
CACHED_HOURS = 8  # hours of captured event ids kept after reading them back from the lake
# A cached hour that does not hold an id asked for is read again once it is this old: another server of the endpoint
# (its own --capture-spool) files objects there too, which this one's cache would never learn of; a stream of
# made-up ids then costs one read of the hour a minute, not one a post.
HOUR_REREAD_SECONDS = 60.0


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not RESOURCE_NAME.match(value):
        raise ValueError(f"{what} {value!r} is not a valid SageMaker name (letters, digits, '-'; up to 63)")
    return value


def _utc(when: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as SageMaker stamps every event in UTC."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_event_id(when: datetime | None = None) -> str:
    """A UUIDv7 (RFC 9562): the first 48 bits are the Unix time in ms, so the capture hour of an event
    can be found from its id without scanning the capture zone."""
    millis = int((_utc(when) if when else datetime.now(timezone.utc)).timestamp() * 1000)
    value = (millis & (2**48 - 1)) << 80 | 0x7 << 76 | secrets.randbits(12) << 64 | 0b10 << 62 | secrets.randbits(62)
    return str(uuid.UUID(int=value))


def _uuid7_millis(event_id: str) -> int | None:
    """The 48-bit Unix time (ms) of a canonical UUIDv7 text; None for anything else."""
    try:
        value = uuid.UUID(event_id)
    except (ValueError, TypeError, AttributeError):
        return None
    if value.version != 7 or str(value) != event_id.lower():
        return None
    return value.int >> 80


def event_time(event_id: str) -> datetime | None:
    """The issue time (ms) of a UUIDv7 event id; None for anything else (UUIDv4, a SageMaker eventId...) and for a
    UUIDv7 whose time is past datetime's range (48 bits of ms reach year 10889; any id from
    e677d21f-dc00-7000-... up is after 9999-12-31): no endpoint issued it, and it must not raise OverflowError."""
    millis = _uuid7_millis(event_id)
    if millis is None:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        return None


def issued_later(event_id: str, now: datetime, slack: timedelta = timedelta(minutes=5)) -> bool:
    """Whether ``event_id`` is a UUIDv7 naming a time after ``now`` + ``slack`` (after year 9999 included): an id
    no endpoint has issued yet."""
    millis = _uuid7_millis(event_id)
    if millis is None:
        return False
    when = event_time(event_id)
    return when is None or when > _utc(now) + slack


def encode_payload(body: bytes, content_type: str | None) -> tuple[str, str]:
    """``(data, encoding)``: JSON/CSV bodies as text when they are UTF-8, anything else as BASE64."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    kind = "JSON" if media in _JSON_TYPES or media.endswith("+json") else "CSV" if media in _CSV_TYPES else None
    if kind is not None:
        try:
            return body.decode("utf-8"), kind
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), "BASE64"


def decode_payload(io: Mapping[str, Any]) -> bytes:
    """The original bytes of an ``endpointInput``/``endpointOutput`` block."""
    if io["encoding"] == "BASE64":
        return base64.b64decode(io["data"], validate=True)
    return str(io["data"]).encode("utf-8")


def capture_line(event_id: str, inference_id: str | None, input_body: bytes, input_content_type: str | None,
                 output_body: bytes, output_content_type: str | None, when: datetime) -> dict[str, Any]:
    """One event exactly as SageMaker data capture writes it; a ValueError for ids no UTF-8 line can hold."""
    for name, value in (("event id", event_id), ("inference id", inference_id)):
        if isinstance(value, str) and lone_surrogate(value):  # the line could not be written, nor read back
            raise ValueError(f"the {name} {ascii(value)} holds a lone UTF-16 surrogate")
    in_data, in_encoding = encode_payload(input_body, input_content_type)
    out_data, out_encoding = encode_payload(output_body, output_content_type)
    metadata: dict[str, Any] = {"eventId": event_id}
    if inference_id:
        metadata["inferenceId"] = inference_id
    metadata["inferenceTime"] = _iso(_utc(when))
    return {
        "captureData": {
            "endpointInput": {"observedContentType": input_content_type or "", "mode": "INPUT", "data": in_data,
                              "encoding": in_encoding},
            "endpointOutput": {"observedContentType": output_content_type or "", "mode": "OUTPUT", "data": out_data,
                               "encoding": out_encoding},
        },
        "eventMetadata": metadata,
        "eventVersion": EVENT_VERSION,
    }


# -- refusals (the errors stream) -------------------------------------------------------------
_GOT = re.compile(r"\s*[,;(]?\s*\bgot\b.*$", re.S)  # "expected a number, got 'abc'": the value goes
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_KEYS_LISTED = re.compile(r"(unknown top-level keys):[^(]*")
# The request schema's refusals that echo a number bare: "impossible value 987.654 (possible range 0 to 600 mg/L)".
_NUMBER_ECHOED = re.compile(r"\b(impossible value|number out of range:)\s+[^\s(]+")


def redact(text: Any) -> str:
    """A refusal's text without the values it echoes (they may be patient data): what follows "got",
    quoted literals, echoed numbers and listed keys go; bounded to MAX_ERROR_TEXT characters."""
    out = _GOT.sub("", str(text))
    out = _QUOTED.sub("'…'", out)
    out = _NUMBER_ECHOED.sub(r"\1 …", out)
    out = _KEYS_LISTED.sub(r"\1 ", out).strip()
    return out if len(out) <= MAX_ERROR_TEXT else out[:MAX_ERROR_TEXT - 1] + "…"


def redacted_traceback(err: BaseException, limit: int = 20) -> str:
    """``err``'s traceback (and its causes') as Python prints it, each exception's message :func:`redact`\\ ed: the
    serving log goes to CloudWatch, and an unexpected error's message may quote a request's values (a library's
    ValueError quotes the cell it could not read, a KeyError the key)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and len(chain) < 10 and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nwhich followed\n\n".join(
        "Traceback (most recent call last):\n" + "".join(traceback.format_tb(e.__traceback__, limit))
        + f"{type(e).__module__}.{type(e).__qualname__}: {redact(e)}" for e in reversed(chain))


def without_event_id(message: str, event_id: Any) -> str:
    """``message`` with ``event_id`` cut out (as '…'): an id the client sent (feedback for an unknown id) is its own
    text, and one reason per id would fill the refusals' top reasons."""
    if not isinstance(event_id, str) or not event_id:
        return message
    return re.sub(r"(?<!\S)" + re.escape(event_id) + r"(?=[\s:,;)]|$)", "…", message)


def error_line(event_id: str | None, route: str, status: int, message: str, problems: Iterable[Any],
               fields: Iterable[str] | None, when: datetime) -> dict[str, Any]:
    """One refused request for the errors stream: no body, no values; field names only when known."""
    known = set(fields) if fields is not None else None
    listed: list[dict[str, Any]] = []
    total = 0
    for item in problems:
        total += 1
        if len(listed) >= MAX_ERROR_PROBLEMS:
            continue
        if isinstance(item, dict):
            row, name, text = item.get("row"), item.get("field"), item.get("problem")
        elif isinstance(item, (tuple, list)):
            row, name, text = (list(item) + [None, None, None])[:3]
        else:
            row, name, text = getattr(item, "row", None), getattr(item, "field", None), getattr(item, "problem", "")
        if name is not None and (known is None or str(name) not in known):
            name = "(other field)"  # a key the caller invented may itself be a value
        listed.append({"row": row if isinstance(row, int) else None, "field": name, "problem": redact(text)})
    error = redact(without_event_id(str(message), event_id))  # one reason, not one per (client-sent) id
    record: dict[str, Any] = {"time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
                              "eventId": event_id, "route": route, "status": int(status), "error": error,
                              "problems": listed}
    if total > len(listed):
        record["moreProblems"] = total - len(listed)
    return record


# -- the spool --------------------------------------------------------------------------------
class _Stream:
    """One append-only spool stream (a folder of segments) shipped to one lake prefix.

    Lines are ``<UTC µs since the epoch> <JSON>\\n``; the time picks the hour folder of the object.
    """

    def __init__(self, directory: Path, prefix: str, fsync: bool):
        self.directory = directory
        self.prefix = prefix
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self.fd: int | None = None
        self.active: Path | None = None
        self.lines = 0  # lines in the active segment

    def append(self, data: bytes) -> None:
        """Write one whole line to the active segment (opened on first use); the caller holds the lock."""
        if self.fd is None:
            self.active = self.directory / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{_SEGMENT}"
            self.fd = os.open(self.active, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self.lines = 0
            if self.fsync:
                _fsync_dir(self.directory)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
            if self.fsync:
                os.fsync(self.fd)
        except OSError:
            if self.lines == 0:
                self.discard()  # nothing whole in it: an empty segment per failed line filled the spool folder
            else:
                self.seal()  # a partial line now ends its segment: recovery drops it as torn
            raise
        self.lines += 1

    def discard(self) -> None:
        """Close and remove the active segment: a failed first line left it empty (or holding part of that line).
        The next line opens a new one."""
        active = self.active
        self.seal()
        if active is not None:
            try:
                active.unlink()
            except OSError:  # left as it was: shipping an empty segment writes nothing and removes it
                pass

    def seal(self) -> None:
        """Close the active segment: from now on it is only read, shipped and deleted."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd, self.active, self.lines = None, None, 0

    def sealed(self) -> list[Path]:
        return sorted(p for p in self.directory.glob(f"*{_SEGMENT}") if p != self.active)

    def key(self, segment: str, hour: datetime, first: datetime) -> str:
        # Deterministic per (segment, hour): shipping a segment twice rewrites the same object.
        name = uuid.uuid5(_KEY_NAMESPACE, f"{self.prefix}|{segment}|{hour:%Y%m%d%H}")
        return f"{self.prefix}{hour:%Y/%m/%d/%H}/{first:%M-%S}-{first.microsecond // 1000:03d}-{name}.jsonl"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Parsed:
    by_hour: dict[datetime, tuple[datetime, list[bytes]]]
    ids: list[str]
    lines: int
    torn: int  # a last line without its newline (the process died mid-write)
    malformed: int  # complete lines that are not a stamp and a JSON object


def _parse_segment(data: bytes, want_ids: bool = False) -> _Parsed:
    torn = 0
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        data, torn = data[:cut], 1
    parsed = _Parsed({}, [], 0, torn, 0)
    for line in data.split(b"\n"):
        if not line:
            continue
        stamp, _, body = line.partition(b" ")
        try:
            when = _EPOCH + timedelta(microseconds=int(stamp))
            if not isinstance(json.loads(body), dict):
                raise ValueError("not a JSON object")
        except (ValueError, OverflowError, RecursionError):
            parsed.malformed += 1
            continue
        hour = when.replace(minute=0, second=0, microsecond=0)
        parsed.by_hour.setdefault(hour, (when, []))[1].append(body)
        parsed.lines += 1
        if want_ids:
            match = _EVENT_ID_IN_LINE.search(body)
            if match:
                parsed.ids.append(match.group(1).decode("utf-8", "replace"))
    return parsed


def _event_ids(data: bytes) -> set[str]:
    """The event ids of a capture object's lines (a pattern, not a parse: the lookup's cheap read)."""
    return {m.decode("utf-8", "replace") for m in _EVENT_ID_IN_LINE.findall(data)}


def _patients_of(data: bytes, by_id: Mapping[str, str]) -> dict[str, int]:
    """Of a capture object's lines, those of the ids in ``by_id`` (as its lines write them → as asked): how many
    patients each one's answer holds (_answered_patients). Only those lines are parsed."""
    found: dict[str, int] = {}
    for line in data.splitlines():
        event = _EVENT_ID_IN_LINE.search(line)
        asked = by_id.get(event.group(1).decode("utf-8", "replace")) if event else None
        if asked is not None:
            found[asked] = _answered_patients(line)
    return found


def default_spool_dir(lake: Any) -> Path:
    """Where a capture's spool lives unless told: ``<lake root>/.capture-spool`` for a local lake; for an
    S3 lake a folder under the temp dir named after the lake (so a restart on this machine finds it)."""
    root = getattr(getattr(lake, "storage", None), "root", None)
    if isinstance(root, Path):
        return root / SPOOL_DIRNAME
    uri = getattr(lake, "uri", None)
    if isinstance(uri, str):
        return Path(tempfile.gettempdir()) / "diagnosa-capture-spool" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.mkdtemp(prefix="diagnosa-capture-spool-"))  # a stand-in lake (tests): private


class SpoolBusy(RuntimeError):
    """Another live DataCapture (this process or another) owns the spool folder."""


class DataCapture:
    """Samples invocations into a write-ahead spool and ships it, batched, to ``capture/<endpoint>/<variant>/...``.

    Counters: ``sampled`` (spooled), ``dropped`` (sampled but not spooled: closed, spool full or a
    spool write failed — ``spool_errors`` counts the last), ``written`` (events in the lake), ``torn``
    and ``malformed`` (spool lines dropped at shipping), ``lost`` (events that could not be serialised),
    ``errors_recorded`` (refusals spooled). A segment the lake refuses stays in the spool and is
    retried every ``flush_seconds``; nothing is counted lost for it.
    """

    def __init__(self, lake: DataLake, endpoint_name: str, variant: str = DEFAULT_VARIANT,
                 sampling_percentage: int = 100, flush_seconds: float = 1.0, seed: int | None = None,
                 max_batch: int = 1_000, *, spool_dir: str | os.PathLike[str] | None = None, fsync: bool = False,
                 max_spool_bytes: int = 1 << 30):
        if isinstance(sampling_percentage, bool) or not isinstance(sampling_percentage, int) \
                or not 0 <= sampling_percentage <= 100:
            raise ValueError(f"sampling_percentage must be an integer from 0 to 100, got {sampling_percentage!r}")
        if not flush_seconds > 0:
            raise ValueError(f"flush_seconds must be positive, got {flush_seconds!r}")
        if max_batch < 1 or max_spool_bytes < 1:
            raise ValueError("max_batch and max_spool_bytes must be at least 1")
        self.lake = lake
        self.endpoint_name = _check_name(endpoint_name, "endpoint_name")
        self.variant = _check_name(variant, "variant")
        self.sampling_percentage = sampling_percentage
        self.flush_seconds = float(flush_seconds)
        self.max_batch = max_batch
        self.max_spool_bytes = max_spool_bytes
        self.prefix = f"{ZONE}/{self.endpoint_name}/{self.variant}/"
        base = Path(spool_dir) if spool_dir is not None else default_spool_dir(lake)
        self.spool_dir = base / f"{self.endpoint_name}-{self.variant}"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.spool_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolBusy(f"capture spool {self.spool_dir} is in use by another running capture of "
                            f"{self.endpoint_name}/{self.variant}: give this one its own spool_dir") from None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # spool appends, the random generator, counters and the id memory
        self._ship_lock = threading.Lock()  # one shipper at a time (the thread, flush() or close())
        self._capture = _Stream(self.spool_dir / "capture", self.prefix, fsync)
        self._errors = _Stream(self.spool_dir / "errors", f"{ERRORS_ZONE}/{self.endpoint_name}/", fsync)
        # event id → the patients its request held when captured (UNCOUNTED: not known), 0 when not sampled,
        # CAPTURE_FAILED when sampled but not spooled (so feedback for it is told why, not "never captured")
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._hours: OrderedDict[datetime, dict[str, str]] = OrderedDict()  # ids read back from the lake → key
        self._hours_read: dict[datetime, float] = {}  # when each cached hour was read (time.monotonic)
        self._failures: dict[str, int] = {}  # segment name → failed shipping attempts
        self._closed = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.sampled = self.dropped = self.written = self.lost = 0
        self.torn = self.malformed = self.spool_errors = self.errors_recorded = self.recovered = 0
        self._spool_bytes = 0
        for stream in (self._capture, self._errors):
            leftovers = stream.sealed()  # a previous process's segments: shipped first by the thread
            for path in leftovers:
                data = path.read_bytes()
                self._spool_bytes += len(data)
                if stream is self._capture:
                    parsed = _parse_segment(data, want_ids=True)
                    self.recovered += parsed.lines
                    for event_id in parsed.ids:
                        self._remember(event_id, UNCOUNTED)
            if leftovers:
                log.warning("capture spool %s: %d segment(s) left by a previous run will be shipped to the lake",
                            stream.directory, len(leftovers))
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.endpoint_name}", daemon=True)
        self._thread.start()

    # -- request path ------------------------------------------------------------------------
    def _sample(self) -> bool:
        if self.sampling_percentage >= 100:
            return True
        if self.sampling_percentage <= 0:
            return False
        with self._lock:
            return self._rng.random() * 100 < self.sampling_percentage

    def _count(self, name: str) -> int:
        with self._lock:
            value = getattr(self, name) + 1
            setattr(self, name, value)
            return value

    def _remember(self, event_id: str, patients: int) -> None:
        """Call under the lock (or before the thread starts). ``patients``: 0 for an event not sampled,
        CAPTURE_FAILED for one whose line was not spooled. One bounded memory (the last RECENT_EVENTS ids)."""
        self._recent[event_id] = patients
        if len(self._recent) > RECENT_EVENTS:
            self._recent.popitem(last=False)

    def _spool(self, stream: _Stream, when: datetime, line: dict[str, Any], event_id: str | None,
               patients: int = 1) -> bool:
        stamp = (when - _EPOCH) // timedelta(microseconds=1)
        data = b"%d %s\n" % (stamp, json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        with self._lock:
            if self._closed:
                self.dropped += 1
                self._failed(stream, event_id)
                log.warning("capture for %s is closed: event %s not captured", self.endpoint_name, event_id)
                return False
            if self._spool_bytes + len(data) > self.max_spool_bytes:
                self.dropped += 1
                self._failed(stream, event_id)
                log.warning("capture spool %s is full (%d bytes unshipped): event %s not captured (%d dropped "
                            "so far)", self.spool_dir, self._spool_bytes, event_id, self.dropped)
                return False
            try:
                stream.append(data)
            except OSError as err:
                self.spool_errors += 1
                self.dropped += 1
                self._failed(stream, event_id)
                log.error("capture spool write failed: event %s not captured (%d spool errors so far): %s",
                          event_id, self.spool_errors, err)
                return False
            self._spool_bytes += len(data)
            full = stream.lines >= self.max_batch
            if stream is self._capture and event_id is not None:
                self.sampled += 1
                self._remember(event_id, max(patients, 1))
            else:
                self.errors_recorded += 1
        if full:
            self._wake.set()
        return True

    def _failed(self, stream: _Stream, event_id: str | None) -> None:
        """Remember an event whose capture line was not written (call under the lock)."""
        if stream is self._capture and event_id is not None:
            self._remember(event_id, CAPTURE_FAILED)

    def record(self, event_id: str, inference_id: str | None, input_body: bytes, input_content_type: str | None,
               output_body: bytes, output_content_type: str | None, when: datetime, patients: int = 1) -> bool:
        """Spool one event if sampled (a line in the kernel when this returns True); never raises into the
        request. Call it before the reply is sent. ``patients``: how many the request held (remembered for the
        feedback check of its event_row)."""
        if not self._sample():
            with self._lock:
                self._remember(event_id, 0)
            return False
        when = _utc(when)
        try:
            line = capture_line(event_id, inference_id, bytes(input_body), input_content_type, bytes(output_body),
                                output_content_type, when)
        except Exception as err:  # noqa: BLE001  (a bad event must not fail the request)
            with self._lock:
                self.lost += 1
                self._remember(event_id, CAPTURE_FAILED)
            # The id is escaped: a lone surrogate in a log record fails a UTF-8 log file's handler.
            if isinstance(err, ValueError):  # an id or body no capture line can hold: said, not a traceback
                log.error("capture event %s could not be serialised: %s", printable_line(event_id), err)
            else:
                log.exception("capture event %s could not be serialised", printable_line(event_id))
            return False
        return self._spool(self._capture, when, line, event_id, patients)

    def record_error(self, event_id: str | None, route: str, status: int, message: str,
                     problems: Iterable[Any] = (), *, fields: Iterable[str] | None = None,
                     when: datetime | None = None) -> bool:
        """Spool one refused request to ``capture-errors/`` (not sampled: every refusal). Only field names
        in ``fields`` are kept; values echoed in messages are removed (see :func:`redact`)."""
        when = _utc(when) if when else datetime.now(timezone.utc)
        try:
            line = error_line(event_id, route, status, message, problems, fields, when)
        except Exception:  # noqa: BLE001
            self._count("lost")
            log.exception("refusal of event %s could not be serialised", event_id)
            return False
        return self._spool(self._errors, when, line, None)

    def lookup(self, event_id: str) -> str:
        """Whether an event was captured: ``"captured"``, ``"not sampled"``, ``"capture failed"`` (answered by this
        process, sampled, but its line was not written: spool full or failing, capture closed) or ``"unknown"``.

        Bounded work: ids spooled by this process are in memory; otherwise only the hours the id names are read, and
        cached (:meth:`_filed_under`); an id that carries no time, or a future one, is ``"unknown"`` at once."""
        with self._lock:
            known = self._recent.get(event_id)
            if known is not None:
                return "captured" if known > 0 or known == UNCOUNTED else \
                    "capture failed" if known == CAPTURE_FAILED else "not sampled"
        return "captured" if self._filed_under(event_id) is not None else "unknown"

    def patients(self, event_id: str) -> int | None:
        """How many patients the captured request of ``event_id`` held: known when this process captured it recently;
        else from its line in the lake, in the object the lookup found it in (one more read, of that object). None
        when not known (or not readable from the answer): feedback for a request of several patients naming no row
        was taken after a restart, stored, and never usable."""
        with self._lock:
            patients = self._recent.get(event_id)
        if patients is None:
            key = self._filed_under(event_id)
            if key is not None:
                patients = _patients_of(self.lake.get_bytes(key), {event_id.lower(): event_id, event_id: event_id}
                                        ).get(event_id)
        return patients if patients is not None and patients > 0 else None

    def _filed_under(self, event_id: str) -> str | None:
        """The key of the lake's capture object holding ``event_id``'s line, or None. The event's hour comes from its
        id (UUIDv7); that hour's objects are read (their ids cached, CACHED_HOURS), then those of the hours it may be
        filed under (:func:`filing_hours`) when it is not there. None at once for an id that carries no time (not
        issued by the local endpoint) or a time in the future (past year 9999 too)."""
        when = event_time(event_id)
        if when is None or issued_later(event_id, datetime.now(timezone.utc)):
            return None
        for hour in filing_hours(when):  # its own hour first; then where a late write or a skewed clock filed it
            with self._lock:
                ids = self._hours.get(hour)
                if ids is not None:
                    self._hours.move_to_end(hour)
                    stale = time.monotonic() - self._hours_read.get(hour, 0.0) >= HOUR_REREAD_SECONDS
            if ids is not None:
                key = ids.get(event_id.lower()) or ids.get(event_id)
                if key is not None:
                    return key
                if not stale:
                    continue
            ids = self._read_hour(hour)  # not cached, or cached a while ago: another server may have filed it since
            with self._lock:
                self._hours[hour], self._hours_read[hour] = ids, time.monotonic()
                self._hours.move_to_end(hour)
                while len(self._hours) > CACHED_HOURS:
                    self._hours_read.pop(self._hours.popitem(last=False)[0], None)
            key = ids.get(event_id.lower()) or ids.get(event_id)
            if key is not None:
                return key
        return None

    def _read_hour(self, hour: datetime) -> dict[str, str]:
        """The event ids of an hour's capture objects → the object each is in."""
        ids: dict[str, str] = {}
        for key in self.lake.list(f"{self.prefix}{hour:%Y/%m/%d/%H}/"):
            if key.endswith(".jsonl"):
                ids.update(dict.fromkeys(_event_ids(self.lake.get_bytes(key)), key))
        return ids

    # -- shipping ----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                self._ship_all(seal=False)  # first pass: what a previous run left
            except Exception:  # noqa: BLE001  (the shipper must outlive any one bad pass)
                log.exception("capture shipping pass failed")
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                self._capture.seal()
                self._errors.seal()

    def _ship_all(self, seal: bool) -> bool:
        """Ship every sealed segment (oldest first; a stream stops at its first failure). True if none is left."""
        with self._ship_lock:
            if seal:
                with self._lock:
                    self._capture.seal()
                    self._errors.seal()
            left = False
            for stream in (self._capture, self._errors):
                for path in stream.sealed():
                    if not self._ship(stream, path):
                        left = True
                        break
            return not left

    def _ship(self, stream: _Stream, path: Path) -> bool:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return True
        parsed = _parse_segment(data)
        filed: list[tuple[datetime, str, bytes]] = []
        try:
            for hour, (first, bodies) in sorted(parsed.by_hour.items()):
                key, body = stream.key(path.stem, hour, first), b"\n".join(bodies) + b"\n"
                self.lake.put_bytes(key, body)
                filed.append((hour, key, body))
        except Exception as err:  # noqa: BLE001  (storage outages: the segment stays and is retried)
            attempts = self._failures.get(path.name, 0) + 1
            self._failures[path.name] = attempts
            level = logging.WARNING if attempts < 3 or attempts % 100 == 0 else logging.DEBUG
            log.log(level, "capture object for spool segment %s not written (attempt %d), kept in the spool: %s",
                    path.name, attempts, err)
            return False
        path.unlink(missing_ok=True)
        self._failures.pop(path.name, None)
        # Read off outside the lock the requests wait for; an hour cached after its object was written holds it already.
        learned = [(hour, dict.fromkeys(_event_ids(body), key)) for hour, key, body in filed
                   if stream is self._capture and hour in self._hours]
        with self._lock:
            self._spool_bytes -= len(data)
            if stream is self._capture:
                self.written += parsed.lines
                # A cached hour learns the ids just filed under it. It was dropped instead, and read back whole at
                # the next lookup: at a second's shipping, every feedback post naming an id of no capture (made
                # up, or a mistyped one) re-read the hour's objects (3.8 s at 100 requests a second).
                for hour, ids in learned:
                    cached = self._hours.get(hour)
                    if cached is not None:
                        cached.update(ids)
            self.torn += parsed.torn
            self.malformed += parsed.malformed
        if parsed.torn or parsed.malformed:
            log.warning("capture spool segment %s: %d torn and %d malformed line(s) dropped", path.name, parsed.torn,
                        parsed.malformed)
        log.debug("shipped %d lines of %s", parsed.lines, path.name)
        return True

    # -- control -----------------------------------------------------------------------------
    def pending(self) -> int:
        """Spool segments not shipped yet (the active one included)."""
        return sum(len(list(s.directory.glob(f"*{_SEGMENT}"))) for s in (self._capture, self._errors))

    def flush(self) -> bool:
        """Ship everything spooled so far; True when it is all in the lake."""
        if self._closed:
            return self.pending() == 0
        return self._ship_all(seal=True)

    def close(self, timeout: float | None = 30.0) -> None:
        """Ship what is spooled and stop the shipper (idempotent); what the lake refuses stays in the spool
        for the next start."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("capture shipper for %s did not stop within %s s", self.endpoint_name, timeout)
        if not self._ship_all(seal=True):
            log.error("capture for %s closed with %d segment(s) still in the spool %s: they are shipped at the "
                      "next start", self.endpoint_name, self.pending(), self.spool_dir)
        os.close(self._lock_fd)  # releases the flock: another capture may take the spool over

    def __enter__(self) -> DataCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading back ------------------------------------------------------------------------------
@dataclass
class CaptureRead:
    """Events in time order plus what could not be read; unpacks as ``events, malformed``."""

    events: list[dict[str, Any]]
    malformed: int = 0  # lines that are not a capture event
    problems: list[str] = field(default_factory=list)  # "key:line: why", and keys outside the layout
    # Lines left out as outside the window whose inferenceTime is further from their object's path hour than
    # FILING_MARGIN ("key:line: ..."): the report of their own hour may not read their object. Lines of the margin
    # hours that belong to a neighbouring window are not listed: they are where they should be.
    misfiled: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.events, self.malformed))


def parse_time(value: Any, what: str = "inferenceTime") -> datetime:
    """A captured time (ISO 8601: 'Z' or an offset, fractions, 'T' or a space) as a UTC instant; a ValueError naming
    ``what`` otherwise. One reading for every reader: ordering by the text put 10:00:01Z after 10:00:01.900Z."""
    if not isinstance(value, str):
        raise ValueError(f"{what} {shown(value, SHOWN_CHARS)} is not a string")
    try:
        return _utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):  # OverflowError: an offset moving year 1 or 9999 out of range
        raise ValueError(f"{what} {shown(value, SHOWN_CHARS)} is not an ISO 8601 time") from None


_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone UTF-16 surrogate (JSON's "\\ud800" escape decodes to one): no UTF-8 text can
    hold it, so writing it anywhere (a report, a table of Arrow strings, a capture line) fails."""
    return _LONE_SURROGATE.search(text) is not None


def _check_event(obj: Any) -> datetime:
    """The event's time; ValueError when the object is not a capture event."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    data, meta = obj.get("captureData"), obj.get("eventMetadata")
    if not isinstance(data, dict) or not isinstance(meta, dict):
        raise ValueError("missing captureData or eventMetadata")
    for name, mode in (("endpointInput", "INPUT"), ("endpointOutput", "OUTPUT")):
        block = data.get(name)
        if not isinstance(block, dict) or block.get("mode") != mode or not isinstance(block.get("data"), str) \
                or block.get("encoding") not in ("JSON", "CSV", "BASE64"):
            raise ValueError(f"malformed {name}")
        if block["encoding"] == "BASE64":
            try:
                base64.b64decode(block["data"], validate=True)
            except binascii.Error as err:
                raise ValueError(f"{name} is not valid BASE64") from err
    if not isinstance(meta.get("eventId"), str):
        raise ValueError("missing eventId")
    if lone_surrogate(meta["eventId"]):  # no report, table or feedback could name the event
        raise ValueError(f"{LONE_SURROGATE_ID} ({clip(ascii(meta['eventId'][:SHOWN_CHARS]), SHOWN_CHARS)})")
    return parse_time(meta.get("inferenceTime"))


# How far an event's inferenceTime may be from the hour its object is filed under (the path's YYYY/MM/DD/HH, UTC)
# and still be found by every window holding it. SageMaker files an object by when it was written, so a request at
# 07:59:59 is often under 08/ (and one at 23:59:59 under the next day's 00/); a skewed clock can file it early.
FILING_MARGIN = timedelta(hours=1)


def filing_hours(when: datetime) -> list[datetime]:
    """The hour folders an event of time ``when`` may be filed under (within FILING_MARGIN), its own hour first."""
    when = _utc(when)
    own = when.replace(minute=0, second=0, microsecond=0)
    steps = -(-FILING_MARGIN // timedelta(hours=1))  # whole hours on each side
    around = [own + timedelta(hours=k) for k in range(-steps - 1, steps + 2) if k]
    return [own] + [hour for hour in around
                    if hour - FILING_MARGIN <= when < hour + timedelta(hours=1) + FILING_MARGIN]


FETCH_WORKERS = 10  # objects fetched (and folders listed) at once by a read: botocore pools 10 connections per client
DAYS_LISTED = 45  # a window over at most this many days is listed day by day, a longer one month by month
MONTHS_LISTED = 120  # ... and one over more months than this as the whole history, in one listing
_HOUR = timedelta(hours=1)


def fetch_in_order(lake: DataLake, keys: Iterable[str],
                   workers: int = FETCH_WORKERS) -> Generator[Future[bytes], None, None]:
    """``lake.get_bytes`` of each key as a future, in key order, ``workers`` fetched at a time and at most twice as
    many held ahead of the caller: on S3 each GET waits 20-50 ms, and one after another a day of a few hundred
    objects took seconds. A failed fetch raises from its future's ``result()``, at its turn, as the sequential read
    did. Wrap it in ``contextlib.closing`` when the caller may stop early: closing cancels what has not started."""
    pending = iter(keys)
    with ThreadPoolExecutor(workers, thread_name_prefix="lake-fetch") as pool:
        queue: deque[Future[bytes]] = deque(pool.submit(lake.get_bytes, key) for key in islice(pending, 2 * workers))
        try:
            while queue:
                future = queue.popleft()
                queue.extend(pool.submit(lake.get_bytes, key) for key in islice(pending, 1))
                yield future
        finally:
            for future in queue:
                future.cancel()


def _in_parallel(listings: list[Callable[[], list[str]]]) -> list[str]:
    """The keys of ``listings`` (FETCH_WORKERS run at once), concatenated in their order."""
    if len(listings) <= 1:
        return [key for listing in listings for key in listing()]
    with ThreadPoolExecutor(min(FETCH_WORKERS, len(listings)), thread_name_prefix="lake-list") as pool:
        return [key for keys in pool.map(lambda listing: listing(), listings) for key in keys]


def _folder(day: date, depth: int) -> str:
    """``YYYY/``, ``YYYY/MM/`` or ``YYYY/MM/DD/`` (``depth`` 1, 2 or 3) of ``day``, as the capture layout names it."""
    return "/".join((f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}")[:depth]) + "/"


def _window_folders(start: datetime, end: datetime | None, now: datetime) -> tuple[list[str], date, int] | None:
    """The date folders (under a variant's) holding every hour an event of ``[start, end)`` may be filed under, the
    last day they cover and their depth (3: days; 2: months, for a window over more than DAYS_LISTED days). With no
    end they reach today, and later folders are looked for by name (:func:`_later_keys`). None: list everything (a
    window over more than MONTHS_LISTED months, or reaching past datetime's range)."""
    try:
        # The hours read are those h with h + 1 h + FILING_MARGIN > start and h < end + FILING_MARGIN.
        first = (_floor_hour(start - FILING_MARGIN - _HOUR) + _HOUR).date()
        last = _floor_hour(end + FILING_MARGIN - timedelta(microseconds=1)).date() if end else max(first, now.date())
    except OverflowError:
        return None
    if (last - first).days < DAYS_LISTED:
        return [_folder(first + timedelta(days=n), 3) for n in range((last - first).days + 1)], last, 3
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    if months > MONTHS_LISTED:
        return None
    return [f"{(first.month - 1 + n) // 12 + first.year:04d}/{(first.month - 1 + n) % 12 + 1:02d}/"
            for n in range(months)], last, 2


def _floor_hour(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def _later_keys(lake: DataLake, variant: str, last: date, depth: int) -> list[str]:
    """The keys of ``variant``'s folders named after the day (or month) ``last``: an endpoint whose clock runs ahead
    of ours files into them, and a window with no end holds its events. One folder listing per level (year, month,
    day); the later folders, normally none, are listed whole."""
    later: list[str] = []
    folder = variant
    for part in _folder(last, depth).split("/")[:depth]:
        later += [sub for sub in lake.list_folders(folder) if sub[len(folder):-1] > part]
        folder += part + "/"
    return [key for sub in later for key in lake.list(sub)]


def _capture_keys(lake: DataLake, prefix: str, start: datetime | None, end: datetime | None, *,
                  variant_folders: bool) -> list[str]:
    """The keys under ``prefix`` (an endpoint's capture, a variant's, or an endpoint's errors stream) a read of
    ``[start, end)`` looks at, sorted as one listing of ``prefix`` gives them: every one without a start; else those
    of the window's days (see :func:`_window_folders`), in every variant folder of ``prefix`` when ``variant_folders``
    (an endpoint's capture) or right under it, listed FETCH_WORKERS at a time."""
    window = _window_folders(start, end, datetime.now(timezone.utc)) if start is not None else None
    if window is None:
        return lake.list(prefix)
    folders, last, depth = window
    variants = lake.list_folders(prefix) if variant_folders else [prefix]
    listings: list[Callable[[], list[str]]] = [partial(lake.list, each + folder) for each in variants
                                               for folder in folders]
    if end is None:
        listings += [partial(_later_keys, lake, each, last, depth) for each in variants]
    return sorted(_in_parallel(listings))


LOGGED_PROBLEMS = 20  # problems of one read logged (each is in the read's problems, hence the monitor's report)


def _warn(read: CaptureRead, message: str, *args: Any) -> None:
    """Log a read's problem, up to LOGGED_PROBLEMS of them: 300,000 cut lines wrote 54 MB to stderr."""
    if len(read.problems) <= LOGGED_PROBLEMS:
        log.warning(message, *args)
    if len(read.problems) == LOGGED_PROBLEMS:
        log.warning("capture read: further problems are counted in the read (the monitor's report), not logged")


def _outside_window(hour: datetime, start: datetime | None, end: datetime | None) -> bool:
    """Whether no event of ``[start, end)`` may be filed under the hour folder ``hour`` (FILING_MARGIN)."""
    return (end is not None and hour >= end + FILING_MARGIN) or \
        (start is not None and hour + timedelta(hours=1) + FILING_MARGIN <= start)


def read_capture(lake: DataLake, endpoint: str, start: datetime | None = None, end: datetime | None = None,
                 variant: str | None = None, ids: Collection[str] | None = None) -> CaptureRead:
    """Captured events of ``endpoint`` with ``start <= inferenceTime < end``, oldest first.

    ``ids`` (retraining's: the event and inference ids its feedback names): only the events whose event id or
    inference id is one of them (compared without case), and every copy of a request read (the events of its
    inference id: a client's retries, later ones found as they come, earlier ones by a second pass over the objects,
    made only when such ids were learned). Only those lines are parsed; the others are passed over by their ids,
    read as the bytes name them (a line whose ids the bytes do not show plainly, a JSON escape in one, is parsed to
    be sure), and malformed lines are counted among those parsed. Every event was held, the whole
    history's: about 1 GB a 200,000 requests.

    The window is its events' inferenceTime (an instant: any offset is read as UTC), not their path: the objects of
    the window's hours are read with FILING_MARGIN on each side, so an event filed up to an hour away from its own
    hour is found. Lines further from their path hour and outside the window are listed in ``misfiled``.

    What is listed: with no start, every key of the endpoint (or ``variant``), the whole history as ever. With a
    start, only the day folders (``<variant>/YYYY/MM/DD/``; month folders for a window over more than DAYS_LISTED
    days) of the hours read, in each variant folder, and with no end also every folder named after today (a clock
    ahead of ours files there): a daily monitor listed all of history, ~9 S3 requests per variant and year, growing
    for ever. Objects are fetched FETCH_WORKERS at a time and read in key order, so the result is the one a
    sequential read of every key gives for the window's events, malformed lines and misfiled lines.

    Nothing under the folders listed is skipped silently: malformed lines are counted (and described in
    ``problems``), and so are keys that do not follow the capture layout. Keys outside them (of other days, or not
    in a date folder at all) are no longer examined when the window has a start.
    """
    _check_name(endpoint, "endpoint")
    prefix = f"{ZONE}/{endpoint}/" + (f"{_check_name(variant, 'variant')}/" if variant else "")
    start = _utc(start) if start else None
    end = _utc(end) if end else None
    result = CaptureRead([])
    wanted = None if ids is None else {str(name).lower() for name in ids}
    stamped: list[tuple[datetime, dict[str, Any]]] = []
    plan: list[tuple[str, datetime | str]] = []  # in key order: a key to read and its hour, or a problem to report
    for key in _capture_keys(lake, prefix, start, end, variant_folders=not variant):
        match = _KEY.fullmatch(key)
        if not match:
            plan.append((key, "not in the capture layout"))
            continue
        try:
            hour = datetime(int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]), tzinfo=timezone.utc)
        except ValueError:
            plan.append((key, "impossible date in the path"))
            continue
        if _outside_window(hour, start, end):
            continue
        plan.append((key, hour))
    parsed: set[tuple[str, int]] = set()  # (key, line) of the lines read for good: a second pass reads each once

    def read(asked: set[str] | None, again: bool) -> None:
        """Read the plan's objects: every line (``asked`` None), else the lines naming one of ``asked``'s ids, which
        grows with the inference ids of those read (a retry's later copies); ``again``: a second pass, its problems
        said by the first."""
        with closing(fetch_in_order(lake, [key for key, hour in plan if isinstance(hour, datetime)])) as fetched:
            for key, filed in plan:
                if not isinstance(filed, datetime):
                    if not again:
                        result.problems.append(f"{key}: {filed}")
                        _warn(result, "capture read: %s: %s", printable(key), filed)
                    continue
                hour = filed
                for number, line in enumerate(next(fetched).result().splitlines(), start=1):
                    if not line.strip() or (asked is not None and _passed_over(line, asked)) \
                            or (key, number) in parsed:
                        continue
                    try:
                        obj = json.loads(line)
                        when = _check_event(obj)
                    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
                        parsed.add((key, number))
                        result.malformed += 1
                        result.problems.append(f"{key}:{number}: {clip(str(err), MAX_ERROR_TEXT)}")
                        _warn(result, "capture read: %s line %d is malformed: %s", printable(key), number,
                              printable(clip(str(err), MAX_ERROR_TEXT)))
                        continue
                    if asked is not None and not _named(obj["eventMetadata"], asked):
                        continue  # not parsed for good: a second pass may want it (an id it learned)
                    parsed.add((key, number))
                    if (start is None or when >= start) and (end is None or when < end):
                        stamped.append((when, obj))
                    elif not hour - FILING_MARGIN <= when < hour + timedelta(hours=1) + FILING_MARGIN:
                        result.misfiled.append(f"{key}:{number}: inferenceTime {when:%Y-%m-%dT%H:%M:%SZ}")

    first = None if wanted is None else set(wanted)
    read(first, again=False)
    if wanted is not None and first is not None and first - wanted:  # inference ids learned: their earlier copies
        read(first - wanted, again=True)
    stamped.sort(key=lambda pair: pair[0])  # stable: same-second events keep file and line order
    result.events = [obj for _when, obj in stamped]
    return result


_INFERENCE_ID_IN_LINE = re.compile(rb'"inferenceId"\s*:\s*"([^"\\]{1,1024})"')


def _passed_over(line: bytes, wanted: set[str]) -> bool:
    """Whether a capture line is certainly none of ``wanted``'s events, by the ids its bytes show: its event id, and
    its inference id when it has one. A line whose ids are not plainly there (escaped, or the line malformed) is
    not passed over: it is parsed, and judged by what it holds."""
    event = _EVENT_ID_IN_LINE.search(line)
    if event is None:
        return False
    inference = _INFERENCE_ID_IN_LINE.search(line)
    if inference is None and b'"inferenceId"' in line:
        return False
    shown = [event.group(1)] if inference is None else [event.group(1), inference.group(1)]
    return not any(name.decode("utf-8", "replace").lower() in wanted for name in shown)


def _named(meta: dict[str, Any], wanted: set[str]) -> bool:
    """Whether an event's metadata names one of ``wanted``'s ids; its inference id is then wanted too (a retry's
    later copies, read after it)."""
    names = [str(meta[name]).lower() for name in ("eventId", "inferenceId") if isinstance(meta.get(name), str)]
    if not any(name in wanted for name in names):
        return False
    wanted.update(names)
    return True


def captured_patients(lake: DataLake, endpoint: str, event_ids: Iterable[str]) -> dict[str, int]:
    """Of ``event_ids``, those with a captured request of ``endpoint`` in the lake (any variant) → how many patients
    that request held (its answer's predictions; ``UNCOUNTED`` when the answer cannot be read).

    Objects are read only for the hours the ids carry (the local endpoint's UUIDv7) and those an event may be filed
    under (:func:`filing_hours`), listed by their day folders in each variant folder (up to DAYS_LISTED days; more,
    one listing of the endpoint's capture); all of them once when an id carries no time (SageMaker's event ids),
    whatever the number of ids asked about. Objects are fetched FETCH_WORKERS at a time, and only the lines of the ids
    asked about are parsed. Spooled events a running endpoint has not shipped yet are not seen.
    """
    # A UUIDv7 past datetime's range (after year 9999) names no hour and was never captured: not a reason to read
    # every hour, as an id without a time is.
    wanted = {event_id for event_id in event_ids
              if event_time(event_id) is not None or _uuid7_millis(event_id) is None}
    if not wanted:
        return {}
    times = [event_time(event_id) for event_id in wanted]
    hours = None if any(t is None for t in times) else {hour for t in times if t is not None
                                                        for hour in filing_hours(t)}
    by_id = {event_id.lower(): event_id for event_id in wanted} | {event_id: event_id for event_id in wanted}
    prefix = f"{ZONE}/{_check_name(endpoint, 'endpoint')}/"
    days = sorted({hour.date() for hour in hours}) if hours is not None else []
    if hours is None or len(days) > DAYS_LISTED:
        keys = lake.list(prefix)
    else:
        keys = sorted(_in_parallel([partial(lake.list, variant + _folder(day, 3))
                                    for variant in lake.list_folders(prefix) for day in days]))
    selected: list[str] = []
    for key in keys:
        match = _KEY.fullmatch(key)
        if not match:
            continue
        if hours is not None:
            try:
                hour = datetime(int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]), tzinfo=timezone.utc)
            except ValueError:
                continue
            if hour not in hours:
                continue
        selected.append(key)
    found: dict[str, int] = {}
    with closing(fetch_in_order(lake, selected)) as fetched:
        for data in fetched:
            found.update(_patients_of(data.result(), by_id))
    return found


def _answered_patients(line: bytes) -> int:
    """How many patients a capture line's answer holds; UNCOUNTED when it cannot be read."""
    try:
        output = json.loads(line)["captureData"]["endpointOutput"]
        return len(answer_predictions(decode_payload(output), output.get("observedContentType")))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, binascii.Error):
        return UNCOUNTED


@dataclass
class ErrorsRead:
    """Refused requests in time order (unless read for counts only), with counts by status and by reason (the
    message)."""

    events: list[dict[str, Any]]
    total: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    # Objects under the folders read whose names do not end in .jsonl (not the stream's: not read), as the capture
    # read counts the keys outside its layout; the first STRAY_EXAMPLES of them named (clipped, printable).
    strays: int = 0
    stray_examples: list[str] = field(default_factory=list)

    def summary(self, top: int = 10) -> dict[str, Any]:
        return {"total": self.total, "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_reason": [{"reason": r, "count": n} for r, n in self.by_reason.most_common(top)],
                "malformed": self.malformed, "strays": self.strays, "stray_examples": list(self.stray_examples)}

    def stray(self, key: str) -> None:
        """Count an object of the errors stream's folders that is not one of its objects (its name)."""
        self.strays += 1
        if len(self.stray_examples) < STRAY_EXAMPLES:
            self.stray_examples.append(clip(printable(key), MAX_ERROR_TEXT))
        if self.strays <= LOGGED_PROBLEMS:
            log.warning("errors stream read: %s is not a .jsonl object of the stream, not read", printable(key))
        if self.strays == LOGGED_PROBLEMS:
            log.warning("errors stream read: further objects not of the stream are counted in the read (the "
                        "monitor's report), not logged")

    def count(self, obj: dict[str, Any]) -> None:
        self.total += 1
        self.by_status[obj["status"]] += 1
        # Without the event id (records written before it was cut from the message): one reason, not one per id.
        # Redacted and bounded as the endpoint writes it, whatever wrote the line; no lone surrogate (the report).
        error = redact(without_event_id(str(obj.get("error")), obj.get("eventId")))
        reason = printable(f"{obj['status']} {clip(str(obj.get('route')), SHOWN_CHARS)}: {error}")
        if reason not in self.by_reason and len(self.by_reason) >= MAX_REASONS:
            reason = OTHER_REASONS
        self.by_reason[reason] += 1


_ERRORS_KEY = re.compile(r"capture-errors/[^/]+/(?P<y>[0-9]{4})/(?P<m>[0-9]{2})/(?P<d>[0-9]{2})/(?P<h>[0-9]{2})/"
                         r"[^/]+\.jsonl")  # always fullmatch
# Reasons told apart by a read of the errors stream: a refusal's message names what the client sent wrong (a field,
# a type), so a stream of junk may hold as many reasons as requests; past this many, the rest are counted together.
MAX_REASONS = 1000
OTHER_REASONS = "(other reasons, past the MAX_REASONS told apart)"
STRAY_EXAMPLES = 5  # objects not of the errors stream a read names (all are counted)


def _http_status(value: Any) -> bool:
    """Whether a refusal's ``status`` is an HTTP status code (an int of 100-599): anything else makes its line
    malformed (``Infinity`` failed the read; 50,000 made-up statuses made a 900 KB report)."""
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def read_errors(lake: DataLake, endpoint: str, start: datetime | None = None, end: datetime | None = None, *,
                keep_events: bool = True) -> ErrorsRead:
    """The errors stream of ``endpoint`` (``capture-errors/<endpoint>/``) with ``start <= time < end``; with
    ``keep_events`` false, their counts only (the monitor's summary: a day of junk requests is not held in memory).

    A line's time, not its path, places it; an object is filed under its lines' own hour (:class:`DataCapture`), so
    a window with a start lists only its days' folders, as :func:`read_capture` does, and reads the objects of its
    hours with FILING_MARGIN on each side (objects outside the layout under those folders are read whole): the
    monitor's daily read listed and fetched every refusal ever made. Objects listed whose names do not end in
    ``.jsonl`` are not read but counted (``strays``, the first STRAY_EXAMPLES named), as :func:`read_capture` counts
    the keys outside its layout: they were skipped silently."""
    _check_name(endpoint, "endpoint")
    start = _utc(start) if start else None
    end = _utc(end) if end else None
    result = ErrorsRead([])
    stamped: list[tuple[datetime, dict[str, Any]]] = []
    keys = []
    for key in _capture_keys(lake, f"{ERRORS_ZONE}/{endpoint}/", start, end, variant_folders=False):
        if not key.endswith(".jsonl"):
            result.stray(key)  # counted, as read_capture counts the keys outside its layout; never read
            continue
        match = _ERRORS_KEY.fullmatch(key)
        if match:
            try:
                hour = datetime(int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]),
                                tzinfo=timezone.utc)
            except ValueError:
                hour = None
            if hour is not None and _outside_window(hour, start, end):
                continue
        keys.append(key)
    with closing(fetch_in_order(lake, keys)) as fetched:
        for data in fetched:
            for line in data.result().splitlines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    when = parse_time(obj["time"].replace("Z", "+00:00"), "time")
                    if not _http_status(obj["status"]):
                        raise ValueError("not an HTTP status")
                except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                    result.malformed += 1
                    continue
                if (start is None or when >= start) and (end is None or when < end):
                    if keep_events:
                        stamped.append((when, obj))
                    else:
                        result.count(obj)
    stamped.sort(key=lambda pair: pair[0])
    for _when, obj in stamped:
        result.events.append(obj)
        result.count(obj)
    return result
