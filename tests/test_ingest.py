"""Ingestion: every kind of bad row lands in quarantine with its reason; counts add up; nothing lost."""
from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from diagnosa.data.cohort import CohortConfig, generate, write_raw
from diagnosa.data.ingest import (
    IngestError,
    check_batch_name,
    cohort_batches,
    ingest_cohort,
    ingest_cohort_files,
    ingest_csv,
    latest_version,
    load_curated,
    raw_keys,
)
from diagnosa.data.orphan import build_catalogue
from diagnosa.lake import DataLake

GOOD = {
    "patient_id": "P1", "encounter_date": "2025-03-01", "age": 40, "sex": "F", "temperature_c": 37.0,
    "heart_rate_bpm": 70.0, "respiratory_rate_bpm": 14.0, "systolic_bp_mmhg": 120.0, "diastolic_bp_mmhg": 80.0,
    "spo2_pct": 98.0, "symptoms": ["HP:0001945"], "prior_diagnoses": ["I10"], "note": "ok",
    "label": "NO ENFERMO", "disease_id": "", "disease_name": "", "is_orphan": False,
}
LAB_HEADER = ("patient_id,collected_at,wbc_10e9_l,crp_mg_l,hemoglobin_g_dl,platelets_10e9_l,glucose_mg_dl,"
              "hba1c_pct,creatinine_mg_dl,alt_u_l,sodium_mmol_l,potassium_mmol_l")


def lab_row(pid: str, crp: str = "2.0", potassium: str = "4.1") -> str:
    return f"{pid},2025-03-01,7.0,{crp},14.0,250,90,5.3,0.9,20,140,{potassium}"


def record(pid: str, **changes) -> str:
    data = dict(GOOD, patient_id=pid)
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data, ensure_ascii=False)


@pytest.fixture
def lake(tmp_path) -> DataLake:
    return DataLake.from_uri(str(tmp_path / "lake"))


def put_batch(lake: DataLake, lines: list[str], labs: list[str], batch: str = "b1") -> str:
    records_key, labs_key = raw_keys(batch)
    lake.put_bytes_once(records_key, ("\n".join(lines) + "\n").encode())
    lake.put_bytes_once(labs_key, ("\n".join([LAB_HEADER, *labs]) + "\n").encode())
    return batch


def quarantined(lake: DataLake, report, source: str) -> dict[str, list[str]]:
    key = next(k for k in report.quarantine_keys if k.endswith(f"/{source}.jsonl"))
    entries = [json.loads(line) for line in lake.get_bytes(key).decode().splitlines()]
    out = {}
    for entry in entries:
        raw = entry["raw"]
        if isinstance(raw, dict):
            pid = raw["patient_id"]
        else:
            pid = json.loads(raw).get("patient_id") if raw.startswith("{") and raw.endswith("}") else f"line{entry['line']}"
        out.setdefault(pid, []).extend(entry["reasons"])
    return out


CASES = {
    "P_unknown_field": ({"bed_number": 7}, "unknown field 'bed_number'"),
    "P_wrong_type": ({"age": "forty"}, "wrong type for 'age': expected a number, got 'forty'"),
    "P_bool_as_number": ({"heart_rate_bpm": True}, "wrong type for 'heart_rate_bpm'"),
    "P_fraction_age": ({"age": 40.5}, "wrong type for 'age': expected an integer"),
    "P_impossible": ({"heart_rate_bpm": 900}, "impossible value for 'heart_rate_bpm': 900 (possible range 20 to 250 beats/min)"),
    "P_negative": ({"spo2_pct": -1}, "impossible value for 'spo2_pct'"),
    "P_unknown_label": ({"label": "ENFERMEDAD RARA"}, "unknown label: 'ENFERMEDAD RARA'"),
    "P_unknown_sex": ({"sex": "X"}, "unknown value for 'sex': 'X'"),
    "P_missing_label": ({"label": ...}, "missing required field 'label'"),
    "P_bad_date": ({"encounter_date": "2025-13-40"}, "invalid date for 'encounter_date'"),
    "P_unknown_hpo": ({"symptoms": ["HP:9999999"]}, "unknown HPO term in 'symptoms': 'HP:9999999'"),
    "P_malformed_hpo": ({"symptoms": ["fever"]}, "malformed HPO id in 'symptoms': 'fever'"),
    "P_symptoms_not_list": ({"symptoms": "HP:0001945"}, "wrong type for 'symptoms': expected a list of strings"),
    "P_bad_flag": ({"is_orphan": "no"}, "wrong type for 'is_orphan': expected true or false"),
}


