"""A hospital's own export as spreadsheets and databases write it: numbers grouped in thousands, labs first recorded
late, encodings mixed up, dates and notes beside the features, long notes, and the small slips of hand-made files.
Each is read right, or refused saying what to set; never curated silently wrong."""
from __future__ import annotations

import codecs
import json

import pytest

from diagnosa.data.ingest import IngestError, ingest_csv, load_curated
from diagnosa.data.schema import Schema, SchemaError, load_dataset_config

BASE = 'name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n'
LABELS = "aaabbbab"


@pytest.fixture
def lake(tmp_path):
    from diagnosa.lake import DataLake

    return DataLake.from_uri(str(tmp_path / "lake"))


def ingest(lake, tmp_path, config_text: str, data: str | bytes):
    csv, config = tmp_path / "x.csv", tmp_path / "x.toml"
    csv.write_bytes(data.encode() if isinstance(data, str) else data)
    config.write_text(config_text)
    return ingest_csv(lake, csv, config)


def refusal(lake, tmp_path, config_text: str, data: str | bytes) -> str:
    before = lake.list("")
    with pytest.raises(IngestError) as caught:
        ingest(lake, tmp_path, config_text, data)
    assert lake.list("") == before  # nothing written
    return str(caught.value)


def table(cells: list[str], delimiter: str = ",") -> str:
    return f"case{delimiter}age{delimiter}wbc{delimiter}outcome\n" + "".join(
        f"c{i}{delimiter}{30 + i}{delimiter}{cell}{delimiter}{label}\n" for i, (cell, label) in enumerate(zip(cells, LABELS)))


SEMI = BASE + '[csv]\ndelimiter = ";"\ndecimal = ","\n'

# (config, file, what the refusal says, the setting that reads the file, the values it reads)
GROUPED = {
    # A Spanish leukocyte count: '7.915' is 7915 there, or 7.915 if the '.' were a slip for the decimal comma.
    "es_integers": (SEMI, table(["7.915", "10.680", "9.075", "12.300", "950", "8.001", "15.250", "6.400"], ";"),
                    ["'wbc' (7 of 8 sampled cells are written like '7.915': 7915 if '.' separates thousands, 7.915 if "
                     "it is a decimal point): if it separates thousands, set thousands = \".\" under [csv]"],
                    'thousands = "."\n', [7915, 10680, 9075, 12300, 950, 8001, 15250, 6400]),
    # Thousands and a decimal part: no doubt which mark is which.
    "es_both_marks": (SEMI, table(["8.830,0", "14.360,0", "11.150,5", "9.000,0", "10.100,0", "7.700,0", "12.000,0",
                                   "13.130,0"], ";"),
                      ["'wbc' (8 of 8 sampled cells are numbers with '.' between groups of three digits, e.g. '8.830,0' "
                       "= 8830): set thousands = \".\" under [csv]"],
                      'thousands = "."\n', [8830, 14360, 11150.5, 9000, 10100, 7700, 12000, 13130]),
    # French Excel: a no-break space between the groups.
    "fr_spaces": (SEMI, table(["1\u00a0234,5", "2\u00a0336,0", "950,0", "1\u00a0000,0", "3\u00a0100,0", "2\u00a0015,0",
                               "1\u00a0783,0", "4\u00a0000,0"], ";"),
                  ["'wbc' (7 of 8 sampled cells are numbers with ' ' (a space) between groups of three digits, e.g. "
                   "'1\\xa0234,5' = 1234.5): set thousands = \" \" under [csv]"],
                  'thousands = " "\n', [1234.5, 2336, 950, 1000, 3100, 2015, 1783, 4000]),
    # An English platelet count: '228,300' is 228300, or 228.3 with a decimal comma.
    "en_integers": (BASE, table([f'"{v}"' for v in ["228,300", "283,600", "251,500", "199,000", "310,250", "150,000",
                                                     "222,222", "270,100"]]),
                    ["'wbc' (8 of 8 sampled cells are written like '228,300': 228300 if ',' separates thousands, 228.3 "
                     "if it is a decimal comma): if it separates thousands, set thousands = \",\" under [csv]; if it "
                     "is a decimal mark, set decimal = \",\" under [csv] with another delimiter"],
                    '[csv]\nthousands = ","\n', [228300, 283600, 251500, 199000, 310250, 150000, 222222, 270100]),
    "en_both_marks": (BASE, table([f'"{v}"' for v in ["1,336.0", "2,000.5", "1,783.0", "3,100.0", "1,000.0", "4,500.0",
                                                       "1,200.0", "2,015.0"]]),
                      ["'wbc' (8 of 8 sampled cells are numbers with ',' between groups of three digits, e.g. '1,336.0' "
                       "= 1336): set thousands = \",\" under [csv]"],
                      '[csv]\nthousands = ","\n', [1336, 2000.5, 1783, 3100, 1000, 4500, 1200, 2015]),
    # The Spanish file read with decimal points (as the old message advised): every count 1000 times too small.
    "es_read_with_points": (BASE + '[csv]\ndelimiter = ";"\n',
                            table(["7.915", "10.680", "9.075", "12.300", "950", "8.001", "15.250", "6.400"], ";"),
                            ["'wbc': 7 of its 8 sampled cells (the others integers under a thousand) are written like "
                             "'7.915', which the config reads as 7.915 (decimal = \".\") but is 7915 if '.' separates "
                             "thousands; if it does, the file's decimal mark is the comma: set decimal = \",\" and "
                             "thousands = \".\" under [csv]; if '.' is the decimal mark, declare [columns.wbc] type = "
                             "\"number\""],
                            'decimal = ","\nthousands = "."\n', [7915, 10680, 9075, 12300, 950, 8001, 15250, 6400]),
}


