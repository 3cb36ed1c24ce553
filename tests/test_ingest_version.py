"""A change to what ingestion writes for the same input comes with a new INGEST_VERSION.

A curated version is named by the hash of its inputs, its schema and INGEST_VERSION, and ingesting bytes whose
version is already in the lake reuses that version. So a fix to ingestion that leaves INGEST_VERSION alone never
reaches data ingested before it: ingesting the same file again hands back the version the older code wrote.
That happened (session 67): the boolean slice column's empty cells, fixed in ingestion, came back as gaps from
the version written before the fix, and retraining failed on them again.

This test ingests a cohort batch and a dataset of one's own that exercise every kind of cell and refusal, and
digests what ingestion wrote: the curated rows with their Arrow types, the quarantine, and the manifest, with
what varies by itself (the time, the version id) taken out. The digest is recorded per INGEST_VERSION. When it
changes, ingestion writes something else for the same input: bump INGEST_VERSION in diagnosa/data/ingest.py
(its comment says why) and record the new digest under the new number. Only a change of this test's own input
(the cohort's fields, a new config key exercised) records a new digest under the same number.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import test_ingest

from diagnosa.data.ingest import INGEST_VERSION, ingest_cohort, ingest_csv
from diagnosa.lake import DataLake

# INGEST_VERSION -> the digest of what it writes for this test's input.
WRITTEN = {
    "3": "a49ed7ff0c03e059",
}

OWN_CSV = (
    "case;nombre;edad;sexo;pcr;temperatura;fumador;sintomas;alta;grupo;notas;desenlace\n"
    "c01;Ana;54;F;12,5;37,2;si;\"fiebre;tos\";2024-01-03;g1;ok;leve\n"
    "c02;Luis;61;M;NA;38,9;no;tos;2024-01-04;g2;;grave\n"
    "c03;Eva;47;F;3,0;;;fiebre;2024-01-05;g1;x;leve\n"
    "c04;Juan;200;M;1,0;36,6;si;;2024-01-06;g3;;grave\n"
    "c05;Rosa;50;F;abc;36,8;no;\"tos;disnea\";2024-13-40;g2;;leve\n"
    "c06;Pau;52;M;7,5;37,0;si;disnea;2024-01-08;g3;;otra\n"
    "c01;Ana;54;F;12,5;37,2;si;\"fiebre;tos\";2024-01-03;g1;ok;leve\n"
    "c07;Sara;33;F;2,25;36,9;;fiebre;2024-01-09;g1;;ninguna\n"
    "c08;Tomas;70;M;9,0;39,1;si;\"tos;fiebre\";2024-01-10;g4;;grave\n"
    "c09;Lola;45;F;0,5;36,5;no;;2024-01-11;g4;;ninguna\n"
    "c10;Iker;38;M;4,0;37,8;;\"disnea;tos\";2024-01-12;g2;;leve\n"
    "c11;Marta;66;F;11,0;38,2;si;fiebre;2024-01-13;g3;;grave\n"
    "c12;Raul;29;M;1,5;36,7;no;;2024-01-14;g1;;ninguna\n"
    "c13;Nuria;58;F;6,5;37,5;;tos;2024-01-15;g4;;leve\n"
    "c14;Oscar;49;M;8,0;38,0;si;\"fiebre;disnea\";2024-01-16;g2;;grave\n"
    "c15;Pilar;41;F;0,8;36,4;no;;2024-01-17;g3;;ninguna\n"
)
OWN_CONFIG = """
name = "version-check"
id_column = "case"
target = "desenlace"
labels = ["ninguna", "leve", "grave"]
ordinal = true
exclude = ["nombre", "notas"]
slice_column = "fumador"

[csv]
delimiter = ";"
decimal = ","

[columns.edad]
type = "integer"
min = 0
max = 120

