"""The local endpoint's storage failing (probe "disk full"): a capture write that fails leaves no empty spool segment
behind (one per failed request filled the spool folder), the answer still saying X-Diagnosa-Capture: failed; and
feedback to an endpoint whose lake is S3 that S3 fails (unreachable, a 5xx, throttling, refusing the endpoint's own
key) is a 503 to send again later, naming S3's error code and no bucket or credentials, not a 500 "internal error".
The disk fills at the exact write (os.write failing with ENOSPC); S3 is moto, its answer to the write replaced by the
error S3 sends (a botocore hook before the request is sent)."""
from __future__ import annotations

import errno
import json
import os
import socket
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from feedback_endpoint import captured_event
from moto import mock_aws
from test_serving_disk_full import _post

from diagnosa.lake import DataLake
from inference.capture import DataCapture, new_event_id
from inference.limits import CAPTURE_HEADER
from inference.server import EndpointServer

BUCKET = "secret-hospital-lake"
REGION = "eu-west-1"
KEY_ID = "AKIASECRETKEYID00000"


# -- capture: no empty segments ---------------------------------------------------------------------------------

def _segments(capture: DataCapture) -> list[str]:
    return sorted(p.name for p in capture.spool_dir.rglob("*.seg"))


def _disk_full_for(monkeypatch, capture: DataCapture) -> dict[str, int]:
    """Writes to the capture spool's segments fail as a full disk does (half the line written first), while on."""
    real = os.write
    state = {"on": 1}

    def write(fd, data):
        if state["on"] and fd == capture._capture.fd:
            real(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return state


def _record(capture: DataCapture, event_id: str) -> bool:
    when = datetime.now(timezone.utc)
    return capture.record(event_id, None, b'{"age": 40}', "application/json", b'{"predictions": []}',
                          "application/json", when)


def test_failed_capture_writes_leave_no_empty_segments(tmp_path, monkeypatch):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    capture = DataCapture(lake, "diagnosa", flush_seconds=3600, spool_dir=tmp_path / "spool")
    try:
        full = _disk_full_for(monkeypatch, capture)
        for i in range(5):
            assert not _record(capture, f"full-{i}")
        assert capture.spool_errors == 5 and capture.lookup("full-0") == "capture failed"
        assert _segments(capture) == []  # was 5 segments, each empty or a torn half line
        full["on"] = 0  # space freed
        assert _record(capture, "written")
        assert len(_segments(capture)) == 1
        full["on"] = 1  # a segment with a whole line in it is kept (sealed), the torn half dropped when shipped
        assert not _record(capture, "full-again")
        assert len(_segments(capture)) == 1
        full["on"] = 0
        assert capture.flush()
        assert capture.lookup("written") == "captured" and capture.written == 1
    finally:
        capture.close()


def test_an_answer_whose_capture_failed_still_says_so_and_leaves_no_segment(tmp_path, monkeypatch, trained_model_dir):
    capture = DataCapture(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa", flush_seconds=3600,
                          spool_dir=tmp_path / "spool")
    with EndpointServer(str(trained_model_dir), capture=capture) as ep:
        ep.wait_until_ready(60)
        _disk_full_for(monkeypatch, capture)
        for _ in range(3):
            request = urllib.request.Request(ep.url + "/invocations", data=b'{"age": 40}', method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200 and "predictions" in json.loads(response.read())
                assert response.headers[CAPTURE_HEADER] == "failed"
        assert _segments(capture) == []


# -- feedback to an S3 lake that fails --------------------------------------------------------------------------

@pytest.fixture(name="s3")
def s3_fixture(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-access-key-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION, config=Config(retries={"max_attempts": 1}))
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


def _s3_answers(client, status: int, code: str, operation: str = "PutObject") -> None:
    """S3's answer to the lake's ``operation`` replaced by the error it sends (the request goes no further)."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>S3 says {code} for bucket '
            f'{BUCKET}</Message><BucketName>{BUCKET}</BucketName><RequestId>R1</RequestId></Error>').encode()

    def answer(request, **_):
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))

    client.meta.events.register_first(f"before-send.s3.{operation}", answer)


@pytest.fixture(name="endpoint")
def endpoint_fixture(s3, tmp_path):
    lake = DataLake.from_uri(f"s3://{BUCKET}/lake", s3_client=s3)
    capture = DataCapture(lake, "diagnosa", flush_seconds=3600, spool_dir=tmp_path / "spool")
    ep = EndpointServer("unused", capture=capture, loader=lambda _: None).start()
    yield ep, s3
    ep.stop()


def _said_503(status: int, headers: dict, body: dict, event: str) -> str:
    assert status == 503, body  # was 500 {"error": "internal error"}
    assert int(headers["Retry-After"]) > 0 and body["event_id"] == event
    text = json.dumps(body)
    assert f"feedback for event {event} not stored" in body["error"] and "send it again later" in body["error"]
    assert "internal error" not in text
    assert BUCKET not in text and KEY_ID not in text and "secret-access-key-value" not in text
    return body["error"]


@pytest.mark.parametrize("status, code", [(500, "InternalError"), (503, "SlowDown"), (503, "ServiceUnavailable")],
                         ids=["5xx", "throttled", "unavailable"])
def test_feedback_s3_fails_to_store_is_a_503_naming_its_code(endpoint, status, code):
    ep, s3 = endpoint
    event = captured_event(ep)
    _s3_answers(s3, status, code)
    error = _said_503(*_post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO"}), event)
    assert f"storage failure: S3 answered {code}" in error


@pytest.mark.parametrize("code", ["AccessDenied", "NoSuchBucket"])
def test_feedback_s3_refuses_for_the_deployment_s_fault_is_a_503_saying_so(endpoint, code):
    ep, s3 = endpoint
    event = captured_event(ep)
    _s3_answers(s3, 403 if code == "AccessDenied" else 404, code)
    error = _said_503(*_post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO"}), event)
    assert f"S3 answered {code}" in error and "the endpoint's operator to fix" in error


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(name="unreachable")
def unreachable_fixture(monkeypatch, tmp_path):
    """An endpoint whose S3 lake cannot be reached (nothing listens where its client connects)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-access-key-value")
    client = boto3.client("s3", region_name=REGION, endpoint_url=f"http://127.0.0.1:{_closed_port()}",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    lake = DataLake.from_uri(f"s3://{BUCKET}/lake", s3_client=client)
    capture = DataCapture(lake, "diagnosa", flush_seconds=3600, spool_dir=tmp_path / "spool")
    ep = EndpointServer("unused", capture=capture, loader=lambda _: None).start()
    yield ep
    ep.stop(timeout=5)


def test_feedback_to_an_unreachable_s3_lake_is_a_503(unreachable):
    event = captured_event(unreachable)
    error = _said_503(*_post(unreachable.url, {"event_id": event, "diagnosis": "NO ENFERMO"}), event)
    assert "storage failure: EndpointConnectionError" in error


def test_feedback_whose_capture_cannot_be_read_from_an_unreachable_lake_is_a_503(unreachable):
    # An event this process did not capture itself (captured before a restart): its hour is read from the lake.
    event = new_event_id(datetime.now(timezone.utc) - timedelta(hours=2))
    error = _said_503(*_post(unreachable.url, {"event_id": event, "diagnosis": "NO ENFERMO"}), event)
    assert "could not be read (storage failure: EndpointConnectionError)" in error
