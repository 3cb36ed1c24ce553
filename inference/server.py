"""The local endpoint: the SageMaker container contract and the runtime API over real HTTP.

``/ping`` and ``/invocations`` are what SageMaker calls inside a serving container;
``/endpoints/{name}/invocations`` is the public ``sagemaker-runtime`` ``InvokeEndpoint`` route,
so ``boto3.client("sagemaker-runtime", endpoint_url=endpoint.url)`` (and our own client) talk to
this server exactly as to a deployed endpoint, errors included. Every invocation gets an event id
(``X-Diagnosa-Event-Id``) that data capture stores and doctors' feedback refers to.

Transport rules: HTTP/1.1 keep-alive, a socket timeout so a silent client cannot hold a thread, a
whole-request deadline (request line, headers and body) so a client sending one byte at a time
cannot either (408, then close), a cap on open connections and on those of one client address (more are
answered 503), a few connections beyond the cap kept for ``/ping`` alone (the health check answers while slow
clients hold every slot), bodies bounded before they are read, one framing for every route (a body on a
route that takes none is refused and the connection closed, never read as the next request), header lines
checked as RFC 9112 writes them (400 and close otherwise, never dropped), and a clean stop (no new connections,
in-flight requests finish, capture flushed) on :meth:`EndpointServer.stop` or SIGTERM/SIGINT.
"""
from __future__ import annotations

import hmac
import http.client
import io
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import unquote

from diagnosa.labels import CATEGORIES
from diagnosa.lake import LakeError, storage_errors
from diagnosa.model import ModelLoadError, model_dataset, model_labels
from inference import handler
from inference.capture import DEFAULT_VARIANT, DataCapture, issued_later, new_event_id, redacted_traceback
from inference.limits import CAPTURE_HEADER, printable_line, token_problem
from inference.workers import Outcome, WorkerPool, WorkerUnavailable, score

log = logging.getLogger("diagnosa.server")

ACCOUNT = "000000000000"  # the account id AWS-shaped error messages name
SOCKET_TIMEOUT = 10.0  # seconds a connection may stay silent (idle keep-alive or a stalled body)
LINGER_SECONDS = 2.0  # after refusing an oversized body, how long its remainder is discarded before closing
STOP_TIMEOUT = 30.0
REQUEST_DEADLINE = 30.0  # seconds from a request's first byte to its last (line, headers and body)
MAX_CONNECTIONS = 256  # open connections (one thread each); more are answered 503 and closed
# Open connections of one client address: one client cannot take every slot. Behind a proxy every client shares the
# proxy's address (and on loopback every local client shares 127.0.0.1): None turns it off (docs/serving.md).
MAX_CLIENT_CONNECTIONS = 128
PING_RESERVE = 8  # connections beyond the caps that may only ask /ping (one request each, then closed)
PING_DEADLINE = 2.0  # seconds a reserve connection has to send its whole request
# Seconds a reserve connection is never evicted for: a client's request follows its connection at once, but on a
# busy machine not always before a newer connection comes, and one shut before its bytes came read nothing.
RESERVE_GRACE = 0.25
EMPTY_LINES = 4  # empty lines ignored before a request line (RFC 9112 2.2: at least one)
MAX_HEADER_BYTES = 64 * 1024  # the header block (the stdlib allows 100 lines of 64 KB: 6.4 MB held per request)
MAX_ECHO = 200  # characters of a request's own text (path, method, header value) an error message repeats
MODEL_ERROR_QUOTED = 1000  # characters of a refusal quoted in the 424's "message" (the whole is in OriginalMessage)
JSON = "application/json"
FEEDBACK_MAX_BYTES = 16 * 1024  # a feedback body: a few short fields (a 1000-character note at most)
FEEDBACK_RETRY_AFTER = 60  # seconds a client is told to wait before sending feedback its lake could not store
_RUNTIME = re.compile(r"^/endpoints/([^/]+)/invocations$")
_DIGITS = re.compile(r"^[0-9]{1,15}$")
_PING, _INVOCATIONS, _RUNTIME_ROUTE, _FEEDBACK = "ping", "invocations", "runtime", "feedback"
_ALLOWED = {_PING: ("GET", "HEAD"), _INVOCATIONS: ("POST",), _RUNTIME_ROUTE: ("POST",), _FEEDBACK: ("POST",)}
_BODY_ROUTES = (_INVOCATIONS, _RUNTIME_ROUTE, _FEEDBACK)  # the routes (with POST) that read a body
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.1: a field name
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # in a field value: NUL, CR, LF and the other controls (not tab)


