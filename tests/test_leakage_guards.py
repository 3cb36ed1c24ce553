"""What a dataset of one's own can teach a model that no new patient brings, and what ingestion says of it.

A probe (session 68) ingested each of these without a word:
- a file sorted by diagnosis with a column `record_no` of 1000 to 1799: the record number was a feature, the
  evaluation said recall 1.000, and every new patient (the next record numbers) got the last label: recall 0.25;
- 400 patients each written twice under two ids: 52 of the 80 test rows had their twin in training, and the
  evaluation said macro recall 0.925 where new patients got 0.696;
- a column holding the label's code (accuracy 1.000, log loss 0), and a column with one value in every row.
"""
from __future__ import annotations

import numpy as np
import pytest

from diagnosa.data.ingest import ingest_csv, load_curated
from diagnosa.data.schema import Schema, inferred_kind
from diagnosa.lake import DataLake


@pytest.mark.parametrize("values, kind", [
    ([str(1000 + i) for i in np.random.default_rng(0).permutation(800)], "identifier"),  # any order
    ([str(100000 + 3 * i) for i in range(60)], "identifier"),
    ([f"{v:.1f}" for v in range(1000, 1060)], "identifier"),  # 1000.0, 1001.0: whole numbers still
    ([str(i) for i in range(1, 50)], "number"),  # too few to say
    ([str(i) for i in range(200) if i not in range(50, 70, 2)], "identifier"),  # ten records dropped
    ([str(1000 + i) for i in range(120)] + ["1007"], "identifier"),  # one written twice
    ([str(v) for v in np.random.default_rng(2).choice(np.arange(150, 1000), 300, replace=False)], "number"),  # a lab
    ([str(1733000000 + 37 * i + i * i) for i in range(300)], "number"),  # admission times: uneven steps
    ([str(v) for v in np.random.default_rng(4).choice(np.arange(2000, 4500, 5), 60, replace=False)], "number"),
    ([str(i % 90) for i in range(300)], "number"),  # ages: repeated
    ([f"{v:.4f}" for v in np.random.default_rng(1).normal(5, 1, 300)], "number"),  # a measurement, every value distinct
    ([str(10 * i + 0.5) for i in range(100)], "number"),  # even steps, not whole
])
def test_whole_numbers_in_one_even_step_each_once_are_a_record_number(values, kind):
    assert inferred_kind(values) == kind