@pytest.mark.parametrize("case", GROUPED)
def test_numbers_grouped_in_thousands_are_refused_saying_what_to_set_and_then_read_right(lake, tmp_path, case):
    # They were curated 1000 times too small ('7.915' read with decimal points) or as text, each value a level the
    # model folds away, and the message called the thousands separator a decimal mark.
    config, data, says, setting, values = GROUPED[case]
    message = refusal(lake, tmp_path, config, data)
    assert "numbers written in groups of three digits in 1 column(s)" in message
    for part in says:
        assert part in message
    if "ambiguous" not in case and "integers" not in case and "points" not in case:
        assert "decimal point" not in message and "decimal comma" not in message
    config += setting if "[csv]" in setting or "[csv]" in config else "[csv]\n" + setting
    report = ingest(lake, tmp_path, config, data)
    curated, manifest = load_curated(lake, "x", report.version)
    assert report.sources[0].quarantined == 0
    assert Schema.from_dict(manifest["schema"]).field("wbc").type == "number"
    assert curated["wbc"].tolist() == values


def test_declared_thousands_quarantine_a_separator_out_of_place_and_make_another_version(lake, tmp_path):
    config = SEMI + 'thousands = "."\n[columns.wbc]\ntype = "number"\n'
    data = table(["7.915", "1.23,4", "9.075", "12.300", "950", "8.001", "15.250", "6.400"], ";")
    report = ingest(lake, tmp_path, config, data)
    bad = [json.loads(line) for line in lake.get_bytes(report.quarantine_keys[0]).decode().splitlines()]
    assert [(q["raw"]["wbc"], q["reasons"]) for q in bad] == [
        ("1.23,4", ["wrong type for 'wbc': expected a number written with a decimal ',', got '1.23,4'"])]
    assert load_curated(lake, "x", report.version)[0]["wbc"].tolist()[:2] == [7915, 9075]
    # Decimals with three digits that cannot be thousands ('0.870') stay numbers, no refusal.
    other = ingest(lake, tmp_path, BASE, table(["0.870", "1.250", "0.5", "2", "0.015", "3.125", "1.5", "0.9"]))
    assert load_curated(lake, "x", other.version)[0]["wbc"].tolist()[:3] == [0.87, 1.25, 0.5]


