"""The client's overall deadline against an endpoint that trickles its answer a byte at a time: when it passes, the
request in flight is stopped (its thread ends, its connection is closed and no retry is sent), and the message says
how many requests were made. A per-read timeout never fires for such an endpoint: the app (a long-lived process)
leaked a thread and an open socket per click for as long as the endpoint trickled."""
from __future__ import annotations

import select
import socket
import threading
import time

import psutil
import pytest

from inference.client import AnswerTimeout, DiagnosaClient, served_endpoint_name

WORKER = "diagnosa-client-call"  # the name of within_deadline's threads
INTERVAL = 0.25  # seconds between two bytes of a trickled answer
SETTLE = 4.0  # seconds a stopped call is given to be seen ended (it takes well under one)
BODY_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Diagnosa-Event-Id: e1\r\n"
             b"Content-Length: 1000000\r\n\r\n")
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
        b"Connection: close\r\n\r\n{\"error\": \"busy\"}")


class TricklingEndpoint:
    """An HTTP server on a loopback port of its own that reads each request and then trickles its answer, a byte every
    INTERVAL seconds, for as long as the connection stays open: the status line itself (``status-line``), or a body
    after complete headers (``body``). The first ``busy`` requests are answered 503 at once. It counts the requests,
    the connections open, and those it saw closed by the client (its recv gave b'' or its send failed)."""

    def __init__(self, mode: str, busy: int = 0):
        self.mode = mode
        self.busy = busy
        self.requests: list[bytes] = []
        self.open = 0
        self.closed_by_client = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._accepting = threading.Thread(target=self._accept, name="trickle-accept", daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="trickle-conn", daemon=True).start()

    def _read_request(self, conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        return head.split(b"\r\n")[0]

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.open += 1
        try:
            conn.settimeout(10)
            while True:  # the requests of a kept-alive connection
                line = self._read_request(conn)
                if line is None:
                    return
                with self._lock:
                    self.requests.append(line)
                    busy = len(self.requests) <= self.busy
                if not busy:
                    break
                conn.sendall(BUSY)
                return
            conn.sendall(BODY_HEAD if self.mode == "body" else b"HTTP/1.1 ")
            while not self._done.is_set():
                readable, _, _ = select.select([conn], [], [], INTERVAL)
                try:
                    if readable:
                        if not conn.recv(4096):  # the client shut or closed its side
                            break
                        continue
                    conn.send(b" " if self.mode == "body" else b"2")
                except OSError:  # reset by the client
                    break
            else:
                return
            with self._lock:
                self.closed_by_client += 1
        finally:
            conn.close()
            with self._lock:
                self.open -= 1

    def stop(self) -> None:
        self._done.set()
        self._listener.close()
        self._accepting.join(5)


@pytest.fixture(params=[pytest.param("status-line", id="status-line"), pytest.param("body", id="body")])
def trickling(request):
    server = TricklingEndpoint(request.param)
    yield server
    server.stop()


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WORKER]


def client_connections(port: int) -> list:
    """This process's TCP sockets to ``port`` (any state: an fd not closed is still listed)."""
    return [c for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port]


def settled(server: TricklingEndpoint, requests: int) -> None:
    """Within SETTLE seconds: no call's thread left, the server saw each of its connections closed by the client, and
    this process holds no socket to it."""
    end = time.monotonic() + SETTLE
    while time.monotonic() < end:
        if not workers() and server.open == 0 and not client_connections(server.port):
            break
        time.sleep(0.05)
    assert workers() == [], "the call's thread is still running after its deadline"
    assert server.open == 0, "the endpoint still has an open connection from the client"
    assert server.closed_by_client == requests
    assert client_connections(server.port) == []


def call(path: str, server: TricklingEndpoint, deadline: float = 1.0, attempts: int = 4) -> AnswerTimeout:
    with pytest.raises(AnswerTimeout) as caught:
        if path == "ping":
            served_endpoint_name(server.url, timeout=deadline)  # its deadline: overall_deadline(timeout, 1)
        else:
            client = DiagnosaClient("diagnosa", endpoint_url=server.url, timeout=30, max_attempts=attempts,
                                    deadline=deadline)
            if path == "predict":
                client.predict({"patient_id": "A1", "age": 50})
            else:
                client.send_feedback("e1", "NO ENFERMO")
    return caught.value


@pytest.mark.parametrize("path", [pytest.param("predict", id="predict"), pytest.param("feedback", id="feedback"),
                                  pytest.param("ping", id="ping")])
def test_a_trickled_answer_is_stopped_at_the_deadline(trickling, path):
    err = call(path, trickling)
    settled(trickling, 1)
    time.sleep(1.0)  # a retry of the stopped request (botocore's, 4 attempts allowed) would have been sent by now
    assert len(trickling.requests) == 1, trickling.requests
    assert err.attempts == 1
    assert "within 1 s: 1 request was made" in str(err)
    assert "its connection was closed" in str(err)


def test_repeated_calls_leave_no_threads_or_connections(trickling):
    before = threading.active_count()
    for _ in range(10):
        call("predict", trickling)
    settled(trickling, 10)
    assert len(trickling.requests) == 10
    assert threading.active_count() <= before


def test_the_message_counts_the_requests_made():
    server = TricklingEndpoint("body", busy=1)  # the first request answered 503 (retried), the second trickled
    try:
        err = call("predict", server, deadline=3.0, attempts=4)
        settled(server, 1)
        assert len(server.requests) == 2
        assert err.attempts == 2
        assert "within 3 s: 2 requests were made (retries included)" in str(err)
        assert "1 request was made" not in str(err)
    finally:
        server.stop()


def test_a_client_that_is_not_botocore_still_times_out():
    release = threading.Event()

    class Slow:  # a stand-in runtime: nothing of it to shut, its thread is left to end on its own
        def invoke_endpoint(self, **_):
            release.wait(30)
            raise RuntimeError("released")

    client = DiagnosaClient("diagnosa", endpoint_url="http://127.0.0.1:9", runtime=Slow(), deadline=0.5)
    assert client.stoppable is False
    try:
        with pytest.raises(AnswerTimeout, match="within 0.5 s: no request was sent") as caught:
            client.predict({"patient_id": "A1"})
        assert caught.value.attempts == 0
    finally:
        release.set()
        for worker in workers():
            worker.join(5)
