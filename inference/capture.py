"""Data capture in SageMaker's layout, written to the lake's ``capture/`` zone off the request path.

SageMaker Model Monitor (and our own monitoring jobs) read captured traffic as JSON Lines under
``<capture prefix>/<endpoint>/<variant>/YYYY/MM/DD/HH/<mm-ss-mmm>-<uuid>.jsonl``, one event per
line. Writing the same layout locally means the monitoring code cannot tell the local endpoint
from a real one. A request only pays for a sampling decision and a non-blocking queue put; a
background thread batches the lines and writes one object per flush (per hour of the batch).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import queue
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from diagnosa.lake import DataLake

log = logging.getLogger("diagnosa.capture")

ZONE = "capture"
DEFAULT_VARIANT = "AllTraffic"
EVENT_VERSION = "0"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker endpoint / variant names
_KEY = re.compile(r"^capture/(?P<endpoint>[^/]+)/(?P<variant>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
                  r"(?P<h>\d{2})/[^/]+\.jsonl$")
_JSON_TYPES = ("application/json",)
_CSV_TYPES = ("text/csv",)
_WRITE_ATTEMPTS = 3


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{what} {value!r} is not a valid SageMaker name (letters, digits, '-'; up to 63)")
    return value


def _utc(when: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as SageMaker stamps every event in UTC."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


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


def decode_payload(io: dict[str, Any]) -> bytes:
    """The original bytes of an ``endpointInput``/``endpointOutput`` block."""
    if io["encoding"] == "BASE64":
        return base64.b64decode(io["data"], validate=True)
    return str(io["data"]).encode("utf-8")


def capture_line(event_id: str, inference_id: str | None, input_body: bytes, input_content_type: str | None,
                 output_body: bytes, output_content_type: str | None, when: datetime) -> dict[str, Any]:
    """One event exactly as SageMaker data capture writes it."""
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


@dataclass
class _Event:
    when: datetime
    args: tuple[Any, ...]


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = True


_CLOSE = object()


@dataclass
class _Pending:
    key: str
    data: bytes
    lines: int
    attempts: int = 0


class DataCapture:
    """Samples invocations and writes them, batched, to ``capture/<endpoint>/<variant>/...`` in the lake."""

    def __init__(self, lake: DataLake, endpoint_name: str, variant: str = DEFAULT_VARIANT,
                 sampling_percentage: int = 100, flush_seconds: float = 1.0, seed: int | None = None,
                 max_queue: int = 10_000, max_batch: int = 1_000):
        if isinstance(sampling_percentage, bool) or not isinstance(sampling_percentage, int) \
                or not 0 <= sampling_percentage <= 100:
            raise ValueError(f"sampling_percentage must be an integer from 0 to 100, got {sampling_percentage!r}")
        if not flush_seconds > 0:
            raise ValueError(f"flush_seconds must be positive, got {flush_seconds!r}")
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be at least 1")
        self.lake = lake
        self.endpoint_name = _check_name(endpoint_name, "endpoint_name")
        self.variant = _check_name(variant, "variant")
        self.sampling_percentage = sampling_percentage
        self.flush_seconds = float(flush_seconds)
        self.max_batch = max_batch
        self.prefix = f"{ZONE}/{self.endpoint_name}/{self.variant}/"
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # the random generator and the counters are shared by request threads
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._retry: list[_Pending] = []
        self._closed = False
        self.sampled = 0  # events accepted by sampling and queued
        self.dropped = 0  # sampled but not queued (queue full or capture closed)
        self.written = 0  # events written to the lake
        self.lost = 0  # events whose object could not be written after retries
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

    def record(self, event_id: str, inference_id: str | None, input_body: bytes, input_content_type: str | None,
               output_body: bytes, output_content_type: str | None, when: datetime) -> bool:
        """Queue one event if sampled; never blocks and never raises into the request. True if queued."""
        if not self._sample():
            return False
        if self._closed:
            self._count("dropped")
            log.warning("capture for %s is closed: event %s not captured", self.endpoint_name, event_id)
            return False
        when = _utc(when)
        try:
            self._queue.put_nowait(_Event(when, (event_id, inference_id, bytes(input_body), input_content_type,
                                                 bytes(output_body), output_content_type, when)))
        except queue.Full:
            dropped = self._count("dropped")
            log.warning("capture queue full: event %s not captured (%d dropped so far)", event_id, dropped)
            return False
        self._count("sampled")
        return True

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        batch: list[_Event] = []
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._write(batch)
                batch, deadline = [], None
                continue
            if isinstance(item, _Event):
                batch.append(item)
                if deadline is None:
                    deadline = time.monotonic() + self.flush_seconds
                if len(batch) >= self.max_batch:
                    self._write(batch)
                    batch, deadline = [], None
                continue
            ok = self._write(batch)
            batch, deadline = [], None
            if isinstance(item, _Flush):
                item.ok = ok
                item.done.set()
            elif item is _CLOSE:
                return

    def _write(self, batch: list[_Event]) -> bool:
        """Write the batch (one object per hour it spans) plus earlier failures; True if nothing is left."""
        pending = self._retry
        self._retry = []
        by_hour: dict[datetime, list[_Event]] = {}
        for event in batch:
            by_hour.setdefault(event.when.replace(minute=0, second=0, microsecond=0), []).append(event)
        for events in by_hour.values():
            lines = []
            for event in events:
                try:
                    lines.append(json.dumps(capture_line(*event.args), ensure_ascii=False, separators=(",", ":")))
                except Exception:  # noqa: BLE001  (a bad event must not take the batch down)
                    self.lost += 1
                    log.exception("capture event %s could not be serialised", event.args[0])
            if lines:
                pending.append(_Pending(self._key(events[0].when), ("\n".join(lines) + "\n").encode("utf-8"),
                                        len(lines)))
        for item in pending:
            try:
                self.lake.put_bytes(item.key, item.data)
            except Exception as err:  # noqa: BLE001  (storage outages are retried, then counted)
                item.attempts += 1
                if item.attempts >= _WRITE_ATTEMPTS:
                    self.lost += item.lines
                    log.error("capture object %s (%d events) lost after %d attempts: %s", item.key, item.lines,
                              item.attempts, err)
                else:
                    log.warning("capture object %s not written (attempt %d): %s", item.key, item.attempts, err)
                    self._retry.append(item)
            else:
                self.written += item.lines
                log.debug("captured %d events to %s", item.lines, item.key)
        return not self._retry

    def _key(self, when: datetime) -> str:
        millis = when.microsecond // 1000
        return f"{self.prefix}{when:%Y/%m/%d/%H}/{when:%M-%S}-{millis:03d}-{uuid.uuid4()}.jsonl"

    # -- control -----------------------------------------------------------------------------
    def flush(self, timeout: float | None = 30.0) -> bool:
        """Write everything queued so far; True when it is all in the lake."""
        if self._closed or not self._thread.is_alive():
            return not self._retry and self._queue.empty()
        request = _Flush()
        self._queue.put(request)
        return request.done.wait(timeout) and request.ok

    def close(self, timeout: float | None = 30.0) -> None:
        """Drain the queue, write it and stop the writer thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_CLOSE)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("capture writer for %s did not stop within %s s", self.endpoint_name, timeout)
        elif self._retry:
            self._write([])  # one last attempt for objects that failed before
            for item in self._retry:
                self.lost += item.lines
                log.error("capture object %s (%d events) lost at close", item.key, item.lines)
            self._retry = []

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

    def __iter__(self) -> Iterator[Any]:
        return iter((self.events, self.malformed))


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"inferenceTime {value!r} is not a string")
    return _utc(datetime.fromisoformat(value))


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
    return _parse_time(meta.get("inferenceTime"))