@pytest.mark.parametrize("csv_table, message", [
    ('[csv]\ndecimal = ","\ndelimiter = ";"\nthousands = ","\n', "[csv] thousands and decimal are both ','"),
    ('[csv]\nthousands = "."\n', "[csv] thousands and decimal are both '.'"),
    ('[csv]\nthousands = "_"\n', "[csv] thousands must be '.', ',', ' '"),
])
def test_a_thousands_setting_that_cannot_be_is_refused(tmp_path, csv_table, message):
    (tmp_path / "x.toml").write_text(BASE + csv_table)
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_dataset_config(tmp_path / "x.toml")


def test_a_lab_first_recorded_late_in_the_file_is_a_number(lake, tmp_path):
    # Inference sampled the first 1,000 rows: a lab empty there became a category feature, its values levels.
    rows = "case,age,pct,outcome\n" + "".join(
        f"c{i},{30 + i % 50},{'' if i < 1_200 else f'{i % 7}.{i % 10}1'},{'ab'[i % 2]}\n" for i in range(1_500))
    report = ingest(lake, tmp_path, BASE, rows)
    curated, manifest = load_curated(lake, "x", report.version)
    assert Schema.from_dict(manifest["schema"]).field("pct").type == "number"
    assert curated["pct"].iloc[1_200:1_203].tolist() == [3.01, 4.11, 5.21]
    assert "pct" not in report.summary()


SPANISH = "case,servicio,age,outcome\n" + "".join(
    f"c{i},{service},{30 + i},{label}\n" for i, (service, label) in enumerate(zip(
        ["Pediatría", "Urgencias – adultos", "UCI ‘box 3’", "Pediatría", "Cardiología", "Urgencias – adultos"], "aaabbb")))


@pytest.mark.parametrize("data, encoding, says", [
    # A UTF-8 file declared cp1252 (the docs' advice for Windows spreadsheets) was curated 'PediatrÃ­a'.
    (SPANISH.encode(), "cp1252", "is UTF-8 text but the config reads it as cp1252, so 'Pediatría' would be curated "
                                 "as 'PediatrÃ\\xada': leave encoding out of [csv]"),
    (codecs.BOM_UTF8 + SPANISH.encode(), "latin-1", "is UTF-8 text (it starts with UTF-8's byte-order mark) but the "
                                                    "config reads it as latin-1"),
    (codecs.BOM_UTF8 + b"case,age,outcome\nc1,3,a\n", "cp1252", "its first column's name 'case' would be read as "
                                                                "'ï»¿case'"),
    # A cp1252 file declared latin-1: its dashes and quotes became control characters.
    (SPANISH.encode("cp1252"), "latin-1", "read as latin-1 holds control characters (U+0080 to U+009F; line 3: "
                                          "'\\x96'): a Windows file is cp1252, where those bytes are dashes, quotes "
                                          "and '€', which reads it as '–': set encoding = \"cp1252\""),
    # UTF-16 without a byte-order mark (SQL Server's bcp -w): its header had a NUL between letters.
    (SPANISH.encode("utf-16-le"), None, "looks like UTF-16 text without a byte-order mark"),
    (SPANISH.encode("utf-16-be"), "cp1252", 'set encoding = "utf-16-be" under [csv]'),
])
def test_an_encoding_mix_up_is_refused_naming_the_encoding_it_looks_like(lake, tmp_path, data, encoding, says):
    config = BASE + (f'[csv]\nencoding = "{encoding}"\n' if encoding else "")
    assert says in refusal(lake, tmp_path, config, data)


def test_the_right_encoding_reads_the_same_text(lake, tmp_path):
    report = ingest(lake, tmp_path, BASE + '[csv]\nencoding = "cp1252"\n', SPANISH.encode("cp1252"))
    assert load_curated(lake, "x", report.version)[0]["servicio"].tolist()[:3] == [
        "Pediatría", "Urgencias – adultos", "UCI ‘box 3’"]
    report = ingest(lake, tmp_path, BASE + '[csv]\nencoding = "utf-16-le"\n', SPANISH.encode("utf-16-le"))
    assert load_curated(lake, "x", report.version)[0]["servicio"].tolist()[0] == "Pediatría"


