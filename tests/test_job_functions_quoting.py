"""How the monitor and retrain functions quote a value in a message (job_request's one copy)."""
from __future__ import annotations

import pytest


def test_the_monitor_and_retrain_functions_quote_values_alike():
    from lambda_functions import load_function

    monitor = load_function("monitor")
    load_function("retrain")
    import job_request

    with pytest.raises(monitor.Refused) as refused:
        monitor.window_of({"schedule": "cron(" + "x" * 100_000 + ")"}, {})
    assert repr("cron(" + "x" * 74)[:79] + "…" in str(refused.value)  # the schedule quoted as job_request quotes
    # The behaviour both had: a string cut before its repr and after, a container said in words.
    assert job_request.shown("a" * 100) == repr("a" * 80)[:79] + "…"
    assert job_request.shown("\ud800") == "'\\ud800'" and job_request.shown([1, 2]) == "a list of 2 item(s)"