def test_each_kind_of_bad_record_is_quarantined_with_its_reason(lake):
    lines = [record("P_ok"), record("P_ok2", symptoms=[], prior_diagnoses=[])]
    lines += [record(pid, **changes) for pid, (changes, _) in CASES.items()]
    lines += ['{"patient_id": "P_broken", "age": 4', "[1, 2]", ""]
    lines += [record("P_dup"), record("P_dup")]  # exact repeat: keep one
    lines += [record("P_conflict"), record("P_conflict", age=41)]  # same id, other content: keep none
    labs = [lab_row("P_ok"), lab_row("P_ok2", crp="high"), lab_row("P_ok2"), lab_row("P_ok2"),
            lab_row("P_wrong_type"), lab_row("P_nobody"), lab_row("P_dup", potassium="45")]
    report = ingest_cohort(lake, put_batch(lake, lines, labs))

    records_counts, labs_counts = report.sources
    assert (records_counts.read, records_counts.accepted) == (len(lines), 3)
    assert records_counts.read == records_counts.accepted + records_counts.quarantined
    bad = quarantined(lake, report, "clinical_records")
    for pid, (_, reason) in CASES.items():
        assert any(r.startswith(reason) for r in bad[pid]), (pid, bad[pid])
    # Parse errors keep their raw line and line number.
    entries = [json.loads(x) for x in lake.get_bytes(report.quarantine_keys[0]).decode().splitlines()]
    by_line = {e["line"]: e for e in entries}
    n_cases = len(CASES)
    assert by_line[3 + n_cases]["raw"] == '{"patient_id": "P_broken", "age": 4'
    assert by_line[3 + n_cases]["reasons"][0].startswith("malformed JSON")
    assert by_line[4 + n_cases]["reasons"] == ["a record must be a JSON object, got list"]
    assert by_line[5 + n_cases]["reasons"] == ["empty line"]
    assert len(bad["P_dup"]) == 1 and bad["P_dup"][0].startswith("duplicate row")
    assert len(bad["P_conflict"]) == 2 and all(r.startswith("conflicting rows") for r in bad["P_conflict"])

    # Labs: wrong type, duplicates, no record, record quarantined, impossible value.
    assert (labs_counts.read, labs_counts.accepted) == (len(labs), 1)
    lab_bad = quarantined(lake, report, "lab_results")
    assert any(r.startswith("wrong type for 'crp_mg_l'") for r in lab_bad["P_ok2"])
    assert any(r.startswith("clinical record quarantined") for r in lab_bad["P_wrong_type"])
    assert lab_bad["P_nobody"] == ["no clinical record: patient 'P_nobody'"]
    assert any(r.startswith("impossible value for 'potassium_mmol_l'") for r in lab_bad["P_dup"])

    curated, manifest = load_curated(lake)
    assert sorted(curated["patient_id"]) == ["P_dup", "P_ok", "P_ok2"]
    assert curated.set_index("patient_id").loc["P_ok", "crp_mg_l"] == 2.0
    assert manifest["label_counts"]["NO ENFERMO"] == 3
    assert manifest["quarantine_reasons"]["malformed JSON"] == 1