def test_dates_free_text_empty_columns_and_codes_are_not_one_hot_features(lake, tmp_path):
    # Undeclared, they were category features: the endpoint's example request asked for a date and a note.
    from inference.schema import RequestSchema

    n = 40
    formats = ["2024-03-%02d", "%02d/03/2024", "3/%d/2024"]
    rows = "case,fecha,nota,vacio,cp,age,sex,outcome\n" + "".join(
        f'c{i},{formats[i % 3] % (i % 28 + 1)},"Paciente con fiebre, tos\n{i}",,{8001 + i % 5:05d},{30 + i},'
        f"{'HM'[i % 2]},{'ab'[i % 2]}\n" for i in range(n))
    report = ingest(lake, tmp_path, BASE, rows)
    curated, manifest = load_curated(lake, "x", report.version)
    schema = Schema.from_dict(manifest["schema"])
    assert {f.name: (f.type, f.role) for f in schema.fields} == {
        "case": ("string", "id"), "fecha": ("string", "metadata"), "nota": ("text", "metadata"),
        "vacio": ("string", "metadata"), "cp": ("category", "feature"), "age": ("number", "feature"),
        "sex": ("category", "feature"), "outcome": ("category", "target")}
    assert RequestSchema(schema).accepted == ["case", "cp", "age", "sex"]
    assert curated["cp"].tolist()[:2] == ["08001", "08002"] and curated["fecha"].tolist()[1] == "02/03/2024"
    summary = report.summary()
    assert ("not declared, kept as metadata (in the curated data, never a model's input; declare [columns.<name>] "
            "type = \"category\" to learn from one, or \"integer\" or \"number\" for numbers): fecha (dates, e.g. "
            "'2024-03-01'), nota (free text, almost every value distinct, e.g. 'Paciente con fiebre, tos\\n0'), "
            "vacio (empty in every row)") in summary
    assert "read as categories, not numbers, for their leading zeros" in summary and "cp (e.g. '08001')" in summary
    assert manifest["inferred_columns"]["vacio"] == {"kind": "empty"}
    # Declared, a column is as declared: a date-looking column as a feature category.
    declared = ingest(lake, tmp_path, BASE + '[columns.fecha]\ntype = "category"\n[columns.cp]\ntype = "number"\n', rows)
    schema = Schema.from_dict(load_curated(lake, "x", declared.version)[1]["schema"])
    assert schema.field("fecha").role == "feature" and schema.field("cp").type == "number"
    assert "fecha" not in declared.summary()


def test_an_identifier_column_not_declared_is_metadata_not_a_feature(lake, tmp_path):
    # A record number ('H-00417') or a zero-padded one, one level per row, was a category feature: it taught the
    # models nothing, and the endpoint asked every request for it. Distinct numbers stay numbers (measurements).
    from inference.schema import RequestSchema

    n = 40
    rows = "case,historia,nhc,ward,creat,outcome\n" + "".join(
        f"c{i},H-{417 + i:05d},{i:06d},{'ABC'[i % 3]},{0.61 + i / 97:.4f},{'ab'[i % 2]}\n" for i in range(n))
    report = ingest(lake, tmp_path, BASE, rows)
    manifest = load_curated(lake, "x", report.version)[1]
    schema = Schema.from_dict(manifest["schema"])
    assert {f.name: (f.type, f.role) for f in schema.fields if f.name not in ("case", "outcome")} == {
        "historia": ("string", "metadata"), "nhc": ("string", "metadata"), "ward": ("category", "feature"),
        "creat": ("number", "feature")}
    assert RequestSchema(schema).accepted == ["case", "ward", "creat"]
    assert ("historia (an identifier? almost every value distinct, e.g. 'H-00417'), nhc (an identifier? almost "
            "every value distinct, e.g. '000000')") in report.summary()
    assert "leading zeros" not in report.summary()
    # Declared a category, it is one; codes that repeat (a tenth as many as rows) are a category feature as before.
    declared = ingest(lake, tmp_path, BASE + '[columns.historia]\ntype = "category"\n', rows)
    assert Schema.from_dict(load_curated(lake, "x", declared.version)[1]["schema"]).field("historia").role == "feature"
    repeated = "case,servicio,outcome\n" + "".join(f"c{i},S-{i % 4:03d},{'ab'[i % 2]}\n" for i in range(n))
    field = Schema.from_dict(load_curated(lake, "x", ingest(lake, tmp_path, BASE, repeated).version)[1]["schema"])
    assert (field.field("servicio").type, field.field("servicio").role) == ("category", "feature")


