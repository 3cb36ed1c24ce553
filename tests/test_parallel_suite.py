"""`make test` runs the suite in pytest-xdist worker processes (Makefile, TEST_WORKERS): what the tests need of that.

Each worker sends every report to the controller as UTF-8. A lone surrogate in a report — the hostile-input tests
feed "\\ud800" into logs and failure messages — killed the worker, and the rest of its tests never ran (484 of 3,400
in the first parallel run). tests/conftest.py escapes them; this runs a small suite in two workers to hold that.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SUITE = '''
import logging

import pytest


def test_logs_a_lone_surrogate():
    logging.getLogger("hostile").error("event %s refused", "e\\ud800")


def test_fails_quoting_one():
    assert "\\udfff" == "x", "the id \\udfff"


@pytest.mark.parametrize("n", range(4))
def test_after(n):
    assert n >= 0
'''


def test_a_report_quoting_a_lone_surrogate_reaches_the_controller_of_two_workers(tmp_path):
    (tmp_path / "test_hostile_reports.py").write_text(textwrap.dedent(SUITE), encoding="utf-8")
    # The suite's own conftest as a plugin (-p conftest, from tests/ on the path): its hooks, not a copy of them.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-n", "2",
                          "--dist", "loadfile", "-q", "-rA", "-o", "addopts=", "--rootdir", str(tmp_path),
                          str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, errors="backslashreplace", timeout=300)
    out = run.stdout + run.stderr
    assert "INTERNALERROR" not in out and "surrogates not allowed" not in out, out[-3000:]
    assert "1 failed, 5 passed" in out, out[-3000:]
    assert "event e\\ud800 refused" in out and "the id \\udfff" in out  # escaped, shown
