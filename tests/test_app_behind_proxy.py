"""The doctors' app behind the reverse proxy an administrator copies (app/proxy/nginx.conf): real nginx, real
`streamlit run`, a local endpoint and headless Debian Chromium (Playwright).

The conf is rendered as its header says (its values to adapt replaced: free loopback ports, a self-signed
certificate made here, the app's port, logs in the test's folder) and nginx runs it in the foreground. The browser
reaches the proxy under the conf's own server name (Chromium maps it to 127.0.0.1), not as localhost: Streamlit
accepts any localhost origin on its websocket, so a proxy that rewrote the Host header would pass as localhost and
fail for a hospital's name.
"""
from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:  # pragma: no cover - typing only
    from playwright.sync_api import BrowserContext, Response

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "app" / "proxy" / "nginx.conf"
NAME = "diagnosa.hospital.example"  # the conf's server_name
POLICY = "I have read the data-use policy and accept it"
HEADERS = {  # what the proxy adds to every answer
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=31536000",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

pytestmark = [pytest.mark.needs("nginx"), pytest.mark.needs("chromium")]


@dataclass
class Proxy:
    https: int
    http: int
    app_url: str  # the app itself, not through the proxy
    log: Path  # nginx's access log

    @property
    def url(self) -> str:
        return f"https://{NAME}:{self.https}/"


def render(conf: str, *, https: int, http: int, app: str, cert: Path, key: Path, logs: Path) -> str:
    """The conf with its values to adapt replaced, as its header lists them; each must be there to be replaced.
    IPv4 loopback only (the test's ports are free there; IPv6 may not exist in a container)."""
    replacements = [
        ("listen [::]:443 ssl http2;\n", ""),
        ("listen [::]:80;\n", ""),
        ("listen 443 ", f"listen 127.0.0.1:{https} "),
        ("https://$host:443$request_uri", f"https://$host:{https}$request_uri"),
        ("listen 80;", f"listen 127.0.0.1:{http};"),
        ("/etc/ssl/diagnosa/fullchain.pem", str(cert)),
        ("/etc/ssl/diagnosa/privkey.pem", str(key)),
        ("127.0.0.1:8501", app),
        ("/var/log/nginx/diagnosa", str(logs / "diagnosa")),
        # nginx's temporary files where a non-root run may write them (Debian's are /var/lib/nginx, root's)
        ("http {\n", "http {\n" + "".join(f"    {kind}_temp_path {logs / kind};\n"
                                          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))),
    ]
    for old, new in replacements:
        assert old in conf, f"app/proxy/nginx.conf no longer has {old!r}, which its header says to adapt"
        conf = conf.replace(old, new)
    return conf


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={NAME}",
                    "-addext", f"subjectAltName=DNS:{NAME},DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _wait_listening(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nginx did not listen on {port} within {timeout:g} s")


@contextmanager
def _nginx(conf: Path, prefix: Path, ports: tuple[int, int]) -> Iterator[None]:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert binary
    checked = subprocess.run([binary, "-t", "-p", str(prefix), "-c", str(conf), "-e", "stderr"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    with open(prefix / "nginx.stderr", "wb") as errors:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr",
                                    "-g", f"daemon off; pid {prefix / 'nginx.pid'};"],
                                   stdout=subprocess.DEVNULL, stderr=errors)
    try:
        for port in ports:
            _wait_listening(port, process)
        yield
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful stop
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def proxy(trained_model_dir, tmp_path_factory) -> Iterator[Proxy]:
    """Local endpoint → `streamlit run` → nginx with the rendered conf, on free loopback ports."""
    from app.config import AppConfig
    from app.e2e import running_app
    from diagnosa.net import free_port
    from inference.server import EndpointServer

    folder = tmp_path_factory.mktemp("proxy")
    cert, key = _certificate(folder)
    with EndpointServer(str(trained_model_dir)) as endpoint:
        endpoint.wait_until_ready()
        config = AppConfig(endpoint_url=endpoint.url, model=str(trained_model_dir), timeout=10, attempts=1)
        with running_app(config, log=folder / "streamlit.log") as app_url:
            https, http = free_port(), free_port()
            conf = folder / "nginx.conf"
            conf.write_text(render(CONF.read_text(encoding="utf-8"), https=https, http=http,
                                   app=app_url.removeprefix("http://"), cert=cert, key=key, logs=folder),
                            encoding="utf-8")
            with _nginx(conf, folder, (https, http)):
                yield Proxy(https, http, app_url, folder / "diagnosa-access.log")


