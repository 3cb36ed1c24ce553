"""Read-modify-writes of one lake object by several processes at once lose nobody's change: the lake's conditional
write (``read_tagged`` + ``put_bytes_if``: S3's If-Match / If-None-Match, a folder flock on a local lake), and its two
users, a patient's feedback object and a dataset's LATEST.json.

The race is made, not waited for: the lake seen by this process lets another process — the real CLI, in a
subprocess, on the same folder or the same S3 (moto's server) — write the object between this process's read of it
and its write. Before the conditional write, the second writer's feedback was gone although it was told "stored"
(two `diagnosa feedback --file` imports of 20,000 events at once lost one), and an ingest asked for earlier took
LATEST.json back from one asked for later."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lake_fixtures
import pytest

from diagnosa.data.ingest import ingest_csv, latest_version
from diagnosa.lake import DataLake, LakeError, storage_from_uri
from inference.feedback import parse_feedback, store_feedback

aws, lake = lake_fixtures.aws, lake_fixtures.lake  # the fixtures, on a folder and on S3
BUCKET, REGION = lake_fixtures.BUCKET, lake_fixtures.REGION
DIAGNOSA = [sys.executable, "-m", "diagnosa.cli"]
EVENT = "feedback/diagnosa/events/e1.json"


# --- the primitive ------------------------------------------------------------------------------------------------

def test_a_conditional_write_happens_only_on_the_state_it_was_read_in(lake):
    key = "feedback/diagnosa/events/e1.json"
    assert lake.put_bytes_if(key, b"first", None)  # None: only if there is none
    assert not lake.put_bytes_if(key, b"second", None)  # there is one now
    data, tag = lake.read_tagged(key)
    assert data == b"first"
    lake.put_bytes(key, b"someone else")  # another writer, after the read
    assert not lake.put_bytes_if(key, b"mine", tag)
    assert lake.get_bytes(key) == b"someone else"  # nothing written over it
    data, tag = lake.read_tagged(key)
    assert lake.put_bytes_if(key, b"mine", tag) and lake.get_bytes(key) == b"mine"
    _, tag = lake.read_tagged(key)
    lake.delete(key)
    assert not lake.put_bytes_if(key, b"again", tag)  # removed since the read: not recreated
    assert not lake.exists(key)


# --- the race, made by a real second process ----------------------------------------------------------------------

class SecondWriterAfterRead:
    """A storage that, the first time this process reads a key ending with ``suffix`` (once a key ending with
    ``armed_by`` was written, when given), runs ``second`` — another process writing that object — before it hands
    the read back: the interleaving two writers at once can have."""

    def __init__(self, storage: Any, suffix: str, second: Callable[[], None], armed_by: str | None = None) -> None:
        self.storage, self.suffix, self.second, self.armed_by = storage, suffix, second, armed_by
        self.uri, self.fired = storage.uri, False

    def _read(self, key: str) -> None:
        if not self.fired and self.armed_by is None and key.endswith(self.suffix):
            self.fired = True
            self.second()

    def get_bytes(self, key: str) -> bytes:
        data = self.storage.get_bytes(key)
        self._read(key)
        return data

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        got = self.storage.read_tagged(key)
        self._read(key)
        return got

    def put_bytes(self, key: str, data: bytes) -> None:
        self.storage.put_bytes(key, data)
        if self.armed_by is not None and key.endswith(self.armed_by):
            self.armed_by = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 on a loopback port, reachable from subprocesses; the lake bucket created."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", region_name=REGION, endpoint_url=url, aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def shared_lake(request, tmp_path, monkeypatch) -> tuple[str, dict[str, str]]:
    """(lake URI, environment) that this process and a subprocess both reach: a folder, or a prefix of moto's S3."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if request.param == "local":
        return str(tmp_path / "lake"), env
    url = request.getfixturevalue("s3_server")
    aws_env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
               "AWS_ENDPOINT_URL": url}
    for name, value in aws_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return f"s3://{BUCKET}/{tmp_path.name}", {**env, **aws_env}


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*DIAGNOSA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_feedback_stored_by_another_process_meanwhile_is_kept(shared_lake, tmp_path):
    uri, env = shared_lake
    lake = DataLake.from_uri(uri)
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "ENFERMEDAD LEVE", "note": "1st"}))

    def second() -> None:  # a colleague's `diagnosa feedback`, straight to the same lake
        _cli(env, tmp_path, "--workspace", str(tmp_path / "ws"), "--lake", uri,
             "feedback", "e1", "ENFERMEDAD CRÓNICA", "--note", "2nd")

    racing = DataLake(SecondWriterAfterRead(storage_from_uri(uri), EVENT, second))
    stored = store_feedback(racing, "diagnosa",
                            parse_feedback({"event_id": "e1", "diagnosis": "ENFERMEDAD AGUDA", "note": "3rd"}))
    assert racing.storage.fired
    body = lake.get_json(EVENT)
    # Each of the three is there: this store's the current record, the other process's and the first its revisions.
    assert [body["note"], *(r["note"] for r in body["revisions"])] == ["3rd", "2nd", "1st"]
    assert stored.replaced is not None and stored.replaced.diagnosis == "ENFERMEDAD CRÓNICA"  # what it really replaced