def test_a_cell_over_pythons_field_limit_is_read(lake, tmp_path):
    # 131,072 characters in one cell refused the whole file with Python's 'field larger than field limit'.
    note = "x" * 140_000
    rows = "case,age,note,outcome\n" + "".join(
        f"c{i},{30 + i},{note if i == 2 else 'n'},{label}\n" for i, label in enumerate("aaabbb"))
    report = ingest(lake, tmp_path, BASE, rows)
    assert len(load_curated(lake, "x", report.version)[0]["note"][2]) == 140_000
    import csv

    assert csv.field_size_limit() == 131_072  # the process's limit is left as it was


ROWS = "case,age,flag,outcome\n" + "".join(
    f"c{i},{30 + i},{'yes' if i % 2 else 'no'},{label}\n" for i, label in enumerate("aaabbb"))


def test_a_space_before_a_quoted_cell_is_read_as_the_quoted_cell(lake, tmp_path):
    rows = "case,age,note,outcome\n" + "".join(f'c{i},{30 + i}, "a, {i}",{label}\n' for i, label in enumerate("aaabbb"))
    report = ingest(lake, tmp_path, BASE, rows)
    assert load_curated(lake, "x", report.version)[0]["note"].tolist()[:2] == ["a, 0", "a, 1"]
    assert "rows read with a space between a delimiter and a quoted cell" in report.summary()
    # No row with the header's cells: the message is about the file, not the config.
    message = refusal(lake, tmp_path, BASE, "case,age,outcome\n" + "".join(
        f"c{i},3,4,{label}\n" for i, label in enumerate("aaabbb")))
    assert "none of its 6 rows has as many cells as its header (3)" in message and "That is how the file is " \
        "written, not the config" in message


def test_missing_values_are_read_without_the_spaces_around_them(lake, tmp_path):
    report = ingest(lake, tmp_path, BASE + 'missing_values = [" NA ", "?"]\n', ROWS.replace("c1,31", "c1,NA"))
    assert report.missing_cells == {"NA": 1}
    assert Schema.from_dict(load_curated(lake, "x", report.version)[1]["schema"]).missing_values == ("?", "NA")
    (tmp_path / "y.toml").write_text(BASE + 'missing_values = [" "]\n')
    with pytest.raises(SchemaError, match="'missing_values' must be a list of non-empty strings"):
        load_dataset_config(tmp_path / "y.toml")


def test_a_slice_value_no_row_holds_names_the_values_there(lake, tmp_path):
    message = refusal(lake, tmp_path, BASE + '[slice]\ncolumn = "flag"\nvalue = "YES"\n', ROWS)
    assert message.endswith("no accepted row is in the slice 'flag' (column 'flag' = 'YES'): 'yes' but for case. "
                            "Nothing was written")
    message = refusal(lake, tmp_path, BASE + '[slice]\ncolumn = "flag"\nvalue = "si"\n', ROWS)
    assert "(column 'flag' = 'si'): the column holds 'no', 'yes'. Nothing was written" in message


def test_trailing_header_columns_without_a_name_and_empty_everywhere_are_dropped(lake, tmp_path):
    rows = ROWS.replace("outcome\n", "outcome,,,\n").replace("a\n", "a,,,\n")
    report = ingest(lake, tmp_path, BASE, rows)
    assert list(load_curated(lake, "x", report.version)[0].columns) == ["case", "age", "flag", "outcome"]
    assert report.sources[0].quarantined == 0
    assert "header columns 5, 6, 7 without a name and empty in every row" in report.summary()
    # Text under one of them: which column it belongs to is unknown, so the file is refused as before.
    message = refusal(lake, tmp_path, BASE, rows.replace("c1,31,yes,a,,,", "c1,31,yes,a,,x,"))
    assert "columns 5, 6, 7 of the header have no name" in message and "line 3 has text under them" in message


