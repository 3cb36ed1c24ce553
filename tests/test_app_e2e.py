"""End to end in a real browser: local endpoint + `streamlit run` + headless Debian Chromium (Playwright).

Skips only when Debian's chromium is not installed (`make browser` installs it). The screenshot
in docs/app-diagnosis.png comes from the same driver: `python -m app.e2e --model DIR --out docs/app-diagnosis.png`.
"""
from __future__ import annotations

import pytest

from diagnosa.browser import MISSING_REASON, chromium_path

pytestmark = pytest.mark.skipif(chromium_path() is None, reason=MISSING_REASON)


def test_doctor_fills_the_form_in_chromium_and_sees_the_diagnosis(trained_model_dir, tmp_path):
    from app.e2e import PATIENT, run
    from diagnosa.labels import CATEGORIES

    result = run(trained_model_dir, tmp_path / "app-diagnosis.png", log=tmp_path / "streamlit.log")
    assert any(result.headline.startswith(c) for c in CATEGORIES), result.headline
    png = result.screenshot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    for value in (PATIENT["temperature_c"], PATIENT["wbc_10e9_l"], "HP:0001945", "Dyspnea", "Fever"):
        assert value not in result.storage  # nothing of the patient in localStorage or sessionStorage
    assert result.seconds < 90