[columns.sintomas]
type = "codes"
"""


# Rows only a longer table exercises: a record number (an identifier, not a feature), a number a million spreads out
# (quarantined), a column with one value, and two patients written again under other ids (the notes).
def _rules_row(pid: str, i: int, f1: str | None = None) -> str:
    return f"{pid},{1000 + i},{f1 or f'{(i * 37 % 101) / 10:.1f}'},{(i * 53 % 89) / 7:.3f},7,{'abc'[i % 3]}"


RULES_CSV = "\n".join(["pid,record_no,f1,f2,const,label", *[_rules_row(f"r{i}", i) for i in range(70)],
                       _rules_row("x1", 70, "1e12"), _rules_row("y1", 1), _rules_row("y2", 2)]) + "\n"
RULES_CONFIG = 'name = "version-rules"\nid_column = "pid"\ntarget = "label"\nlabels = ["a", "b", "c"]\n'


def _written(lake: DataLake, manifest_key: str) -> dict:
    """What one ingest wrote: rows with their Arrow types, quarantine lines and the manifest, without time or id."""
    manifest = lake.get_json(manifest_key)
    version = manifest.pop("version")
    manifest.pop("created_at")
    tables = [pq.read_table(io.BytesIO(lake.get_bytes(key))) for key in manifest["data_keys"]]
    written = {
        "types": [table.schema.to_string(show_schema_metadata=False) for table in tables],
        "rows": [row for table in tables for row in table.to_pylist()],
        "quarantine": [lake.get_bytes(key).decode() for key in manifest["quarantine_keys"]],
        "manifest": manifest,
    }
    return json.loads(json.dumps(written, default=str).replace(version, "<version>"))


def ingestion_digest(tmp_path: Path) -> tuple[str, dict]:
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lines = [test_ingest.record("P_ok"), test_ingest.record("P_ok2", symptoms=[], prior_diagnoses=[])]
    lines += [test_ingest.record(pid, **changes) for pid, (changes, _) in test_ingest.CASES.items()]
    lines += ['{"patient_id": "P_broken", "age": 4', "[1, 2]", "", test_ingest.record("P_dup"),
              test_ingest.record("P_dup"), test_ingest.record("P_conflict"), test_ingest.record("P_conflict", age=41),
              test_ingest.record("P_orphan", label="ENFERMEDAD CRÓNICA", disease_id="ORPHA:558",
                                 disease_name="Marfan syndrome", is_orphan=True)]
    labs = [test_ingest.lab_row("P_ok"), test_ingest.lab_row("P_ok2", crp="high"), test_ingest.lab_row("P_ok2"),
            test_ingest.lab_row("P_nobody"), test_ingest.lab_row("P_dup", potassium="45")]
    cohort = ingest_cohort(lake, test_ingest.put_batch(lake, lines, labs))
    (tmp_path / "own.csv").write_text(OWN_CSV, encoding="utf-8")
    (tmp_path / "own.toml").write_text(OWN_CONFIG, encoding="utf-8")
    own = ingest_csv(lake, tmp_path / "own.csv", tmp_path / "own.toml")
    (tmp_path / "rules.csv").write_text(RULES_CSV, encoding="utf-8")
    (tmp_path / "rules.toml").write_text(RULES_CONFIG, encoding="utf-8")
    rules = ingest_csv(lake, tmp_path / "rules.csv", tmp_path / "rules.toml")
    written = {"cohort": _written(lake, f"curated/patients/{cohort.version}/manifest.json"),
               "own": _written(lake, f"curated/version-check/{own.version}/manifest.json"),
               "rules": _written(lake, f"curated/version-rules/{rules.version}/manifest.json")}
    text = json.dumps(written, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16], written


def test_what_ingestion_writes_for_the_same_input_is_recorded_under_its_ingest_version(tmp_path):
    digest, written = ingestion_digest(tmp_path)
    assert written["own"]["rows"] and written["cohort"]["rows"] and written["own"]["quarantine"]
    rules = written["rules"]["manifest"]  # the input exercises what it is meant to
    assert rules["quarantine_reasons"] == {"implausible value for 'f1'": 1}
    assert set(rules) >= {"repeated_rows", "constant_columns"} and rules["inferred_columns"]["record_no"]["kind"] == \
        "identifier"
    assert WRITTEN.get(INGEST_VERSION) == digest, (
        f"ingestion writes something else for the same input than INGEST_VERSION {INGEST_VERSION!r} recorded "
        f"(digest {digest}): bump INGEST_VERSION in diagnosa/data/ingest.py, say why in its comment, and record "
        f"{digest!r} under the new number here, so a file ingested before the change is curated again, not reused")


def test_the_digest_sees_a_change_of_one_cell(tmp_path, monkeypatch):
    """The tripwire is not blind: one curated cell written otherwise changes the digest."""
    before, _ = ingestion_digest(tmp_path / "a")
    import diagnosa.data.ingest as ingest

    original = ingest._parquet_bytes

    def one_cell_otherwise(frame, schema):
        frame = frame.copy()
        if "temperatura" in frame.columns:
            frame.loc[frame.index[0], "temperatura"] = frame["temperatura"].iloc[0] + 0.5
        return original(frame, schema)

    monkeypatch.setattr(ingest, "_parquet_bytes", one_cell_otherwise)
    after, _ = ingestion_digest(tmp_path / "b")
    assert after != before


def test_the_digest_is_the_same_from_one_ingest_to_the_next(tmp_path):
    """Nothing that varies by itself (time, folder, version id) is in the digest, or the tripwire would ring always."""
    assert ingestion_digest(tmp_path / "a")[0] == ingestion_digest(tmp_path / "elsewhere")[0]