def test_generated_cohort_ingests_with_exactly_the_expected_counts(lake):
    cohort = generate(CohortConfig(patients=5_000, seed=2, defect_rate=0.01), orphans=build_catalogue())
    batch = put_batch_from(lake, cohort)
    records_key, labs_key = raw_keys(batch)
    before = (lake.sha256(records_key), lake.sha256(labs_key))
    report = ingest_cohort(lake, batch)
    exp = cohort.expected
    records_counts, labs_counts = report.sources
    assert (records_counts.read, records_counts.accepted, records_counts.quarantined) == (
        exp["records_read"], exp["records_accepted"], exp["records_quarantined"])
    assert (labs_counts.read, labs_counts.accepted, labs_counts.quarantined) == (
        exp["labs_read"], exp["labs_accepted"], exp["labs_quarantined"])
    assert (lake.sha256(records_key), lake.sha256(labs_key)) == before, "raw files are never modified"

    curated, manifest = load_curated(lake)
    assert len(curated) == exp["records_accepted"] == report.rows
    assert curated["patient_id"].is_unique
    # Accepted lab panels all joined; patients without a panel keep NaN labs.
    assert curated["collected_at"].notna().sum() == exp["labs_accepted"]
    assert manifest["schema"]["labels"][0] == "NO ENFERMO"
    assert curated["is_orphan"].sum() == manifest["orphan_rows"] > 0
    # Symptoms survive as lists of HPO ids.
    assert curated["symptoms"].map(len).sum() > len(curated)

    again = ingest_cohort(lake, batch)
    assert again.reused and again.version == report.version
    assert lake.list("curated/patients/") == sorted(lake.list("curated/patients/"))
    assert len([k for k in lake.list("curated/patients/") if k.endswith("manifest.json")]) == 1


def put_batch_from(lake: DataLake, cohort, batch: str = "gen") -> str:
    write_raw(cohort, lake, batch)
    return batch


def test_missing_batch_is_a_clear_error(lake, tmp_path):
    with pytest.raises(IngestError, match="^no raw batch 'nope' in "):  # it was "incomplete", as if half there
        ingest_cohort(lake, "nope")
    records, labs = tmp_path / "r.jsonl", tmp_path / "r.csv"
    records.write_text(record("P1") + "\n")
    labs.write_text(LAB_HEADER + "\n" + lab_row("P1") + "\n")
    batch = ingest_cohort_files(lake, records, labs, "half").sources[0].key.rsplit("/", 1)[-1].removesuffix(".jsonl")
    lake.delete(raw_keys(batch)[1])
    with pytest.raises(IngestError, match="raw batch 'half' is incomplete: .*lab_results/half.csv does not exist"):
        ingest_cohort(lake, "half")


def test_user_files_are_staged_write_once(lake, tmp_path):
    records = tmp_path / "delivery.jsonl"
    labs = tmp_path / "delivery.csv"
    records.write_text(record("P1") + "\n")
    labs.write_text(LAB_HEADER + "\n" + lab_row("P1") + "\n")
    report = ingest_cohort_files(lake, records, labs)
    assert report.rows == 1
    batch = report.sources[0].key.rsplit("/", 1)[-1].removesuffix(".jsonl")
    assert ingest_cohort_files(lake, records, labs).version == report.version  # again: the same batch and version
    assert lake.get_bytes(raw_keys(batch)[0]) == records.read_bytes()


@pytest.mark.parametrize("name", ["my records.jsonl", "entrega (diciembre) ñ.jsonl", "---.jsonl", ".hidden.jsonl"],
                         ids=["space", "brackets-accent", "dashes-only", "leading-dot"])
def test_a_delivery_named_freely_gets_a_batch_name_of_its_own(lake, tmp_path, name):
    # The batch was the file's name as it was: `data ingest 'my records.jsonl' --labs labs.csv` was refused for a
    # batch name ('my records-…') the user had never given.
    records, labs = tmp_path / name, tmp_path / "labs.csv"
    records.write_text(record("P1") + "\n")
    labs.write_text(LAB_HEADER + "\n" + lab_row("P1") + "\n")
    report = ingest_cohort_files(lake, records, labs)
    batch = report.sources[0].key.rsplit("/", 1)[-1].removesuffix(".jsonl")
    check_batch_name(batch)
    assert report.rows == 1 and batch in cohort_batches(lake)
    assert ingest_cohort_files(lake, records, labs).version == report.version  # the same name again


