"""tests/tools.py: a test needing a tool outside the venv skips without it, unless the run declares the tool."""
from __future__ import annotations

import pytest
import tools


@pytest.fixture
def absent_tool(monkeypatch):
    monkeypatch.setitem(tools.TOOLS, "chromium", (lambda: False, "no chromium here"))
    return "chromium"


def test_a_missing_tool_skips_the_test_when_the_run_does_not_provide_it(absent_tool, monkeypatch):
    monkeypatch.setenv(tools.REQUIRES, "java")
    with pytest.raises(pytest.skip.Exception, match="no chromium here"):
        tools.need(absent_tool)


def test_a_missing_tool_the_run_declares_fails_the_test(absent_tool, monkeypatch):
    monkeypatch.setenv(tools.REQUIRES, " java, chromium ")
    with pytest.raises(pytest.fail.Exception, match="chromium is missing although DIAGNOSA_TEST_REQUIRES says"):
        tools.need(absent_tool)


def test_a_present_tool_runs_the_test(monkeypatch):
    monkeypatch.setitem(tools.TOOLS, "java", (lambda: True, "unused"))
    monkeypatch.setenv(tools.REQUIRES, "java")
    assert tools.need("java") is None


def test_an_unknown_tool_name_in_the_declaration_is_refused(monkeypatch):
    monkeypatch.setenv(tools.REQUIRES, "chromium,jav")
    with pytest.raises(pytest.UsageError, match=r"unknown tools \['jav'\]"):
        tools.required()


@pytest.mark.needs("chromium")
def test_the_marker_runs_the_check_before_the_test(request):
    """Reached only where chromium is (else skipped, or failed where declared): the hook in conftest ran need()."""
    assert tools.TOOLS["chromium"][0]()
