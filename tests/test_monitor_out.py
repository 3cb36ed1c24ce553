"""`diagnosa monitor`'s report folder (and the monitoring job's): whole or not at all when the disk fills mid-write,
so the retry after freeing space writes it; an earlier report is still never overwritten. Its threshold flags are
checked before anything is read or printed, and the report paths it prints are escaped. The disk fills at the write
of one report file, as on a small tmpfs in a probe: the write is cut short with ENOSPC."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from diagnosa.cli import main
from diagnosa.files import atomic_path


def _full_at(monkeypatch, name: str, where: str = "monitoring.run.write_text_atomic") -> list[Path]:
    """The atomic write of a report file called ``name`` stops half-way with ENOSPC; the targets refused."""
    refused: list[Path] = []

    def write_text_atomic(target, text):
        with atomic_path(target) as tmp:
            if Path(target).name == name:
                refused.append(Path(target))
                tmp.write_text(text[: len(text) // 2], encoding="utf-8")
                raise OSError(errno.ENOSPC, "No space left on device")
            tmp.write_text(text, encoding="utf-8")

    monkeypatch.setattr(where, write_text_atomic)
    return refused


def _monitor(tmp_path: Path, baseline_dir: Path, *extra: str) -> list[str]:
    return ["--lake", str(tmp_path / "lake"), "--workspace", str(tmp_path / "ws"), "monitor", "--baseline",
            str(baseline_dir), "--last", "24h", *extra]


def test_a_report_cut_short_by_a_full_disk_leaves_no_folder_and_the_retry_writes_it(tmp_path, baseline_dir,
                                                                                     monkeypatch, capsys):
    out = tmp_path / "reports" / "today"
    refused = _full_at(monkeypatch, "report.html")
    assert main(_monitor(tmp_path, baseline_dir, "--out", str(out))) == 1  # the machine, not the command, failed
    said = capsys.readouterr().err
    assert refused
    assert f"cannot write the report to {out}: No space left on device ({out / 'report.html'})" in said, said
    # Nothing of it: report.json alone was left, and the retry refused the folder as an earlier report.
    assert not out.exists()
    assert list((tmp_path / "reports").iterdir()) == []  # no temp folder beside it either
    monkeypatch.undo()  # space freed
    assert main(_monitor(tmp_path, baseline_dir, "--out", str(out))) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["constraint_violations.json", "report.html", "report.json"]
    capsys.readouterr()
    # An earlier report stays refused, before anything is read or printed.
    assert main(_monitor(tmp_path, baseline_dir, "--out", str(out))) == 2
    printed, said = capsys.readouterr()
    assert f"output folder {out} is not empty: refusing to overwrite an earlier report" in said
    assert printed == ""


def test_the_default_report_folder_cut_short_is_not_left_either(tmp_path, baseline_dir, monkeypatch, capsys):
    _full_at(monkeypatch, "constraint_violations.json")
    assert main(_monitor(tmp_path, baseline_dir)) == 1
    assert "No space left on device" in capsys.readouterr().err
    runs = tmp_path / "ws" / "monitoring" / "diagnosa"
    assert not runs.exists() or list(runs.iterdir()) == []


@pytest.mark.parametrize("flag, value, said", [("--min-psi", "-1", "--min-psi must be a positive number, got -1.0"),
                                               ("--p-value", "nan", "--p-value must be in (0, 1), got nan"),
                                               ("--missing-rate-delta", "2",
                                                "--missing-rate-delta must be in (0, 1], got 2.0")])
def test_a_bad_threshold_flag_is_refused_before_anything_is_read_or_printed(tmp_path, flag, value, said, capsys):
    # A baseline folder that is not there: read first, it was the error said, and the flag's only after it.
    argv = ["--lake", str(tmp_path / "lake"), "--workspace", str(tmp_path / "ws"), "monitor", "--baseline",
            str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), f"{flag}={value}"]
    assert main(argv) == 2
    printed, err = capsys.readouterr()
    assert said in err and "baseline" not in err, err
    assert printed == ""
    assert not (tmp_path / "out").exists()


def test_report_paths_holding_escape_codes_or_newlines_are_printed_escaped(tmp_path, baseline_dir, capsys):
    out = tmp_path / "rep\x1b[2Jort\nforged: line"
    assert main(_monitor(tmp_path, baseline_dir, "--out", str(out))) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\nforged: line" not in printed
    shown = str(out).replace("\x1b", "\\x1b").replace("\n", "\\n")
    assert f"report: {shown}/report.html" in printed, printed
    assert (out / "report.json").is_file()


def _job_base(tmp_path: Path, baseline_dir: Path) -> Path:
    base = tmp_path / "opt" / "ml" / "processing"
    shutil.copytree(baseline_dir, base / "input" / "baseline")
    return base


def test_the_monitoring_job_cut_short_by_a_full_disk_leaves_no_report_and_runs_again(tmp_path, baseline_dir,
                                                                                    monkeypatch):
    from monitoring import job

    base = _job_base(tmp_path, baseline_dir)
    argv = ["--base-dir", str(base), "--last", "24h"]
    _full_at(monkeypatch, "report.html")
    assert job.main(argv) == 1
    report = base / "output" / "report"
    assert not report.exists() or list(report.iterdir()) == []
    assert "No space left on device" in (base / "output" / "failure").read_text(encoding="utf-8")
    monkeypatch.undo()
    assert job.main(argv) == 0  # it was refused: "output folder ... is not empty"
    assert (report / "report.json").is_file() and (report / "report.html").is_file()
    assert job.main(argv) == 1  # a real earlier report still is
    assert "is not empty: refusing to overwrite another run's report" in (base / "output" / "failure").read_text(
        encoding="utf-8")


def test_an_empty_folder_made_for_the_report_keeps_its_mode_owner_and_group(tmp_path, baseline_dir, capsys):
    """A report folder made beforehand for a team (group-shared, setgid so new files join the group) was replaced by
    the temp folder's rename with this process's umask, owner and group: the team lost access."""
    import os
    import stat

    out = tmp_path / "shared" / "report"
    out.mkdir(parents=True)
    os.chmod(out, 0o2770)
    before = out.stat()
    if os.geteuid() == 0:  # as root (CI): another owner and group, as a folder made by someone else
        os.chown(out, before.st_uid + 4242, before.st_gid + 4242)
        before = out.stat()
    assert main(_monitor(tmp_path, baseline_dir, "--out", str(out))) == 0, capsys.readouterr().err
    after = out.stat()
    assert (out / "report.json").is_file()
    assert stat.S_IMODE(after.st_mode) == 0o2770
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)


def test_the_lake_copy_of_a_report_writes_report_json_last(tmp_path, baseline_dir, monkeypatch, capsys):
    # A kill between the copies left a lake folder holding report.json without report.html: it looked whole.
    from diagnosa.lake import DataLake

    copied: list[str] = []
    put_file = DataLake.put_file

    def recording(self, path, key):
        copied.append(key.rsplit("/", 1)[-1])
        return put_file(self, path, key)

    monkeypatch.setattr(DataLake, "put_file", recording)
    assert main(_monitor(tmp_path, baseline_dir)) == 0, capsys.readouterr().err
    assert sorted(copied) == ["constraint_violations.json", "report.html", "report.json"] and copied[-1] == "report.json"


def test_the_monitor_commands_defaults_are_the_detectors_own():
    # The parser spells them out (importing monitoring as every command's options are read costs ~0.9 s): tuned in
    # monitoring/drift.py or quality.py alone, `diagnosa monitor` and the SageMaker monitoring job judged differently.
    import re

    from diagnosa.cli import build_parser
    from monitoring.drift import DriftThresholds
    from monitoring.quality import QualityThresholds

    args = build_parser().parse_args(["monitor"])
    drift = DriftThresholds()
    assert (args.min_psi, args.p_value, args.min_rows, args.missing_rate_delta) == \
        (drift.min_psi, drift.p_value, drift.min_rows, drift.missing_rate_delta)
    monitor = next(a for a in build_parser()._subparsers._group_actions[0].choices["monitor"]._actions
                   if a.dest == "min_feedback")
    assert re.search(r"\(default (\d+)\)", monitor.help).group(1) == str(QualityThresholds().min_feedback)
