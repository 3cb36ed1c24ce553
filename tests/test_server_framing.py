"""The local endpoint's HTTP framing and header checks over raw sockets (review 48a, findings 3, 4, 10 and 11).

One framing for every route: a body sent where none is read (GET/HEAD /ping, an unknown path, a wrong method) is
refused and the connection closed, so a request hidden in it is never run nor captured; header lines that are not
``name ":" value`` are a 400 naming the header, never dropped with the headers after them; what the request says
about itself (URL, method, request line) is echoed cut short (the Accept and Content-Type a
refusal of the handler names are cut there); a compressed body is refused, not misread.
"""
from __future__ import annotations

import gzip
import json
import logging
import socket
import struct
import time

import pytest

from diagnosa.lake import DataLake
from inference import server as server_module
from inference.capture import DataCapture
from inference.server import EndpointServer

PATIENT = b'{"age": 67, "sex": "M", "temperature_c": 38.9, "symptoms": ["HP:0001945"]}'


def _request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
             length: bool = True) -> bytes:
    fields = {"Host": "x", **({"Content-Length": str(len(body))} if length else {}), **(headers or {})}
    return (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n").encode(
        "latin-1") + body


HIDDEN = _request("POST", "/invocations", PATIENT, {"Content-Type": "application/json"})


