"""The dataset config (TOML) of a user's own CSV: every bad config is refused naming what is wrong, before
anything is written; classes too small for the 70/20/10 split are all named at once; slices by a boolean
column or by a value."""
from __future__ import annotations

import codecs
import json

import pytest

from diagnosa.cli import main
from diagnosa.data.ingest import IngestError, ingest_csv, latest_key, load_curated
from diagnosa.data.schema import Schema, SchemaError, cohort_schema
from diagnosa.lake import DataLake

BASE = 'name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n'
# 3 rows of each class: the smallest data the 70/20/10 split takes.
ROWS = "case,age,flag,outcome\n" + "".join(
    f"c{i},{30 + i},{'yes' if i % 2 else 'no'},{label}\n" for i, label in enumerate("aaabbb"))


@pytest.fixture
def lake(tmp_path) -> DataLake:
    return DataLake.from_uri(str(tmp_path / "lake"))


def ingest(lake, tmp_path, config_text: str, rows: str = ROWS):
    csv, config = tmp_path / "x.csv", tmp_path / "x.toml"
    csv.write_text(rows)
    config.write_text(config_text)
    return ingest_csv(lake, csv, config)


@pytest.mark.parametrize("config_text, message", [
    # unknown keys, at the top and inside tables
    (BASE + "colour = 1\n", "unknown keys colour (allowed: columns, csv, exclude, features, gate, id_column, labels, "
                            "missing_values, name, ordinal, patient_column, slice, slice_column, target; see docs/data.md)"),
    (BASE + "[columns.age]\ntype = \"number\"\nunits = \"y\"\n", "[columns.age] has unknown keys units"),
    (BASE + "[slice]\ncolumn = \"flag\"\nwhen = \"yes\"\n", "[slice] has unknown keys when"),
    # missing keys
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\n', "missing required key 'labels'"),
    # wrong types
    ('name = 3\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n', "'name' must be a non-empty string, got 3"),
    ('name = "x"\nid_column = ["case"]\ntarget = "outcome"\nlabels = ["a", "b"]\n', "'id_column' must be a non-empty string"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = "a,b"\n', "'labels' must be a list of non-empty strings"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = [1, 2]\n', "'labels' must be a list of non-empty strings"),
    (BASE + "ordinal = \"yes\"\n", "'ordinal' must be true or false, got 'yes'"),
    (BASE + "exclude = \"age\"\n", "'exclude' must be a list of column names"),
    (BASE + "[columns.age]\nmin = \"0\"\n", "[columns.age] 'min' must be a number, got '0'"),
    (BASE + "[columns.age]\nrequired = 1\n", "[columns.age] 'required' must be true or false"),
    (BASE + "[columns.age]\ntype = \"float\"\n", "unknown type 'float'"),
    (BASE + "[columns.age]\nrole = \"label\"\n", "unknown role 'label'"),
    (BASE + "[columns.age]\ntype = \"text\"\nrole = \"feature\"\n",
     "column 'age' is declared text with role 'feature': the models learn from no text column"),
    (BASE + "slice = \"flag\"\n", "'slice' must be a table"),
    # bad values
    ('name = "my data"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n', "name 'my data' must be"),
    (BASE.replace('"x"', '"patients"'), "name 'patients' is the built-in cohort's"),
    (BASE.replace('"x"', '"diagnosa"'), "name 'diagnosa' is the built-in cohort's"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b", "a"]\n', "duplicate labels 'a'"),
    # accepted before, to no effect: a repeat is likely another name mistyped; a nan slice value matches no cell
    (BASE + "exclude = [\"age\", \"flag\", \" age\"]\n", "'exclude' names 'age' more than once"),
    (BASE + "[columns.flag]\nvalues = [\"yes\", \"no\", \"yes\", 1, \"1\"]\n",
     "[columns.flag] values '1', 'yes' are given more than once"),
    (BASE + "[slice]\ncolumn = \"age\"\nvalue = nan\n", "[slice] value must be a finite number, got nan"),
    (BASE + "[slice]\ncolumn = \"age\"\nvalue = -inf\n", "[slice] value must be a finite number, got -inf"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a"]\n', "'labels' needs at least two labels"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b\'s"]\n', "labels \"b's\" hold a quote"),
    # read as 'Leve', 'Grave' and 'Aguda' wherever shown, and other labels: a zero-width space, a bidi override, a C1
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["Leve", "Leve\\u200b"]\n',
     "labels 'Leve\\u200b' hold a control or format character"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["\\u202eGrave", "Agu\\u0085da"]\n',
     "labels '\\u202eGrave', 'Agu\\x85da' hold a control or format character"),
    # the dashboard's legend shows the highest value in its place (a CloudWatch dynamic label)
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["Leve ${MAX}", "Grave"]\n',
     "labels 'Leve ${MAX}' hold '${', which starts a CloudWatch dynamic label"),
    (BASE + "slice_column = \"flag\"\n[slice]\ncolumn = \"flag\"\n", "either 'slice_column' or a [slice] table"),
    (BASE + "[slice]\nname = \"1st\"\ncolumn = \"flag\"\n", "[slice] name '1st' must start with a letter"),
    (BASE + "[slice]\nname = \"s\"\n", "[slice] needs 'column'"),
    (BASE + "[slice]\ncolumn = \"flag\"\ngroup = 3\n", "[slice] group must be a column name"),
    (BASE + "[slice]\ncolumn = \"flag\"\ngroup = \"family\"\n", "slice group 'family'"),
    (BASE + "[slice]\ncolumn = \"flag\"\ngroup = \"case\"\n", "slice group 'case' cannot be the id"),
    # columns the CSV does not have (all named), roles that collide
    ('name = "x"\nid_column = "id"\ntarget = "outcome"\nlabels = ["a", "b"]\nexclude = ["nme"]\n',
     "columns named in the config not in the CSV header: id_column 'id', exclude 'nme'"),
    (BASE + "[columns.weight]\ntype = \"number\"\n", "columns 'weight'"),
    (BASE + "slice_column = \"smoker\"\n", "slice column 'smoker'"),
    (BASE + "exclude = [\"outcome\"]\n", "the target 'outcome' is also in 'exclude'"),
    ('name = "x"\nid_column = "outcome"\ntarget = "outcome"\nlabels = ["a", "b"]\n', "same column 'outcome'"),
    (BASE + "slice_column = \"flag\"\n[columns.flag]\ntype = \"category\"\n", "without a 'value' must be boolean"),
    # labels and data
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b", "c"]\n',
     "class 'c' has no rows (not in the data)"),
    (BASE + "[slice]\nname = \"old\"\ncolumn = \"age\"\nvalue = 99\n",
     "no accepted row is in the slice 'old' (column 'age' = 99)"),
    ("name = x", "is not valid TOML"),
    # the gate's thresholds
    (BASE + "[gate]\nprecision = 0.5\n", "[gate] has unknown keys precision (allowed: recall, slice, unseen)"),
    (BASE + "features = \"binary\"\n", "'features' must be a table ([features] with missing_indicators)"),
    (BASE + "[features]\nmissing_indicator = \"binary\"\n",
     "[features] has unknown keys missing_indicator (allowed: missing_indicators)"),
    (BASE + "[features]\nmissing_indicators = \"0/1\"\n",
     "[features] missing_indicators must be one of 'scaled', 'binary', got '0/1'"),
    (BASE + "[features]\nmissing_indicators = true\n",
     "[features] missing_indicators must be one of 'scaled', 'binary', got True"),
    (BASE + "[gate]\nrecall = 1.5\n", "[gate] recall must be a number in [0, 1] (every label) or a table"),
    (BASE + "[gate.recall]\nc = 0.5\n", "[gate.recall] names 'c', not in 'labels'"),
    (BASE + "[gate.recall]\na = \"high\"\n", "[gate.recall] thresholds must be numbers in [0, 1], got {'a': 'high'}"),
    (BASE + "[gate]\nslice = 0.5\n", "[gate] slice is a threshold on the slice's recall, but the config has no slice"),
    (BASE + "slice_column = \"flag\"\n[gate]\nunseen = 0.5\n", "but the config's [slice] has no group"),
    (BASE + "gate = 0.5\n", "'gate' must be a table"),
    # nothing left to learn from
    (BASE + 'exclude = ["age", "flag"]\n', "the config leaves no feature column: every column is the id, the target"),
    (BASE + "missing_values = \"NA\"\n", "'missing_values' must be a list of non-empty strings"),
    (BASE + "missing_values = [\"NA\", \"\"]\n", "'missing_values' must be a list of non-empty strings"),
    # the id and the target keep their checks (rows without a label or id, labels outside 'labels' stay out)
    (BASE + "[columns.outcome]\nrequired = false\n", "[columns.outcome] sets required of the target"),
    (BASE + "[columns.outcome]\nvalues = [\"a\", \"b\", \"c\"]\n", "[columns.outcome] sets values of the target"),
    (BASE + "[columns.outcome]\ntype = \"string\"\nrole = \"feature\"\n", "sets role, type of the target"),
    (BASE + "[columns.case]\nrequired = false\n", "[columns.case] sets required of the id column"),
    (BASE + "[columns.case]\ntype = \"number\"\n", "[columns.case] type 'number': an id is a string or an integer"),
    # cells are read trimmed: a label or value with spaces around it would never match
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a ", "b"]\n', "labels 'a ' have spaces around them"),
    (BASE + "[columns.flag]\nvalues = [\"yes\", \" no\"]\n", "[columns.flag] values ' no' have spaces around them"),
    # settings that would be ignored
    (BASE + "[columns.age]\ntype = \"number\"\nvalues = [30, 31]\n", "[columns.age] values apply to a category, not to a number"),
    (BASE + "[columns.flag]\ntype = \"category\"\nmin = 0\n", "[columns.flag] min apply to numbers, not to a category"),
    (BASE + "[columns.age]\nmin = nan\n", "[columns.age] 'min' must be a finite number, got nan"),
    (BASE + "exclude = [\"flag\"]\n[columns.flag]\ntype = \"boolean\"\n", "'flag' is both in 'exclude' and declared"),
    # how the file is written
    (BASE + "csv = \";\"\n", "'csv' must be a table ([csv] with decimal, delimiter, encoding, thousands)"),
    (BASE + "[csv]\nseparator = \";\"\n", "[csv] has unknown keys separator (allowed: decimal, delimiter, encoding, thousands)"),
    (BASE + "[csv]\ndelimiter = \";;\"\n", "[csv] delimiter must be one character that is not a letter, a digit"),
    (BASE + "[csv]\ndelimiter = \"x\"\n", "[csv] delimiter must be one character"),
    (BASE + "[csv]\ndelimiter = '\"'\n", "[csv] delimiter must be one character"),
    (BASE + "[csv]\ndecimal = \"·\"\n", "[csv] decimal must be '.' or ',', got '·'"),
    (BASE + "[csv]\ndecimal = \",\"\n", "[csv] decimal and delimiter are both ',': a file with decimal commas"),
    (BASE + "[csv]\nencoding = \"ascii-ish\"\n", "[csv] encoding must name a text encoding"),
    (BASE + "[csv]\nencoding = \"hex\"\n", "[csv] encoding must name a text encoding"),
    (BASE + "[csv]\nencoding = 1252\n", "[csv] encoding must name a text encoding"),
    (BASE + "[csv]\ndelimiter = \";\"\n", "the header is one column, 'case,age,flag,outcome': the file looks "
                                          "','-separated; set delimiter = \",\" under [csv] in the config"),
])
def test_bad_config_is_refused_naming_what_is_wrong_and_nothing_is_written(lake, tmp_path, config_text, message):
    with pytest.raises(IngestError) as caught:
        ingest(lake, tmp_path, config_text)
    assert message in str(caught.value)
    assert lake.list("curated/") == [] and lake.list("raw/") == [] and lake.list("quarantine/") == []


