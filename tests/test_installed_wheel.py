"""Diagnosa installed from its wheel, not from the repository: what the code reads at run time is in the package.

A probe (session 68) built the wheel, installed it and ran the README's main job from an empty folder: every
`run --local`, `pipeline definition` and retraining stopped at "No such file or directory:
.../site-packages/requirements/steps-lock.txt". The step lock (the pins the staged step code and the model artifact
ship as requirements.txt) sat beside the packages in the repository only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Not the source: the repository's environments, outputs and history.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", ".diagnosa", "cdk.out", "build", "dist",
                                    "*.egg-info", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the working tree."""
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, work / "src", ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(work / "dist"), str(work / "src")], check=True, timeout=600)
    [built] = (work / "dist").glob("diagnosa-*.whl")
    with zipfile.ZipFile(built) as archive:
        assert any(name.endswith(".data/data/share/diagnosa/steps-lock.txt") for name in archive.namelist())
    return built


@pytest.fixture(scope="module", params=["prefix", "target"])
def installed(wheel, tmp_path_factory, request) -> Path:
    """The wheel installed under a prefix of its own, or into a folder (`pip install --target`): its packages' folder."""
    folder = tmp_path_factory.mktemp(request.param)
    # --ignore-installed: without it pip uninstalls the distribution of that name it finds in this environment (the
    # test run's own editable install) before installing under the prefix.
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed",
                    f"--{request.param}", str(folder), str(wheel)], check=True, timeout=600)
    this = subprocess.run([sys.executable, "-c", "import diagnosa; print(diagnosa.__file__)"],
                          cwd=tmp_path_factory.mktemp("elsewhere"),
                          capture_output=True, text=True, timeout=60)
    assert this.stdout.strip() == str(ROOT / "diagnosa" / "__init__.py"), this.stderr  # this environment's untouched
    site = folder if request.param == "target" else Path(
        sysconfig.get_path("purelib", vars={"base": str(folder), "platbase": str(folder)}))
    assert (site / "diagnosa" / "__init__.py").is_file()
    return site


def _run(site: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "AWS_DEFAULT_REGION": "eu-west-1", "SAGEMAKER_VALIDATE_ROLE": "false"}
    env.pop("DIAGNOSA_HOME", None)
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_installed_package_stages_the_step_code_with_its_lock(installed, tmp_path):
    code = ("import diagnosa, pipelines.staging as staging\n"
            "print(diagnosa.__file__)\n"
            "print(staging.bundle_files()['requirements.txt'].decode())\n")
    found = _run(installed, tmp_path, "-c", code)
    assert found.returncode == 0, found.stderr
    where, lock = found.stdout.split("\n", 1)
    assert where.startswith(str(installed))  # the installed code, not the repository's
    assert lock.rstrip("\n") == (ROOT / "requirements" / "steps-lock.txt").read_text(encoding="utf-8").rstrip("\n")


def test_the_installed_command_writes_the_pipeline_definition_from_an_empty_folder(installed, tmp_path):
    found = _run(installed, tmp_path, "-m", "diagnosa", "--workspace", str(tmp_path / "ws"), "pipeline", "definition",
                 "--bucket", "diagnosa-test", "--out", str(tmp_path / "definition.json"))
    assert found.returncode == 0, found.stderr
    assert '"Steps"' in (tmp_path / "definition.json").read_text(encoding="utf-8")


def test_the_installed_model_artifact_carries_the_lock(installed, tmp_path):
    code = ("from diagnosa.serving_code import write_serving_code\n"
            f"print(write_serving_code({str(tmp_path / 'code')!r}))\n")
    found = _run(installed, tmp_path, "-c", code)
    assert found.returncode == 0, found.stderr
    assert (tmp_path / "code" / "requirements.txt").read_bytes() == (ROOT / "requirements" / "steps-lock.txt").read_bytes()