def test_small_slips_get_a_precise_message(lake, tmp_path):
    # The tab hint showed '\\t'; a wrong id column said only that rows conflict; a NUL was a category level.
    message = refusal(lake, tmp_path, BASE + '[csv]\ndelimiter = ";"\n', ROWS.replace(",", "\t"))
    assert "the file looks '\\t'-separated; set delimiter = \"\\t\"" in message
    message = refusal(lake, tmp_path, BASE.replace('"case"', '"flag"'), ROWS)
    assert "the id column 'flag' has only 2 distinct values in 6 rows: id_column must name the column" in message
    report = ingest(lake, tmp_path, BASE, ROWS + "c6,36,n\x00o,b\n")
    bad = [json.loads(line) for line in lake.get_bytes(report.quarantine_keys[0]).decode().splitlines()]
    assert [(q["line"], q["reasons"]) for q in bad] == [
        (8, ["a NUL character (byte 0) in column 3 ('flag'): the file is damaged there, or was not written as text"])]


def test_three_decimals_are_decimals_where_the_file_shows_its_decimal_mark(lake, tmp_path):
    # A urine specific gravity (1.005 to 1.030) in a file whose other numbers ('37.5') show '.' is the decimal mark
    # was refused as maybe grouped in thousands.
    rows = "".join(f"c{i},{36 + i % 4}.5,1.0{10 + i:02d},{label}\n" for i, label in enumerate(LABELS))
    report = ingest(lake, tmp_path, BASE, "case,temp,sg,outcome\n" + rows)
    frame = load_curated(lake, "x", report.version)[0]
    assert frame["sg"].tolist() == pytest.approx([1.01 + i / 1000 for i in range(8)])
    # Without that evidence the same column is still refused as ambiguous (a Spanish count read with points).
    only = "".join(f"c{i},1.0{10 + i:02d},{label}\n" for i, label in enumerate(LABELS))
    assert "1010 if '.' separates thousands" in refusal(lake, tmp_path, BASE, "case,sg,outcome\n" + only)


@pytest.mark.parametrize("seed", range(3), ids=["texts-0", "texts-1", "texts-2"])
def test_the_csv_lines_are_those_a_stringio_with_newline_empty_gives(seed):
    # The reader went over io.StringIO(text, newline=""), which holds a copy of the text at 4 bytes a character.
    import io
    import random

    from diagnosa.data.ingest import text_lines

    rng = random.Random(seed)
    pieces = ["a", "b,c", '"x\r\ny"', "\r", "\n", "\r\n", "\r\r", "\n\r", "é", "\u2028", "\x0c", "\x85", ""]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        assert list(text_lines(text)) == io.StringIO(text, newline="").readlines(), repr(text)


def test_a_file_read_in_chunks_is_the_file_read_at_once(monkeypatch):
    # Rows are made columns every ROWS_PER_CHUNK rows (a 1M-row export held them all as Python strings and crashed).
    import numpy as np

    import diagnosa.data.ingest as ingest

    data = ("sep=;\r\nid;age;note\r\n" + "".join(
        f'p{i};{30 + i % 50};{chr(34) + "two" + chr(10) + "lines" + chr(34) if i % 7 == 0 else "n" + str(i)}\r\n'
        + ("\r\nbad;row\r\n" if i % 11 == 0 else "") for i in range(100))).encode("utf-8")
    whole = ingest.read_csv_rows(data, "x.csv", ingest.CsvDialect(delimiter=";"))
    monkeypatch.setattr(ingest, "ROWS_PER_CHUNK", 7)
    chunked = ingest.read_csv_rows(data, "x.csv", ingest.CsvDialect(delimiter=";"))
    assert len(whole.frame) == 100 and list(whole.frame.columns) == ["id", "age", "note"]
    assert whole.frame.equals(chunked.frame) and list(chunked.frame.index) == list(range(100))
    assert np.array_equal(whole.lines, chunked.lines) and whole.malformed == chunked.malformed and whole.malformed
    assert whole.frame.loc[7, "note"] == "two\nlines" and whole.lines[:3].tolist() == [3, 7, 8] and 6 in whole.malformed