def test_a_refused_delivery_leaves_no_raw_batch_and_the_latest_version_stands(lake, tmp_path):
    # An empty labs file, or every record rejected, was refused after the files were staged: the write-once batch
    # name could not take the corrected delivery ("already exists with different content"), and a batch with no
    # accepted record became the latest version, hiding the good one.
    records, labs, empty = tmp_path / "d.jsonl", tmp_path / "d.csv", tmp_path / "empty.csv"
    records.write_text(record("P1") + "\n")
    labs.write_text(LAB_HEADER + "\n" + lab_row("P1") + "\n")
    empty.write_text("")
    good = ingest_cohort_files(lake, records, labs, "good").version
    staged = sorted(lake.list("raw/"))
    with pytest.raises(IngestError, match=f"{empty} is empty"):
        ingest_cohort_files(lake, records, empty, "e2")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff not a record\n")
    with pytest.raises(IngestError, match=f"^{bad}: every one of its 1 clinical records was rejected"):
        ingest_cohort_files(lake, bad, labs, "e3")
    assert sorted(lake.list("raw/")) == staged and latest_version(lake, "patients") == good
    assert ingest_cohort_files(lake, records, labs, "e2").version == good  # the name is still free
    for path, what in ((tmp_path, "a directory"), (tmp_path / "missing.csv", None)):
        with pytest.raises(IngestError, match=f"{path} is {what}, not a lab results file" if what else
                           "input file not found"):
            ingest_cohort_files(lake, records, path)


def test_a_batch_name_already_taken_says_so_and_names_the_file_a_killed_ingest_did_not_write(lake, tmp_path):
    # A kill between the two raw writes left the records without the labs: the corrected delivery was refused as
    # "'raw/clinical_records/wk.jsonl' already exists … with different content", and nothing said the batch was half.
    from diagnosa.data.ingest import raw_keys
    from diagnosa.lake import ObjectExists

    records, labs, other = tmp_path / "d.jsonl", tmp_path / "d.csv", tmp_path / "o.jsonl"
    records.write_text(record("P1") + "\n")
    labs.write_text(LAB_HEADER + "\n" + lab_row("P1") + "\n")
    other.write_text(record("P2") + "\n")
    records_key, labs_key = raw_keys("wk")
    lake.put_bytes_once(records_key, records.read_bytes())  # what the killed ingest wrote
    with pytest.raises(ObjectExists, match="raw batch 'wk' holds another delivery's files, without its lab results "
                                           r"\(an ingest stopped .* another --batch$"):
        ingest_cohort_files(lake, other, labs, "wk")
    assert ingest_cohort_files(lake, records, labs, "wk").rows == 1  # its own files complete it
    with pytest.raises(ObjectExists, match="raw batch 'wk' holds another delivery's files; raw files are write-once"):
        ingest_cohort_files(lake, other, labs, "wk")


# ------------------------------------------------------------------------------------------------ own CSV

CONFIG = """
name = "breast-biopsy"
id_column = "case"
target = "outcome"
labels = ["benign", "borderline", "malignant"]
exclude = ["patient_name"]

[columns.age]
type = "integer"
min = 0
max = 120
"""


# Rows that make every class of CONFIG large enough for the 70/20/10 split (3 rows each).
FILLER = ("f1,X,50,13.0,smooth,benign\nf2,X,50,13.0,smooth,borderline\nf3,X,50,13.0,smooth,borderline\n"
          "f4,X,50,13.0,smooth,malignant\nf5,X,50,13.0,smooth,malignant\n")


