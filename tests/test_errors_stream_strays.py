"""Objects under the endpoint's errors stream (capture-errors/) whose names do not end in .jsonl: counted and a few
named by the read, the monitor's report and its summary line, as the capture read counts the keys outside its layout
(they were skipped without a word)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from diagnosa.lake import DataLake
from inference import capture

EP = "diagnosa"
START = datetime(2026, 3, 10, tzinfo=timezone.utc)
END = datetime(2026, 3, 11, tzinfo=timezone.utc)


def _refusal(when: str, error: str = "bad", status: int = 400) -> str:
    return json.dumps({"time": when, "status": status, "route": "invocations", "error": error})



def test_objects_of_the_errors_stream_that_are_not_jsonl_are_counted_and_a_few_named(tmp_path):
    # read_errors skipped them without a word, while read_capture counts the keys outside its layout.
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    folder = f"capture-errors/{EP}/2026/03/10/12/"
    lake.put_bytes(folder + "a.jsonl", (_refusal("2026-03-10T12:00:00Z") + "\n").encode())
    strays = [folder + name for name in ("a.jsonl.gz", "notes.txt", "b.json", "c", "d.JSONL", "e.tmp", "f.bak")]
    for key in strays:
        lake.put_bytes(key, (_refusal("2026-03-10T12:00:00Z") + "\n").encode())  # not read, whatever it holds
    held = capture.read_errors(lake, EP, START, END)
    counted = capture.read_errors(lake, EP, START, END, keep_events=False)
    whole = capture.read_errors(lake, EP)  # no window: every key of the stream
    for read in (held, counted, whole):
        assert read.total == 1 and read.strays == len(strays)
        assert len(read.stray_examples) == capture.STRAY_EXAMPLES < len(strays)  # bounded: the first few named
        assert set(read.stray_examples) <= set(strays)
    summary = counted.summary()
    assert summary["strays"] == len(strays) and summary["stray_examples"] == counted.stray_examples
    assert summary == held.summary()


def test_a_stray_name_is_quoted_printable_and_clipped(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    long_name = "n" * 5000
    lake.put_bytes(f"capture-errors/{EP}/2026/03/10/12/{long_name[:200]}.txt", b"x")
    (tmp_path / "lake" / f"capture-errors/{EP}/2026/03/10/12" / "bad\udcff.txt").write_bytes(b"x")
    read = capture.read_errors(lake, EP, START, END)
    assert read.strays == 2
    for example in read.stray_examples:
        example.encode("utf-8")  # no lone surrogate: the report is written as UTF-8
        assert len(example) <= capture.MAX_ERROR_TEXT
    assert any(example.endswith("bad\\udcff.txt") for example in read.stray_examples)


def test_the_monitor_reports_and_prints_the_stray_objects_of_the_errors_stream(tmp_path, baseline_dir, capsys):
    from diagnosa.cli import main
    from monitoring.run import run_monitor, write_report
    from processing.baseline import load_baseline

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    folder = f"capture-errors/{EP}/2026/11/27/10/"
    lake.put_bytes(folder + "00-00-000-x.jsonl", (_refusal("2026-11-27T10:00:00Z") + "\n").encode())
    lake.put_bytes(folder + "<b>copy</b>.jsonl.gz", b"\x1f\x8b")
    lake.put_bytes(folder + "notes.txt", b"hello")
    since, until = datetime(2026, 11, 27, 10, tzinfo=timezone.utc), datetime(2026, 11, 27, 11, tzinfo=timezone.utc)
    report = run_monitor(lake, EP, load_baseline([baseline_dir]), since, until)
    refused = report["refusals"]
    assert refused["total"] == 1 and refused["strays"] == 2
    assert sorted(refused["stray_examples"]) == sorted([folder + "<b>copy</b>.jsonl.gz", folder + "notes.txt"])
    html = write_report(report, tmp_path / "out")["html"].read_text(encoding="utf-8")
    section = html[html.index("id='refused'"):]
    assert "not .jsonl, not read: 2" in section and "&lt;b&gt;copy&lt;/b&gt;.jsonl.gz" in section
    assert "<b>copy" not in html  # the name is text, not markup

    argv = ["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir),
            "--since", "2026-11-27T10:00:00Z", "--until", "2026-11-27T11:00:00Z", "--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "objects in the refusals stream that are not .jsonl, not read: 2" in printed


def test_no_stray_no_line(tmp_path, baseline_dir):
    from monitoring.run import run_monitor, write_report
    from processing.baseline import load_baseline

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    report = run_monitor(lake, EP, load_baseline([baseline_dir]))
    assert report["refusals"]["strays"] == 0 and report["refusals"]["stray_examples"] == []
    assert "not .jsonl" not in write_report(report, tmp_path / "out")["html"].read_text(encoding="utf-8")