def read_capture(lake: DataLake, endpoint: str, start: datetime | None = None, end: datetime | None = None,
                 variant: str | None = None) -> CaptureRead:
    """Captured events of ``endpoint`` with ``start <= inferenceTime < end``, oldest first.

    Nothing is skipped silently: malformed lines are counted (and described in ``problems``),
    and so are keys under the endpoint's prefix that do not follow the capture layout.
    """
    _check_name(endpoint, "endpoint")
    prefix = f"{ZONE}/{endpoint}/" + (f"{_check_name(variant, 'variant')}/" if variant else "")
    start = _utc(start) if start else None
    end = _utc(end) if end else None
    result = CaptureRead([])
    stamped: list[tuple[datetime, dict[str, Any]]] = []
    for key in lake.list(prefix):
        match = _KEY.match(key)
        if not match:
            result.problems.append(f"{key}: not in the capture layout")
            log.warning("capture read: %s is not in the capture layout", key)
            continue
        try:
            hour = datetime(int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]), tzinfo=timezone.utc)
        except ValueError:
            result.problems.append(f"{key}: impossible date in the path")
            log.warning("capture read: %s has an impossible date", key)
            continue
        if (end is not None and hour >= end) or (start is not None and hour + timedelta(hours=1) <= start):
            continue
        for number, line in enumerate(lake.get_bytes(key).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                when = _check_event(obj)
            except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                result.malformed += 1
                result.problems.append(f"{key}:{number}: {err}")
                log.warning("capture read: %s line %d is malformed: %s", key, number, err)
                continue
            if (start is None or when >= start) and (end is None or when < end):
                stamped.append((when, obj))
    stamped.sort(key=lambda pair: pair[0])  # stable: same-second events keep file and line order
    result.events = [obj for _when, obj in stamped]
    return result