def test_own_csv_with_another_label_set(lake, tmp_path):
    csv = tmp_path / "biopsies.csv"
    csv.write_text(
        "case,patient_name,age,radius,texture,outcome\n"
        "c1,Ana Ruiz,54,12.5,smooth,benign\n"
        "c2,Luis Gil,61,22.1,rough,malignant\n"
        "c3,Eva Sanz,47,15.0,rough,borderline\n"
        "c4,Juan Paz,200,14.0,smooth,benign\n"
        "c5,Rosa Gil,50,abc,smooth,benign\n"
        "c6,Pau Roca,52,13.0,smooth,cancer\n"
        "c1,Ana Ruiz,54,12.5,smooth,benign\n"
        + FILLER
    )
    config = tmp_path / "biopsies.toml"
    config.write_text(CONFIG)
    report = ingest_csv(lake, csv, config)
    source = report.sources[0]
    assert (source.read, source.accepted, source.quarantined) == (12, 9, 3)
    curated, manifest = load_curated(lake, "breast-biopsy")
    assert list(curated["case"]) == ["c1", "c2", "c3", "c5", "f1", "f2", "f3", "f4", "f5"]
    assert manifest["label_counts"] == {"benign": 3, "borderline": 3, "malignant": 3}
    assert "patient_name" not in curated.columns
    assert manifest["schema"]["labels"] == ["benign", "borderline", "malignant"]
    fields = {f["name"]: f for f in manifest["schema"]["fields"]}
    assert fields["radius"]["type"] == "category"  # 'abc' makes it non-numeric by inference
    assert fields["texture"]["type"] == "category" and fields["outcome"]["role"] == "target"
    text = lake.get_bytes(report.quarantine_keys[0]).decode()
    assert "Ana Ruiz" not in text and "Juan Paz" not in text, "excluded columns never reach quarantine"
    reasons = [r for line in text.splitlines() for r in json.loads(line)["reasons"]]
    assert any(r.startswith("impossible value for 'age': 200") for r in reasons)
    assert any(r.startswith("unknown label: 'cancer'") for r in reasons)
    assert any(r.startswith("duplicate row") for r in reasons)


def test_own_csv_declared_number_rejects_text(lake, tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("case,patient_name,age,radius,outcome\nc1,A,54,1.0,benign\nc2,B,55,big,benign\n"
                   + "".join(f"f{i},X,50,1.0,{label}\n" for i, label in enumerate(
                       ["benign", "benign", "borderline", "borderline", "borderline", "malignant", "malignant",
                        "malignant"])))
    config = tmp_path / "x.toml"
    config.write_text(CONFIG + '\n[columns.radius]\ntype = "number"\n')
    report = ingest_csv(lake, csv, config)
    assert report.sources[0].quarantined == 1
    assert report.reasons == {"wrong type for 'radius'": 1}


@pytest.mark.parametrize("config_text, message", [
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\n', "missing required key 'labels'"),
    ('name = "x"\nid_column = "case"\ntarget = "nope"\nlabels = ["a", "b"]\n',
     "named in the config not in the CSV header: target 'nope'"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "a"]\n', "duplicate labels 'a'"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\ncolour = 1\n', "unknown keys colour"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n[columns.age]\ntype = "float"\n',
     "unknown type 'float'"),
    ('name = x', "is not valid TOML"),
])
def test_bad_config_is_refused_before_anything_is_written(lake, tmp_path, config_text, message):
    csv = tmp_path / "x.csv"
    csv.write_text("case,age,outcome\nc1,3,a\n")
    config = tmp_path / "x.toml"
    config.write_text(config_text)
    with pytest.raises(IngestError, match=message):
        ingest_csv(lake, csv, config)
    assert lake.list("curated/") == [] and lake.list("raw/") == []