@contextmanager
def _browser() -> Iterator["BrowserContext"]:
    """Headless Debian Chromium as diagnosa.browser starts it, with the conf's server name resolving to 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    from diagnosa.browser import CHROMIUM_ARGS, chromium_path

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {NAME} 127.0.0.1"])
        try:
            yield browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1700})
        finally:
            browser.close()


# Every Content-Security-Policy violation the page reports (its own scripts, styles, fonts, the websocket).
RECORD_CSP = """window.__csp = [];
document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"""


def test_a_doctor_gets_a_diagnosis_through_the_proxy(proxy):
    from app.e2e import ask_for_diagnosis
    from diagnosa.labels import CATEGORIES

    started = time.perf_counter()
    with _browser() as context:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.add_init_script(RECORD_CSP)
        refused: list[str] = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        assets: list[Response] = []  # the app's own scripts, as the proxy served them
        page.on("response", lambda r: assets.append(r) if "/static/js/" in r.url else None)
        answer = page.goto(proxy.url, wait_until="load")
        assert answer is not None and answer.status == 200
        headers = answer.headers
        for name, value in HEADERS.items():
            assert headers.get(name) == value, (name, headers)
        policy = headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in policy, policy

        page.get_by_label(POLICY).check(force=True)
        headline = ask_for_diagnosis(page)  # the chart drew too (vega, under the CSP)
        assert any(headline.startswith(c) for c in CATEGORIES), headline
        assert sockets and all(s == f"wss://{NAME}:{proxy.https}/_stcore/stream" for s in sockets), sockets
        # What the policy refuses, and only that: Streamlit's one inline script (a flag for prerendering services).
        # The page icon is an inline SVG: a ':material/…:' icon was fetched from Google's font server, outside the
        # hospital, on every page load.
        inline = page.evaluate("[...document.scripts].filter(s => !s.src).map(s => s.textContent.trim())")
        assert inline == ["window.prerenderReady = false"], inline
        violations = page.evaluate("window.__csp")
        assert [v for v in violations if v != "script-src-elem inline"] == [], violations
        icon = page.evaluate("document.querySelector(\"link[rel='shortcut icon']\").href")
        assert icon.startswith("data:image/svg+xml"), icon
        assert len(refused) == len(violations), refused
        # the app's scripts carry the headers too (add_header ... always, at the server level)
        assert assets and all(a.all_headers().get("x-content-type-options") == "nosniff" for a in assets)
    assert time.perf_counter() - started < 60
    logged = proxy.log.read_text(encoding="utf-8")
    assert "GET /_stcore/stream HTTP/1.1\" 101" in logged, logged


@pytest.mark.parametrize("path", ["/", "/_stcore/health?x=1"], ids=["root", "health-with-query"])
def test_plain_http_only_redirects_to_https(proxy, path):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            return None  # the 301 itself, not where it leads

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(f"http://127.0.0.1:{proxy.http}{path}", headers={"Host": NAME})
    with pytest.raises(urllib.error.HTTPError) as raised:
        opener.open(request, timeout=5)
    assert raised.value.code == 301
    assert raised.value.headers["Location"] == f"https://{NAME}:{proxy.https}{path}"
    assert "x=1" not in proxy.log.read_text(encoding="utf-8")  # the access log has no query strings


class _FramingSite(http.server.BaseHTTPRequestHandler):
    """Another origin (a port of its own) whose page frames ``target``."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<!doctype html><title>other site</title><iframe id="f" src="{self.target}" width="900" '
                'height="600"></iframe>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize("through_proxy", [True, False], ids=["proxied-refused", "bare-app-framed"])
def test_another_site_cannot_frame_the_app(proxy, http_server, through_proxy):
    # The bare app (Streamlit alone, no headers) is framed and its form shows: the check below can see a framed app.
    target = proxy.url if through_proxy else proxy.app_url + "/"
    site = http_server(_FramingSite, target=target)[0] + "/"
    with _browser() as context:
        page = context.new_page()
        served: list[int] = []
        page.on("response", lambda r: served.append(r.status) if r.url == target else None)
        page.goto(site, wait_until="load")
        frame = page.frame_locator("#f")
        if through_proxy:
            page.wait_for_timeout(3000)  # the app would have drawn its policy checkbox by now
            assert served == [200]  # the app answered: the browser refused to show it
            assert frame.get_by_label(POLICY).count() == 0
            assert all(f.url != target for f in page.frames[1:]), [f.url for f in page.frames]
        else:
            frame.get_by_label(POLICY).wait_for(state="attached", timeout=30_000)
