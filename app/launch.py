"""How the doctors' app is started: ``streamlit run app/web/diagnosa_app.py`` with the endpoint configuration
in ``DIAGNOSA_APP_*`` variables (:mod:`app.config`), headless, without usage statistics, without a file
watcher, with Streamlit's own log at ``error`` level, and with a text colour dark enough for captions to meet
WCAG AA. ``diagnosa app`` and the browser tests
(:mod:`app.e2e`) start it the same way.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Mapping

from app.config import TEXT_COLOR

STREAMLIT_OPTIONS: tuple[str, ...] = (
    "--server.headless=true",
    "--browser.gatherUsageStats=false",
    "--server.fileWatcherType=none",
    "--server.runOnSave=false",
    "--logger.level=error",
    "--client.toolbarMode=minimal",
    "--client.showErrorDetails=type",  # an unexpected error shows its type, never values in a traceback
    # Streamlit draws st.caption in the text colour at 60 % opacity: with its default text colour a caption (the model
    # version, the case reference, the header) was 3.9:1 on white, under WCAG AA's 4.5:1; with this one it is 4.9:1
    # (4.8:1 in a code span), measured in Chromium (tests/test_app_accessibility.py).
    f"--theme.textColor={TEXT_COLOR}",
)


def script_path() -> Path:
    return Path(__file__).resolve().parent / "web" / "diagnosa_app.py"


# One segment of a URL path the app may be served under (RFC 3986's unreserved characters): no '%', '?', '#', space.
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def base_path(text: str | None) -> str:
    """The path the app is served under, as Streamlit's ``server.baseUrlPath`` takes it: ``/diagnosa/`` →
    ``diagnosa``, ``tools/diagnosa`` as written, ``""`` or ``/`` (or None) the root. ValueError naming what is wrong:
    a segment empty (``a//b``), ``.`` or ``..``, or holding anything but letters, digits and ``.``, ``_``, ``~``,
    ``-`` (a proxy and a browser would read it otherwise)."""
    if text is None:
        return ""
    path = text.strip("/")
    for segment in path.split("/") if path else ():
        if segment in ("", ".", "..") or not _PATH_SEGMENT.fullmatch(segment):
            raise ValueError(f"base path {text!r}: each segment of the path must be ASCII letters, digits, '.', '_', "
                             "'~' or '-' (not empty, '.' or '..'), e.g. diagnosa or tools/diagnosa")
    return path


def app_url(host: str, port: int, path: str = "") -> str:
    """Where the app answers, ``path`` (:func:`base_path`) included: a browser's address, its health check under it."""
    return f"http://{host}:{port}/{path + '/' if path else ''}"


def streamlit_command(config_env: Mapping[str, str], *, host: str, port: int, path: str = "",
                      base_env: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` argv and environment for an app configuration (``AppConfig.to_env()``), served under
    ``path`` (:func:`base_path`; the root when empty) behind a proxy that keeps it in the URLs it forwards."""
    path = base_path(path)
    # -P: `python -m` puts the working folder first on sys.path, and a folder of the user's own named app/ (or
    # inference/, diagnosa/) there took the place of Diagnosa's: installed from a wheel, the page showed
    # "No module named 'app.config'" while the health check said ok (the local endpoint's server runs with -P too).
    argv = [sys.executable, "-P", "-m", "streamlit", "run", str(script_path()), *STREAMLIT_OPTIONS,
            f"--server.address={host}", f"--server.port={port}", *([f"--server.baseUrlPath={path}"] if path else [])]
    env = {k: v for k, v in (os.environ if base_env is None else base_env).items() if not k.startswith("DIAGNOSA_APP_")}
    env.update(config_env)
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return argv, env