def test_empty_or_headerless_csv_is_refused(lake, tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("")
    config = tmp_path / "x.toml"
    config.write_text(CONFIG)
    with pytest.raises(IngestError, match="is empty"):
        ingest_csv(lake, csv, config)


# ------------------------------------------------------------------------------------------------ S3

def test_generate_and_ingest_on_s3_under_moto():
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket="diagnosa-lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        lake = DataLake.from_uri("s3://diagnosa-lake/dev", s3_client=client)
        cohort = generate(CohortConfig(patients=1_000, seed=1), orphans=build_catalogue())
        batch = put_batch_from(lake, cohort)
        report = ingest_cohort(lake, batch)
        assert report.sources[0].accepted == cohort.expected["records_accepted"]
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="diagnosa-lake", Prefix="dev/")["Contents"]]
        assert f"dev/{report.data_keys[0]}" in keys
        assert f"dev/{report.manifest_key}" in keys
        assert "dev/curated/patients/LATEST.json" in keys
        curated, _ = load_curated(lake)
        assert len(curated) == report.rows


def test_schema_round_trip_keeps_zero_limits():
    from diagnosa.data.schema import Schema, cohort_schema

    schema = cohort_schema()
    again = Schema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert again == schema
    assert again.field("age").min == 0 and again.field("crp_mg_l").min == 0.0


@pytest.mark.parametrize("latest, manifest, message", [
    (b"\x00garbage{{", None, "curated/breast-biopsy/LATEST.json names no curated version"),
    (b'["not", "an", "object"]', None, "names no curated version"),
    (b'{"version": "../../etc"}', None, "names no curated version"),  # never followed out of the dataset
    (b'{"version": "abcdef123456"}', None, "names version abcdef123456, which has no manifest"),
    (None, b'{"rows": 12, "sch', "curated version [0-9a-f]* of 'breast-biopsy' is damaged: "),
])
def test_a_damaged_latest_or_manifest_is_refused_by_readers_and_repaired_by_ingest(lake, tmp_path, latest, manifest,
                                                                                  message):
    """What a hand edit, a partial copy or a foreign tool leaves in LATEST.json or a manifest: every reader of the
    latest version (run, pipeline start, retraining) refuses it naming the object, where a traceback or a run on a
    path outside the dataset used to follow; ingesting the data again makes LATEST.json right."""
    from diagnosa.data.ingest import latest_key, latest_version
    from diagnosa.services import curated_manifest

    csv, config = tmp_path / "biopsies.csv", tmp_path / "biopsies.toml"
    csv.write_text("case,patient_name,age,radius,texture,outcome\n" + FILLER
                   + "c1,Ana Ruiz,54,12.5,smooth,benign\nc2,Luis Gil,61,22.1,rough,borderline\n"
                   + "c3,Eva,47,15.0,rough,benign\nc4,Pau,52,13.0,smooth,malignant\n")
    config.write_text(CONFIG)
    report = ingest_csv(lake, csv, config)
    good = lake.get_bytes(report.manifest_key)
    if latest is not None:
        lake.put_bytes(latest_key("breast-biopsy"), latest)
    if manifest is not None:
        lake.put_bytes(report.manifest_key, manifest)
    with pytest.raises(IngestError, match=message):
        latest_version(lake, "breast-biopsy")
    with pytest.raises(IngestError, match=message):
        load_curated(lake, "breast-biopsy")
    with pytest.raises(IngestError, match=message):  # a run's plan says so too, not "no curated dataset"
        curated_manifest(lake, "breast-biopsy")
    lake.put_bytes(report.manifest_key, good)
    again = ingest_csv(lake, csv, config)
    assert again.version == report.version and latest_version(lake, "breast-biopsy") == report.version


def test_a_manifest_that_is_not_json_is_named_not_a_traceback(lake):
    from diagnosa.lake import LakeError

    lake.put_bytes("curated/x/abcdef123456/manifest.json", b'{"rows": 3')
    with pytest.raises(LakeError, match=r"lake/curated/x/abcdef123456/manifest.json is not valid JSON \(.*\): repair"):
        lake.get_json("curated/x/abcdef123456/manifest.json")
