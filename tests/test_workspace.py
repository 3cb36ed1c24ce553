"""The workspace: --workspace, else DIAGNOSA_HOME, else the nearest .diagnosa here or above (as git finds .git),
else ./.diagnosa; a command that finds nothing says which workspace it read and how to point at another, and
reading creates nothing."""
from __future__ import annotations

import pytest

from diagnosa.cli import main
from diagnosa.commands.common import find_workspace


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def project(tmp_path, monkeypatch, capsys):
    """A folder where `diagnosa data generate` ran (its ./.diagnosa holds a raw batch), and a subfolder of it."""
    assert find_workspace(tmp_path) is None, f"a .diagnosa above {tmp_path} would shadow the test's workspaces"
    root = tmp_path / "project"
    (root / "notebooks" / "week1").mkdir(parents=True)
    monkeypatch.chdir(root)
    assert run(capsys, "data", "generate", "--patients", "1000", "--seed", "3")[0] == 0
    return root


def test_a_command_run_below_the_workspace_finds_it(project, monkeypatch, capsys):
    monkeypatch.chdir(project / "notebooks" / "week1")
    code, out, _ = run(capsys, "data", "ingest")  # the raw batch written from the project folder
    assert code == 0 and "clinical_records: read 1,000" in out
    assert (project / ".diagnosa" / "lake" / "curated" / "patients").is_dir()
    assert not (project / "notebooks" / "week1" / ".diagnosa").exists()
    code, out, _ = run(capsys, "executions")
    assert code == 0 and out == (f"no local executions in {project / '.diagnosa' / 'executions'} (workspace "
                                 f"{project / '.diagnosa'}; another one: --workspace DIR (or DIAGNOSA_HOME))\n")


def test_the_flag_and_the_environment_come_before_the_search(project, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(project / "notebooks")
    elsewhere = tmp_path / "elsewhere"
    code, out, _ = run(capsys, "--workspace", str(elsewhere), "registry", "list")
    assert code == 0 and out == f"no model packages in {elsewhere / 'registry'} (workspace {elsewhere} (from --workspace))\n"
    monkeypatch.setenv("DIAGNOSA_HOME", str(elsewhere))
    code, out, _ = run(capsys, "endpoint", "list")
    assert code == 0 and out == f"no local endpoints in {elsewhere / 'endpoints'} (workspace {elsewhere} (from DIAGNOSA_HOME))\n"
    assert not elsewhere.exists()


@pytest.mark.parametrize("argv, code", [
    (["registry", "list"], 0),
    (["executions"], 0),
    (["endpoint", "list"], 0),
    (["monitor", "--last", "24h"], 2),
    (["registry", "approve", "1"], 2),
    (["registry", "reject", "1"], 2),
    (["executions", "20261127T183254Z-c32c2c"], 2),
])
def test_outside_any_workspace_a_reading_command_says_where_it_looked_and_creates_nothing(tmp_path, monkeypatch,
                                                                                          capsys, argv, code):
    assert find_workspace(tmp_path) is None, f"a .diagnosa above {tmp_path} would be found"
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, *argv)
    assert status == code
    message = out if code == 0 else err
    assert (f"no workspace (.diagnosa) in {tmp_path} or above it: run from the folder where you ran `diagnosa data "
            "generate` or `make run`, or give --workspace DIR (or set DIAGNOSA_HOME)") in message
    assert message.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no stray ./.diagnosa that would shadow the real one next time


def test_where_a_workspace_is_created_by_default_stays_the_current_folder(tmp_path, monkeypatch, capsys):
    assert find_workspace(tmp_path) is None
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "data", "generate", "--patients", "1000", "--seed", "3")[0] == 0
    assert (tmp_path / ".diagnosa" / "lake" / "raw" / "clinical_records" / "cohort-n1000-s3.jsonl").is_file()
    assert find_workspace(tmp_path / "a" / "b") == tmp_path / ".diagnosa"
