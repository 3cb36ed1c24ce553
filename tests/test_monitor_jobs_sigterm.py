"""The monitoring job (monitoring/job.py) and the feedback-folding job (monitoring/retrain_job.py) stopped by SIGTERM
mid-run, as SageMaker stops them (StopProcessingJob): the AWS functions start them with ``exec python <entry>``, so
the signal reaches the job. Run as in tests/test_job_sigterm.py (``python -m <module> --base-dir ...`` in a process of
its own, paused at a write by a ``sitecustomize``, then SIGTERM), with two more pause points, both off unless asked:
a ``Path.write_text`` (the monitor's report files, the folding job's retraining.json: plain writes) and a local lake's
write of an object, its temp file written and not yet renamed into place.

Before: Python's default action ended them at once (status -15): no reason for the service (the retrain function
quotes the job's ExitMessage), a report cut between its files, and a lake temp file left mid-ingest. Now: exit 143,
"stopped by SIGTERM ...", nothing under output/ but the failure; the lake holds no visible, broken version (a version
is read only once its manifest is written, whole; LATEST.json moves after it), and folding the same feedback again
makes the version the latest.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import test_job_sigterm
from test_job_sigterm import assert_stopped, stopped_mid_run
from test_processing_failures import container
from test_retrain_job import cohort, confirmed_cohort, result_of  # noqa: F401  (cohort: the fixture)

from diagnosa.data.ingest import current_latest, load_curated
from diagnosa.lake import DataLake
from monitoring.retrain_job import main as retrain_main
from processing.entry import STOPPED_EXIT

MORE_PAUSES = '''
if os.environ.get("PAUSE_WRITE_TEXT"):  # before a plain Path.write_text of the path
    _path_write_text = Path.write_text

    def _path_text(self, *args, **kwargs):
        _pause(self)
        return _path_write_text(self, *args, **kwargs)

    Path.write_text = _path_text

if os.environ.get("PAUSE_LAKE"):  # a local lake's object: its temp file written, not yet renamed into place
    import diagnosa.lake as _lake

    _atomic_write = _lake.LocalStorage._atomic_write

    def _lake_write(self, key, write):
        def written(tmp):
            write(tmp)
            _pause(key)

        return _atomic_write(self, key, written)

    _lake.LocalStorage._atomic_write = _lake_write
'''


@pytest.fixture
def pauses(monkeypatch):
    """``pauses(name)``: test_job_sigterm's hook with the pause point ``name`` (PAUSE_WRITE_TEXT, PAUSE_LAKE) on."""
    monkeypatch.setattr(test_job_sigterm, "HOOK", test_job_sigterm.HOOK + MORE_PAUSES)

    def on(name: str) -> None:
        monkeypatch.setenv(name, "1")

    return on


def assert_stopped_143(base: Path, code: int) -> None:
    assert code == STOPPED_EXIT == 143, code
    assert_stopped(base, code)


def test_monitor_stopped_between_its_report_files_leaves_no_report(tmp_path, baseline_dir, pauses):
    pauses("PAUSE_WRITE_TEXT")
    base = container(tmp_path)
    shutil.copytree(baseline_dir, base / "input" / "baseline")
    # No capture in the lake: a "no data" report, its report.json written when the job pauses before report.html.
    code = stopped_mid_run(tmp_path, "monitoring.job", base, "output/report/report.html", "--last", "24h")
    assert_stopped_143(base, code)
    assert not (base / "output" / "report").exists()
    assert sorted(p.name for p in (base / "input" / "baseline").iterdir()) == sorted(
        p.name for p in baseline_dir.iterdir())  # its inputs stay


@pytest.fixture
def folding_lake(tmp_path, cohort):  # noqa: F811  (the fixture imported above)
    """A folder lake: the cohort ingested (the latest), three of its patients served with a doctor's feedback each."""
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    confirmed_cohort(lake, cohort, "diagnosa", 3, tmp_path / "spool")
    return lake


def manifests(lake: DataLake) -> list[str]:
    return sorted(key for key in lake.list("curated/patients/") if key.endswith("/manifest.json"))


def lake_temp_files(lake: DataLake) -> list[str]:
    return sorted(p.name for root in lake.local_roots() for p in root.rglob("*.lake-tmp"))


@pytest.mark.parametrize("pause_at", ["/manifest.json", "curated/patients/LATEST.json"],
                         ids=["before-the-manifest", "before-latest"])
def test_fold_stopped_mid_ingest_leaves_no_result_and_no_visible_version(tmp_path, folding_lake, pauses, pause_at):
    """Stopped with the new version's manifest (or LATEST.json) in its temp file: the temp file is removed (atomic
    write), the version is not the latest; before its manifest it has none (never read), after it is whole. The
    same feedback folded again gives that version, the latest."""
    pauses("PAUSE_LAKE")
    lake, base = folding_lake, container(tmp_path)
    before, versions = current_latest(lake, "patients"), manifests(lake)
    code = stopped_mid_run(tmp_path, "monitoring.retrain_job", base, pause_at, "--lake", str(tmp_path / "lake"),
                           "--endpoint-name", "diagnosa")
    assert_stopped_143(base, code)
    assert not (base / "output" / "result").exists()
    assert lake_temp_files(lake) == []
    assert current_latest(lake, "patients") == before
    left = [key for key in manifests(lake) if key not in versions]
    assert len(left) == (0 if pause_at == "/manifest.json" else 1)
    assert load_curated(lake)[1]["version"] == before  # what trains next is the version before the stop

    again = tmp_path / "again"
    assert retrain_main(["--base-dir", str(again), "--lake", str(tmp_path / "lake"), "--endpoint-name", "diagnosa"]) == 0
    version = result_of(again)["version"]
    assert version != before and current_latest(lake, "patients") == version
    assert [f"curated/patients/{version}/manifest.json"] == [key for key in manifests(lake) if key not in versions]
    if left:
        assert left == [f"curated/patients/{version}/manifest.json"]  # the stopped run's version, made the latest


def test_fold_stopped_before_its_retraining_json_leaves_no_result(tmp_path, folding_lake, pauses):
    """Stopped after the ingest, before the result: no result for the retrain function (it starts no execution and
    reports the reason); the new version stays the lake's latest, whole, as ingestion made it."""
    pauses("PAUSE_WRITE_TEXT")
    lake, base = folding_lake, container(tmp_path)
    before = current_latest(lake, "patients")
    code = stopped_mid_run(tmp_path, "monitoring.retrain_job", base, "output/result/retraining.json",
                           "--lake", str(tmp_path / "lake"), "--endpoint-name", "diagnosa")
    assert_stopped_143(base, code)
    assert not (base / "output" / "result").exists()
    assert lake_temp_files(lake) == []
    version = current_latest(lake, "patients")
    assert version != before and load_curated(lake)[1]["feedback"]["records"] == 3
