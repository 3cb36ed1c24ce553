"""Capture survives a SIGKILL: every prediction answered 200 is in the lake after a restart, exactly once.

A subprocess serves the session's trained model with capture on a temporary lake; client threads
send predictions and keep the ``X-Diagnosa-Event-Id`` of every 200; the server is SIGKILLed while
requests are in flight; a new DataCapture on the same lake (and spool) ships what was left.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from diagnosa.lake import DataLake
from inference.capture import DataCapture, read_capture

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"instances": [{"age": 67, "sex": "M", "temperature_c": 38.9, "spo2_pct": 90,
                                  "symptoms": ["HP:0001945"]}]}).encode()
SERVER = """
import sys, time
from diagnosa.lake import DataLake
from inference.capture import DataCapture
from inference.server import EndpointServer
capture = DataCapture(DataLake.from_uri(sys.argv[2]), "diagnosa", flush_seconds=float(sys.argv[3]))
endpoint = EndpointServer(sys.argv[1], capture=capture).start()
endpoint.wait_until_ready(60)
print(endpoint.port, flush=True)
while True:
    time.sleep(1)
"""


def serve_and_kill(model_dir: str, lake_dir: Path, flush_seconds: float, kill_after: int, threads: int = 8,
                   pythonpath: str | None = None) -> list[str]:
    """Event ids answered 200 before the server was SIGKILLed (requests were in flight when it died)."""
    env = {**os.environ, "PYTHONPATH": pythonpath or str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, model_dir, str(lake_dir), str(flush_seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        port = int(proc.stdout.readline())
        answered: list[str] = []
        lock = threading.Lock()
        enough = threading.Event()

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                while True:
                    conn.request("POST", "/invocations", BODY, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    if response.status == 200:
                        with lock:
                            answered.append(response.getheader("X-Diagnosa-Event-Id"))
                            if len(answered) >= kill_after:
                                enough.set()
            except (OSError, http.client.HTTPException):
                return  # the server died under us
            finally:
                conn.close()

        workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        assert enough.wait(120), f"only {len(answered)} answers"
        os.kill(proc.pid, signal.SIGKILL)  # no handler, no flush: the clients are still sending
        for worker in workers:
            worker.join(15)
        proc.wait(10)
        with lock:
            return list(answered)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("flush_seconds", [600.0, 0.05])  # nothing shipped yet / shipping while killed
def test_every_answered_prediction_survives_a_sigkill(trained_model_dir, tmp_path, flush_seconds):
    lake_dir = tmp_path / "lake"
    answered = serve_and_kill(str(trained_model_dir), lake_dir, flush_seconds, kill_after=300)
    assert len(answered) >= 300 and len(set(answered)) == len(answered)
    lake = DataLake.from_uri(str(lake_dir))
    with DataCapture(lake, "diagnosa") as restarted:  # the restart: ships what the killed server spooled
        assert restarted.flush()
    result = read_capture(lake, "diagnosa")
    ids = Counter(e["eventMetadata"]["eventId"] for e in result.events)
    assert result.malformed == 0 and not result.problems
    assert [i for i, n in ids.items() if n > 1] == []  # no duplicates
    missing = set(answered) - set(ids)
    assert not missing, f"{len(missing)} of {len(answered)} answered predictions were not captured"
    assert not list((lake_dir / ".capture-spool").rglob("*.seg"))  # the spool is empty once shipped


def _line(event_id: str) -> bytes:
    from inference.capture import capture_line

    when = datetime(2026, 11, 27, 17, 5, 9, tzinfo=timezone.utc)
    stamp = int(when.timestamp() * 1_000_000)
    body = json.dumps(capture_line(event_id, None, b"{}", "application/json", b"{}", "application/json", when),
                      separators=(",", ":"))
    return f"{stamp} {body}\n".encode()


def test_a_torn_last_spool_line_is_dropped_and_counted(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    segments = tmp_path / "lake" / ".capture-spool" / "diagnosa-AllTraffic" / "capture"
    segments.mkdir(parents=True)
    torn = _line("e-3")
    (segments / "00000000000000000001-dead0001.seg").write_bytes(_line("e-1") + _line("e-2") + torn[:len(torn) // 2])
    with DataCapture(lake, "diagnosa") as capture:
        assert capture.recovered == 2 and capture.flush()
        assert capture.torn == 1 and capture.written == 2
    result = read_capture(lake, "diagnosa")
    assert [e["eventMetadata"]["eventId"] for e in result.events] == ["e-1", "e-2"] and result.malformed == 0


def test_recovery_is_idempotent_when_killed_midway(tmp_path):
    """A segment shipped but not yet deleted (killed between the two) is shipped again to the same key."""
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    segments = tmp_path / "lake" / ".capture-spool" / "diagnosa-AllTraffic" / "capture"
    segments.mkdir(parents=True)
    segment = segments / "00000000000000000001-dead0002.seg"
    data = _line("e-1") + _line("e-2")
    segment.write_bytes(data)
    with DataCapture(lake, "diagnosa") as capture:
        assert capture.flush()
    first = {k: lake.get_bytes(k) for k in lake.list("capture/")}
    segment.write_bytes(data)  # as if the process died after the put and before the unlink
    with DataCapture(lake, "diagnosa") as capture:
        assert capture.flush()
    assert {k: lake.get_bytes(k) for k in lake.list("capture/")} == first and len(first) == 1
    assert [e["eventMetadata"]["eventId"] for e in read_capture(lake, "diagnosa").events] == ["e-1", "e-2"]


def test_a_second_live_capture_cannot_share_the_spool(tmp_path):
    from inference.capture import SpoolBusy

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with DataCapture(lake, "diagnosa"):
        with pytest.raises(SpoolBusy, match="in use"):
            DataCapture(lake, "diagnosa")
    DataCapture(lake, "diagnosa").close()  # free again once the first is closed
