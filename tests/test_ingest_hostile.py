"""A hostile user's own CSV and config (docs/data.md, "Your own data"): files in encodings the config does not name
or names with a byte-order mark, paths that are no file, file names no lake key holds, rows with nothing on them, and
two ingests of one dataset at once. Each case crashed, said something beside the point, or left the wrong latest
version before it was fixed."""
from __future__ import annotations

import codecs
import gzip
import io
import os
import threading

import pandas as pd
import pytest

from diagnosa.cli import main
from diagnosa.data.ingest import IngestError, ingest_csv, load_curated
from diagnosa.lake import DataLake

BASE = 'name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n'
ROWS = "case,age,flag,outcome\n" + "".join(
    f"c{i},{30 + i},{'yes' if i % 2 else 'no'},{label}\n" for i, label in enumerate("aaabbb"))


@pytest.fixture
def lake(tmp_path) -> DataLake:
    return DataLake.from_uri(str(tmp_path / "lake"))


def files(tmp_path, data: bytes | str = ROWS, config: str = BASE, name: str = "x.csv"):
    csv, toml = tmp_path / name, tmp_path / "x.toml"
    csv.write_bytes(data.encode() if isinstance(data, str) else data)
    toml.write_text(config)
    return csv, toml


def refusal(lake, tmp_path, data: bytes | str, config: str = BASE) -> str:
    with pytest.raises(IngestError) as err:
        ingest_csv(lake, *files(tmp_path, data, config))
    assert not lake.list("raw/") and not lake.list("curated/")  # nothing written
    return str(err.value)


def curated_rows(lake, tmp_path, data: bytes | str, config: str = BASE):
    report = ingest_csv(lake, *files(tmp_path, data, config))
    return report, load_curated(lake, "x", report.version)[0]


def test_a_byte_order_mark_the_encoding_keeps_is_not_read_into_the_first_column_name(lake, tmp_path):
    # 'utf-16-le' (and -be, utf-32-le) keep the mark as U+FEFF: the header's first name was '\ufeffcase', and the
    # config's id_column 'case' "not in the header (header: case, ...)" — the difference invisible. A file saved
    # twice by a tool that adds a UTF-8 mark has two; utf-8-sig drops one.
    _, expected = curated_rows(lake, tmp_path, ROWS)
    for data, encoding in ((codecs.BOM_UTF16_LE + ROWS.encode("utf-16-le"), "utf-16-le"),
                           (codecs.BOM_UTF16_BE + ROWS.encode("utf-16-be"), "utf-16-be"),
                           (codecs.BOM_UTF32_LE + ROWS.encode("utf-32-le"), "utf-32-le"),
                           (codecs.BOM_UTF8 * 2 + ROWS.encode(), "utf-8")):
        report, rows = curated_rows(lake, tmp_path, data, BASE + f'[csv]\nencoding = "{encoding}"\n')
        assert list(rows.columns) == list(expected.columns) and rows.equals(expected), encoding
        assert report.sources[0].quarantined == 0


@pytest.mark.parametrize("data, config, message", [
    # UTF-32's mark starts with UTF-16-LE's: it was called UTF-16, and encoding = "utf-16" then read garbage.
    (ROWS.encode("utf-32"), BASE, 'x.csv is UTF-32 text (it starts with UTF-32\'s byte-order mark): set encoding = '
                                  '"utf-32" under [csv]'),
    # A UTF-16 file with its mark, read as cp1252: it was "UTF-16 text without a byte-order mark".
    (ROWS.encode("utf-16"), BASE + '[csv]\nencoding = "cp1252"\n',
     'x.csv is UTF-16 text (it starts with UTF-16\'s byte-order mark, as a spreadsheet\'s \'Unicode text\' is saved): '
     'set encoding = "utf-16" under [csv] in the config (it reads the file as cp1252)'),
    # A plain UTF-8 file the config reads as UTF-16 decoded into one line of CJK characters: "has a header but no rows".
    (ROWS.encode(), BASE + '[csv]\nencoding = "utf-16"\n',
     "x.csv is not utf-16 text: it has no NUL byte, which every delimiter and digit in utf-16 has, and it reads as "
     "UTF-8: leave encoding out of [csv]"),
    (codecs.BOM_UTF8 + ROWS.encode() + b"c9,39,no,b\n", BASE + '[csv]\nencoding = "utf-16"\n',
     "reads as UTF-8 (it starts with UTF-8's byte-order mark)"),
    # A codec whose errors are no UnicodeDecodeError: a traceback ('Invalid extended code point').
    (ROWS.encode(), BASE + '[csv]\nencoding = "punycode"\n', "x.csv is not punycode text ("),
])
def test_a_file_in_another_encoding_than_the_configs_is_named_as_such(lake, tmp_path, data, config, message):
    assert message in refusal(lake, tmp_path, data, config)