MANY = 300_000


@pytest.mark.parametrize("config_text, named", [
    # One item per name the config gives: 300,000 excluded columns the CSV lacks made a 5.6 MB error.
    (BASE + "exclude = [" + ", ".join(f'"c{i}"' for i in range(MANY)) + "]\n",
     "not in the CSV header: exclude 'c0', exclude 'c1',"),
    (BASE + "".join(f"[columns.c{i}]\ntype = \"number\"\n" for i in range(50_000)), "columns 'c9' and 49,990 more"),
    ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = [' + ", ".join(f'"a{i // 2}"' for i in range(MANY))
     + "]\n", "duplicate labels 'a0', 'a1',"),
    (BASE + "".join(f"k{i} = 1\n" for i in range(MANY)), "unknown keys k0, k1,"),
    (BASE + "[gate.recall]\n" + "".join(f"g{i} = 0.5\n" for i in range(MANY)), "[gate.recall] names 'g0', 'g1',"),
])
def test_a_config_naming_thousands_of_wrong_things_gets_a_short_error(lake, tmp_path, config_text, named):
    with pytest.raises(IngestError) as caught:
        ingest(lake, tmp_path, config_text)
    assert named in str(caught.value) and len(str(caught.value)) < 2000, str(caught.value)[:300]
    assert lake.list("curated/") == [] and lake.list("raw/") == []


def test_a_csv_header_of_thousands_of_columns_is_shown_short_in_an_error(lake, tmp_path):
    header = ",".join(f"col{i}" for i in range(100_000))
    with pytest.raises(IngestError) as caught:
        ingest(lake, tmp_path, BASE, rows=header + "\n" + ",".join("1" * 100_000) + "\n")
    message = str(caught.value)
    assert "(header: col0, col1," in message and "and 99,990 more)" in message and len(message) < 2000, message[:500]


def test_a_header_of_thousands_of_repeated_or_unnamed_columns_is_named_short(lake, tmp_path):
    for header, named in ((",".join(f"d{i // 2}" for i in range(100_000)) + ",case,age,flag,outcome",
                           "duplicated column names in the header: 'd0', 'd1',"),
                          ("case,age,flag,outcome" + "," * 100_000 + "x", "columns 5, 6, 7,")):
        with pytest.raises(IngestError) as caught:
            ingest(lake, tmp_path, BASE, rows=header + "\n" + ROWS.split("\n", 1)[1])
        message = str(caught.value)
        assert named in message and "more" in message and len(message) < 2000, message[:400]


def test_a_category_of_many_values_quarantines_a_row_with_a_short_reason(lake, tmp_path):
    # Each quarantined row's reason listed every allowed value: 300,000 values, 2.4 MB a row.
    values = ", ".join(f'"v{i}"' for i in range(300_000))
    rows = "case,age,flag,outcome\n" + "".join(f"c{i},{30 + i},no,{label}\n" for i, label in enumerate("aaabbb"))
    report = ingest(lake, tmp_path, BASE + f"[columns.flag]\ntype = \"category\"\nvalues = [\"no\", {values}]\n",
                    rows=rows + "c9,40,yes,a\n")
    assert sum(source.quarantined for source in report.sources) == 1
    stored = b"".join(lake.get_bytes(key) for key in report.quarantine_keys)
    assert b"unknown value for 'flag'" in stored and b"and 299,991 more" in stored and len(stored) < 20_000, len(stored)


