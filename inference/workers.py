"""Scoring in worker processes: a request's parse → predict → render runs in whichever worker is free.

Why: JSON parsing, validation and pandas hold the GIL. In one process, a 6 MB body of junk (up to
~0.4 s of ``json.loads``) or a 10,000-patient batch stalls every other request of that process, however
many threads serve them. So the server process keeps the HTTP side (I/O, deadlines, connection cap,
capture) and hands the CPU work to N processes, each with the model loaded and one math-library
thread. A busy worker takes no new request, so one client's heavy request leaves the others a free
worker: the split AWS's scikit-learn container makes with nginx in front of gunicorn's synchronous
workers, without a second server (the transport rules stay in inference/server.py).

Each worker has its own pipe, and the request's thread talks to an idle worker directly: 0.11 ms per
request over scoring in process, where ``concurrent.futures.ProcessPoolExecutor`` (a manager thread
and a queue feeder between the request and the worker) cost 0.77 ms (single patient, median of 300,
side by side). A worker that dies (killed, out of memory, a native crash) fails only the request it
was running; a new one replaces it.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from inference import handler
from inference.capture import redacted_traceback

log = logging.getLogger("diagnosa.workers")

START_TIMEOUT = 120.0  # seconds for a worker to load the model
WAIT_FOR_WORKER = 30.0  # seconds a request waits for a free worker before a 503 (the request deadline)


@dataclass(frozen=True)
class Outcome:
    """An invocation's answer: 200 with the rendered predictions, or the refusal's 4xx, its JSON body and
    the same refusal as data (``{"error", "errors", ...}``: what the errors stream records)."""

    status: int
    body: bytes
    content_type: str
    refusal: dict[str, Any] | None = None
    patients: int = 0  # answered (200): the patients the request held


def default_workers() -> int:
    """One worker per CPU core this process may run on (as TorchServe and gunicorn's usual advice size them)."""
    return max(1, len(os.sched_getaffinity(0)))


class WorkerUnavailable(RuntimeError):
    """No worker could answer: one died during the request, or none was free in time (answered 503)."""


def score(service: handler.Service, body: bytes, content_type: str | None, accept: str | None) -> Outcome:
    """One invocation as an Outcome: a refusal is a value, so it crosses the process boundary as data.
    The server process (no workers) and each worker call this."""
    try:
        output, output_type, patients = handler.answer(service, body, content_type, accept)
    except handler.RequestError as err:  # a client's mistake: its 4xx
        refusal = err.body()
        return Outcome(err.status, handler.encode_json(refusal), handler.JSON, refusal)
    return Outcome(200, output, output_type, patients=patients)


def _work(conn: Connection, model_dir: str) -> None:
    """A worker's life: load the model (one math thread), say so, then answer requests until the pipe closes
    (the pool stops it, or the server died: the pipe's only other end was in the server)."""
    try:
        handler.limit_process_threads()
        service = handler.load_service(model_dir)
        handler.warm_up(service)
        handler.freeze_loaded()
    except BaseException as err:  # noqa: BLE001  (reported to the server, which refuses to start)
        conn.send(("failed", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", (service.version, tuple(service.schema.accepted))))
    while True:
        try:
            body, content_type, accept = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, Any] = ("outcome", score(service, body, content_type, accept))
        except Exception as err:  # noqa: BLE001  (a bug, not the client's: the server logs it and answers 500)
            reply = ("error", redacted_traceback(err))
        conn.send(reply)


class _Worker:
    def __init__(self, context: Any, model_dir: str):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_work, args=(child, model_dir), name="diagnosa-worker", daemon=True)
        self.process.start()
        child.close()  # the worker holds the only other end: it sees EOF when the server goes

    def wait_ready(self, timeout: float) -> tuple[str, tuple[str, ...]]:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"a serving worker did not load the model within {timeout:g} s")
        try:
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"a serving worker exited while loading (exit code {self.process.exitcode})") from None
        if kind != "ready":
            raise RuntimeError(f"a serving worker could not load the model: {value}")
        return value  # (model version, the request fields it accepts)

    def end(self, timeout: float = 5.0) -> None:
        self.conn.close()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout)


class WorkerPool:
    """``workers`` processes serving one model folder; :meth:`invoke` blocks only the calling thread."""

    def __init__(self, model_dir: str, workers: int):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
        self.model_dir = str(model_dir)
        self.workers = workers
        self.version: str | None = None
        self.accepted_fields: tuple[str, ...] = ()  # the request fields the model accepts (for the errors stream)
        self.restarts = 0  # workers replaced after dying
        # forkserver: workers fork from a clean process that imported the handler once (fast starts, and no
        # fork of a process that already runs server threads).
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["inference.handler"])
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        self._stopped = False

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start every worker and wait until each has loaded the model; returns the model version.
        RuntimeError (naming the first worker's load error) if any cannot."""
        started = [_Worker(self._context, self.model_dir) for _ in range(self.workers)]
        try:
            versions = {w.wait_ready(timeout) for w in started}
        except BaseException:
            for worker in started:
                worker.end()
            raise
        if len(versions) != 1:
            raise RuntimeError(f"the workers loaded different models: {sorted(versions)}")
        self.version, self.accepted_fields = versions.pop()
        with self._lock:
            self._all.update(started)
        for worker in started:
            self._idle.put(worker)
        return self.version

    def invoke(self, body: bytes, content_type: str | None, accept: str | None,
               wait: float = WAIT_FOR_WORKER) -> Outcome:
        """Score one request in a free worker; WorkerUnavailable when none frees up within ``wait`` seconds
        or the worker dies meanwhile (it is replaced); RuntimeError for a bug in the worker (logged)."""
        if self._stopped:
            raise WorkerUnavailable("the endpoint is stopping")
        try:
            worker = self._idle.get(timeout=wait)
        except queue.Empty:
            raise WorkerUnavailable(f"all {self.workers} serving workers stayed busy for {wait:g} s") from None
        try:
            worker.conn.send((body, content_type, accept))
            kind, value = worker.conn.recv()
        except (EOFError, OSError):
            self._replace(worker)
            raise WorkerUnavailable("the serving worker died during the request") from None
        self._idle.put(worker)
        if kind == "error":
            log.error("a serving worker failed on a request:\n%s", value)
            raise RuntimeError("the serving worker failed (see the server log)")
        return value

    def _replace(self, dead: _Worker) -> None:
        """Start a worker in place of a dead one, in the background: the failed request is answered at once."""
        exit_code = dead.process.exitcode if not dead.process.is_alive() else None
        dead.end()
        with self._lock:
            self._all.discard(dead)
        log.error("a serving worker died (exit code %s); starting another", exit_code)

        def replace() -> None:
            if self._stopped:
                return
            worker = _Worker(self._context, self.model_dir)
            try:
                worker.wait_ready(START_TIMEOUT)
            except RuntimeError:
                log.exception("a replacement serving worker could not start")
                worker.end()
                return
            with self._lock:
                if self._stopped:
                    worker.end()
                    return
                self._all.add(worker)
                self.restarts += 1
            self._idle.put(worker)

        threading.Thread(target=replace, name="replace-worker", daemon=True).start()

    def stop(self, timeout: float = 30.0) -> None:
        """No new requests; running ones finish (up to ``timeout``); then every worker ends."""
        with self._lock:
            self._stopped = True
            workers = set(self._all)
        ended = 0
        while ended < len(workers):
            try:
                self._idle.get(timeout=timeout).end()  # idle, so not mid-request
            except queue.Empty:
                break
            ended += 1
        for worker in workers:  # still busy after the timeout: ended anyway
            if worker.process.is_alive():
                worker.end()
