"""A failed ingest (the disk full mid-version, S3 refusing a part) removes what it wrote of its version: the parts and
quarantine of a version without a manifest were never read but took space, and nobody said so. The error still names
the file and the reason; the raw object, other versions and a concurrent ingest's objects are never removed. The
disk fills at the exact write, as a full tmpfs made it (the write stops half-way with ENOSPC): no mount needed."""
from __future__ import annotations

import builtins
import errno
import logging

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

import diagnosa.data.ingest as ingest
import diagnosa.lake
from diagnosa.cli import main
from diagnosa.data.ingest import ingest_csv, latest_version, load_curated
from diagnosa.lake import DataLake, S3Storage

CONFIG = """
name = "breast-biopsy"
id_column = "case"
target = "outcome"
labels = ["benign", "borderline", "malignant"]

[columns.age]
type = "integer"
min = 0
max = 120
"""
LABELS = ["benign", "borderline", "malignant"]


def _files(tmp_path, rows: int = 30, bad: int = 2, name: str = "biopsies"):
    """A CSV of ``rows`` accepted rows (and ``bad`` quarantined ones) and its config."""
    lines = ["case,age,radius,outcome"]
    lines += [f"{name}-c{i},{30 + i % 50},{10 + i % 7}.5,{LABELS[i % 3]}" for i in range(rows)]
    lines += [f"{name}-x{i},999,1.0,benign" for i in range(bad)]  # age out of range: quarantined
    csv = tmp_path / f"{name}.csv"
    csv.write_text("\n".join(lines) + "\n")
    config = tmp_path / "biopsies.toml"
    config.write_text(CONFIG)
    return csv, config


def _fill_at(monkeypatch, marker: str) -> None:
    """The local lake's write of a file whose name holds ``marker`` stops half-way: the disk is full."""
    real = builtins.open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(path, mode="r", *args, **kwargs):
        fh = real(path, mode, *args, **kwargs)
        return Full(fh) if marker in str(path) and "x" in mode else fh

    monkeypatch.setattr(diagnosa.lake, "open", fake_open, raising=False)


def _version_objects(lake: DataLake, version: str) -> list[str]:
    return [k for k in lake.list("curated/") + lake.list("quarantine/") if f"/{version}/" in k]


def test_a_cli_ingest_cut_short_by_a_full_disk_removes_the_parts_it_wrote(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setattr(ingest, "ROWS_PER_PART", 10)  # 3 parts: the disk fills at the third
    lake_dir = tmp_path / "lake"
    ws = ["--workspace", str(tmp_path / "ws"), "--lake", str(lake_dir), "data", "ingest"]
    first_csv, config = _files(tmp_path, name="first")
    assert main([*ws, str(first_csv), "--config", str(config), "--quiet"]) == 0
    lake = DataLake.from_uri(str(lake_dir))
    first = latest_version(lake, "breast-biopsy")
    before = _version_objects(lake, first)
    capsys.readouterr()

    csv, _ = _files(tmp_path, name="second")
    _fill_at(monkeypatch, "part-00002.parquet")
    with caplog.at_level(logging.WARNING, logger="diagnosa.data.ingest"):
        assert main([*ws, str(csv), "--config", str(config), "--quiet"]) == 1
    err = capsys.readouterr().err
    # The error names the file that could not be written and why, as before.
    assert "No space left on device: " in err and "part-00002.parquet" in err, err
    versions = {folder.split("/")[2] for folder in lake.list_folders("curated/breast-biopsy/")}
    failed = (versions - {first}).pop()  # its (empty) folder may stay; no object of it does
    assert _version_objects(lake, failed) == []  # quarantine and parts 0 and 1 were left before
    assert not [p for p in lake_dir.rglob("*") if p.is_file() and "tmp" in p.name]
    # Nothing of another version, the latest unchanged, the raw file kept (write-once; an ingest again reuses it).
    assert _version_objects(lake, first) == before and latest_version(lake, "breast-biopsy") == first
    assert len(lake.list("raw/breast-biopsy/")) == 2
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"ingest of version {failed} of 'breast-biopsy' failed before its manifest was written" in said
    assert "removed the 4 object(s)" in said  # the quarantine, parts 0, 1 and the half-written 2

    monkeypatch.undo()
    monkeypatch.setattr(ingest, "ROWS_PER_PART", 10)
    assert main([*ws, str(csv), "--config", str(config), "--quiet"]) == 0  # space freed: it completes
    assert latest_version(lake, "breast-biopsy") == failed and len(load_curated(lake, "breast-biopsy")[0]) == 30


def test_the_error_raised_is_the_write_s_own_with_a_note_of_what_was_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "ROWS_PER_PART", 10)
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    csv, config = _files(tmp_path)
    _fill_at(monkeypatch, "part-00001.parquet")
    with pytest.raises(OSError) as raised:
        ingest_csv(lake, csv, config)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename.endswith("part-00001.parquet")
    assert any("removed the 3 object(s)" in note for note in getattr(raised.value, "__notes__", []))
    assert lake.list("curated/") == [] and lake.list("quarantine/") == []