def _xlsx() -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as book:
        book.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return out.getvalue()


@pytest.mark.parametrize("data, says", [
    # A compressed CSV or a workbook was told to 'set encoding = "cp1252"', which led to another encoding error.
    (lambda: gzip.compress(ROWS.encode()), "x.csv is not a CSV text file: it is gzip-compressed (a .gz file): "
                                           "decompress it first (gunzip)"),
    (_xlsx, "x.csv is not a CSV text file: it is a zip archive (an Excel .xlsx workbook, or a .zip of files): save "
            "the sheet as CSV UTF-8"),
    (lambda: pd.DataFrame({"case": ["c1"], "outcome": ["a"]}).to_parquet(), "it is a Parquet file"),
    (lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "it is a PDF document: export the table as CSV UTF-8"),
])
def test_a_file_format_that_holds_no_csv_text_is_named(lake, tmp_path, data, says):
    for config in (BASE, BASE + '[csv]\nencoding = "cp1252"\n'):
        assert says in refusal(lake, tmp_path, data(), config)
    # A header that starts as a signature does is still a CSV.
    report, _ = curated_rows(lake, tmp_path, ROWS.replace("case", "PAR1case").encode(),
                             BASE.replace('"case"', '"PAR1case"'))
    assert report.sources[0].accepted > 0


def test_a_csv_path_that_is_no_file_says_what_it_is(lake, tmp_path):
    # A folder, a FIFO or /dev/null was "input file not found".
    config = tmp_path / "x.toml"
    config.write_text(BASE)
    (tmp_path / "folder.csv").mkdir()
    os.mkfifo(tmp_path / "pipe.csv")
    for path, what in ((tmp_path / "folder.csv", "a directory"), (tmp_path / "pipe.csv", "a named pipe (FIFO)")):
        with pytest.raises(IngestError, match=f"{path} is {what.replace('(', '.').replace(')', '.')}, not a CSV file"):
            ingest_csv(lake, path, config)
    with pytest.raises(IngestError, match="input file not found"):
        ingest_csv(lake, tmp_path / "missing.csv", config)


def test_a_config_path_that_is_a_directory_is_named_as_the_config(tmp_path, capsys):
    # It was "diagnosa: error: Is a directory: ..." with exit status 1, not the config's error (2).
    csv, _ = files(tmp_path)
    (tmp_path / "conf").mkdir()
    code = main(["--lake", str(tmp_path / "lake"), "data", "ingest", str(csv), "--config", str(tmp_path / "conf")])
    assert code == 2
    assert f"dataset config {tmp_path / 'conf'} is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["we\\ird.csv", "a" * 230 + ".csv", "é" * 120 + ".csv"])
def test_a_file_name_no_lake_key_holds_is_ingested(lake, tmp_path, name):
    # A backslash was "invalid key 'raw/x/we\\ird-....csv'", a name near 255 bytes "File name too long" (exit 1)
    # once every check had passed.
    report = ingest_csv(lake, *files(tmp_path, name=name))
    key = report.sources[0].key
    assert lake.exists(key) and "\\" not in key and len(key.rsplit("/", 1)[1].encode()) <= 120
    assert len(load_curated(lake, "x", report.version)[0]) == 6


