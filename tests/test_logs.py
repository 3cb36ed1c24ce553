"""The one log format of every entry point: times in UTC with ``Z``, whatever the machine's zone, so a log line can be
matched with the records, captures and feedback it speaks of (all UTC)."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

LOG_ONE_LINE = ("import logging; from diagnosa.logs import configure_logging; configure_logging(); "
                "logging.getLogger('diagnosa.probe').warning('one line')")


@pytest.mark.parametrize("zone", ["Pacific/Chatham", "America/Sao_Paulo", "UTC"], ids=["chatham", "sao-paulo", "utc"])
def test_a_log_line_says_its_time_in_utc_whatever_the_machines_zone(zone):
    before = datetime.now(timezone.utc)
    line = subprocess.run([sys.executable, "-c", LOG_ONE_LINE], env={**os.environ, "TZ": zone}, capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()
    after = datetime.now(timezone.utc)
    stamp, rest = line.split(" ", 1)
    assert rest == "WARNING diagnosa.probe: one line"
    assert stamp.endswith("Z") and len(stamp) == len("2026-12-06T18:39:57.123Z"), stamp
    when = datetime.fromisoformat(stamp)
    assert before - timedelta(seconds=1) <= when <= after + timedelta(seconds=1), (before, when, after)