@pytest.fixture(name="s3")
def s3_fixture(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket="diagnosa-lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def _refuse_at(monkeypatch, marker: str, code: str = "InternalError") -> None:
    """S3 answers the PutObject of a key holding ``marker`` with an error (a 500 after its retries)."""
    real = S3Storage.put_bytes

    def put_bytes(self, key, data):
        if marker in key:
            raise ClientError({"Error": {"Code": code, "Message": "We encountered an internal error"},
                               "ResponseMetadata": {"HTTPStatusCode": 500}}, "PutObject")
        return real(self, key, data)

    monkeypatch.setattr(S3Storage, "put_bytes", put_bytes)


def test_a_failed_ingest_on_s3_removes_what_it_wrote_and_nothing_else(s3, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "ROWS_PER_PART", 10)
    lake = DataLake.from_uri("s3://diagnosa-lake/team", s3_client=s3)
    first_csv, config = _files(tmp_path, name="first")
    first = ingest_csv(lake, first_csv, config).version
    before = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="diagnosa-lake")["Contents"])
    csv, _ = _files(tmp_path, name="second")
    _refuse_at(monkeypatch, "part-00002.parquet")
    with pytest.raises(ClientError, match="InternalError"):
        ingest_csv(lake, csv, config)
    after = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="diagnosa-lake")["Contents"])
    # Only the new raw object was added: the failed version's quarantine and parts are gone, the first is whole.
    assert [k for k in after if k not in before] == [k for k in after if k.startswith("team/raw/")
                                                      and "second" in k]
    assert latest_version(lake, "breast-biopsy") == first and len(load_curated(lake, "breast-biopsy")[0]) == 30


def test_an_ingest_of_the_same_data_that_completed_meanwhile_keeps_its_version(s3, tmp_path, monkeypatch):
    """Two ingests of one file write the same version's keys: the one that failed removes nothing once the other
    wrote the manifest (here: between its failing write and its cleanup)."""
    monkeypatch.setattr(ingest, "ROWS_PER_PART", 10)
    lake = DataLake.from_uri("s3://diagnosa-lake", s3_client=s3)
    csv, config = _files(tmp_path)
    real = S3Storage.put_bytes
    state = {"other": False}

    def put_bytes(self, key, data):
        if "part-00002" in key and not state["other"]:
            state["other"] = True
            monkeypatch.setattr(S3Storage, "put_bytes", real)
            ingest_csv(lake, csv, config)  # the concurrent ingest of the same file, whole
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
        return real(self, key, data)

    monkeypatch.setattr(S3Storage, "put_bytes", put_bytes)
    with pytest.raises(ClientError) as raised:
        ingest_csv(lake, csv, config)
    assert any("kept" in note for note in getattr(raised.value, "__notes__", []))
    curated, manifest = load_curated(lake, "breast-biopsy")  # every part the manifest names is there
    assert len(curated) == 30 and len(manifest["data_keys"]) == 3


def test_parts_removed_by_a_failed_ingest_of_the_same_data_are_written_again(tmp_path, monkeypatch):
    """The failed one cleaned up while the other was writing: the other writes what is gone again before its
    manifest names it."""
    monkeypatch.setattr(ingest, "ROWS_PER_PART", 10)
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    csv, config = _files(tmp_path)
    real = diagnosa.lake.LocalStorage.put_bytes

    def put_bytes(self, key, data):
        real(self, key, data)
        if key.endswith("part-00002.parquet"):  # the other ingest's cleanup, right then
            self.delete(key.replace("part-00002", "part-00000"))

    monkeypatch.setattr(diagnosa.lake.LocalStorage, "put_bytes", put_bytes)
    ingest_csv(lake, csv, config)
    assert len(load_curated(lake, "breast-biopsy")[0]) == 30


def test_a_manifest_written_between_the_cleanups_check_and_its_removal_gets_its_part_back(s3, tmp_path, monkeypatch):
    """The other ingest of the same file wrote its manifest after this one's check and before its removal: the
    version was left the latest with a part missing (10,000 of 12,000 rows in a probe), and the next run stopped."""
    monkeypatch.setattr(ingest, "ROWS_PER_PART", 10)
    lake = DataLake.from_uri("s3://diagnosa-lake", s3_client=s3)
    csv, config = _files(tmp_path)
    real_put, real_delete = S3Storage.put_bytes, S3Storage.delete
    _refuse_at(monkeypatch, "part-00002.parquet")
    state = {"other": False}

    def delete(self, key):
        if not state["other"]:  # the first removal: the other ingest finishes right before it lands
            state["other"] = True
            monkeypatch.setattr(S3Storage, "put_bytes", real_put)  # its writes succeed
            ingest_csv(lake, csv, config)
        return real_delete(self, key)

    monkeypatch.setattr(S3Storage, "delete", delete)
    with pytest.raises(ClientError, match="InternalError") as raised:
        ingest_csv(lake, csv, config)
    assert state["other"] and any("kept" in note for note in getattr(raised.value, "__notes__", []))
    curated, manifest = load_curated(lake, "breast-biopsy")  # every part the manifest names is there
    assert len(curated) == 30 and len(manifest["data_keys"]) == 3


def test_ingesting_again_writes_a_version_whose_parts_are_gone_whole_again(tmp_path, caplog):
    """A version whose manifest names a part the lake lost: "(already ingested)", exit 0, and it stayed broken, while
    Preprocess's refusal said to ingest again."""
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    csv, config = _files(tmp_path)
    version = ingest_csv(lake, csv, config).version
    _, manifest = load_curated(lake, "breast-biopsy")
    lake.delete(manifest["data_keys"][0])
    with pytest.raises(diagnosa.lake.ObjectNotFound):
        load_curated(lake, "breast-biopsy")
    with caplog.at_level(logging.WARNING):
        again = ingest_csv(lake, csv, config)
    assert again.version == version and not again.reused
    assert "lists 1 object(s) the lake no longer holds" in caplog.text
    assert len(load_curated(lake, "breast-biopsy")[0]) == 30
    assert ingest_csv(lake, csv, config).reused  # whole now: already ingested
