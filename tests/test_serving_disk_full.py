"""Serving on a full disk (probe "disk full", findings F2 and F3): an answer whose capture could not be written is
counted and said by `diagnosa predict`; feedback the endpoint's lake cannot store is a 503 to send again later, not a
500 "internal error" (nor bad input). The disk fills by the one write failing with ENOSPC, as a full tmpfs made it:
no mount needed."""
from __future__ import annotations

import errno
import json
import urllib.error
import urllib.request

import pytest
from feedback_endpoint import captured_event, endpoint_fixture  # noqa: F401  (the fixture "endpoint")

from diagnosa.cli import main
from diagnosa.lake import DataLake, LocalStorage
from inference.capture import DataCapture
from inference.client import ClientFailure, DiagnosaClient
from inference.server import EndpointServer

SECRET_PATH = "/srv/secret-disk/lake"  # a path of the server's disk a full-disk error names: never sent to a client


def _no_space(path: str = SECRET_PATH) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)


class FullSpool:
    """The capture spool's write (``_Stream.append``) failing as a full disk does for the next ``failures`` lines."""

    def __init__(self, capture: DataCapture):
        self.real = capture._capture.append
        self.failures = 0
        capture._capture.append = self  # type: ignore[method-assign]

    def __call__(self, data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise _no_space()
        self.real(data)


@pytest.fixture(name="capturing")
def capturing_fixture(tmp_path, trained_model_dir):
    """(a ready endpoint serving a real model with data capture, its spool's FullSpool)."""
    capture = DataCapture(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa")
    spool = FullSpool(capture)
    with EndpointServer(str(trained_model_dir), capture=capture) as ep:
        ep.wait_until_ready(60)
        yield ep, spool


# -- F2: answers whose capture failed ---------------------------------------------------------------------------

def test_the_client_counts_the_answers_whose_capture_failed(capturing):
    ep, spool = capturing
    client = DiagnosaClient("diagnosa", endpoint_url=ep.url)
    spool.failures = 1  # the header is the request's: every patient of it goes uncaptured
    failed = client.predict([{"age": 40}, {"age": 50}, {"age": 60}])
    assert len(failed.results) == 3 and failed.capture_failed is True
    captured = client.predict({"age": 40})
    assert captured.capture_failed is False
    assert (client.answered, client.uncaptured) == (4, 3)


@pytest.mark.parametrize("failures, said", [
    (1, "100 of 150 answers were not captured by the endpoint (X-Diagnosa-Capture: failed)"),
    (2, "150 of 150 answers were not captured by the endpoint (X-Diagnosa-Capture: failed)"),
], ids=["first-request-not-captured", "none-captured"])
def test_predict_says_how_many_answers_were_not_captured_and_exits_0(capturing, tmp_path, monkeypatch, capsys,
                                                                     failures, said):
    ep, spool = capturing
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "patients.jsonl"
    path.write_text("".join(json.dumps({"age": 20 + i % 60}) + "\n" for i in range(150)))  # 2 requests: 100 + 50
    command = ["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", ep.url]
    assert main(command) == 0  # every answer captured: not a word about capture
    out, err = capsys.readouterr()
    assert len(json.loads(out)["predictions"]) == 150 and "not captured" not in err
    spool.failures = failures
    status = main(command)
    out, err = capsys.readouterr()
    # The predictions are valid and all written: exit status 0, as documented for answered input.
    assert status == 0
    assert len(json.loads(out)["predictions"]) == 150
    assert said in err and "the monitor will not see them" in err and "endpoint's log" in err


def test_predict_of_a_raw_batch_says_how_many_answers_were_not_captured(capturing, tmp_path, capsys):
    ep, spool = capturing
    workspace = str(tmp_path / "ws")
    assert main(["--workspace", workspace, "data", "generate", "--patients", "1000", "--seed", "3",
                 "--defect-rate", "0", "--quiet"]) == 0
    capsys.readouterr()
    spool.failures = 2  # the first two of the batch's requests (of 50 patients each)
    status = main(["--workspace", workspace, "predict", "--batch", "cohort-n1000-s3", "--endpoint-url", ep.url])
    out, err = capsys.readouterr()
    assert status == 0 and "1,000 of 1,000 patients answered" in out
    assert "100 of 1,000 answers were not captured by the endpoint (X-Diagnosa-Capture: failed)" in err


# -- F3: feedback the lake cannot store -------------------------------------------------------------------------

def _lake_full(monkeypatch) -> None:
    """Every write under the lake's feedback/ zone fails as a full disk does (its error naming the server's path)."""
    real = LocalStorage.put_bytes

    def put_bytes(self, key, data):
        if key.startswith("feedback/"):
            raise _no_space(f"{SECRET_PATH}/{key}.lake-tmp")
        return real(self, key, data)

    monkeypatch.setattr(LocalStorage, "put_bytes", put_bytes)


def _lost_the_race(monkeypatch) -> None:
    """Another writer rewrites the feedback object every time: store_feedback gives up (LakeError) after 50 reads."""
    monkeypatch.setattr(DataLake, "put_json_if", lambda self, key, obj, tag: False)


STORAGE_FAILURES = {"disk-full": _lake_full, "write-race": _lost_the_race}


def _post(url: str, body: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url + "/feedback", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


@pytest.mark.parametrize("failure", sorted(STORAGE_FAILURES), ids=sorted(STORAGE_FAILURES))
def test_feedback_the_lake_cannot_store_is_a_503_to_send_again_not_an_internal_error(endpoint, monkeypatch, failure):
    ep, lake = endpoint
    event = captured_event(ep)
    STORAGE_FAILURES[failure](monkeypatch)
    status, headers, body = _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO"})
    assert status == 503, body  # was 500 {"error": "internal error"}
    assert int(headers["Retry-After"]) > 0
    assert body["event_id"] == event
    assert f"feedback for event {event} not stored" in body["error"]
    assert "send it again later" in body["error"] and "internal error" not in body["error"]
    assert SECRET_PATH not in json.dumps(body) and str(lake.uri) not in json.dumps(body)
    if failure == "disk-full":
        assert "No space left on device" in body["error"]
    assert [key for key in lake.list("feedback/") if not key.endswith("/")] == []  # nothing stored

    from inference.client import EndpointBusy, FeedbackNotStored

    with pytest.raises(FeedbackNotStored) as raised:  # a ClientFailure to retry, not a refusal of the record
        DiagnosaClient("diagnosa", endpoint_url=ep.url).send_feedback(event, "NO ENFERMO")
    assert isinstance(raised.value, (EndpointBusy, ClientFailure))
    assert str(raised.value).startswith(f"feedback not stored by endpoint {ep.url} (503, a storage failure: try again "
                                        "later): ")


def test_feedback_through_the_endpoint_with_a_full_lake_is_said_not_stored_try_again(endpoint, monkeypatch, tmp_path,
                                                                                     capsys):
    ep, lake = endpoint
    event = captured_event(ep)
    _lake_full(monkeypatch)
    monkeypatch.chdir(tmp_path)
    workspace = str(tmp_path / "ws")
    # One record on the command line: the endpoint, not the record, stopped it (exit 1, not 2: send it again).
    assert main(["--workspace", workspace, "feedback", event, "NO ENFERMO", "--endpoint-url", ep.url]) == 1
    err = capsys.readouterr().err
    assert "feedback not stored by endpoint" in err and "try again later" in err
    assert "No space left on device" in err and "internal error" not in err
    # A file of them: the endpoint, not the file, stopped it (exit 1), nothing of it stored.
    path = tmp_path / "fb.jsonl"
    path.write_text(json.dumps({"event_id": event, "diagnosis": "NO ENFERMO"}) + "\n")
    status = main(["--workspace", workspace, "feedback", "--file", str(path), "--endpoint-url", ep.url])
    out, err = capsys.readouterr()
    assert status == 1
    assert "0 stored, 0 refused" in out
    assert "feedback not stored by endpoint" in err and "try again later" in err
    assert "stopped at line 1" in err and "internal error" not in err
    assert SECRET_PATH not in err
