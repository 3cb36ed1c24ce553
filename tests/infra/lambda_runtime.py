"""A function's code run by Lambda's own Python runtime: awslambdaric, the bootstrap AWS's python3.x runtimes run
(its handler loader, its JSON marshaller, its error documents), in a process of its own, fed through the Runtime
API, the HTTP protocol Lambda's service speaks to a runtime
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html). Calling ``handler(event)`` in the test's process
skips all three: a result the marshaller cannot send passed there, and on AWS ended the runtime."""
from __future__ import annotations

import json
import os
import queue
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PREFIX = "/2018-06-01/runtime"


@dataclass
class Invocation:
    """What Lambda's service heard back for one event: ``response`` (the body the invoker gets), ``error`` (an error
    document, as ``aws lambda invoke`` shows it with FunctionError), or ``exited`` (the runtime ended before answering:
    Lambda answers Runtime.ExitError, and an asynchronous event is retried)."""

    outcome: str
    body: bytes
    error_type: str | None = None
    log: str = ""

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))  # strict: a body Lambda's service could not pass on fails here


class _RuntimeApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.events: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.answers: dict[str, Invocation] = {}
        self.answered = threading.Condition()
        self.init_error: Invocation | None = None


class _Handler(BaseHTTPRequestHandler):
    server: _RuntimeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # the base class's parameter name
        pass

    def _peer_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802  # http.server's naming
        if self.path != f"{PREFIX}/invocation/next":
            return self._reply(404)
        while True:  # until an event comes, or the runtime that asked is gone (it must not take the next event)
            try:
                request_id, body = self.server.events.get(timeout=0.1)
                break
            except queue.Empty:
                if self._peer_gone():
                    return
        self._reply(200, body, {
            "Content-Type": "application/json", "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 300_000),
            "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:eu-west-1:123456789012:function:diagnosa-test",
            "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0"})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # the runtime always sends one
        parts = self.path.removeprefix(PREFIX).strip("/").split("/")
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
        if parts == ["init", "error"]:
            self.server.init_error = Invocation("error", body, error_type)
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            with self.server.answered:
                self.server.answers[parts[1]] = Invocation(parts[2], body, error_type)
                self.server.answered.notify_all()
        else:
            return self._reply(404)
        self._reply(202, b'{"status": "OK"}', {"Content-Type": "application/json"})


class LambdaFunction:
    """One function's code folder run as Lambda runs it: ``python -m awslambdaric HANDLER`` with the folder as the
    task root, ``AWS_EXECUTION_ENV`` naming the template's runtime (the marshaller's behaviour depends on it), and
    ``env`` (the function's variables, AWS's endpoint). A runtime that exited is started again on the next event,
    as Lambda starts a new one."""

    def __init__(self, code: Path, handler: str, runtime: str, env: dict[str, str], log_dir: Path) -> None:
        self.code, self.handler, self.runtime, self.env = code, handler, runtime, env
        self.api = _RuntimeApi()
        threading.Thread(target=self.api.serve_forever, daemon=True).start()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = log_dir / f"{handler}-{uuid.uuid4().hex[:8]}.log"  # the runtime's stdout and stderr

    def _start(self) -> subprocess.Popen[bytes]:
        host, port = self.api.server_address[:2]
        # The task root is read-only on Lambda: no bytecode written into the cloud assembly's asset folder.
        env = {"PATH": os.environ["PATH"], "LANG": "en_US.UTF-8", "TZ": ":UTC", "PYTHONPATH": str(self.code),
               "PYTHONDONTWRITEBYTECODE": "1",
               "LAMBDA_TASK_ROOT": str(self.code), "_HANDLER": self.handler, "AWS_LAMBDA_RUNTIME_API": f"{host}:{port}",
               "AWS_EXECUTION_ENV": f"AWS_Lambda_{self.runtime}", "AWS_LAMBDA_FUNCTION_NAME": "diagnosa-test",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", **self.env}
        log = self.log_path.open("ab")
        return subprocess.Popen([sys.executable, "-m", "awslambdaric", self.handler], cwd=self.code, env=env,
                                stdout=log, stderr=subprocess.STDOUT)

    def invoke(self, event: Any, timeout: float = 60) -> Invocation:
        """Send ``event`` (any JSON value; bytes are sent as they are) and wait for the runtime's answer."""
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        process = self.process
        request_id = str(uuid.uuid4())
        body = event if isinstance(event, bytes) else json.dumps(event).encode("utf-8")
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.api.events.put((request_id, body))
        deadline = time.monotonic() + timeout
        with self.api.answered:
            while request_id not in self.api.answers:
                if process.poll() is not None:
                    self._drain(request_id)
                    return Invocation("exited", b"", f"Runtime.ExitError (status {process.returncode})",
                                      self._log(offset))
                if self.api.init_error is not None:
                    found, self.api.init_error = self.api.init_error, None
                    found.log = self._log(offset)
                    return found
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer from {self.handler} in {timeout} s:\n{self._log(offset)}")
                self.api.answered.wait(0.05)
            found = self.api.answers.pop(request_id)
        found.log = self._log(offset)
        return found

    def _drain(self, request_id: str) -> None:
        """Take back an event a dead runtime did not fetch, so the next runtime does not get it."""
        kept = []
        while not self.api.events.empty():
            item = self.api.events.get_nowait()
            if item[0] != request_id:
                kept.append(item)
        for item in kept:
            self.api.events.put(item)

    def _log(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "backslashreplace")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.api.shutdown()
        self.api.server_close()