def _shown(text: str, limit: int = MAX_ECHO) -> str:
    """A request's own text as an error message repeats it: repr'd (no control characters), cut to ``limit``."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text):,} characters)"


def _header_line_problem(line: bytes) -> str | None:
    """What is wrong with one raw header line (RFC 9112 5: ``field-name ":" OWS field-value OWS``), or None.

    The stdlib's parser is lenient: a line without a colon or with a space before it ends the headers there (the
    rest, Content-Type and Content-Length included, silently became "body"), obs-fold joins lines, NUL and a bare
    CR pass. Each is a 400 naming the header."""
    text = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line
    if text[:1] in (b" ", b"\t"):
        return f"obsolete line folding (a header line starting with whitespace: {_shown(text.decode('latin-1'), 40)})"
    name, colon, value = text.partition(b":")
    shown = _shown(name.decode("latin-1"), 40)
    if not colon:
        return f"a header line without a colon: {_shown(text.decode('latin-1'), 40)}"
    if not _TOKEN.fullmatch(name):
        return (f"header name {shown} is not a token" + (" (whitespace before the colon)"
                                                          if name[-1:] in (b" ", b"\t") else ""))
    if _CONTROL.search(value):
        return f"header {shown}: its value holds a control character (NUL, CR, LF...)"
    return None


def _path(target: str) -> str:
    """The path of a request target (origin or absolute form), query and fragment dropped; never raises."""
    if not target.startswith("/") and "://" in target:
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    return target.split("?", 1)[0].split("#", 1)[0]


def _route(path: str) -> tuple[str | None, str | None]:
    """``(route, endpoint name)`` for a request path (query ignored); route None when unknown."""
    if path == "/ping":
        return _PING, None
    if path == "/invocations":
        return _INVOCATIONS, None
    if path == "/feedback":
        return _FEEDBACK, None
    match = _RUNTIME.fullmatch(path)
    if match:
        return _RUNTIME_ROUTE, unquote(match.group(1))
    return None, None


class _Reply(Exception):
    """A response decided before the handler runs (bad transport, unknown endpoint...)."""

    def __init__(self, status: int, message: str, *, close: bool = False, linger: bool = False,
                 aws_type: str = "ValidationError", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.linger = linger
        self.aws_type = aws_type
        self.headers = headers or {}


class _DeadlineSocketReader(io.RawIOBase):
    """The request stream with a whole-request deadline: a per-read timeout alone never fires for a client
    that sends a byte every few seconds. Armed by each request's first byte; reads after the deadline
    raise TimeoutError (the handler answers 408 or drops the connection)."""

    def __init__(self, sock: socket.socket, read_timeout: float, deadline_seconds: float):
        self.sock = sock
        self.read_timeout = read_timeout
        self.deadline_seconds = deadline_seconds
        self.deadline: float | None = None  # None: waiting for the next request (the idle limit applies)
        self.timed_out = False  # a read of this request timed out (the handler answers 408 if nothing was sent)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                raise TimeoutError(f"the request did not arrive within {self.deadline_seconds:g} s")
            self.sock.settimeout(min(left, self.read_timeout))
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise
        finally:
            if self.deadline is not None:
                self.sock.settimeout(self.read_timeout)  # writes keep the ordinary timeout
        if n and self.deadline is None:
            self.deadline = time.monotonic() + self.deadline_seconds
        return n


class _RequestReader(io.BufferedReader):
    """The request stream, keeping the lines read while ``lines`` is a list (the header block, checked after the
    stdlib's lenient parser has read it)."""

    lines: list[bytes] | None = None

    def readline(self, size: int | None = -1, /) -> bytes:
        line = super().readline(size)
        if self.lines is not None:
            self.lines.append(line)
            if sum(map(len, self.lines)) > MAX_HEADER_BYTES:  # the base class answers it 431
                raise http.client.HTTPException(f"the header block is over {MAX_HEADER_BYTES:,} bytes")
        return line


@dataclass
class _Slot:
    """What a connection holds: an ordinary slot, or a /ping-only one (``ping_only`` says why it got no other)."""

    client: str
    ping_only: str | None = None
    settled: bool = False  # a /ping-only connection whose request arrived whole: being answered, never evicted
    evicted: bool = False  # a /ping-only connection closed to make room for a newer one
    opened: float = field(default_factory=time.monotonic)


class _Server(ThreadingHTTPServer):
    """Tracks connections so stop() can close idle keep-alive ones and wait for busy ones."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], endpoint: EndpointServer):
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.drained = threading.Condition(self.lock)
        self.connections: dict[socket.socket, bool] = {}  # socket -> busy with a request
        self.in_flight = 0
        self.accepted = 0  # connections in an ordinary slot, handed to a thread and not yet closed
        self.reserved = 0  # connections in a /ping-only slot (at most PING_RESERVE)
        self.evicting = 0  # /ping-only connections evicted whose thread has not ended yet (at most PING_RESERVE)
        self.by_client: dict[str, int] = {}  # client address -> its connections in ordinary slots
        self.slots: dict[Any, _Slot] = {}  # socket -> its slot, in the order they were accepted
        self.stopping = False
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """What escaped a connection's handler: a client that reset or dropped it before its request line ended
        (a balancer's probe, a killed client) is one line, as one dropped mid-request is, not socketserver's
        traceback on stderr; anything else is logged with its traceback."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            log.info("connection from %s port %s dropped before its request: %s", client_address[0], client_address[1],
                     err)
        else:
            log.exception("unexpected error on the connection from %s", client_address[0])

    def _full(self, client: str) -> str | None:
        """Why a new connection from ``client`` gets no ordinary slot (call under lock), or None."""
        endpoint = self.endpoint
        if self.accepted >= endpoint.max_connections:
            return f"the endpoint has {endpoint.max_connections} open connections, its limit: retry shortly"
        limit = endpoint.max_client_connections
        if limit is not None and self.by_client.get(client, 0) >= limit:
            return f"this client address has {limit} open connections, the limit per client: retry shortly"
        return None

    def _reserve(self) -> bool:
        """A /ping-only slot for a new connection (call under lock): a free one, or the one of the oldest reserve
        connection still waiting for its request, which is closed. Slow clients re-opening connections cannot
        keep the reserve: a health check (its request follows its connection at once) takes a slot from them."""
        if self.reserved < PING_RESERVE:
            self.reserved += 1
            return True
        if self.evicting >= PING_RESERVE:  # their threads are ending: the thread count stays bounded
            return False
        now = time.monotonic()
        for sock, slot in self.slots.items():
            if slot.ping_only is not None and not slot.settled and not slot.evicted \
                    and now - slot.opened >= RESERVE_GRACE:
                slot.evicted = True
                self.evicting += 1
                try:
                    # Reading only: its thread's blocked read returns b"" (what had arrived is still read first), and
                    # it answers what it read with a 503 (_Handler._evicted). Shut both ways, a client whose whole
                    # request had come but whose thread had not read it yet (a busy machine) got a silent close.
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
                return True
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        client = str(client_address[0]) if isinstance(client_address, tuple) and client_address else "?"
        with self.lock:
            full = self._full(client)
            if full is None:
                self.accepted += 1
                self.by_client[client] = self.by_client.get(client, 0) + 1
                self.slots[request] = _Slot(client)
            elif self._reserve():
                # Kept for the health check: slow clients holding every slot must not make /ping fail (and the
                # instance be replaced). The thread reads one request within PING_DEADLINE: /ping is answered,
                # anything else gets this 503.
                self.slots[request] = _Slot(client, ping_only=full)
                full = None
        if full is None:
            super().process_request(request, client_address)
            return
        # Answered on the accepting thread, small and at once: no thread for a connection we cannot serve.
        body = json.dumps({"error": full}).encode()
        try:
            request.settimeout(1.0)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode()
                            + b"\r\n\r\n" + body)
        except OSError:
            pass
        finally:
            super().shutdown_request(request)

    def evicted(self, request: Any) -> bool:
        """Whether a connection lost its /ping-only slot to a newer one."""
        with self.lock:
            slot = self.slots.get(request)
            return slot is not None and slot.evicted

    def settle(self, request: Any, settled: bool = True) -> bool:
        """Mark a /ping-only connection as being answered (or, ``settled=False``, no longer: its answer is out);
        False when it was evicted meanwhile (the thread answers 503 and ends: _Handler._evicted)."""
        with self.lock:
            slot = self.slots.get(request)
            if slot is None or slot.evicted:
                return False
            slot.settled = settled
            return True

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self.lock:
                slot = self.slots.pop(request, None)
                if slot is None:
                    pass
                elif slot.ping_only is not None:
                    if slot.evicted:
                        self.evicting -= 1
                    else:
                        self.reserved -= 1
                else:
                    self.accepted -= 1
                    left = self.by_client.get(slot.client, 1) - 1
                    if left > 0:
                        self.by_client[slot.client] = left
                    else:
                        self.by_client.pop(slot.client, None)

    def close_idle(self) -> None:
        """Wake the threads waiting for a next request on a keep-alive connection (call under lock)."""
        for sock, busy in self.connections.items():
            if not busy:
                try:
                    sock.shutdown(socket.SHUT_RD)  # their readline returns b"": the thread ends cleanly
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Diagnosa"
    timeout = SOCKET_TIMEOUT
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's delayed
    # ACK (~40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True
    server: _Server
    raw_requestline: bytes  # set by the base class before parse_request

    # -- connection bookkeeping --------------------------------------------------------------
    def setup(self) -> None:
        # StreamRequestHandler applies it to the socket; typeshed calls it a ClassVar, but setup() reads the instance's
        self.timeout = self.server.endpoint.socket_timeout  # type: ignore[misc]
        deadline = self.server.endpoint.request_deadline
        with self.server.lock:
            slot = self.server.slots.get(self.request)
            self._ping_only = slot.ping_only if slot is not None else None  # why, when in a /ping-only slot
        if self._ping_only is not None:  # a reserve slot: one quick request, so the reserve frees itself at once
            self.timeout = min(self.timeout, PING_DEADLINE)  # type: ignore[misc]
            deadline = min(deadline, PING_DEADLINE)
        super().setup()
        self.rfile.close()  # the socket's own reader, replaced by one that keeps the request's deadline
        self._reader = _DeadlineSocketReader(self.connection, self.timeout, deadline)
        self._lines = _RequestReader(self._reader)
        self.rfile = self._lines
        self._busy = False
        self._status = 0
        self._linger = False
        with self.server.lock:
            self.server.connections[self.connection] = False
            if self.server.stopping:
                self.server.close_idle()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.lock:
                self.server.connections.pop(self.connection, None)

    def parse_request(self) -> bool:
        if self._ping_only is not None and not self.server.settle(self.request, False):
            self._evicted()  # from its /ping-only slot, for a newer connection
            return False
        # A request line arrived: from here on the connection is busy and stop() waits for it.
        with self.server.lock:
            self.server.in_flight += 1
            self.server.connections[self.connection] = True
            self._busy = True
        self._started = time.perf_counter()
        for _ in range(EMPTY_LINES):
            # RFC 9112 2.2: ignore empty lines before the request line (some clients send CRLF after a body).
            if self.raw_requestline not in (b"\r\n", b"\n"):
                break
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return False
        self._header_lines: list[bytes] = []
        self._lines.lines = self._header_lines  # what the header parser reads, kept to be checked line by line
        try:
            parsed = super().parse_request()
        finally:
            self._lines.lines = None
        if self._ping_only is not None and not self.server.settle(self.request):
            self._evicted()  # while its headers came
            return False
        if not parsed:
            return False
        if self.request_version == "HTTP/0.9":  # "GET /path" with no version: answered, but not in 0.9 style
            self.send_error(400, "HTTP/0.9 requests are not supported")
            return False
        problem = self._header_problem()
        if problem is not None:
            self._linger = True  # what follows cannot be framed: discard it (bounded) so the client reads the 400
            self.send_error(400, f"malformed header: {problem}")
            return False
        return True

    def _evicted(self) -> None:
        """A /ping-only connection whose slot a newer one took: a 503 with Retry-After, then close, whatever it sent
        (the start of a request, or all of it unread when it lost the slot), not a close it cannot tell from a crash."""
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # its request line, cut or not yet parsed: a status line all the same
        try:
            self._send_json(503, {"error": f"{self._ping_only}; the connection gave its place to another: retry "
                                           "shortly"}, {"Retry-After": "1"}, close=True)
        except OSError:
            pass
        self.close_connection = True

    def _header_problem(self) -> str | None:
        """The first malformed header line (see _header_line_problem), or a defect the stdlib's parser noted."""
        for line in getattr(self, "_header_lines", ())[:-1]:  # the last is the blank line (or b"" at EOF)
            problem = _header_line_problem(line)
            if problem is not None:
                return problem
        defects = getattr(self.headers, "defects", None)
        if defects:
            return f"the header block is malformed ({type(defects[0]).__name__})"
        return None

    def handle_one_request(self) -> None:
        self._busy = False
        self._status = 0
        self._linger = False
        self.command = ""  # not the previous request's (a 408 for a request line that never finished has none)
        # A new request: the idle keep-alive limit applies until its first byte, then its deadline.
        # (Bytes of a pipelined next request already buffered start no clock: they arrived in time.)
        self._reader.deadline = None
        self._reader.timed_out = False
        try:
            super().handle_one_request()  # catches a timeout of the request line or headers and drops the connection
            if self._ping_only is not None and not self._status and self.server.evicted(self.request):
                self._evicted()  # before a byte of its request was read (parse_request was never reached)
            if self._reader.timed_out and self._reader.deadline is not None and not self._status:
                # The request had begun (a byte of it arrived) but its line or headers never finished: say so
                # (RFC 9110 15.5.9) before closing, instead of a silent close the client cannot tell from a crash.
                try:
                    self.send_error(408, f"the request line and headers did not arrive within the request deadline "
                                         f"({self._reader.deadline_seconds:g} s) or the client was silent "
                                         f"{self.timeout:g} s")
                except OSError:
                    pass
                self.close_connection = True
            if self._linger:
                if self._ping_only is not None:
                    self.server.settle(self.request, False)  # its answer is out: discarding the rest holds no reserve
                self._linger_close()
        finally:
            if self._busy:
                self._log_request()
                with self.server.lock:
                    self.server.in_flight -= 1
                    self.server.connections[self.connection] = False
                    if self.server.stopping:
                        self.close_connection = True
                        self.server.drained.notify_all()

    def version_string(self) -> str:
        return self.server_version  # no Python version in the Server header

    # -- logging: one line per request, never a body ----------------------------------------
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # replaced by _log_request, which knows the duration

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (base-class signature)
        log.warning("%s: %s", self.client_address[0], format % args)

    def _log_request(self) -> None:
        command = (getattr(self, "command", None) or "-")[:20]  # a method token may be 64 KB long
        path = _path(getattr(self, "path", "") or "")[:200] or "-"
        elapsed = 1000 * (time.perf_counter() - self._started)
        # Both escaped: a method token may hold an escape code (ESC, CSI) that would act on a terminal showing the log.
        log.info("%s %s %s %.1f ms", printable_line(command), printable_line(path), self._status or "-", elapsed)

    # -- responses ---------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = JSON, headers: dict[str, str] | None = None,
              close: bool = False) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close or self.server.stopping or self.close_connection:
            # Also when the request asked for it (or was HTTP/1.0 without keep-alive): a client that pools connections
            # put it back, and its next request on it failed unanswered (RemoteDisconnected).
            self.send_header("Connection", "close")  # also sets close_connection
        elif self.request_version == "HTTP/1.0":  # it asked for keep-alive: without this it waits for our close
            self.send_header("Connection", "keep-alive")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None,
                   close: bool = False) -> None:
        self._send(status, handler.encode_json(payload), JSON, headers, close)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Transport-level errors from the base class (bad request line, headers...) as JSON."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._status = code
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # garbage request lines still get a status line and headers
        # The stdlib's messages quote the request line ("Bad request syntax ('...')", up to 64 KB): the status line
        # gets the standard phrase, the body the message cut to a few hundred characters.
        text = message or phrase
        if explain:  # the stdlib's detail ("got more than 100 headers", the header block's size)
            text = f"{text}: {explain}"
        if len(text) > 2 * MAX_ECHO:
            text = text[:2 * MAX_ECHO] + f"… ({len(text):,} characters)"
        body = json.dumps({"error": text}).encode("utf-8")
        try:
            self.send_response(code, phrase)
            self.send_header("Content-Type", JSON)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if getattr(self, "command", None) != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:  # the client is gone (reset, or its connection evicted from a /ping-only slot)
            self.close_connection = True

    # -- methods -----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # any other method token: 405 on a known path, 404 elsewhere
            return self._dispatch
        raise AttributeError(name)

    def _body_pending(self) -> bool:
        return self.headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in self.headers

    def _reads_body(self) -> bool:
        """Whether this request's route reads a body (only then may one be sent; everywhere else it is refused and
        the connection closed, so a body can never be read as a next request)."""
        route = _route(_path(self.path))[0]
        return self._ping_only is None and route in _BODY_ROUTES and self.command in _ALLOWED[route]

    def _dispatch(self) -> None:
        path = _path(self.path)
        route, name = _route(path)
        try:
            pending = self._body_pending()
            if pending and not self._reads_body():
                # A body where none is read (GET/HEAD /ping, an unknown path, a wrong method): never left in the
                # stream to be parsed as the next request. Refused, the connection closed, the rest discarded.
                self._linger = True
            if self._ping_only is not None and not (route == _PING and self.command in _ALLOWED[_PING]):
                self._send_json(503, {"error": self._ping_only}, {"Retry-After": "1"}, close=True)
            elif "Transfer-Encoding" in self.headers and not self._reads_body():
                self._send_json(411, {"error": "chunked request bodies are not supported (and this request takes no "
                                               "body)"}, close=True)
            elif route is None:
                self._send_json(404, {"error": f"no such path {_shown(path)}"}, close=pending)
            elif self.command not in _ALLOWED[route]:
                allowed = ", ".join(_ALLOWED[route])
                self._send_json(405, {"error": f"method {_shown(self.command, 40)} not allowed here "
                                               f"(allowed: {allowed})"}, {"Allow": allowed}, close=pending)
            elif route == _PING:
                problem = self._length_problem()
                if problem is not None and problem.status == 400:  # an invalid Content-Length, as on every route
                    self._send_json(400, {"error": problem.message}, close=True)
                elif pending:
                    self._send_json(400, {"error": f"{self.command} /ping takes no body (Content-Length "
                                                   f"{_shown(self.headers['Content-Length'].strip(), 20)})"},
                                    close=True)
                else:
                    self._ping()
            elif route == _FEEDBACK:
                self._feedback()
            else:
                self._invocation(route == _RUNTIME_ROUTE, name)
        except (ConnectionError, TimeoutError) as err:  # the client went away or stalled: nothing to answer
            log.info("connection from %s dropped during %s: %s", self.client_address[0], self.command,
                     type(err).__name__)
            self.close_connection = True
            return
        except Exception:  # noqa: BLE001  (a bug here must answer 500, not drop the connection silently)
            event_id = str(uuid.uuid4())
            log.exception("unexpected error handling %s %s (event %s)", self.command, route, event_id)
            if not self._status:
                self._send_json(500, {"error": "internal error", "event_id": event_id}, close=True)
            self.close_connection = True

    # -- body --------------------------------------------------------------------------------
    def _body_limit(self) -> int:
        return FEEDBACK_MAX_BYTES if _route(_path(self.path))[0] == _FEEDBACK else handler.MAX_BODY_BYTES

    def _length_problem(self) -> _Reply | None:
        if "Transfer-Encoding" in self.headers:
            return _Reply(411, "chunked request bodies are not supported: send a Content-Length", close=True)
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return _Reply(411, "a Content-Length header is required", close=True)
        if len(set(v.strip() for v in values)) > 1 or not _DIGITS.fullmatch(values[0].strip()):
            return _Reply(400, f"invalid Content-Length {values[0][:40]!r}", close=True)
        length, limit = int(values[0].strip()), self._body_limit()
        if length > limit:
            return _Reply(413, f"the body is {length:,} bytes; the limit is {limit:,} "
                               f"({'6 MB' if limit == handler.MAX_BODY_BYTES else f'{limit // 1024} KB'})",
                          close=True, linger=True)
        return None

    def handle_expect_100(self) -> bool:
        # Refuse a body we will not read before the client sends it: no "100 Continue" then (nor for malformed
        # headers, a route that reads no body or a /ping-only connection).
        if self._header_problem() is not None or not self._reads_body() or self._length_problem() is not None:
            return True
        return super().handle_expect_100()

    def _read_body(self) -> bytes:
        problem = self._length_problem()
        if problem is not None:
            raise problem
        length = int(self.headers["Content-Length"].strip())
        try:
            body = self.rfile.read(length)
        except TimeoutError as err:
            raise _Reply(408, f"the body did not arrive in time: {err or f'silent for {self.timeout:g} s'}",
                         close=True) from None
        if len(body) < length:
            raise _Reply(400, f"the body ended after {len(body)} of {length} bytes", close=True)
        return body

    def _linger_close(self) -> None:
        """Discard what the client is still sending (bounded), so it can read our 413 before we close."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            budget = 2 * handler.MAX_BODY_BYTES
            while budget > 0 and time.monotonic() < deadline:
                self.connection.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    # -- routes ------------------------------------------------------------------------------
    def _ping(self) -> None:
        endpoint = self.server.endpoint
        close = self._ping_only is not None  # a reserve slot serves one request
        if endpoint.version is not None:
            self._send_json(200, {"status": "ok", "model_version": endpoint.version,
                                  "endpoint_name": endpoint.endpoint_name,
                                  **({"dataset": endpoint.dataset} if endpoint.dataset else {})}, close=close)
        elif endpoint.load_error is not None:
            self._send_json(500, {"status": "failed", "error": "the model failed to load (see the server log)",
                                  "endpoint_name": endpoint.endpoint_name}, close=close)
        else:
            self._send_json(503, {"status": "loading", "endpoint_name": endpoint.endpoint_name}, close=close)

    def _content_problem(self) -> _Reply | None:
        """A compressed body: refused (RFC 9110 15.5.16), never inflated here nor read as if it were not."""
        encoding = (self.headers.get("Content-Encoding") or "").strip()
        if encoding and any(part.strip().lower() != "identity" for part in encoding.split(",")):
            return _Reply(415, f"unsupported content encoding {_shown(encoding, 40)}: send the body uncompressed "
                               "(no Content-Encoding, or identity)", headers={"Accept-Encoding": "identity"})
        return None

    def _refused(self, route: str, event_id: str | None, status: int, message: str, problems: Any = (),
                 fields: Any = None) -> None:
        """A refusal to the capture's errors stream (status, message and field problems; no body, no values)."""
        capture = self.server.endpoint.capture
        if capture is None:
            return
        if fields is None:
            fields = self.server.endpoint.accepted_fields
        try:
            capture.record_error(event_id, route, status, message, problems, fields=fields)
        except Exception:  # noqa: BLE001  (recording a refusal must not change the answer)
            log.exception("refusal of event %s not recorded", event_id)

    def _feedback(self) -> None:
        """Doctors' confirmed diagnosis for a captured prediction → its object in the lake's feedback/ zone.

        201 ``{"event_id", "key"}`` (and ``event_row`` when given); a bad body is a 400 ``{"error", "fields":
        {field: problem}}`` (plus the invocations' ``errors`` list of ``{"row", "field", "problem"}``), so is an
        event_row missing for, or beyond, a request of several patients this process captured, and an empty body; 404
        for an event id this endpoint did not capture (or one naming a time in the future); 409 for one it answered
        but whose capture line could not be written; 401 without the feedback token when one is set; 413 over 16 KB;
        415 for a type other than JSON, a charset other than UTF-8 or a Content-Encoding; 503 with ``Retry-After``
        when the lake could not store the record (full, failing, or its object rewritten by others 50 times): nothing
        stored, send it again later. Needs the endpoint's data lake (the one data capture writes to).
        """
        from inference.feedback import (
            MORE_FIELDS,
            OPTIONAL,
            REQUIRED,
            FeedbackError,
            parse_feedback,
            row_problem,
            store_feedback,
        )
        from inference.limits import MAX_REFUSAL_BYTES
        from inference.schema import Problem

        endpoint = self.server.endpoint
        fields = (*REQUIRED, *OPTIONAL, "body")

        def invalid(problems: dict[str, str], more: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            """The 400 of a bad body and its listed problems, listed as /invocations' refusals are
            (RequestError.body) in half their bytes, since each is under ``fields`` too; ``more_errors`` and
            ``fields[MORE_FIELDS]`` count the rest (``more``: those parse_feedback counted without naming them). A
            16 KB body of 2,000 unknown keys got a 435 KB refusal."""
            named = [Problem(0, name, problem) for name, problem in problems.items() if name != MORE_FIELDS]
            payload = handler.RequestError(400, "invalid feedback", named, more).body(MAX_REFUSAL_BYTES // 2)
            errors = payload["errors"]
            payload["fields"] = {error["field"]: error["problem"] for error in errors}
            unlisted = payload.get("more_errors", 0)
            if unlisted:
                payload["fields"][MORE_FIELDS] = (problems[MORE_FIELDS] if unlisted == more and MORE_FIELDS in problems
                                                  else f"{unlisted:,} more field problem(s) not listed")
            return payload, errors

        def refuse(status: int, payload: dict[str, Any], event_id: str | None = None, problems: Any = (),
                   **kw: Any) -> None:
            self._refused(_FEEDBACK, event_id, status, payload["error"], problems, fields)
            self._send_json(status, payload, **kw)

        try:
            body = self._read_body()
        except _Reply as reply:
            self._linger = reply.linger
            refuse(reply.status, {"error": reply.message}, close=reply.close)
            return
        if endpoint.feedback_token is not None:
            scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "replace"),
                                                                     endpoint.feedback_token.encode("utf-8")):
                refuse(401, {"error": "feedback needs the endpoint's feedback token: send 'Authorization: Bearer "
                                      "<token>'" if not given else "the feedback token is not the endpoint's"},
                       headers={"WWW-Authenticate": 'Bearer realm="diagnosa-feedback"'})
                return
        content_type = self.headers.get("Content-Type") or ""
        media = content_type.split(";", 1)[0].strip().lower()
        charset = handler.charset(content_type)  # as /invocations reads it
        refusal = self._content_problem()
        if refusal is not None:
            refuse(refusal.status, {"error": refusal.message}, headers=refusal.headers)
            return
        if media != JSON:
            refuse(415, {"error": f"feedback must be {JSON}, got {_shown(media) if media else 'no content type'}"})
            return
        if charset not in (None, "utf-8", "utf8"):  # as /invocations: a charset is not ignored
            refuse(415, {"error": f"unsupported charset {_shown(charset, 40)}: send the body as UTF-8 (charset=utf-8)"})
            return
        if not body.strip():
            payload, errors = invalid({"body": "the body is empty: send a JSON object"})
            refuse(400, payload, problems=errors)
            return
        try:
            feedback = parse_feedback(handler.load_json(body), endpoint.labels)
        except (FeedbackError, handler.RequestError) as err:  # bad JSON, nesting, surrogates: as for invocations
            payload, errors = invalid(*((err.fields, err.more) if isinstance(err, FeedbackError)
                                        else ({"body": err.message}, 0)))
            if "more_errors" in payload:  # the errors stream keeps the count too, as one problem
                errors = [*errors, {"row": 0, "field": MORE_FIELDS, "problem": payload["fields"][MORE_FIELDS]}]
            refuse(400, payload, problems=errors)
            return
        capture = endpoint.capture
        if capture is None:
            self._send_json(503, {"error": "this endpoint has no data lake (start it with data capture): "
                                           "feedback cannot be stored"})
            return

        def unreadable_capture(event_id: str, err: BaseException) -> None:
            log.error("feedback for event %s not stored: its capture could not be read: %s", event_id,
                      printable_line(str(err)))
            refuse(503, {"error": f"feedback for event {event_id} not stored: {_storage_problem(err, 'read')}; "
                                  "nothing was stored: send it again later", "event_id": event_id},
                   event_id, headers={"Retry-After": str(FEEDBACK_RETRY_AFTER)})

        try:
            found = capture.lookup(feedback.event_id)  # may read the lake's capture of the event's hour
        except storage_errors() as err:
            unreadable_capture(feedback.event_id, err)
            return
        if found == "capture failed":
            # 409: the id is this endpoint's and the body is fine, but the event's state (its capture line was never
            # written) leaves nothing to attach feedback to; sending it again cannot help.
            refuse(409, {"error": f"event {feedback.event_id} was answered by this endpoint but its data capture "
                                  "failed (the capture spool could not be written; the answer carried "
                                  f"'{CAPTURE_HEADER}: failed'): there is no captured prediction to attach feedback "
                                  "to", "event_id": feedback.event_id}, feedback.event_id)
            return
        if found != "captured":
            why = (f"event {feedback.event_id} was answered but not sampled for data capture (sampling "
                   f"{capture.sampling_percentage}%): there is no captured prediction to attach feedback to"
                   if found == "not sampled" else
                   f"no captured prediction has event id {feedback.event_id}: it names a time in the future (its "
                   "UUIDv7 timestamp), so this endpoint has not issued it"
                   if issued_later(feedback.event_id, datetime.now(timezone.utc)) else
                   f"no captured prediction has event id {feedback.event_id}: feedback refers to the "
                   "X-Diagnosa-Event-Id this endpoint answered (predictions captured elsewhere, e.g. by SageMaker, "
                   "take feedback through `diagnosa feedback`, straight to the lake)")
            refuse(404, {"error": why, "event_id": feedback.event_id}, feedback.event_id)
            return
        try:
            patients = capture.patients(feedback.event_id)  # this process's captures; else the lake's (a restart)
        except storage_errors() as err:
            unreadable_capture(feedback.event_id, err)
            return
        problem = None if patients is None else row_problem(feedback, patients)
        if problem is not None:
            payload, errors = invalid({"event_row": problem})
            refuse(400, payload, feedback.event_id, problems=errors)
            return
        try:
            stored = store_feedback(capture.lake, endpoint.endpoint_name, feedback)
        except storage_errors() as err:  # the lake full or failing (S3's errors too), or its object rewritten all along
            # 503 + Retry-After: nothing was stored and nothing is wrong with the record; it was a 500 "internal
            # error" (and `diagnosa feedback` said bad input). The reason is named without the lake's paths, bucket
            # or credentials. S3 refusing the endpoint's own key (AccessDenied, NoSuchBucket) is the deployment's
            # fault, never the caller's: a 503 too, naming S3's code, for the record to be sent again once fixed.
            log.error("feedback for event %s not stored: %s", feedback.event_id, printable_line(str(err)))
            refuse(503, {"error": f"feedback for event {feedback.event_id} not stored: {_storage_problem(err)}; "
                                  "nothing was stored: send it again later", "event_id": feedback.event_id},
                   feedback.event_id, headers={"Retry-After": str(FEEDBACK_RETRY_AFTER)})
            return
        log.info("feedback for event %s stored as %s%s", feedback.event_id, stored.key,
                 "" if stored.replaced is None else " (it replaced an earlier record)")
        # "replaced": the earlier record it replaced (diagnosis, disease id, when received; never its note), or null.
        self._send_json(201, {"event_id": feedback.event_id, "key": stored.key}
                        | ({} if feedback.event_row is None else {"event_row": feedback.event_row})
                        | {"replaced": None if stored.replaced is None else stored.replaced.to_dict()})

    def _invocation(self, runtime: bool, name: str | None) -> None:
        endpoint = self.server.endpoint
        route = _RUNTIME_ROUTE if runtime else _INVOCATIONS
        when = datetime.now(timezone.utc)
        event_id = new_event_id(when)  # time-ordered: the feedback check finds its capture hour from it
        headers = {"X-Diagnosa-Event-Id": event_id}
        if runtime:
            headers["x-amzn-RequestId"] = str(uuid.uuid4())
        try:
            body = self._read_body()
            if runtime and name != endpoint.endpoint_name:  # AWS's words, then which one this server is
                shown = name if name and len(name) <= MAX_ECHO and name.isprintable() else _shown(name or "")
                raise _Reply(400, f"Endpoint {shown} of account {ACCOUNT} not found. (This local server serves "
                                  f"endpoint {endpoint.endpoint_name}.)")
            problem = self._content_problem()
            if problem is not None:
                raise problem
            inference_id = self.headers.get("X-Amzn-SageMaker-Inference-Id")
            # SageMaker's rule (botocore: \A\S[\p{Print}]*\z, Java's printable ASCII): 'é' passed here and was
            # refused there.
            if inference_id is not None and not (1 <= len(inference_id) <= 64 and inference_id.isascii()
                                                 and inference_id.isprintable() and not inference_id[0].isspace()):
                raise _Reply(400, "X-Amzn-SageMaker-Inference-Id must be 1 to 64 printable ASCII characters, the "
                                  "first not a space")
            if endpoint.version is None:
                raise _Reply(503, "the model is not loaded yet" if endpoint.load_error is None
                             else "the model failed to load", aws_type="ServiceUnavailable")
        except _Reply as reply:
            self._refused(route, event_id, reply.status, reply.message)
            if reply.linger:
                self._linger = True
            headers.update(reply.headers)
            if runtime:
                headers["x-amzn-ErrorType"] = reply.aws_type
                self._send_json(reply.status, {"message": reply.message}, headers, close=reply.close)
            else:
                self._send_json(reply.status, {"error": reply.message}, headers, close=reply.close)
            return

        content_type = self.headers.get("Content-Type")
        accept = self.headers.get("Accept")
        try:
            outcome = endpoint.score(body, content_type, accept)
        except WorkerUnavailable as err:  # a worker died or none was free: the client may retry
            log.error("invocation not scored (event %s): %s", event_id, err)
            self._refused(route, event_id, 503, str(err))
            self._model_error(runtime, 503, json.dumps({"error": f"{err}; retry", "event_id": event_id}), headers)
            return
        except Exception as err:  # noqa: BLE001  (logged with the event id, its messages redacted; the client gets no internals)
            log.error("invocation failed unexpectedly (event %s):\n%s", event_id, redacted_traceback(err))
            self._refused(route, event_id, 500, "internal error")
            self._model_error(runtime, 500, json.dumps({"error": "internal error", "event_id": event_id}), headers)
            return
        if outcome.status != 200:
            refusal = outcome.refusal or {}
            self._refused(route, event_id, outcome.status, refusal.get("error", ""), refusal.get("errors", []))
            # The handler's refusal is bounded where it is made (handler.RequestError.body: 64 KB).
            self._model_error(runtime, outcome.status, outcome.body.decode("utf-8"), headers)
            return
        output, output_type = outcome.body, outcome.content_type
        if endpoint.capture is not None:
            try:
                captured = endpoint.capture.record(event_id, inference_id, body, content_type, output, output_type,
                                                   when, patients=outcome.patients)
                failed = not captured and endpoint.capture.lookup(event_id) == "capture failed"
            except Exception:  # noqa: BLE001  (capture must never fail a prediction)
                log.exception("capture failed for event %s", event_id)
                failed = True
            if failed:  # answered all the same; the client learns its event has no captured record for feedback
                headers[CAPTURE_HEADER] = "failed"
        if runtime:
            headers["x-Amzn-Invoked-Production-Variant"] = endpoint.variant
        self._send(200, output, output_type, headers)

    def _model_error(self, runtime: bool, status: int, text: str, headers: dict[str, str]) -> None:
        """The handler's refusal as is on the container path, wrapped as AWS's ModelError on the runtime path."""
        if not runtime:
            self._send(status, text.encode("utf-8"), JSON, headers)
            return
        kind = "client" if status < 500 else "server"
        headers["x-amzn-ErrorType"] = "ModelError"
        # One whole copy (OriginalMessage, what clients parse); the message quotes its start, as AWS's does.
        quoted = text if len(text) <= MODEL_ERROR_QUOTED else text[:MODEL_ERROR_QUOTED] + "…"
        self._send_json(424, {"message": f"Received {kind} error ({status}) from primary with message \"{quoted}\"",
                              "OriginalStatusCode": status, "OriginalMessage": text}, headers)