def test_rows_with_nothing_in_them_are_blank_lines_not_quarantined(lake, tmp_path):
    # A spreadsheet writes a formatted empty row as ',,,'; an editor leaves a line of spaces. They were quarantined
    # ('missing required field', 'wrong number of cells') and counted as rows read.
    report, rows = curated_rows(lake, tmp_path, ROWS.replace("c3,", ",,,\n   \nc3,") + " , , , \n\t\n")
    assert report.sources[0].read == 6 and report.sources[0].quarantined == 0 and len(rows) == 6
    (tmp_path / "empty").mkdir()
    empty = DataLake.from_uri(str(tmp_path / "empty" / "lake"))
    assert refusal(empty, tmp_path / "empty", "case,age,flag,outcome\n,,,\n  \n").endswith("has a header but no rows")


def test_of_two_ingests_at_once_the_one_asked_for_last_is_the_latest_though_it_finishes_last(lake, tmp_path):
    # docs/data.md: "Two ingests of one dataset at once: the one that started last stays the latest". A, asked for
    # first, finished first and became the latest; B, asked for after it, finished last and was refused the latest
    # ("another ingest made A the latest") though it was the one asked for last.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a_csv, config = files(tmp_path / "a")
    b_csv, _ = files(tmp_path / "b", ROWS + "c9,39,no,b\n")
    a_reading, b_reading, a_done = threading.Event(), threading.Event(), threading.Event()
    reports = {}

    def phase_a(what, detail=""):
        if what == "validating rows":  # past the moment A read the latest version
            a_reading.set()
        if what == "writing the curated version":
            assert b_reading.wait(10)

    def phase_b(what, detail=""):
        if what == "validating rows":
            b_reading.set()
        if what == "writing the curated version":
            assert a_done.wait(10)

    def run_a():
        reports["a"] = ingest_csv(lake, a_csv, config, phase=phase_a)
        a_done.set()

    def run_b():
        assert a_reading.wait(10)
        reports["b"] = ingest_csv(lake, b_csv, config, phase=phase_b)

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert reports["a"].overtaken_by is None and reports["b"].overtaken_by is None
    assert load_curated(lake, "x")[1]["version"] == reports["b"].version != reports["a"].version


def test_asking_again_for_the_latest_file_keeps_it_latest_over_an_ingest_asked_for_before(lake, tmp_path):
    # A is the latest. B's ingest starts; while it runs, A is ingested again (asked for after B). A re-ingest of the
    # latest wrote nothing, so B, finishing last, took the latest though A was the one asked for last.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a_csv, config = files(tmp_path / "a")
    b_csv, _ = files(tmp_path / "b", ROWS + "c9,39,no,b\n")
    first = ingest_csv(lake, a_csv, config)
    b_writing, a_again = threading.Event(), threading.Event()
    reports = {}

    def phase_b(what, detail=""):
        if what == "writing the curated version":
            b_writing.set()
            assert a_again.wait(10)

    def run_b():
        reports["b"] = ingest_csv(lake, b_csv, config, phase=phase_b)

    thread = threading.Thread(target=run_b)
    thread.start()
    assert b_writing.wait(10)
    again = ingest_csv(lake, a_csv, config)
    a_again.set()
    thread.join(30)
    assert again.reused and again.version == first.version and again.relatest is None  # it was the latest already
    assert reports["b"].overtaken_by == first.version != reports["b"].version
    assert load_curated(lake, "x")[1]["version"] == first.version
    # One ingest after another: the later one is the latest, whatever the asked_at already recorded says.
    latest = lake.get_json("curated/x/LATEST.json")
    lake.put_json("curated/x/LATEST.json", {**latest, "asked_at": "2999-01-01T00:00:00.000000+00:00"})
    (tmp_path / "c").mkdir()
    c_csv, _ = files(tmp_path / "c", ROWS + "c10,40,no,b\n")
    assert ingest_csv(lake, c_csv, config).version == load_curated(lake, "x")[1]["version"] not in (
        first.version, reports["b"].version)