def test_every_class_too_small_for_the_split_is_named_at_once_with_what_to_do(lake, tmp_path, capsys):
    rows = "case,age,outcome\n" + "".join(f"c{i},{30 + i},{label}\n" for i, label in enumerate(
        ["mild"] * 5 + ["moderate"] * 2 + ["severe"] + ["critical"] * 2 + ["moderate-x"]))
    (tmp_path / "x.csv").write_text(rows)
    (tmp_path / "x.toml").write_text('name = "sev"\nid_column = "case"\ntarget = "outcome"\n'
                                     'labels = ["mild", "moderate", "severe", "critical", "fatal"]\n')
    code = main(["--workspace", str(tmp_path / "ws"), "data", "ingest", str(tmp_path / "x.csv"),
                 "--config", str(tmp_path / "x.toml")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "after 1 of 11 rows were rejected (1 row like line 12: " in err
    assert "'moderate-x'" in err and "): 4 classes too small for the 70/20/10 split" in err
    for named in ("class 'moderate' has 2 rows", "class 'severe' has 1 row,", "class 'critical' has 2 rows",
                  "class 'fatal' has no rows (not in the data)"):
        assert named in err
    assert "'mild'" not in err
    assert "Merge such a class" in err and "leaving it out of `labels`" in err and "collect more rows" in err
    assert not (tmp_path / "ws" / "lake" / "raw" / "sev").exists()
    assert not (tmp_path / "ws" / "lake" / "curated" / "sev").exists()


def test_classes_emptied_by_rejected_rows_are_reported_with_the_cause_not_as_absent(lake, tmp_path):
    # A config naming a column that is not unique as the id (a test kind, not a test id): all rows but one conflict.
    rows = "case,kind,age,outcome\n" + "".join(f"c{i},{'antigen' if i == 1 else 'pcr'},{30 + i % 40},{'a' if i % 3 else 'b'}\n"
                                                for i in range(300))
    config = 'name = "x"\nid_column = "kind"\ntarget = "outcome"\nlabels = ["a", "b"]\nexclude = ["case"]\n'
    with pytest.raises(IngestError) as caught:
        ingest(lake, tmp_path, config, rows)
    message = str(caught.value)
    assert "after 299 of 300 rows were rejected (299 rows like line 2: conflicting rows: 299 rows with different " \
           "content for id 'pcr')" in message
    assert "class 'a' has 1 accepted row (200 in the data, 199 rejected)" in message
    assert "class 'b' has 0 accepted rows (100 in the data, 100 rejected)" in message
    assert "not in the data" not in message and "Fix what rejected those rows" in message
    assert lake.list("curated/") == [] and lake.list("raw/") == [] and lake.list("quarantine/") == []


@pytest.mark.parametrize("config_text, cause", [
    (BASE.replace('["a", "b"]', '["x", "y"]'), "6 rows like line 2: unknown label: 'a' (expected one of: x, y)"),
    (BASE + 'slice_column = "age"\n', "6 rows like line 2: wrong type for 'age': expected true or false (true/false, "
                                      "yes/no, sí/no, verdadero/falso, 1/0, t/f, y/n, s/n; any capitals), got '30'"),
    (BASE + '[columns.flag]\nvalues = ["Y", "N"]\n', "unknown value for 'flag': 'no' (expected one of: Y, N)"),
])
def test_a_config_that_rejects_every_row_is_named_as_the_cause_not_the_class_sizes(lake, tmp_path, config_text, cause):
    # Every row rejected by a config that does not fit the data: the message opened with the classes too small for
    # the split and advice to merge or collect them, burying the one mismatch that rejected everything.
    with pytest.raises(IngestError) as caught:
        ingest(lake, tmp_path, config_text)
    message = str(caught.value)
    assert "every one of its 6 rows was rejected, so nothing is left to train on: " in message and cause in message
    assert "too small" not in message and "Merge" not in message
    assert lake.list("curated/") == [] and lake.list("raw/") == [] and lake.list("quarantine/") == []


def test_the_rejection_summary_stays_short_however_many_kinds_of_bad_row(lake, tmp_path):
    # 5,000 rows, each rejected for its own out-of-range age: one kind of problem, one example, a bounded message.
    rows = "case,age,outcome\n" + "".join(f"c{i},{1000 + i},{'a' if i % 2 else 'b'}\n" for i in range(5000))
    config = 'name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n' \
             '[columns.age]\ntype = "integer"\nmax = 120\n'
    with pytest.raises(IngestError) as caught:
        ingest(lake, tmp_path, config, rows)
    message = str(caught.value)
    assert ": 5,000 rows like line 2: " in message and "1000" in message and len(message) < 1200


@pytest.mark.parametrize("labels, message", [
    ('["Détérioration ++", "Détérioration +"]', "labels 'Détérioration ++' and 'Détérioration +' both map to the "
                                                "parameter name RecallThresholdDeterioration: rename one of them"),
    ('["+", "-"]', "label '+' has no letter or digit to name its recall-threshold parameter"),
])
def test_labels_the_gate_cannot_name_are_refused_at_ingest_not_at_the_first_run(tmp_path, capsys, labels, message):
    rows = "case,age,outcome\n" + "".join(f"c{i},{30 + i},{label}\n" for i, label in enumerate(
        [*[json.loads(labels)[0]] * 3, *[json.loads(labels)[1]] * 3]))
    (tmp_path / "x.csv").write_text(rows)
    (tmp_path / "x.toml").write_text(f'name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = {labels}\n')
    code = main(["--workspace", str(tmp_path / "ws"), "data", "ingest", str(tmp_path / "x.csv"),
                 "--config", str(tmp_path / "x.toml")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Nothing was written" in err
    assert not (tmp_path / "ws" / "lake" / "raw" / "x").exists()


def test_a_header_is_checked_for_repeats_as_written(lake, tmp_path):
    # 'age.group' beside 'age' is a column of its own (pandas would name a second 'age' so); a real repeat is refused.
    rows = ROWS.replace("case,age,flag", "case,age,age.group").replace(",yes,", ",old,").replace(",no,", ",young,")
    ingest(lake, tmp_path, BASE, rows)
    curated, _ = load_curated(lake, "x")
    assert curated["age.group"].tolist() == ["young", "old", "young", "old", "young", "old"]
    with pytest.raises(IngestError, match="duplicated column names in the header: 'age'$"):
        ingest(lake, tmp_path, BASE, ROWS.replace("case,age,flag", "case,age,age"))


def test_cells_spelling_a_missing_value_are_read_as_missing_and_counted(lake, tmp_path):
    # R's write.csv writes NA; a number column with NA cells stays a number, its NA cells missing, no row rejected.
    rows = "case,age,flag,site,outcome\n" + "".join(
        f"c{i},{age},{flag},{site},{label}\n" for i, (age, flag, site, label) in enumerate(
            [("31", "yes", "NA", "a"), ("NA", "no", "EU", "a"), (" NaN", "yes", "EU", "NA"), ("44", "N/A", "NA", "b"),
             ("52", "no", "EU", "b"), ("60", "yes", "EU", "NA"), ("NA", "no", "NA", "b"), ("38", "yes", "EU", "a"),
             ("47", "no", "EU", "NA")]))
    config = ('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b", "NA"]\n'
              '[columns.site]\nvalues = ["EU", "NA"]\n')  # 'NA' a label and North America: not missing there
    report = ingest(lake, tmp_path, config, rows)
    curated, manifest = load_curated(lake, "x")
    schema = Schema.from_dict(manifest["schema"])
    assert report.rows == 9 and report.sources[0].quarantined == 0
    assert schema.field("age").type == "number"
    assert curated["age"].isna().tolist() == [False, True, True, False, False, False, True, False, False]
    assert curated["flag"].isna().sum() == 1
    assert curated["site"].tolist().count("NA") == 3 and curated["outcome"].tolist().count("NA") == 3
    assert report.missing_cells == {"N/A": 1, "NA": 2, "NaN": 1} == manifest["missing_cells"]
    assert "cells read as missing: 'N/A' 1, 'NA' 2, 'NaN' 1" in report.summary()
    # The quarantine and the raw copy keep what was written; another list of markers is another version.
    opted_out = ingest(lake, tmp_path, config.replace("labels", "missing_values = []\nlabels"), rows)
    assert opted_out.version != report.version and opted_out.missing_cells == {}
    _, manifest = load_curated(lake, "x", opted_out.version)
    assert Schema.from_dict(manifest["schema"]).field("age").type == "category"  # 'NA' taken as a level


def test_a_spanish_spreadsheet_export_is_read_as_its_config_says(lake, tmp_path):
    # Excel in Spanish saves ';'-separated cells with decimal commas, in Windows-1252: the same table as a plain CSV.
    plain = ("case,edad,temperatura,diagnóstico,outcome\n"
             + "".join(f"c{i},{30 + i},{36.5 + i / 10:.1f},{'gripe' if i % 2 else 'neumonía'},{label}\n"
                       for i, label in enumerate("aaaabbb")))
    spanish = plain.replace(",", ";").replace(".", ",").encode("cp1252")
    config = BASE + "[csv]\ndelimiter = \";\"\ndecimal = \",\"\nencoding = \"cp1252\"\n"
    (tmp_path / "x.csv").write_bytes(spanish)
    (tmp_path / "x.toml").write_text(config)
    report = ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml")
    read, manifest = load_curated(lake, "x", report.version)
    assert report.sources[0].quarantined == 0
    assert Schema.from_dict(manifest["schema"]).field("temperatura").type == "number"
    assert manifest["config"]["csv"] == {"delimiter": ";", "decimal": ",", "encoding": "cp1252"}
    (tmp_path / "plain").mkdir()
    expected, _ = load_curated(lake, "x", ingest(lake, tmp_path / "plain", BASE, plain).version)
    assert read.equals(expected)
    assert read["temperatura"].tolist()[:2] == [36.5, 36.6] and read["diagnóstico"].tolist()[:2] == ["neumonía", "gripe"]
    # With decimal commas a '.' is a thousands separator or a slip, never the decimal point: the row is quarantined
    # naming the mark, and kept as written (declared a number: inferred, that column would be a category).
    (tmp_path / "x.toml").write_text(config + "[columns.temperatura]\ntype = \"number\"\n")
    (tmp_path / "y.csv").write_bytes(spanish.replace(b"c1;31;36,6", b"c1;31;1.036,6"))
    report = ingest_csv(lake, tmp_path / "y.csv", tmp_path / "x.toml")
    bad = json.loads(lake.get_bytes(report.quarantine_keys[0]).decode().splitlines()[0])
    assert bad["reasons"] == ["wrong type for 'temperatura': expected a number written with a decimal ',', got '1.036,6'"]
    assert bad["raw"]["temperatura"] == "1.036,6"
    # The file as read without its [csv]: what to set, not a list of missing columns.
    (tmp_path / "x.toml").write_text(BASE)
    with pytest.raises(IngestError, match="not utf-8 text .byte 27, line 1. .a spreadsheet saved on Windows is often "
                                          "cp1252: set encoding = \"cp1252\" under .csv."):
        ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml")
    (tmp_path / "x.toml").write_text(BASE + "[csv]\nencoding = \"cp1252\"\n")
    with pytest.raises(IngestError, match="looks ';'-separated; set delimiter = \";\" under .csv. in the config"):
        ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml")


def quarantine_of(lake, report) -> list[dict]:
    return [json.loads(line) for key in report.quarantine_keys for line in lake.get_bytes(key).decode().splitlines()]


def test_every_line_ending_reads_the_same_rows_and_lines_are_the_files(lake, tmp_path):
    # CR LF (Windows), LF, and the lone CR of an old Mac's "CSV (Macintosh)": the same curated rows.
    plain = ingest(lake, tmp_path, BASE)
    expected, _ = load_curated(lake, "x", plain.version)
    for ending in ("\r\n", "\r"):
        report = ingest(lake, tmp_path, BASE, ROWS.replace("\n", ending))
        assert load_curated(lake, "x", report.version)[0].equals(expected), repr(ending)
    # Quarantined rows name the line they start on in the file, past blank lines and cells over several lines.
    rows = ('case,age,flag,outcome\nc0,30,no,a\n\n\nc1,31,"yes\nreally",a\nc2,32,no,a\nc3,33,yes,b\nc4,34,no,z\n'
            "c5,35,yes,b\nc6,36,no,b\n")
    report = ingest(lake, tmp_path, BASE, rows)
    assert [(q["line"], q["reasons"]) for q in quarantine_of(lake, report)] == [
        (9, ["unknown label: 'z' (expected one of: a, b)"])]


def test_a_row_that_does_not_match_the_header_is_quarantined_not_padded(lake, tmp_path):
    # A line cut short used to be padded with empty cells (and curated); one cell too many refused the whole file.
    rows = ROWS + "c6,36,b\nc7,37,no,b,extra\nc8,38,no,b,,\n"
    report = ingest(lake, tmp_path, BASE, rows)
    curated, _ = load_curated(lake, "x", report.version)
    assert curated["case"].tolist() == ["c0", "c1", "c2", "c3", "c4", "c5", "c8"]  # empty trailing cells: nothing lost
    assert report.sources[0].read == 9 and report.sources[0].quarantined == 2
    assert [(q["line"], q["reasons"], q["raw"]) for q in quarantine_of(lake, report)] == [
        (8, ["wrong number of cells: 3 where the header has 4 (a cell holding the delimiter without quotes, or a line "
             "cut short)"], {}),
        (9, ["wrong number of cells: 5 where the header has 4 (a cell holding the delimiter without quotes, or a line "
             "cut short)"], {})]  # no cell shown: the header cannot say which is which (raw/ keeps the file)


@pytest.mark.parametrize("data, config, message", [
    (b"case,age,,outcome,\n", BASE, "columns 3, 5 of the header have no name (a spreadsheet's empty columns"),
    (b"case,age,flag,outcome\n\n", BASE, "x.csv has a header but no rows"),
    # A report's title above the table: it was 'columns 2, 3, 4 of the header have no name ... name or delete them'.
    (b"Informe de pacientes,,,\nGenerado: hoy,,,\n" + ROWS.encode(), BASE,
     "x.csv: its first line has text in its first cell only ('Informe de pacientes'), and line 3 has cells under its "
     "other 3 columns: the first line looks like a title above the table, not its header. Delete the lines above"),
    (b"Informe de pacientes\n" + ROWS.encode(), BASE,
     "(its first line, 'Informe de pacientes', is one cell: a title above the table? Delete the lines above the column "
     "names). Nothing was written"),
    (ROWS.encode("utf-16"), BASE, 'x.csv is UTF-16 text (it starts with UTF-16\'s byte-order mark, as a spreadsheet\'s '
                                  "'Unicode text' is saved): set encoding = \"utf-16\" under [csv]"),
    (b"sep=;\n" + ROWS.encode(), BASE, "its first line 'sep=;' says the cells are ';'-separated: set delimiter = \";\""),
    (ROWS.replace("case,", "Case,").encode(), BASE, "id_column 'case' (the header has 'Case') (header: Case, age"),
    # The answers' 'patient_id' would be the id column's value, not this column's: the run's own example looked
    # broken ('"patient_id": null').
    (ROWS.replace("flag,", "patient_id,").encode(), BASE,
     "the column 'patient_id' is not the id column ('case'), yet the endpoint's answers give each row's id as "
     "'patient_id': make it the id_column, put it in exclude, or rename it"),
    # A no-break space (spreadsheets, web pages) looks like a space in the header the message listed.
    (ROWS.replace("case,", "my\xa0case,").encode(), BASE.replace('"case"', '"my case"'),
     "id_column 'my case' (the header has 'my\\xa0case', the same but for a no-break space (U+00A0)) (header: "
     "'my\\xa0case', age"),
    (ROWS.replace("flag,", "age ,").encode(), BASE, "duplicated column names in the header: 'age' (names are read "
                                                    "without the spaces around them and with accents composed; "
                                                    "written 'age ')"),
    (ROWS.replace("c2,32", 'c2,"32').encode(), BASE, 'cannot be parsed as CSV (the row starting on line 4): '
                                                     "unexpected end of data"),  # not the rest of the file in one cell
])
def test_a_file_that_is_not_read_says_why(lake, tmp_path, data, config, message):
    (tmp_path / "x.csv").write_bytes(data)
    (tmp_path / "x.toml").write_text(config)
    with pytest.raises(IngestError) as caught:
        ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml")
    assert message in str(caught.value)


def test_files_as_spreadsheets_and_editors_save_them_are_read(lake, tmp_path):
    # A UTF-16 file said so, Excel's 'sep=' line when it agrees, a config saved with a byte-order mark.
    expected, _ = load_curated(lake, "x", ingest(lake, tmp_path, BASE).version)
    (tmp_path / "x.toml").write_bytes(codecs.BOM_UTF8 + (BASE + '[csv]\nencoding = "utf-16"\n').encode())
    (tmp_path / "x.csv").write_bytes(ROWS.encode("utf-16"))
    assert load_curated(lake, "x", ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml").version)[0].equals(expected)
    (tmp_path / "x.toml").write_text(BASE + '[csv]\ndelimiter = ";"\n')
    (tmp_path / "x.csv").write_text("sep=;\n" + ROWS.replace(",", ";"))
    assert load_curated(lake, "x", ingest_csv(lake, tmp_path / "x.csv", tmp_path / "x.toml").version)[0].equals(expected)


def test_cells_are_compared_trimmed_and_composed_and_the_report_counts_them(lake, tmp_path):
    # 'a ' is the label 'a'; 'c0 ' the id 'c0' (a duplicate, not a second patient); 'neumonía' typed on a Mac
    # (i + combining accent) the same category; Spanish booleans; capitals stay meaningful, and the reason says so.
    nfd = "neumoni\u0301a"
    rows = ("case,age,flag,dx,outcome\n" + "".join(
        f"{case},{age},{flag},{dx},{label}\n" for case, age, flag, dx, label in [
            ("c0", 30, "sí", "neumonía", "a"), ("c1", 31, "NO", nfd, "a "), (" c2", 32, "Verdadero", "gripe", " a"),
            ("c3", 33, "falso", "gripe ", "b"), ("c4", 34, "si", "gripe", "b"), ("c5", 35, "no", "gripe", "b"),
            ("c0 ", 30, "sí", "neumonía", "a"), ("c6", 36, "no", "gripe", "B")]))
    config = BASE.replace('"outcome"\n', '"outcome"\n', 1) + "[columns.flag]\ntype = \"boolean\"\n"
    report = ingest(lake, tmp_path, config, rows)
    curated, manifest = load_curated(lake, "x", report.version)
    assert curated["case"].tolist() == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert curated["outcome"].tolist() == ["a", "a", "a", "b", "b", "b"]
    assert curated["dx"].tolist() == ["neumonía", "neumonía", "gripe", "gripe", "gripe", "gripe"]
    assert curated["flag"].tolist() == [True, False, True, False, True, False]
    assert report.cleaned_cells == manifest["cleaned_cells"] == 6
    assert "cells read without the spaces around them or with composed accents: 6" in report.summary()
    reasons = {q["line"]: q["reasons"] for q in quarantine_of(lake, report)}
    assert reasons[8] == ["duplicate row: same content as an earlier row for id 'c0'"]
    assert reasons[9] == ["unknown label: 'B' (expected one of: a, b); 'b' but for case"]
    assert quarantine_of(lake, report)[0]["raw"]["case"] == "c0 "  # the quarantine keeps the row as written
    # The summary shows each reason's first row, which says what the count alone did not ('quarantined for unknown
    # label: 1'); a no-break space inside a label is named, as it shows as a space.
    assert "    quarantined for unknown label: 1 (e.g. line 9: unknown label: 'B' (expected one of: a, b); 'b' but " \
           "for case)" in report.summary().splitlines()
    assert "quarantined for duplicate row: 1 (e.g. line 8: duplicate row: same content as an earlier row for id " \
           "'c0')" in report.summary()
    config = BASE.replace('["a", "b"]', '["a", "b c"]')
    report = ingest(lake, tmp_path, config, ROWS.replace(",b\n", ",b c\n", 2).replace(",b\n", ",b\xa0c\n")
                    + "c9,39,no,b c\n")
    assert ("quarantined for unknown label: 1 (e.g. line 7: unknown label: 'b\\xa0c' (expected one of: a, b c); "
            "'b c' but for a no-break space (U+00A0))") in report.summary()


def test_a_column_of_numbers_read_as_a_category_is_reported_with_what_made_it_one(lake, tmp_path):
    # One '<0.1' among a lab's values makes the column a category (every value a level): the report says so.
    rows = "case,crp,code,outcome\n" + "".join(
        f"c{i},{crp},{code},{label}\n" for i, (crp, code, label) in enumerate(
            [("12.5", "x1", "a"), ("<0.1", "x2", "a"), ("30", "x3", "a"), ("8", "x4", "b"), ("#DIV/0!", "x5", "b"),
             ("1_000", "x6", "b"), ("4", "x7", "b")]))
    report = ingest(lake, tmp_path, BASE + "[columns.code]\ntype = \"category\"\n", rows)
    _, manifest = load_curated(lake, "x", report.version)
    assert Schema.from_dict(manifest["schema"]).field("crp").type == "category"
    assert report.numbers_read_as_categories == manifest["numbers_read_as_categories"] == {
        "crp": {"numbers": 4, "cells": 7, "others": ["<0.1", "#DIV/0!", "1_000"]}}  # '1_000' as validation reads it
    summary = report.summary()
    assert "crp (4 of 7 sampled cells are numbers; not: '<0.1', '#DIV/0!', '1_000')" in summary
    assert "code" not in summary  # declared a category: no news


def test_text_below_the_cells_a_columns_type_was_inferred_from_is_reported(lake, tmp_path):
    # A lab numeric in its first 1,000 cells and 'hemolizada' further down: those rows were quarantined as 'wrong
    # type', and nothing said that the column had not been declared, so its type was a guess.
    crp = [str(i % 50) for i in range(1_000)] + ["hemolizada", "7", "<0.5", "9"]
    rows = "case,crp,outcome\n" + "".join(f"c{i},{v},{'ab'[i % 2]}\n" for i, v in enumerate(crp))
    report = ingest(lake, tmp_path, BASE, rows)
    assert report.text_below_the_sample == {"crp": {"rows": 2, "line": 1002}}
    assert report.text_below_the_sample == load_curated(lake, "x", report.version)[1]["text_below_the_sample"]
    assert ("not declared and read as numbers from their first 1,000 non-empty cells, with other text further down "
            "(those rows quarantined; declare [columns.<name>] type = \"category\" to keep the cells as text, or list "
            "the text in missing_values): crp (2 rows from line 1002)") in report.summary()
    declared = ingest(lake, tmp_path, BASE + '[columns.crp]\ntype = "number"\n', rows + "c9999,3,b\n")  # no news
    assert declared.text_below_the_sample == {} and "not declared and read as numbers" not in declared.summary()


def test_booleans_are_read_in_their_one_letter_spellings(lake, tmp_path):
    # A Spanish hospital system writes S/N, PostgreSQL's CSV export t/f: they were 'expected true or false', which
    # did not say that yes/no, sí/no and 1/0 were read.
    flags = ["S", "n", "T", "f", "y", "N", "x"]
    rows = "case,age,flag,outcome\n" + "".join(f"c{i},{30 + i},{flag},{'ab'[i % 2]}\n" for i, flag in enumerate(flags))
    report = ingest(lake, tmp_path, BASE + '[columns.flag]\ntype = "boolean"\n', rows)
    assert load_curated(lake, "x", report.version)[0]["flag"].tolist() == [True, False, True, False, True, False]
    assert quarantine_of(lake, report)[0]["reasons"] == [
        "wrong type for 'flag': expected true or false (true/false, yes/no, sí/no, verdadero/falso, 1/0, t/f, y/n, "
        "s/n; any capitals), got 'x'"]


def test_numbers_written_with_a_unit_or_a_word_processors_minus_are_reported(lake, tmp_path):
    # '124 mg/dL' in every cell, or half the cells with '−' (U+2212) where '-' is read: not one plain number in the
    # first, not most in the second, yet each value became a level of its own, and the report said nothing.
    labs = [("124 mg/dL", "\u22122.7", "2A"), ("98 mg/dL", "1.5", "2B"), ("143mg/dL", "\u22120.4", "3A"),
            ("101 mg/dL", "0.9", "1A"), ("88 mg/dL", "\u22121.1", "2A"), ("132 mg/dL", "2.2", "3B")]
    rows = "case,glucose,base_excess,stage,outcome\n" + "".join(
        f"c{i},{g},{b},{s},{'ab'[i % 2]}\n" for i, (g, b, s) in enumerate(labs))
    report = ingest(lake, tmp_path, BASE, rows)
    assert report.numbers_read_as_categories == {
        "glucose": {"numbers": 0, "cells": 6, "others": ["124 mg/dL", "98 mg/dL", "143mg/dL"], "spelled": 6,
                    "spelled_example": "124 mg/dL", "spelled_as": "a unit after the number ('mg/dL')"},
        "base_excess": {"numbers": 3, "cells": 6, "others": ["\u22122.7", "\u22120.4", "\u22121.1"], "spelled": 3,
                        "spelled_example": "\u22122.7", "spelled_as": "the minus sign '\u2212' (U+2212) where '-' is read"}}
    summary = report.summary()
    assert ("glucose (0 of 6 sampled cells are numbers; not: '124 mg/dL', '98 mg/dL', '143mg/dL'; 6 spell a number "
            "otherwise, e.g. '124 mg/dL' with a unit after the number ('mg/dL'): write them as plain numbers)") in summary
    assert "stage" not in summary  # '2A' is a stage, not a number with a unit


def test_numbers_with_a_decimal_comma_read_with_decimal_points_are_refused_naming_every_column(lake, tmp_path):
    # A Spanish spreadsheet's '36,5' read with decimal points is text: each temperature a level of its own, the
    # numbers lost to the model. Nothing is written; the message names the columns and both ways on.
    rows = "case;temp;crp;code;outcome\n" + "".join(
        f"c{i};{36 + i},5;{crp};{code};{label}\n" for i, (crp, code, label) in enumerate(
            [("1,5", "1,5", "a"), ("<0,1", "2,5", "a"), ("30", "3,5", "a"), ("8,25", "4,5", "b"), ("2", "5,5", "b"),
             ("4,5", "6,5", "b"), ("7", "7,5", "b")]))
    semicolons = BASE + "[columns.code]\ntype = \"category\"\n[csv]\ndelimiter = \";\"\n"  # code: '1,5' is a code
    with pytest.raises(IngestError) as caught:
        ingest(lake, tmp_path, semicolons, rows)
    assert str(caught.value).endswith(
        "numbers written with a decimal comma in 2 column(s) read with decimal points: 'temp' (7 of 7 sampled "
        "cells, e.g. '36,5'), 'crp' (6 of 7 sampled cells, e.g. '1,5'); set decimal = \",\" under [csv], or declare "
        "such a column type = \"category\" under [columns.<name>] to keep its cells as text")
    assert lake.list("curated/") == [] and lake.list("raw/") == [] and lake.list("quarantine/") == []
    # A comma-separated file can only hold them quoted: the message asks for another delimiter too.
    commas = "case,temp,outcome\n" + "".join(f"c{i},\"{36 + i},5\",{'ab'[i % 2]}\n" for i in range(7))
    with pytest.raises(IngestError, match="set decimal = \",\" under .csv. with another delimiter .the file's cells "
                                          "are ','-separated."):
        ingest(lake, tmp_path, BASE, commas)
    # Either way on is taken: the file read with its decimal commas, or a column kept as text on purpose.
    report = ingest(lake, tmp_path, semicolons + "decimal = \",\"\n", rows)
    curated, manifest = load_curated(lake, "x", report.version)
    assert curated["temp"].tolist() == [36.5 + i for i in range(7)]
    assert Schema.from_dict(manifest["schema"]).field("code").type == "category"
    assert report.numbers_read_as_categories == {"crp": {"numbers": 6, "cells": 7, "others": ["<0,1"]}}
    kept = ingest(lake, tmp_path, semicolons + "[columns.temp]\ntype = \"category\"\n[columns.crp]\n"
                  "type = \"category\"\n", rows)
    assert load_curated(lake, "x", kept.version)[0]["temp"].tolist() == [f"{36 + i},5" for i in range(7)]
    # The other way round: a column exported with decimal points in a file read with decimal commas (its '36.5'
    # no number there) was curated as categories without a word; the endpoint then refused 36.5 as no string.
    points = "\n".join(line.replace(",5;", ".5;", 1) for line in rows.split("\n"))  # temp's cells only
    with pytest.raises(IngestError) as caught:
        ingest(lake, tmp_path, semicolons + "decimal = \",\"\n", points)
    assert str(caught.value).endswith(
        "numbers written with a decimal point in 1 column(s) of a file read with decimal commas (decimal = \",\" under "
        "[csv]): 'temp' (7 of 7 sampled cells, e.g. '36.5'); write them with a decimal comma as the file's other "
        "numbers are, or read the file with decimal = \".\" if all its numbers have points, or declare such a column "
        "type = \"category\" under [columns.<name>] to keep its cells as text")


def test_an_integer_too_large_to_hold_exactly_is_quarantined_not_rounded_or_a_crash(lake, tmp_path):
    # 2^53 + 1 read as a float64 is 2^53; from 2^63 on the int64 cast failed with a traceback.
    big = ["9007199254740993", "1e20", "9223372036854775807", "-1e19"]
    rows = ROWS + "".join(f"d{i},{value},no,a\n" for i, value in enumerate(big))
    report = ingest(lake, tmp_path, BASE + "[columns.age]\ntype = \"integer\"\n", rows)
    assert report.sources[0].quarantined == 4
    assert sorted(q["raw"]["age"] for q in quarantine_of(lake, report)) == sorted(big)
    assert all(q["reasons"][0].startswith("not an exact integer for 'age'") for q in quarantine_of(lake, report))
    assert load_curated(lake, "x", report.version)[0]["age"].tolist() == [30, 31, 32, 33, 34, 35]


def test_a_number_beyond_the_features_32_bit_range_is_quarantined_at_ingest(lake, tmp_path):
    # 1e308 was curated, and the run stopped in Preprocess (its square overflowed the baseline's variance).
    rows = ROWS + "d0,1e308,no,a\nd1,-4e38,no,b\nd2,3e38,no,b\n"
    report = ingest(lake, tmp_path, BASE, rows)
    assert [(q["raw"]["age"], q["reasons"]) for q in quarantine_of(lake, report)] == [
        (value, [f"number out of range for 'age': '{value}' (the model's features are 32-bit floats: -3.4e38 to "
                 "3.4e38)"]) for value in ("1e308", "-4e38")]
    assert load_curated(lake, "x", report.version)[0]["age"].max() == 3e38


def test_an_ingest_overtaken_by_another_of_the_same_dataset_does_not_take_the_latest_back(lake, tmp_path):
    # A big file started first and a small one after: the small one finished first, the big one last and became
    # the latest; the one asked for last stays the latest now, and the first says so.
    (tmp_path / "big").mkdir()
    small = {}

    def meanwhile(what, detail):
        if what == "writing the curated version" and not small:
            small["report"] = ingest(lake, tmp_path / "big", BASE, ROWS + "c9,70,yes,b\n")
    csv, config = tmp_path / "x.csv", tmp_path / "x.toml"
    csv.write_text(ROWS)
    config.write_text(BASE)
    first = ingest_csv(lake, csv, config, phase=meanwhile)
    assert load_curated(lake, "x")[1]["version"] == small["report"].version != first.version
    assert first.overtaken_by == small["report"].version
    assert f"not made the latest version: another ingest of x made {small['report'].version} the latest" in first.summary()
    assert ingest(lake, tmp_path, BASE).relatest == small["report"].version  # asked again: now the latest


def test_a_dataset_whose_endpoint_would_be_another_datasets_is_refused(lake, tmp_path):
    # 'mi_data' and 'mi-data' both become the model package group and endpoint 'mi-data': one run would replace the
    # other's model.
    ingest(lake, tmp_path, BASE.replace('"x"', '"mi_data"'))
    with pytest.raises(IngestError, match="dataset 'mi-data' would share its model package group and endpoint "
                                          "'mi-data' with the dataset 'mi_data' in the lake"):
        ingest(lake, tmp_path, BASE.replace('"x"', '"mi-data"'))
    assert ingest(lake, tmp_path, BASE.replace('"x"', '"mi_data"')).reused  # its own name again: fine
    # Nor names apart by case only: SageMaker's endpoint names ignore it ("MiData" and "midata" are one endpoint).
    ingest(lake, tmp_path, BASE.replace('"x"', '"MiHospital"'))
    with pytest.raises(IngestError, match="dataset 'mihospital' would share its model package group and endpoint "
                                          "'mihospital' with the dataset 'MiHospital' in the lake"):
        ingest(lake, tmp_path, BASE.replace('"x"', '"mihospital"'))


def test_declared_limits_make_a_number_and_declared_values_a_category(lake, tmp_path):
    # Without a type, 'min' on a column with a stray text used to be ignored (inferred a category); 'values' on a
    # column of digits too (inferred a number).
    rows = ROWS.replace("c0,30,no,a", "c0,unknown,no,a").replace(",yes,", ",1,").replace(",no,", ",0,") + "c6,36,1,a\n"
    report = ingest(lake, tmp_path, BASE + "[columns.age]\nmin = 0\n[columns.flag]\nvalues = [\"0\", \"1\"]\n", rows)
    schema = Schema.from_dict(load_curated(lake, "x", report.version)[1]["schema"])
    assert (schema.field("age").type, schema.field("flag").type) == ("number", "category")
    assert [q["reasons"] for q in quarantine_of(lake, report)] == [["wrong type for 'age': expected a number, got 'unknown'"]]


def test_ingesting_a_file_again_makes_its_version_the_latest_again(lake, tmp_path):
    # The user goes back to an earlier file: 'already ingested' must not leave the run training on the newer one.
    first = ingest(lake, tmp_path, BASE)
    newer = ingest(lake, tmp_path, BASE, ROWS + "c9,70,yes,b\n")
    assert load_curated(lake, "x")[1]["version"] == newer.version
    again = ingest(lake, tmp_path, BASE)
    assert again.reused and again.version == first.version and again.relatest == newer.version
    assert load_curated(lake, "x")[1]["version"] == first.version
    assert f"(already ingested); the latest version again, in place of {newer.version}" in again.summary()
    assert "latest version again" not in ingest(lake, tmp_path, BASE).summary()  # already the latest: no news
    # An ingest killed after its manifest and before LATEST: the re-run repairs it.
    lake.delete(latest_key("x"))
    repaired = ingest(lake, tmp_path, BASE)
    assert repaired.relatest == "" and load_curated(lake, "x")[1]["version"] == first.version
    assert repaired.summary().splitlines()[0].endswith("(already ingested); the latest version again")


def test_numeric_labels_written_as_floats_are_read_as_the_labels(lake, tmp_path):
    # pandas writes an integer column with gaps as floats: stage 4 becomes '4.0'.
    rows = "case,age,stage\n" + "".join(f"c{i},{30 + i},{stage}\n" for i, stage in enumerate(
        ["1.0", "1", "1.00", "2.0", "2.0", "2", "2.5", ""]))
    config = 'name = "x"\nid_column = "case"\ntarget = "stage"\nlabels = ["1", "2"]\n'
    report = ingest(lake, tmp_path, config, rows)
    curated, manifest = load_curated(lake, "x")
    assert curated["stage"].tolist() == ["1", "1", "1", "2", "2", "2"]
    assert report.sources[0].quarantined == 2  # 2.5 is no label, the empty one no label at all
    assert report.labels_read_as_numbers == {"1.0": "1", "1.00": "1", "2.0": "2"} == manifest["labels_read_as_numbers"]
    assert "labels read as numbers: '1.0' as '1', '1.00' as '1', '2.0' as '2'" in report.summary()
    # Two labels equal as numbers: a cell equal to both is left as written, an unknown label.
    config = 'name = "y"\nid_column = "case"\ntarget = "stage"\nlabels = ["1", "1.0", "2"]\n'
    rows = "case,age,stage\n" + "".join(f"c{i},{30 + i},{stage}\n" for i, stage in enumerate(
        ["1", "1", "1", "1.0", "1.0", "1.0", "2", "2", "2.0", "1.00"]))
    report = ingest(lake, tmp_path, config, rows)
    assert report.labels_read_as_numbers == {"2.0": "2"} and report.sources[0].quarantined == 1


def test_numeric_labels_are_read_with_the_files_decimal_mark(lake, tmp_path):
    # A Spanish export of an integer column with gaps writes '4,0'; its '4.0' is no number there (a thousands
    # point or a mistake), and neither are '1_0' or other scripts' digits, which Python's float() takes.
    rows = "case;age;stage\n" + "".join(f"c{i};{30 + i};{stage}\n" for i, stage in enumerate(
        ["4,0", "4", "10,00", "10", "4", "10", "4.0", "1_0", "٤", "4,5"]))
    config = ('name = "x"\nid_column = "case"\ntarget = "stage"\nlabels = ["4", "10"]\n'
              '[csv]\ndelimiter = ";"\ndecimal = ","\n')
    report = ingest(lake, tmp_path, config, rows)
    assert load_curated(lake, "x")[0]["stage"].tolist() == ["4", "4", "10", "10", "4", "10"]
    assert report.labels_read_as_numbers == {"10,00": "10", "4,0": "4"}
    assert report.sources[0].quarantined == 4
    # With decimal points, '4.0' is the label and '4,0' is not; nor are '1_0' and '٤'.
    rows = "case,age,stage\n" + "".join(f"c{i},{30 + i},{stage}\n" for i, stage in enumerate(
        ["4.0", "4", "10", "10", "10", "4", "1_0", "٤", '"4,0"']))
    report = ingest(lake, tmp_path, config.replace('[csv]\ndelimiter = ";"\ndecimal = ","\n', ""), rows)
    assert report.labels_read_as_numbers == {"4.0": "4"} and report.sources[0].quarantined == 3


def test_the_gate_of_the_config_gives_the_definition_its_default_thresholds(lake, tmp_path):
    from diagnosa.services import dataset_of

    config = (BASE.replace('["a", "b"]', '["a", "b", "c"]') + '[slice]\nname = "smokers"\ncolumn = "flag"\nvalue = "yes"\n'
              '[gate]\nslice = 0.3\n[gate.recall]\nc = 0.25\na = 0.6\n')
    rows = ROWS + "".join(f"d{i},{50 + i},no,c\n" for i in range(3))
    report = ingest(lake, tmp_path, config, rows)
    _, manifest = load_curated(lake, "x")
    settings = dataset_of(manifest, "x")
    assert settings["recall_thresholds"] == {"a": 0.6, "b": 0.80, "c": 0.25}  # b: the default
    assert settings["orphan_threshold"] == 0.3  # the slice's, whatever its name
    # Offline from the TOML, as from the lake: the parameters' defaults.
    out = tmp_path / "definition.json"
    assert main(["pipeline", "definition", "--dataset-config", str(tmp_path / "x.toml"), "--bucket", "lake",
                 "--region", "eu-west-1", "--out", str(out)]) == 0
    defaults = {p["Name"]: p.get("DefaultValue") for p in json.loads(out.read_text())["Parameters"]}
    assert (defaults["RecallThresholdA"], defaults["RecallThresholdB"], defaults["RecallThresholdC"]) == (0.6, 0.8, 0.25)
    assert defaults["SmokersRecallThreshold"] == 0.3
    # Another gate is another version (a manifest is never rewritten); without one, the definition's defaults.
    lowered = ingest(lake, tmp_path, config.replace("a = 0.6", "a = 0.5"), rows)
    assert lowered.version != report.version
    assert dataset_of(load_curated(lake, "x")[1], "x")["recall_thresholds"]["a"] == 0.5
    assert "recall_thresholds" not in dataset_of(load_curated(lake, "x", report.version)[1] | {"config": {}}, "x")


@pytest.mark.parametrize("extra, expected", [
    ("", "binary"),  # a table's own data: 0/1 indicators
    ('[features]\nmissing_indicators = "scaled"\n', "scaled"),  # the config's choice
    ('[slice]\ncolumn = "flag"\nvalue = "yes"\ngroup = "site"\n', "scaled"),  # groups held out, as the cohort's
    ('[slice]\ncolumn = "flag"\nvalue = "yes"\n', "binary"),  # a slice without groups is no such case
    ('[slice]\ncolumn = "flag"\nvalue = "yes"\ngroup = "site"\n[features]\nmissing_indicators = "binary"\n', "binary"),
])
def test_the_config_gives_the_definition_its_missing_indicators_default(lake, tmp_path, extra, expected):
    """[features] missing_indicators, else binary, else scaled for a grouped slice: the MissingIndicators
    parameter's default in the definition a run builds from the lake and in the one built from the TOML alone."""
    from diagnosa.services import dataset_of

    rows = "".join(line + (",site\n" if i == 0 else f",s{i % 3}\n") for i, line in enumerate(ROWS.splitlines()))
    ingest(lake, tmp_path, BASE + extra, rows)
    assert dataset_of(load_curated(lake, "x")[1], "x")["missing_indicators"] == expected
    out = tmp_path / "definition.json"
    assert main(["pipeline", "definition", "--dataset-config", str(tmp_path / "x.toml"), "--bucket", "lake",
                 "--region", "eu-west-1", "--out", str(out)]) == 0
    [parameter] = [p for p in json.loads(out.read_text())["Parameters"] if p["Name"] == "MissingIndicators"]
    assert parameter["DefaultValue"] == expected and parameter["EnumValues"] == ["scaled", "binary"]


def test_a_slice_with_fewer_than_two_groups_is_refused_at_ingest(lake, tmp_path):
    """The split holds a share of the slice's groups out of training, and the gate measures them on test: with one
    group none could be held out, the unseen recall was undefined and every run of the dataset failed the gate."""
    config = BASE + '[slice]\ncolumn = "flag"\nvalue = "yes"\ngroup = "site"\n'
    for sites, groups in (("s0", 1), ("", 0)):
        rows = "".join(line + (",site\n" if i == 0 else f",{sites}\n") for i, line in enumerate(ROWS.splitlines()))
        with pytest.raises(IngestError, match=f"the slice 'flag' has {groups} groups? in its group column 'site'.*at "
                                              "least 2. Leave `group` out"):
            ingest(lake, tmp_path, config, rows)
        assert not lake.list("curated/")
    two = "".join(line + (",site\n" if i == 0 else f",s{i % 3}\n") for i, line in enumerate(ROWS.splitlines()))
    assert ingest(lake, tmp_path, config, two).version


def test_the_built_in_cohort_keeps_scaled_missing_indicators():
    from diagnosa.data.schema import config_missing_indicators
    from diagnosa.services import dataset_of

    assert config_missing_indicators(None) == "scaled"
    assert dataset_of(None, "patients")["missing_indicators"] == "scaled"


def test_a_boolean_slice_column_is_a_metadata_field_named_without_is(lake, tmp_path):
    rows = ROWS.replace("flag", "is_smoker")
    report = ingest(lake, tmp_path, BASE + 'slice_column = "is_smoker"\nordinal = false\n', rows)
    curated, manifest = load_curated(lake, "x")
    schema = Schema.from_dict(manifest["schema"])
    assert schema.slice == "smoker" and schema.slice_column == "is_smoker" and schema.ordinal is False
    assert schema.field("is_smoker").type == "boolean" and schema.field("is_smoker").role == "metadata"
    assert curated["is_smoker"].tolist() == [False, True, False, True, False, True]
    assert report.rows == 6


def test_a_slice_defined_by_a_value_gets_a_marker_column(lake, tmp_path):
    rows = "case,stage,outcome\n" + "".join(f"c{i},{s},{label}\n" for i, (s, label) in enumerate(
        [("4.0", "a"), ("3.0", "a"), ("4", "a"), ("1", "b"), ("2", "b"), ("4.0", "b")]))
    ingest(lake, tmp_path, BASE + '[slice]\nname = "advanced"\ncolumn = "stage"\nvalue = 4\n', rows)
    curated, manifest = load_curated(lake, "x")
    schema = Schema.from_dict(manifest["schema"])
    assert schema.slice == "advanced" and schema.slice_column == "in_advanced"
    assert schema.field("stage").role == "feature"  # the column itself keeps its role
    assert curated["in_advanced"].tolist() == [True, False, True, False, False, True]
    # A text value compares as text.
    rows = "case,site,outcome\n" + "".join(f"c{i},{s},{label}\n" for i, (s, label) in enumerate(
        [("north", "a"), ("south", "a"), ("north", "a"), ("east", "b"), ("north", "b"), ("south", "b")]))
    other = DataLake.from_uri(str(tmp_path / "lake2"))
    ingest(other, tmp_path, BASE.replace('"x"', '"y"') + '[slice]\ncolumn = "site"\nvalue = "north"\n', rows)
    curated, manifest = load_curated(other, "y")
    assert Schema.from_dict(manifest["schema"]).slice == "site"
    assert curated["in_site"].tolist() == [True, False, True, False, True, False]


def test_a_slice_group_is_metadata_and_reaches_the_definition(lake, tmp_path):
    from pipelines.definition import dataset_settings

    rows = "case,age,family,is_rare,outcome\n" + "".join(
        f"c{i},{30 + i},{'F' + str(i % 2) if i < 4 else ''},{'yes' if i < 4 else 'no'},{label}\n"
        for i, label in enumerate("aaabbb"))
    ingest(lake, tmp_path, BASE + '[slice]\ncolumn = "is_rare"\ngroup = "family"\n', rows)
    _, manifest = load_curated(lake, "x")
    schema = Schema.from_dict(manifest["schema"])
    assert schema.group_column == "family" and schema.field("family").role == "metadata"
    assert dataset_settings(schema.name, schema.labels, schema.slice, grouped=True)["slice_grouped"] is True


def test_the_cohort_schema_keeps_its_fingerprint_and_slice():
    schema = cohort_schema()
    assert schema.slice == "orphan" and schema.ordinal is True
    assert "slice_name" not in schema.to_dict() and "ordinal" not in schema.to_dict()
    assert Schema.from_dict(schema.to_dict()) == schema
    # Changed once, by issue 14: the cohort names its slice's group column (disease_id), held out by disease.
    assert schema.fingerprint() == "b9dbbad5f155c767"
    with pytest.raises(SchemaError, match="slice column 'age' must be a boolean field"):
        Schema("y", schema.fields, schema.labels, slice_column="age")


def test_date_and_text_columns_are_kept_but_never_model_inputs(lake, tmp_path):
    # A `type = "date"` column was a feature the models never received: the endpoint took 'not a date' and answered
    # as for any date, and the run's example request carried it.
    from inference.schema import RequestSchema

    rows = "case,seen,note,age,outcome\n" + "".join(
        f"c{i},2026-01-0{i + 1},n{i},{30 + i},{label}\n" for i, label in enumerate("aaabbb"))
    report = ingest(lake, tmp_path, BASE + "[columns.seen]\ntype = \"date\"\n[columns.note]\ntype = \"text\"\n", rows)
    schema = Schema.from_dict(lake.get_json(report.manifest_key)["schema"])
    roles = {f.name: (f.type, f.role) for f in schema.fields}
    assert roles["seen"] == ("date", "metadata") and roles["note"] == ("text", "metadata")
    assert schema.features() == ["age"] and RequestSchema(schema).accepted == ["case", "age"]
    assert list(load_curated(lake, "x")[0]["seen"].astype(str)) == [f"2026-01-0{i + 1}" for i in range(6)]


def test_header_names_are_read_without_the_spaces_around_them(lake, tmp_path):
    # ' case' and 'Sex ' stayed in the curated columns as written: a config's 'case' did not match, and a request
    # needed the key 'Sex ' (the docs said the header is read as cells are, trimmed).
    from inference.schema import RequestSchema

    rows = ROWS.replace("case,age,flag,", " case, age ,Sex ,")
    report = ingest(lake, tmp_path, BASE, rows)
    schema = Schema.from_dict(lake.get_json(report.manifest_key)["schema"])
    assert [f.name for f in schema.fields] == ["case", "age", "Sex", "outcome"] and report.rows == 6
    assert list(load_curated(lake, "x")[0].columns[:3]) == ["case", "age", "Sex"]
    assert RequestSchema(schema).accepted == ["case", "age", "Sex"]
    assert lake.get_bytes(report.sources[0].key).startswith(b" case, age ,Sex ,")  # raw/ keeps the file as written


def test_a_configs_column_names_are_read_trimmed_as_the_header_is(lake, tmp_path):
    # The header is read trimmed: a config naming its columns with the spaces the file had ('case ', as an earlier
    # message advised) must name the same columns, and a curated version's stored config reads so when retrained.
    from diagnosa.data.schema import check_dataset_config

    config = BASE.replace('"case"', '"case "') + 'exclude = [" flag"]\n[columns."age "]\ntype = "integer"\n'
    report = ingest(lake, tmp_path, config, ROWS.replace("case,age,", "case ,age,"))
    schema = Schema.from_dict(lake.get_json(report.manifest_key)["schema"])
    assert (schema.id_column, schema.exclude, schema.field("age").type) == ("case", ("flag",), "integer")
    stored = {"name": "x", "id_column": "case ", "target": " outcome", "labels": ["a", "b"], "columns": {"age ": {}}}
    read = check_dataset_config(stored, "a manifest")
    assert (read["id_column"], read["target"], list(read["columns"])) == ("case", "outcome", ["age"])
    with pytest.raises(SchemaError, match="declares 'age' twice"):
        check_dataset_config({**stored, "columns": {"age": {}, "age ": {}}}, "a manifest")
    # The checks see the names as read: 'age ' declared and 'age' excluded are one column.
    with pytest.raises(SchemaError, match="'age' is both in 'exclude' and declared"):
        check_dataset_config({**stored, "exclude": ["age"]}, "a manifest")
