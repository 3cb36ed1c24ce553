"""diagnosa.browser: the system Chromium found and driven headless through Playwright."""
from __future__ import annotations

import pytest

from diagnosa import browser

needs_chromium = pytest.mark.needs("chromium")


def test_chromium_path_prefers_the_environment_variable(tmp_path, monkeypatch):
    fake = tmp_path / "my-chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("DIAGNOSA_CHROMIUM", str(fake))
    assert browser.chromium_path() == str(fake)


def test_chromium_path_is_none_when_the_configured_binary_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("DIAGNOSA_CHROMIUM", str(tmp_path / "absent"))
    assert browser.chromium_path() is None
    with pytest.raises(browser.BrowserError, match="apt-get install chromium"):
        with browser.launch():
            pass


def test_screenshot_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(browser.BrowserError, match="no-such.html"):
        browser.screenshot(str(tmp_path / "no-such.html"), tmp_path / "shot.png")


@needs_chromium
def test_screenshot_of_a_local_file_is_a_png_of_the_requested_width(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html><body style='margin:0'><div id='late' style='height:1500px;background:#c00'>x</div>"
                    "</body></html>", encoding="utf-8")
    out = browser.screenshot(str(page), tmp_path / "shots" / "page.png", width=640, height=480, wait_for="#late")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 640
    assert height >= 1500  # full page, not just the 480-pixel viewport


@needs_chromium
def test_launch_yields_a_browser_that_renders_a_page():
    with browser.launch() as chromium:
        page = chromium.new_page()
        page.set_content("<h1 id='t'>Diagnosa</h1>")
        assert page.inner_text("#t") == "Diagnosa"