# S3's answers that no retry of the same request mends: the deployment's lake or its permissions are wrong.
_S3_SETUP_ERRORS = {"AccessDenied", "403", "Forbidden", "NoSuchBucket", "AllAccessDisabled", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "KMS.DisabledException",
                    "KMS.AccessDeniedException", "PermanentRedirect", "AuthorizationHeaderMalformed"}


def _storage_problem(err: BaseException, action: str = "written") -> str:
    """Why the lake could not store a feedback record, for its client: the machine's words for the error (``No space
    left on device``), or S3's error code or botocore's error name, never the paths, the lake URI, the bucket or
    the credentials the exception or its text names (an EndpointConnectionError's text holds the bucket's URL)."""
    if isinstance(err, LakeError) and not isinstance(err, OSError):
        cause = err.__cause__ or err.__context__
        if cause is not None and isinstance(cause, storage_errors()) and not isinstance(cause, LakeError):
            return _storage_problem(cause, action)
        return "the endpoint's data lake could not store it (storage failure)"  # a write race lost 50 times too
    if isinstance(err, OSError):
        reason = os.strerror(err.errno) if isinstance(err.errno, int) and err.errno > 0 else type(err).__name__
        return f"the endpoint's data lake could not be {action} (storage failure: {reason})"
    response = getattr(err, "response", None)  # a ClientError: S3 answered, refusing
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = str(error.get("Code") or (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or "an error")
        code = printable_line(code)[:60]
        if code in _S3_SETUP_ERRORS:
            return (f"the endpoint's data lake could not be {action}: S3 answered {code} (the deployment's lake or its "
                    "permissions, for the endpoint's operator to fix)")
        return f"the endpoint's data lake could not be {action} (storage failure: S3 answered {code})"
    # botocore's own: EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, NoCredentialsError, ...
    return f"the endpoint's data lake could not be {action} (storage failure: {type(err).__name__})"


class EndpointServer:
    """One model behind a loopback HTTP server; ``start()`` returns at once, the model loads in the background."""

    def __init__(self, model_dir: str, endpoint_name: str = "diagnosa", host: str = "127.0.0.1", port: int = 0,
                 capture: DataCapture | None = None, *,
                 loader: Callable[[str], handler.Service] | None = None, socket_timeout: float = SOCKET_TIMEOUT,
                 request_deadline: float = REQUEST_DEADLINE, max_connections: int = MAX_CONNECTIONS,
                 workers: int = 0, feedback_token: str | None = None,
                 max_client_connections: int | None = MAX_CLIENT_CONNECTIONS):
        self.model_dir = str(model_dir)
        self._labels: list[str] | None = None  # the model's, read from its metadata.json when first asked
        self.endpoint_name = endpoint_name
        self.host = host
        self._port = port
        self.capture = capture
        self.variant = capture.variant if capture is not None else DEFAULT_VARIANT
        self._loader = loader or handler.load_service  # a hook: tests gate or break loading through it
        if not socket_timeout > 0:
            raise ValueError(f"socket_timeout must be positive, got {socket_timeout!r}")
        self.socket_timeout = float(socket_timeout)
        if not request_deadline > 0:
            raise ValueError(f"request_deadline must be positive, got {request_deadline!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
            raise ValueError(f"max_connections must be a whole number >= 1, got {max_connections!r}")
        self.request_deadline = float(request_deadline)
        self.max_connections = max_connections
        if max_client_connections is not None and (isinstance(max_client_connections, bool) or not isinstance(
                max_client_connections, int) or max_client_connections < 1):
            raise ValueError(f"max_client_connections must be a whole number >= 1 or None (no limit per client "
                             f"address), got {max_client_connections!r}")
        # None: every client address may use every slot (behind a proxy, which is then every client's address)
        self.max_client_connections = None if max_client_connections is None \
            else min(max_client_connections, max_connections)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be a whole number >= 0, got {workers!r}")
        if workers and loader is not None:
            raise ValueError("a custom loader runs in the server process: it cannot be combined with workers")
        self.workers = workers
        self._pool: WorkerPool | None = None
        self.service: handler.Service | None = None  # the model, when requests are scored in this process
        self.version: str | None = None  # set once the model serves (in this process or in every worker)
        if feedback_token is not None and not feedback_token.strip():
            raise ValueError("feedback_token must not be empty (None turns the check off)")
        problem = token_problem(feedback_token.strip()) if feedback_token is not None else None
        if problem:  # a token no client can send in its header: every feedback would be refused
            raise ValueError(f"feedback_token {problem}")
        self.feedback_token = feedback_token.strip() if feedback_token is not None else None  # never logged
        self.load_error: BaseException | None = None
        self.dataset: str | None = None  # the served model's dataset (its metadata.json), once it serves
        self._loaded = threading.Event()
        self._httpd: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd is not None else self._port

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the endpoint (a wildcard bind is reached via loopback)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> EndpointServer:
        """Bind and serve in a background thread; the model loads in another (``/ping`` says when)."""
        if self._httpd is not None:
            return self
        self._httpd = _Server((self.host, self._port), self)
        self._serve_thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                              name=f"serve-{self.endpoint_name}", daemon=True)
        self._serve_thread.start()
        threading.Thread(target=self._load, name=f"load-{self.endpoint_name}", daemon=True).start()
        log.info("endpoint %s listening on %s (model %s loading)", self.endpoint_name, self.url, self.model_dir)
        return self

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            if self.workers:
                self._pool = WorkerPool(self.model_dir, self.workers)
                version = self._pool.start()
            else:
                service = self._loader(self.model_dir)
                handler.warm_up(service)
                self.service, version = service, service.version
        except BaseException as err:  # noqa: BLE001  (reported by /ping and wait_until_ready)
            self.load_error = err
            if isinstance(err, ModelLoadError):  # a reason written to be read (`diagnosa serve` says it): no traceback
                log.error("model %s failed to load: %s", self.model_dir, err)
            else:
                log.exception("model %s failed to load", self.model_dir)
        else:
            try:  # what the app's form must be for (it showed the built-in cohort's to a dataset's endpoint)
                self.dataset = model_dataset(self.model_dir)
            except ModelLoadError:
                self.dataset = None
            self.version = version
            where = f"in {self.workers} worker process(es)" if self.workers else "in the server process"
            log.info("model %s loaded %s in %.2f s", version, where, time.perf_counter() - started)
        finally:
            self._loaded.set()

    @property
    def labels(self) -> list[str]:
        """The served model's labels (what feedback may confirm), from the model or its metadata.json; the built-in
        cohort's when the endpoint has no readable model (it answers no prediction then either)."""
        if self.service is not None:
            return list(self.service.model.labels)
        if self._labels is None:  # scored in workers: read once, not on every feedback request
            try:
                self._labels = model_labels(self.model_dir)
            except ModelLoadError:
                return list(CATEGORIES)
        return list(self._labels)

    @property
    def accepted_fields(self) -> list[str] | None:
        """The request fields the model accepts (None until it is loaded)."""
        if self.service is not None:
            return list(self.service.schema.accepted)
        return list(self._pool.accepted_fields) if self._pool is not None and self._pool.version else None

    def score(self, body: bytes, content_type: str | None, accept: str | None) -> Outcome:
        """Parse, predict and render one request, in a free worker or in this process."""
        if self._pool is not None:
            return self._pool.invoke(body, content_type, accept)
        assert self.service is not None, "score() before the model loaded"
        return score(self.service, body, content_type, accept)

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Block until the model serves; TimeoutError if it takes longer, RuntimeError if loading failed."""
        if not self._loaded.wait(timeout):
            raise TimeoutError(f"model {self.model_dir} not loaded within {timeout} s")
        if self.load_error is not None:
            raise RuntimeError(f"model {self.model_dir} failed to load: {self.load_error}") from self.load_error

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close idle connections, flush capture.

        The endpoint owns the capture it was given: stop() closes it, started or not.
        """
        with self._stop_lock:
            if self._stopped.is_set():
                return
            if self._httpd is None:
                if self.capture is not None:
                    self.capture.close()
                self._stopped.set()
                return
            httpd = self._httpd
            with httpd.lock:
                httpd.stopping = True
            httpd.shutdown()  # the accept loop ends; no new connections
            with httpd.lock:
                httpd.close_idle()
                if not httpd.drained.wait_for(lambda: httpd.in_flight == 0, timeout):
                    log.warning("%d request(s) still in flight after %s s; stopping anyway", httpd.in_flight, timeout)
                httpd.close_idle()
            httpd.server_close()
            if self._serve_thread is not None:
                self._serve_thread.join(timeout)
            if self._pool is not None:
                self._pool.stop(timeout)
            if self.capture is not None:
                self.capture.close()
            self._stopped.set()
            log.info("endpoint %s stopped", self.endpoint_name)

    def serve_forever(self) -> None:
        """Serve until SIGTERM/SIGINT (or stop() from another thread), then stop cleanly: the CLI's mode."""
        self.start()
        requested = threading.Event()

        def on_signal(signum: int, _frame: object) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            requested.set()

        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        else:
            log.warning("serve_forever outside the main thread: no signal handlers installed")
        try:
            while not requested.wait(0.2) and not self._stopped.is_set():
                pass
        finally:
            self.stop()
            for sig, old in previous.items():
                signal.signal(sig, old)

    def __enter__(self) -> EndpointServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
