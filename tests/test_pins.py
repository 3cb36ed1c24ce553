"""The same versions everywhere: the locks (requirements/*-lock.txt, `make lock`) hold exactly the declared
pins (setup.py, requirements/steps.txt) and everything they need, the step lock is the dev lock's choice for
the step packages, and this environment is the dev lock installed. checkov's venv has a lock of its own."""
from __future__ import annotations

import dataclasses
import runpy
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SETUP_INPUT = "diagnosa (setup.py)"  # how pip-compile names the input of each lock in its "via" notes
STEPS_INPUT = "-r requirements/steps.txt"


def declared_by_setup_py(monkeypatch) -> list[Requirement]:
    """What setup.py hands setuptools: install_requires and the dev extra (setup.py run as pip runs it)."""
    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: seen.update(kwargs))
    monkeypatch.chdir(ROOT)
    runpy.run_path("setup.py", run_name="__main__")
    return [Requirement(r) for r in [*seen["install_requires"], *seen["extras_require"]["dev"]]]


def declared_in(name: str) -> list[Requirement]:
    lines = (ROOT / "requirements" / name).read_text(encoding="utf-8").splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def lock_problems(declared: list[Requirement], lock: dict, root: str) -> list[str]:
    """Why ``lock`` is not the resolution of ``declared``: a pin it lacks or holds at another version, a
    package it names as declared that is not, or an entry nothing in it needs (stale)."""
    problems = []
    wanted = {canonicalize_name(r.name): r for r in declared}
    for name, requirement in wanted.items():
        if not str(requirement.specifier).startswith("=="):
            problems.append(f"{requirement} is not an exact pin")
        elif name not in lock:
            problems.append(f"{requirement} is declared but not locked")
        elif Version(lock[name].version) not in requirement.specifier:  # == 2.13.0 admits the lock's 2.13.0+cpu
            problems.append(f"{requirement} is declared but the lock has {lock[name].version}")
        elif root not in lock[name].via:
            problems.append(f"{requirement} is declared but locked only as a dependency of {sorted(lock[name].via)}")
    for name, entry in lock.items():
        if root in entry.via and name not in wanted:
            problems.append(f"{entry.name} is locked as declared but is no longer declared")
        parents = {canonicalize_name(v) for v in entry.via if not v.startswith(("-", "diagnosa "))}
        if root not in entry.via and not parents & set(lock):
            problems.append(f"{entry.name} is locked but nothing in the lock needs it (via {sorted(entry.via)})")
    return problems


def test_the_dev_lock_is_the_resolution_of_setup_py(monkeypatch, dev_lock):
    assert lock_problems(declared_by_setup_py(monkeypatch), dev_lock, SETUP_INPUT) == [], "run `make lock`"


def test_the_step_lock_is_the_resolution_of_requirements_steps_txt(step_lock):
    assert lock_problems(declared_in("steps.txt"), step_lock, STEPS_INPUT) == [], "run `make lock`"


def test_the_checkov_lock_is_the_resolution_of_requirements_checkov_txt(checkov_lock):
    assert lock_problems(declared_in("checkov.txt"), checkov_lock, "-r requirements/checkov.txt") == [], "run `make lock`"


def test_an_edit_on_one_side_only_is_caught(monkeypatch, dev_lock, step_lock):
    declared = declared_in("steps.txt")
    bumped = [Requirement("numpy==2.4.7") if r.name == "numpy" else r for r in declared]
    assert lock_problems(bumped, step_lock, STEPS_INPUT) == ["numpy==2.4.7 is declared but the lock has 2.4.6"]
    assert lock_problems([*declared, Requirement("rich==14.3.4")], step_lock, STEPS_INPUT) == [
        "rich==14.3.4 is declared but not locked"]
    assert lock_problems([r for r in declared if r.name != "joblib"], step_lock, STEPS_INPUT) == [
        "joblib is locked as declared but is no longer declared"]
    assert lock_problems([*declared, Requirement("pandas>=3")], step_lock, STEPS_INPUT) == ["pandas>=3 is not an exact pin"]
    assert lock_problems([*declared, Requirement("six==1.17.0")], step_lock, STEPS_INPUT) == [
        "six==1.17.0 is declared but locked only as a dependency of ['-c requirements/dev-lock.txt', 'python-dateutil']"]
    # (entries are tests/conftest.py's Locked; a test module cannot import a conftest by name: tests/infra has one too)
    orphan = {**step_lock, "left-over": dataclasses.replace(step_lock["six"], name="left-over", via=frozenset({"gone"}))}
    assert lock_problems(declared, orphan, STEPS_INPUT) == [
        "left-over is locked but nothing in the lock needs it (via ['gone'])"]
    # setup.py's torch==2.13.0 is the CPU build the lock names (2.13.0+cpu); another version is not.
    assert dev_lock["torch"].version == "2.13.0+cpu"
    other_torch = [Requirement("torch==2.14.0") if r.name == "torch" else r for r in declared_by_setup_py(monkeypatch)]
    assert lock_problems(other_torch, dev_lock, SETUP_INPUT) == ["torch==2.14.0 is declared but the lock has 2.13.0+cpu"]


def test_every_locked_package_has_one_version_and_its_hashes(dev_lock, step_lock, checkov_lock):
    for lock in (dev_lock, step_lock, checkov_lock):
        assert all(entry.hashes for entry in lock.values())
    # The containers run what runs locally: each step package at the dev lock's version, from the same files.
    differs = {name: (entry.version, dev_lock[name].version if name in dev_lock else None)
               for name, entry in step_lock.items()
               if name not in dev_lock or (dev_lock[name].version, dev_lock[name].hashes) != (entry.version, entry.hashes)}
    assert not differs, f"the step lock disagrees with the dev lock (step, dev): {differs}"
    assert {canonicalize_name(r.name) for r in declared_in("steps.txt")} < set(step_lock) < set(dev_lock)


@pytest.mark.parametrize("lock_name", ["dev-lock.txt", "steps-lock.txt", "checkov-lock.txt"])
def test_locks_name_no_machine_paths(lock_name):
    # The lock lists packages only: where they come from is pip's configuration (the CPU torch wheel too).
    text = (ROOT / "requirements" / lock_name).read_text(encoding="utf-8")
    assert not [line for line in text.splitlines() if line.startswith("-")]
    assert "file://" not in text and "/opt/" not in text


def test_this_environment_is_the_dev_lock_installed(dev_lock):
    mismatched = {}
    for entry in dev_lock.values():
        try:
            installed = version(entry.name)
        except PackageNotFoundError:
            installed = None
        if installed != entry.version:
            mismatched[entry.name] = (entry.version, installed)
    assert not mismatched, f"installed versions differ from requirements/dev-lock.txt (locked, installed): {mismatched}"
