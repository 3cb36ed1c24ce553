"""Headless Chromium for checking what Diagnosa shows people (HTML reports, the doctors' app).

Uses the Python ``playwright`` package driving the *system* Chromium (Debian's ``chromium``
package): Playwright's own browser download is never used, because this network reaches only
package registries. ``chromium_path()`` finds the binary (``DIAGNOSA_CHROMIUM``, then
``/usr/bin/chromium``, then ``chromium`` on the PATH); ``launch()`` yields a Playwright
``Browser``; ``screenshot()`` saves a PNG of a URL or a local file.

The launch flags keep Chromium from reaching out (component updates, sync, QUIC, background
networking) and run it as root in a container (``--no-sandbox``). Each launch gets a fresh
profile in a temporary folder: Playwright creates one per non-persistent launch and removes it on
close (it refuses an explicit ``--user-data-dir`` for ``launch``), so no state leaks between runs.

Tests that need a browser skip with :data:`MISSING_REASON` when ``chromium_path()`` is None.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # pragma: no cover - typing only
    from playwright.sync_api import Browser

DEBIAN_CHROMIUM = "/usr/bin/chromium"
MISSING_REASON = "Debian chromium not installed (apt-get install chromium)"
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DEFAULT_TIMEOUT_MS = 30_000


class BrowserError(RuntimeError):
    """Chromium could not be found, started, or could not load the target."""


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when none is installed.

    ``DIAGNOSA_CHROMIUM`` wins when set (and must point at an executable file); then Debian's
    ``/usr/bin/chromium``; then ``chromium`` on the PATH.
    """
    configured = os.environ.get("DIAGNOSA_CHROMIUM")
    if configured:
        return configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None
    if os.path.isfile(DEBIAN_CHROMIUM) and os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    return shutil.which("chromium")


@contextmanager
def launch(*, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Iterator["Browser"]:
    """Start headless system Chromium and yield a Playwright ``Browser``; closed on exit."""
    executable = chromium_path()
    if executable is None:
        raise BrowserError(MISSING_REASON)
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise BrowserError("the 'playwright' package is not installed (pip install -e '.[dev]')") from exc
    # Never let Playwright look for (or try to download) a browser build of its own.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 args=list(CHROMIUM_ARGS), timeout=timeout_ms)
        except PlaywrightError as exc:
            raise BrowserError(f"could not start {executable}: {exc}") from exc
        try:
            yield browser
        finally:
            browser.close()


def _as_url(target: str) -> str:
    """A URL stays as it is; a local path becomes a file:// URL (it must exist)."""
    if "://" in target or target.startswith(("about:", "data:")):
        return target
    path = Path(target).expanduser()
    if not path.is_file():
        raise BrowserError(f"no such file to open: {path}")
    return path.resolve().as_uri()


def screenshot(target: str, out: Path, *, width: int = 1280, height: int = 900, wait_for: str | None = None,
               full_page: bool = True, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> Path:
    """Open ``target`` (a URL or a local file path) in headless Chromium and save a PNG to ``out``.

    ``wait_for`` is a CSS selector that must be visible before the shot (e.g. an element the page
    renders last); ``full_page`` captures the whole scrollable page rather than the viewport.
    Returns ``out``. Raises :class:`BrowserError` naming the target when it cannot be loaded.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"viewport must be positive, got {width}x{height}")
    url = _as_url(str(target))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import Error as PlaywrightError

    with launch(timeout_ms=timeout_ms) as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        try:
            response = page.goto(url, wait_until="load", timeout=timeout_ms)
            if response is not None and response.status >= 400:
                raise BrowserError(f"{url} answered HTTP {response.status}")
            if wait_for:
                page.wait_for_selector(wait_for, state="visible", timeout=timeout_ms)
            page.screenshot(path=str(out), full_page=full_page)
        except PlaywrightError as exc:
            raise BrowserError(f"could not capture {url}: {exc}") from exc
        finally:
            page.close()
    return out