def _exchange(ep: EndpointServer, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data``, half-close, read until the server closes (the answer must not depend on a client timeout)."""
    with socket.create_connection(("127.0.0.1", ep.port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in a stream of bytes (Content-Length framed): status, headers (lower-case), body."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status == 100:
            raw = rest
            continue
        length = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:length]))
        raw = rest[length:]
    return out


@pytest.fixture(scope="module")
def captured(trained_model_dir, tmp_path_factory):
    """An endpoint with data capture: (server, capture)."""
    lake = DataLake.from_uri(str(tmp_path_factory.mktemp("framing") / "lake"))
    capture = DataCapture(lake, "diagnosa", flush_seconds=60)
    ep = EndpointServer(str(trained_model_dir), capture=capture).start()
    ep.wait_until_ready(60)
    yield ep, capture
    ep.stop()


# -- finding 3: a request hidden in a body that is not read ----------------------------------------
@pytest.mark.parametrize("smuggle", [
    _request("GET", "/ping", HIDDEN),
    _request("HEAD", "/ping", HIDDEN),
    _request("GET", "/ping", b"%x\r\n" % len(HIDDEN) + HIDDEN + b"\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"},
             length=False),
    _request("HEAD", "/ping", HIDDEN, {"Transfer-Encoding": "chunked"}, length=False),
], ids=["GET ping CL", "HEAD ping CL", "GET ping chunked", "HEAD ping chunked"])
def test_a_request_hidden_in_a_body_that_is_not_read_is_never_run_nor_captured(captured, smuggle):
    ep, capture = captured
    before = capture.sampled
    answers = _answers(_exchange(ep, smuggle))
    assert len(answers) == 1, answers  # one request, one answer: the body was not read as a second request
    status, headers, _ = answers[0]
    assert status in (400, 411) and headers["connection"] == "close"
    assert "x-diagnosa-event-id" not in headers
    assert capture.sampled == before  # nothing scored, nothing captured
    with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as sock:  # the endpoint is fine
        sock.sendall(_request("GET", "/ping"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_ping_says_why_its_body_is_refused_and_takes_an_empty_one(captured):
    ep, _ = captured
    [(status, _, body)] = _answers(_exchange(ep, _request("GET", "/ping", HIDDEN)))
    assert status == 400 and "takes no body" in json.loads(body)["error"]
    [(status, _, body)] = _answers(_exchange(ep, _request("GET", "/ping", b"", {"Transfer-Encoding": "chunked"})))
    assert status == 411
    # Content-Length: 0 (or none) is a request without a body: answered, and the connection stays usable.
    answers = _answers(_exchange(ep, _request("GET", "/ping") + _request("GET", "/ping", length=False)))
    assert [a[0] for a in answers] == [200, 200]
    # The same rule on every route that reads no body: an unknown path, a wrong method.
    for method, path, expected in (("GET", "/nowhere", 404), ("DELETE", "/ping", 405), ("GET", "/invocations", 405)):
        answers = _answers(_exchange(ep, _request(method, path, HIDDEN)))
        assert [(a[0], a[1]["connection"]) for a in answers] == [(expected, "close")]


# -- finding 10: malformed header lines --------------------------------------------------------------
@pytest.mark.parametrize("line, named", [
    (b"Transfer-Encoding : chunked", "Transfer-Encoding "),  # whitespace before the colon
    (b"nocolon", "nocolon"),
    (b"X-A: a\x00b", "X-A"),
    (b"X-A: a\rb", "X-A"),
    (b"X-A: a\r\n b", "obsolete line folding"),
    (b"X\x01A: b", "X\\x01A"),
], ids=["space before colon", "no colon", "NUL", "bare CR", "obs-fold", "control in name"])
def test_a_malformed_header_line_is_a_400_naming_it_and_the_connection_closes(captured, line, named):
    ep, capture = captured
    before = capture.sampled
    data = (b"POST /invocations HTTP/1.1\r\nHost: x\r\n" + line + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(PATIENT)).encode() + b"\r\n\r\n" + PATIENT)
    answers = _answers(_exchange(ep, data))
    assert len(answers) == 1, answers
    status, headers, body = answers[0]
    error = json.loads(body)["error"]
    assert status == 400 and headers["connection"] == "close", (status, error)
    assert "malformed header" in error and named in error, error
    assert capture.sampled == before


def test_the_header_after_a_malformed_one_is_not_silently_dropped(captured):
    # Before: 'Transfer-Encoding : chunked' ended the headers there, so Content-Type was "None" (415).
    ep, _ = captured
    data = (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Bad : 1\r\nContent-Length: 5\r\n\r\nhello")
    [(status, _, body)] = _answers(_exchange(ep, data))
    assert status == 400 and "X-Bad" in json.loads(body)["error"]


# -- finding 11: blank lines, echoes, Content-Encoding, feedback's charset ------------------------------
def test_empty_lines_before_the_request_line_are_ignored(captured):
    ep, _ = captured
    for prefix in (b"\r\n", b"\r\n\r\n", b"\n"):
        answers = _answers(_exchange(ep, prefix + _request("GET", "/ping")))
        assert [a[0] for a in answers] == [200], prefix
    # A CRLF after a body (some clients add one) no longer ends the keep-alive connection.
    answers = _answers(_exchange(ep, HIDDEN + b"\r\n" + _request("GET", "/ping")))
    assert [a[0] for a in answers] == [200, 200]


@pytest.mark.parametrize("data, status", [
    (_request("POST", "/endpoints/" + "a" * 60_000 + "/invocations", PATIENT, {"Content-Type": "application/json"}),
     400),
    (_request("X" * 10_000, "/invocations", PATIENT, {"Content-Type": "application/json"}), 405),
    (b"GET /ping " + b"H" * 60_000 + b"\r\n\r\n", 400),  # "Bad request version ('HHH...')"
    (b"GET " + b"/p " * 20_000 + b"HTTP/1.1\r\n\r\n", 400),  # "Bad request syntax ('GET /p /p ...')"
], ids=["endpoint name", "method", "version", "request line"])
def test_what_a_request_says_about_itself_is_echoed_cut_short(captured, data, status):
    ep, _ = captured
    raw = _exchange(ep, data)
    [(got, _, body)] = _answers(raw)
    assert got == status and len(raw) < 2_000, (got, len(raw))
    assert json.loads(body)


@pytest.mark.parametrize("path", ["/invocations", "/endpoints/diagnosa/invocations", "/feedback"])
def test_a_compressed_body_is_refused_with_415_naming_the_encoding(captured, path):
    ep, capture = captured
    before = capture.sampled
    for body, encoding in ((gzip.compress(PATIENT), "gzip"), (PATIENT, "gzip"), (PATIENT, "br, identity")):
        answers = _answers(_exchange(ep, _request("POST", path, body, {"Content-Type": "application/json",
                                                                      "Content-Encoding": encoding})))
        [(status, headers, reply)] = answers
        text = json.loads(reply).get("error") or json.loads(reply).get("message")
        assert status == 415 and "content encoding" in text and encoding in text, (status, text)
        assert headers["accept-encoding"] == "identity"
    assert capture.sampled == before
    if path != "/feedback":  # identity is no encoding at all
        [(status, _, _)] = _answers(_exchange(ep, _request("POST", path, PATIENT, {
            "Content-Type": "application/json", "Content-Encoding": "identity"})))
        assert status == 200


def test_feedback_refuses_a_charset_other_than_utf8_as_invocations_do(captured):
    ep, _ = captured
    body = json.dumps({"event_id": "0190c5a4-0000-7000-8000-000000000000", "diagnosis": "NO ENFERMO"}).encode()
    for path in ("/invocations", "/feedback"):
        [(status, _, reply)] = _answers(_exchange(ep, _request("POST", path, body, {
            "Content-Type": "application/json; charset=utf-16"})))
        assert status == 415 and "charset" in json.loads(reply)["error"], (path, status, reply)
    [(status, _, reply)] = _answers(_exchange(ep, _request("POST", "/feedback", b"", {
        "Content-Type": "application/json"})))
    assert status == 400 and "empty" in json.loads(reply)["fields"]["body"]


# -- finding 4 (the server's part): the runtime route's 424 ------------------------------------------
def test_a_large_model_refusal_is_one_copy_on_the_runtime_route(captured):
    # The runtime route wrapped the handler's refusal twice (message and OriginalMessage, each escaped): now its
    # message quotes the start once and OriginalMessage is the container's reply as is. That reply's size is bounded
    # where the refusal is made (handler.RequestError.body, tests/test_request_bounds.py).
    ep, _ = captured
    junk = json.dumps([{"age": 400, "sex": "X", "colour" + "z" * 150: "red"} for _ in range(500)]).encode()
    replies = {}
    for path in ("/endpoints/diagnosa/invocations", "/invocations"):
        [(status, _, reply)] = _answers(_exchange(ep, _request("POST", path, junk, {"Content-Type": "application/json"})))
        replies[path] = (status, reply)
    status, plain = replies["/invocations"]
    refusal = json.loads(plain)
    assert status == 400 and refusal["more_errors"] > 0 and len(plain) > server_module.MODEL_ERROR_QUOTED
    status, wrapped = replies["/endpoints/diagnosa/invocations"]
    answer = json.loads(wrapped)
    assert status == 424 and answer["OriginalStatusCode"] == 400
    assert json.loads(answer["OriginalMessage"]) == refusal  # one whole copy, what clients parse
    assert len(answer["message"]) < server_module.MODEL_ERROR_QUOTED + 100  # the start of it, quoted once
    assert len(wrapped) < 2.5 * len(plain)  # one escaped copy and the quote: before, two escaped copies


def test_a_header_block_over_the_limit_is_a_431_and_one_under_it_is_served(captured):
    # The stdlib parser takes 100 header lines of up to 64 KB each: 6.4 MB held per request before any check.
    ep, _ = captured
    filler = "x" * 1000
    under = {f"X-Pad-{i}": filler for i in range(server_module.MAX_HEADER_BYTES // 1100)}
    [(status, _, _)] = _answers(_exchange(ep, _request("GET", "/ping", headers=under, length=False)))
    assert status == 200
    over = {f"X-Pad-{i}": filler for i in range(server_module.MAX_HEADER_BYTES // 1000 + 2)}
    [(status, _, body)] = _answers(_exchange(ep, _request("GET", "/ping", headers=over, length=False)))
    assert status == 431 and f"over {server_module.MAX_HEADER_BYTES:,} bytes" in body.decode()


@pytest.mark.parametrize("sent", [b"", b"GET /pi"], ids=["nothing sent", "half a request line"])
def test_a_client_that_resets_its_connection_is_one_log_line_not_a_traceback(captured, capsys, caplog, sent):
    # A reset before the request line ended (a balancer's probe, a killed client) escaped the handler to
    # socketserver, which printed a traceback on stderr: one per such connection, outside the server's log.
    ep, _ = captured
    with caplog.at_level(logging.INFO, logger="diagnosa.server"):
        sock = socket.create_connection(("127.0.0.1", ep.port), timeout=10)
        ours = f"connection from 127.0.0.1 port {sock.getsockname()[1]} dropped"  # not another test's connection
        sock.sendall(sent)
        time.sleep(0.2)  # the server's thread is reading
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # with SO_LINGER 0: a reset, not a close
        deadline = time.monotonic() + 10
        while ours not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", ep.port), timeout=10) as healthy:
            healthy.sendall(_request("GET", "/ping"))
            assert healthy.recv(65536).startswith(b"HTTP/1.1 200")
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith(ours)]
    assert len(dropped) == 1 and "reset" in dropped[0].lower(), caplog.text
    assert "Traceback" not in capsys.readouterr().err


def test_a_method_token_holding_escape_codes_is_logged_escaped(captured, caplog):
    # The path was escaped in the request's log line, the method not: ESC and CSI (the one-byte escape, read as
    # Latin-1) reached the log as they came, to act on the terminal of whoever reads it.
    ep, _ = captured
    with caplog.at_level(logging.INFO, logger="diagnosa.server"):
        for method in (b"G\x1b[2JT", b"P\x9b31mOST", b"D\x00X\x7f"):
            [(status, _, _)] = _answers(_exchange(ep, method + b" /ping HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert status == 405
    # (The 405 lines only: a line of the test before may be logged after its answer was read.)
    lines = [r.getMessage() for r in caplog.records if " /ping 405 " in r.getMessage()]
    assert [line.split(" /ping ")[0] for line in lines] == ["G\\x1b[2JT", "P\\x9b31mOST", "D\\x00X\\x7f"]
    assert all(line.isprintable() for line in lines)