def test_a_record_number_not_declared_is_kept_as_metadata_and_the_report_names_it(tmp_path):
    rng = np.random.default_rng(3)
    labels = sorted(["a", "b", "c"] * 40)  # a file sorted by diagnosis
    rows = ["pid,record_no,f1,label"] + [f"p{i},{1000 + i},{rng.normal(1, 1):.4f},{label}"
                                         for i, label in enumerate(labels)]
    (tmp_path / "x.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = 'name = "x"\nid_column = "pid"\ntarget = "label"\nlabels = ["a", "b", "c"]\n'
    (tmp_path / "x.toml").write_text(config, encoding="utf-8")
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    report = ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml")
    assert "record_no (an identifier?" in report.summary()
    curated, manifest = load_curated(lake, "x")
    schema = Schema.from_dict(manifest["schema"])
    assert schema.features() == ["f1"] and list(curated["record_no"])[:2] == ["1000", "1001"]  # kept, as written
    # Declared a number, it is the user's feature.
    (tmp_path / "x.toml").write_text(config + '[columns.record_no]\ntype = "integer"\n', encoding="utf-8")
    report = ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml")
    assert Schema.from_dict(lake.get_json(report.manifest_key)["schema"]).features() == ["record_no", "f1"]


def _ingest(tmp_path, header: str, rows: list[str], config: str = ""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "x.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    (tmp_path / "x.toml").write_text('name = "x"\nid_column = "pid"\ntarget = "label"\nlabels = ["a", "b", "c"]\n'
                                     + config, encoding="utf-8")
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    report = ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml")
    return report, lake.get_json(report.manifest_key)


def test_patients_written_twice_under_two_ids_are_noted_with_their_lines(tmp_path):
    rng = np.random.default_rng(5)
    patients = [(f"{rng.normal(1, 1):.4f}", f"{rng.normal(5, 2):.2f}", rng.integers(20, 90), "abc"[i % 3])
                for i in range(60)]
    rows = [f"p{i},{f1},{crp},{age},{label}" for i, (f1, crp, age, label) in enumerate(patients)]
    rows += [f"q{i},{f1},{crp},{age},{label}" for i, (f1, crp, age, label) in enumerate(patients[:10])]  # 62-71
    report, manifest = _ingest(tmp_path, "pid,f1,crp,age,label", rows)
    assert manifest["repeated_rows"] == {"rows": 10, "columns": ["f1", "crp", "age"],
                                         "example_lines": [[2, 62], [3, 63], [4, 64]]}
    summary = report.summary()
    assert "note: 10 rows repeat an earlier row's every feature, f1, crp, age included" in summary
    assert "line 2 and 62" in summary and "keep one" in summary
    again = ingest_csv(DataLake.from_uri(str(tmp_path / "lake")), tmp_path / "x.csv", tmp_path / "x.toml")
    assert again.reused and "note: 10 rows repeat" in again.summary()  # said again, from the manifest


def test_patients_alike_in_coarse_features_are_not_taken_for_copies(tmp_path):
    # Scores of 1 to 5 and yes/no answers: 300 patients hold many rows alike (the biopsy and nwtco tables do).
    rng = np.random.default_rng(6)
    rows = [f"p{i},{rng.integers(1, 6)},{rng.integers(1, 6)},{'yes' if rng.random() < .5 else 'no'},{'abc'[i % 3]}"
            for i in range(300)]
    _, manifest = _ingest(tmp_path, "pid,score1,score2,smoker,label", rows)
    assert "repeated_rows" not in manifest


@pytest.mark.parametrize("column, told", [
    (lambda i, label: "abc".index(label), True),  # the label's code
    (lambda i, label: {"a": "x", "b": "y", "c": "y"}[label] if i else "x", False),  # two labels share a value
    (lambda i, label: f"{'abc'.index(label) * 10 + (i % 7) / 10:.1f}", True),  # numbers, each label an interval
    (lambda i, label: f"{'abc'.index(label) * 10 + (i % 7) * 3:.1f}", False),  # the intervals overlap
    (lambda i, label: "" if i % 3 else str("abc".index(label)), False),  # a value in a third of the rows only
])
def test_a_column_that_tells_every_rows_label_is_noted(tmp_path, column, told):
    rng = np.random.default_rng(7)
    rows = []
    for i in range(90):
        label = "abc"[i % 3]
        rows.append(f"p{i},{rng.normal(1, 1):.4f},{column(i, label)},{label}")
    report, manifest = _ingest(tmp_path, "pid,f1,suspect,label", rows)
    assert ("suspect" in manifest.get("label_columns", {})) == told
    assert ("columns that tell every row's label" in report.summary()) == told


def test_a_column_with_one_value_in_every_row_is_noted(tmp_path):
    rng = np.random.default_rng(8)
    rows = [f"p{i},{rng.normal(1, 1):.4f},7,,{'abc'[i % 3]}" for i in range(60)]
    report, manifest = _ingest(tmp_path, "pid,f1,const,sometimes,label", rows[:-1] + [rows[-1].replace(",,", ",2,")])
    assert manifest["constant_columns"] == ["const"]  # one value in every row; 'sometimes' has one where it has any
    assert "columns with one value in every row, which teach the model nothing" in report.summary()


def test_patients_alike_in_common_values_or_with_other_labels_are_not_taken_for_copies(tmp_path):
    # The note told rows sharing a viral load of 0 and a troponin of 0.01, with other labels, to "keep one".
    rng = np.random.default_rng(9)
    rows = [f"p{i},{rng.lognormal(8, 2):.1f},{rng.normal(0.1, 0.05):.3f},{'abc'[i % 3]}" for i in range(200)]
    rows += [f"z{i},0,0.01,{'abc'[i % 3]}" for i in range(12)]  # alike, with other labels
    rows += [f"h{i},0,0.02,a" for i in range(30)]  # 30 alike, one label: patients alike, not copies
    _, manifest = _ingest(tmp_path, "pid,viral,troponin,label", rows)
    assert "repeated_rows" not in manifest


def test_two_rows_alike_by_chance_in_one_measured_column_are_not_taken_for_copies(tmp_path):
    # A table of one column measured to three decimals and a lab at its detection limit: two patients of 400 with the
    # same value and label were told "keep one".
    rows = [f"p{i},{(i * 7919 % 1000) / 1000:.3f},20,{'abc'[i % 3]}" for i in range(400)]
    rows.append("q0,0.000,20,a")  # the value and label of p0, by chance
    _, manifest = _ingest(tmp_path, "pid,ratio,viral,label", rows)
    assert "repeated_rows" not in manifest
