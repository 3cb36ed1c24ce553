"""The preprocessing job on hostile curated inputs: stray objects, broken manifests, unreadable parts, corrupted
feature columns. Each is refused with a reason naming what is wrong, first (the service keeps 1 KB of it)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diagnosa.data.schema import Schema
from processing import preprocess as job
from processing.preprocess import PreprocessParams, preprocess

MESSAGE_LIMIT = 1024


@pytest.fixture(scope="module")
def data(curated_cohort):
    frame, manifest = curated_cohort
    return frame, manifest


def curated(tmp_path: Path, data, parts: int = 2, listed: list[str] | None = None) -> Path:
    """A container base dir whose input/curated is laid out as the ingest lays a version out: ``parts`` Parquet parts
    under data/ and a manifest listing them (``listed``: what it lists instead)."""
    frame, manifest = data
    base = tmp_path / "opt" / "ml" / "processing"
    source = base / "input" / "curated"
    (source / "data").mkdir(parents=True)
    names = []
    size = -(-len(frame) // parts)
    for number in range(parts):
        names.append(f"data/part-{number:05d}.parquet")
        frame.iloc[number * size:(number + 1) * size].to_parquet(source / names[-1], index=False)
    prefix = f"curated/{manifest['dataset']}/{manifest['version']}"
    keys = [f"{prefix}/{name}" for name in (names if listed is None else listed)]
    (source / "manifest.json").write_text(json.dumps({**manifest, "data_keys": keys}), encoding="utf-8")
    return base


def failed(base: Path, *args: str) -> str:
    """Run the job, expect it to fail, and return the reason the service would show (the first 1 KB)."""
    assert job.main(["--base-dir", str(base), *args]) == 1
    message = (base.parent / "output" / "message").read_bytes()
    assert len(message) <= MESSAGE_LIMIT
    return message.decode("utf-8")


# ------------------------------------------------------------------------------------------------ finding: stray objects

def test_a_stray_export_under_the_curated_prefix_is_refused_not_trained_on(tmp_path, data):
    # curated/backup/old-export.parquet (other patients) was split, trained and tested on without a word.
    base = curated(tmp_path, data)
    source = base / "input" / "curated"
    (source / "backup").mkdir()
    stray = data[0].iloc[:50].assign(patient_id=lambda d: "X" + d["patient_id"])
    stray.to_parquet(source / "backup" / "old-export.parquet", index=False)
    reason = failed(base)
    assert "backup/old-export.parquet" in reason and "manifest does not list" in reason
    assert not any((base / "output").glob("*/*")), "nothing written"


@pytest.mark.parametrize("name, content", [
    ("data/._part-00000.parquet", b"\x00\x05\x16\x07" + b"\0" * 60),  # what a Mac's copy leaves beside each file
    ("data/part-00009.parquet", b""),  # an empty part
    ("_SUCCESS", b""),
])
def test_any_object_the_manifest_does_not_list_is_refused_by_name(tmp_path, data, name, content):
    base = curated(tmp_path, data)
    (base / "input" / "curated" / name).write_bytes(content)
    reason = failed(base, "--stage", "fit")
    assert name in reason and "manifest does not list" in reason


def test_a_listed_part_that_is_absent_or_unreadable_is_named(tmp_path, data):
    base = curated(tmp_path, data, parts=3)
    (base / "input" / "curated" / "data" / "part-00002.parquet").unlink()
    reason = failed(base, "--stage", "fit")
    assert "data/part-00002.parquet" in reason and "not there" in reason
    shutil.rmtree(base.parent.parent)
    base = curated(tmp_path, data, parts=3)
    (base / "input" / "curated" / "data" / "part-00001.parquet").write_bytes(b"")  # a zero-byte listed part
    reason = failed(base, "--stage", "fit")
    assert reason.startswith("curated part data/part-00001.parquet cannot be read"), reason


def test_the_parts_are_read_in_the_manifests_order(tmp_path, data):
    base = curated(tmp_path, data, parts=2)
    manifest = job.read_manifest(base / "input" / "curated")
    assert [p.name for p in job.curated_parts(base / "input" / "curated", manifest)] == [
        "part-00000.parquet", "part-00001.parquet"]
    reordered = {**manifest, "data_keys": manifest["data_keys"][::-1]}
    assert [p.name for p in job.curated_parts(base / "input" / "curated", reordered)] == [
        "part-00001.parquet", "part-00000.parquet"]


def test_a_transform_instance_refuses_an_object_the_fit_did_not_read(tmp_path, data):
    fitted = curated(tmp_path / "fit", data, parts=2)
    assert job.main(["--base-dir", str(fitted), "--stage", "fit"]) == 0
    record = json.loads((fitted / "output" / "transformer" / "preprocess.json").read_text(encoding="utf-8"))
    assert record["parts"] == ["data/part-00000.parquet", "data/part-00001.parquet"]
    host = tmp_path / "algo-1" / "opt" / "ml" / "processing"
    (host / "input" / "curated" / "data").mkdir(parents=True)
    shutil.copy(fitted / "input" / "curated" / "data" / "part-00001.parquet", host / "input" / "curated" / "data")
    (host / "input" / "curated" / "data" / "._part-00001.parquet").write_bytes(b"\x00\x05\x16\x07")
    for name in ("transformer", "split"):
        shutil.copytree(fitted / "output" / name, host / "input" / name)
    reason = failed(host, "--stage", "transform")
    assert "data/._part-00001.parquet" in reason and "the fit did not read" in reason
    (host / "input" / "curated" / "data" / "._part-00001.parquet").unlink()
    shutil.rmtree(host / "output")
    assert job.main(["--base-dir", str(host), "--stage", "transform"]) == 0  # its share: part-00001 alone
    assert sorted(p.name for p in (host / "output" / "test").glob("*.parquet")) == ["data-part-00001.parquet"]


# ------------------------------------------------------------------------------------------------ finding: bad inputs

@pytest.mark.parametrize("content, said", [
    (b"[]", "must be a JSON object (the ingest's manifest), got list"),
    (b'{"rows": 3', "is not JSON"),
    (b'{"dataset": "pat\xffients"}', "is not UTF-8 text (byte 0xff"),
])
def test_a_manifest_that_is_no_manifest_is_refused_saying_why(tmp_path, data, content, said):
    base = curated(tmp_path, data)
    (base / "input" / "curated" / "manifest.json").write_bytes(content)
    reason = failed(base)
    assert said in reason and "manifest.json" in reason, reason
    assert "Traceback" not in reason


@pytest.mark.parametrize("change, said", [
    (lambda m: m.pop("schema"), "has no 'schema' object"),
    (lambda m: m["schema"].pop("labels"), "its 'schema' is invalid: no 'labels'"),
    (lambda m: m.pop("data_keys"), "'data_keys' must list the version's Parquet parts"),
    (lambda m: m.update(data_keys=[f"curated/other/{m['version']}/data/part-00000.parquet"]),
     "are not under its version's prefix"),
])
def test_a_manifest_missing_what_the_job_reads_names_it(tmp_path, data, change, said):
    base = curated(tmp_path, data)
    path = base / "input" / "curated" / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    change(manifest)
    path.write_text(json.dumps(manifest), encoding="utf-8")
    assert said in failed(base)


def test_text_that_is_not_utf8_names_the_part_and_the_column(tmp_path, data):
    base = curated(tmp_path, data)
    path = base / "input" / "curated" / "data" / "part-00001.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("label")
    raw = [value.encode() for value in table.column("label").to_pylist()]
    raw[0] = b"ENFERMEDAD CR\xd3NICA"  # Latin-1, not UTF-8
    bad = pa.Array.from_buffers(pa.large_string(), len(raw), pa.array(raw, type=pa.large_binary()).buffers())
    pq.write_table(table.set_column(index, "label", bad), path)
    reason = failed(base)
    assert reason.startswith("curated part data/part-00001.parquet, column 'label': text that is not valid UTF-8")


def test_parts_whose_column_types_differ_are_named_within_the_first_kilobyte(tmp_path, data):
    # pyarrow's message printed both schemas whole (1.5 KB) and named no part within the 1 KB the service keeps.
    base = curated(tmp_path, data)
    path = base / "input" / "curated" / "data" / "part-00001.parquet"
    table = pq.read_table(path)
    index = table.schema.get_field_index("note")
    other = pa.string() if table.schema.field("note").type == pa.large_string() else pa.large_string()
    pq.write_table(table.set_column(index, "note", table.column("note").cast(other)), path)
    reason = failed(base)
    assert reason.startswith(f"curated part data/part-00001.parquet, column 'note': type {other}, but "
                             f"{table.schema.field('note').type} in data/part-00000.parquet"), reason


def test_an_unexpected_error_is_a_failure_reason_with_its_type_not_a_traceback(tmp_path, data, monkeypatch):
    base = curated(tmp_path, data)

    def broken(*_args, **_kwargs):
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.setattr(job, "fit_stage", broken)
    assert failed(base) == "TypeError: 'NoneType' object is not subscriptable"


# ------------------------------------------------------------------------------------------------ finding: corrupted features

def test_a_feature_column_missing_in_every_training_row_is_refused(data):
    # The baseline recorded its completeness as 0.0: monitoring then accepted the column missing for ever.
    frame, manifest = data
    schema = Schema.from_dict(manifest["schema"])
    with pytest.raises(ValueError, match=r"feature column 'heart_rate_bpm' has no value in any of the \d+ training "
                                         r"rows .*'exclude' list in the dataset config"):
        preprocess(frame.assign(heart_rate_bpm=np.nan), schema, PreprocessParams())
    with pytest.raises(ValueError, match="feature column 'symptoms' has no value"):
        preprocess(frame.assign(symptoms=None), schema, PreprocessParams())


@pytest.mark.parametrize("column", ["symptoms", "prior_diagnoses"])
def test_a_list_column_stored_as_joined_text_is_refused(data, column):
    # Every value read as an empty list: the HPO indicator features vanished (414 -> 83) and training went on.
    frame, manifest = data
    schema = Schema.from_dict(manifest["schema"])
    joined = frame.assign(**{column: frame[column].map(lambda v: ",".join(v) if v is not None else None)})
    with pytest.raises(ValueError, match=rf"feature column '{column}' \((hpo_terms|codes)\) holds str values, not "
                                         r"lists .*fix its type at ingestion"):
        preprocess(joined, schema, PreprocessParams())


def test_the_job_refuses_an_all_missing_feature_column_naming_it(tmp_path, data):
    base = curated(tmp_path, data)
    for path in sorted((base / "input" / "curated" / "data").glob("*.parquet")):
        table = pq.read_table(path)
        index = table.schema.get_field_index("crp_mg_l")
        pq.write_table(table.set_column(index, "crp_mg_l", pa.nulls(table.num_rows, pa.float64())), path)
    reason = failed(base)
    assert reason.startswith("feature column 'crp_mg_l' has no value in any of the"), reason
    assert not (base / "output" / "baseline").exists() or not any((base / "output" / "baseline").iterdir())
