"""Tools outside the Python venv that some tests run for real: a test that needs one skips where it is missing,
unless the run declares that it provides it (``DIAGNOSA_TEST_REQUIRES``), where the test fails instead.

`make test` declares what it installs itself (the CDK CLI, checkov), and `.ci/run` adds the system packages it has
(Chromium, Java): a tool that the run provides but the tests cannot find is a broken install, not a reason to
drop the tests that hold Diagnosa against the real browser, TorchServe or checkov without a word.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, NoReturn

import pytest

from diagnosa.browser import MISSING_REASON, chromium_path

ROOT = Path(__file__).resolve().parents[1]
REQUIRES = "DIAGNOSA_TEST_REQUIRES"  # comma-separated names of TOOLS
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CDK_CLI = ROOT / "node_modules" / "aws-cdk"

# name → (is it here, why a test skips without it)
TOOLS: dict[str, tuple[Callable[[], bool], str]] = {
    "chromium": (lambda: chromium_path() is not None, f"{MISSING_REASON}; `make browser` installs it as root"),
    "java": (lambda: shutil.which("java") is not None,
             "TorchServe's frontend needs a Java runtime (.ci/run installs default-jre-headless)"),
    "cdk": (lambda: (CDK_CLI / "package.json").is_file(),
            "the pinned CDK CLI is not in node_modules/ (make test and make synth install it; plain pytest may not)"),
    "checkov": (lambda: CHECKOV.is_file(), f"checkov's own venv is missing ({CHECKOV}): `make checkov` creates it; "
                                           "`make test` does"),
    "nginx": (lambda: (shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")) is not None,
              "nginx is not installed (apt-get install nginx; .ci/run installs it): the app behind its reverse proxy"),
}


def required() -> set[str]:
    """The tools this run declares it provides; an unknown name is refused (a typo would silently require none)."""
    names = {n.strip() for n in os.environ.get(REQUIRES, "").split(",") if n.strip()}
    unknown = names - set(TOOLS)
    if unknown:
        raise pytest.UsageError(f"{REQUIRES} names unknown tools {sorted(unknown)}; known: {sorted(TOOLS)}")
    return names


def need(tool: str) -> None:
    """Return when ``tool`` is here; else skip the test, or fail it when the run declares the tool."""
    present, reason = TOOLS[tool]
    if present():
        return
    if tool in required():
        _missing(tool, reason)
    pytest.skip(reason)


def _missing(tool: str, reason: str) -> NoReturn:
    pytest.fail(f"{tool} is missing although {REQUIRES} says this run provides it: {reason}", pytrace=False)
