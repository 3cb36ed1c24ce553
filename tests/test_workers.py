"""Scoring in worker processes (inference/workers.py): the same answers as in process, a busy worker takes no
request, a dead worker fails only its request and is replaced, and no worker outlives its server."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diagnosa.net import free_port, wait_until_ok
from inference import handler
from inference.server import EndpointServer
from inference.workers import WorkerPool, WorkerUnavailable, score

JSON = "application/json"
PATIENT = {"patient_id": "W-1", "age": 67, "sex": "M", "temperature_c": 38.9, "symptoms": ["HP:0001945"]}
BODIES = [
    (json.dumps(PATIENT).encode(), JSON, None),
    (json.dumps({"instances": [PATIENT] * 3, "top_k": 2}).encode(), JSON, "text/csv"),
    (b"patient_id,age,sex\nC-1,50,F\n", "text/csv", JSON),
    (b'{"age": "old"}', JSON, None),  # refused: 400 naming the field
    (b"[1,", JSON, None),  # malformed
    (json.dumps(PATIENT).encode(), JSON, "application/xml"),  # 406
]


@pytest.fixture(scope="module")
def model_dir(trained_model_dir) -> str:
    return str(trained_model_dir)


@pytest.fixture(scope="module")
def pool(model_dir):
    pool = WorkerPool(model_dir, 2)
    pool.start()
    yield pool
    pool.stop()


def _worker_pids(pool: WorkerPool) -> list[int]:
    return sorted(w.process.pid for w in pool._all)


def test_workers_answer_exactly_as_scoring_in_process(pool, model_dir):
    service = handler.load_service(model_dir)
    handler.warm_up(service)
    assert pool.version == service.version
    for body, content_type, accept in BODIES:
        assert pool.invoke(body, content_type, accept) == score(service, body, content_type, accept)
    statuses = [pool.invoke(*case).status for case in BODIES]
    assert statuses == [200, 200, 200, 400, 400, 406]


def test_a_busy_worker_takes_no_request_and_a_full_pool_is_unavailable(pool):
    held = pool._idle.get(timeout=5)  # one worker "busy" (as under a long request)
    try:
        assert pool.invoke(*BODIES[0]).status == 200  # the other one answers
        other = pool._idle.get(timeout=5)
        try:
            with pytest.raises(WorkerUnavailable, match="stayed busy"):
                pool.invoke(*BODIES[0], wait=0.2)
        finally:
            pool._idle.put(other)
    finally:
        pool._idle.put(held)
    assert pool.invoke(*BODIES[0]).status == 200


def test_a_dead_worker_fails_only_its_request_and_is_replaced(model_dir):
    pool = WorkerPool(model_dir, 1)
    pool.start()
    try:
        (pid,) = _worker_pids(pool)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerUnavailable, match="died"):
            pool.invoke(*BODIES[0])
        deadline = time.monotonic() + 60
        while pool.restarts < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.restarts == 1 and _worker_pids(pool) != [pid]
        assert pool.invoke(*BODIES[0]).status == 200
    finally:
        pool.stop()
    assert pool._all and not any(w.process.is_alive() for w in pool._all)


def test_a_model_the_workers_cannot_load_is_reported(tmp_path):
    pool = WorkerPool(str(tmp_path / "no-model"), 2)
    with pytest.raises(RuntimeError, match="could not load the model"):
        pool.start(timeout=60)
    endpoint = EndpointServer(str(tmp_path / "no-model"), workers=2).start()
    try:
        with pytest.raises(RuntimeError, match="failed to load"):
            endpoint.wait_until_ready(60)
    finally:
        endpoint.stop()


@pytest.mark.parametrize("workers", [-1, 1.5, True])
def test_bad_worker_counts_are_refused(model_dir, workers):
    with pytest.raises(ValueError, match="workers"):
        EndpointServer(model_dir, workers=workers)


def test_a_custom_loader_cannot_reach_workers(model_dir):
    with pytest.raises(ValueError, match="loader"):
        EndpointServer(model_dir, workers=2, loader=handler.load_service)


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_no_worker_outlives_a_killed_server(model_dir, tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "diagnosa.cli", "--workspace", str(tmp_path), "serve",
                               "--model", model_dir, "--port", str(port), "--workers", "2",
                               "--capture-sampling", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/ping", timeout=90, process=server)
        children = _descendants(server.pid)
        assert len(children) >= 3  # the forkserver and two workers (and multiprocessing's resource tracker)
        server.kill()  # SIGKILL: no clean stop
        server.wait(10)
        deadline = time.monotonic() + 20
        while any(map(_running, children)) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [c for c in children if _running(c)]
        assert not alive, f"processes left behind by the killed server: {alive}"
    finally:
        if server.poll() is None:
            server.kill()