def test_a_store_that_keeps_losing_the_race_stores_nothing_and_says_so(tmp_path, monkeypatch):
    import inference.feedback as feedback

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "ENFERMEDAD LEVE"}))
    monkeypatch.setattr(feedback, "STORE_ATTEMPTS", 3)
    rewrites = iter(range(100))

    class AlwaysRewritten(SecondWriterAfterRead):
        def _read(self, key: str) -> None:  # another writer after every read
            self.storage.put_bytes(key, json.dumps({"diagnosis": "NO ENFERMO", "n": next(rewrites)}).encode())

    racing = DataLake(AlwaysRewritten(lake.storage, EVENT, lambda: None))
    with pytest.raises(LakeError, match=r"rewritten by other writers 3 times .* nothing of it was replaced, send it"):
        store_feedback(racing, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "ENFERMEDAD AGUDA"}))
    assert lake.get_json(EVENT) == {"diagnosis": "NO ENFERMO", "n": 2}  # the other writer's, untouched


def _table(folder: Path, name: str, rows: int) -> tuple[Path, Path]:
    """An own dataset's CSV + config (docs/data.md): ``rows`` rows of two labels."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, toml_path = folder / f"{name}.csv", folder / f"{name}.toml"
    lines = ["pid,age,crp,outcome"] + [f"p{i},{30 + i % 50},{(i * 7) % 90}.5,{'sick' if i % 3 else 'well'}"
                                       for i in range(rows)]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    toml_path.write_text('name = "clinic"\ntarget = "outcome"\nlabels = ["well", "sick"]\nid_column = "pid"\n',
                         encoding="utf-8")
    return csv_path, toml_path


def test_an_ingest_asked_for_later_keeps_latest_from_one_asked_earlier_that_commits_after_it(shared_lake, tmp_path):
    uri, env = shared_lake
    first_csv, config = _table(tmp_path / "first", "clinic", 45)
    early_csv, _ = _table(tmp_path / "early", "clinic", 60)
    late_csv, _ = _table(tmp_path / "late", "clinic", 90)
    ingest_csv(DataLake.from_uri(uri), first_csv, config)  # a dataset with a latest version already

    def later_ingest() -> None:  # asked for now, after the one running here, and done before it moves LATEST.json
        _cli(env, tmp_path, "--workspace", str(tmp_path / "ws"), "--lake", uri,
             "data", "ingest", str(late_csv), "--config", str(config))

    # The ingest here reads LATEST.json when it starts, writes its version, then reads LATEST.json again to move
    # it: the later ingest commits in between (armed once this one's manifest is written).
    racing = DataLake(SecondWriterAfterRead(storage_from_uri(uri), "/LATEST.json", later_ingest,
                                            armed_by="/manifest.json"))
    report = ingest_csv(racing, early_csv, config)
    assert racing.storage.fired
    lake = DataLake.from_uri(uri)
    latest = latest_version(lake, "clinic")
    assert latest != report.version  # the later-asked ingest's version stays the latest
    assert lake.get_json(f"curated/clinic/{latest}/manifest.json")["rows"] == 90
    assert report.overtaken_by == latest  # and this ingest says so
