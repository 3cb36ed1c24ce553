"""The doctors' app's header caption (where predictions come from, set by the administrator in DIAGNOSA_APP_*) is
shown as text: no link, image, markup, extra line or traceback from it."""
from __future__ import annotations

import re
from pathlib import Path

from markdown_source import outside_code, read_as


def test_the_header_caption_shows_the_configured_endpoint_as_text():
    # st.caption renders markdown: an endpoint name set in the environment could link, fetch an image, add a line.
    from app.config import AppConfig
    from app.results import HEADER, header_caption

    assert header_caption(AppConfig(endpoint_name="triage", region="eu-west-1")) == \
        HEADER + "SageMaker endpoint 'triage' in eu\\-west\\-1"
    hostile = AppConfig(endpoint_name="x](http://evil.example) ![i](http://evil.example/t.png) <b>hi</b>\n# big $x$",
                        region="eu\udcff\u202e")
    caption = header_caption(hostile)
    caption.encode("utf-8")  # no lone surrogate: the page would be a traceback
    assert "\n" not in caption and "\u202e" not in caption
    # every markdown/HTML character escaped, but in code spans (shown as written: a URL there is no link)
    assert not re.search(r"(?<!\\)[\[\]()<>#$!]", outside_code(caption[len(HEADER):]))
    shown = read_as(caption[len(HEADER):])  # what the doctor reads
    assert shown == ("SageMaker endpoint 'x](http://evil.example) ![i](http://evil.example/t.png) <b>hi</b>\\n# big "
                     "$x$' in eu\\udcff\\u202e")
    long = header_caption(AppConfig(endpoint_name="e" * 10_000))
    assert len(long) < len(HEADER) + 2 * 200 and "…" in long


def test_the_app_page_shows_the_header_caption_escaped(monkeypatch):
    from streamlit.testing.v1 import AppTest

    script = str(Path(__file__).resolve().parents[1] / "app" / "web" / "diagnosa_app.py")
    for name in ("ENDPOINT_URL", "MODEL", "REGION", "LAKE", "TOP_K", "DIFFERENTIAL"):
        monkeypatch.delenv(f"DIAGNOSA_APP_{name}", raising=False)
    monkeypatch.setenv("DIAGNOSA_APP_ENDPOINT_NAME", "x ![i](http://evil.example/t.png)\n# big")
    monkeypatch.setenv("DIAGNOSA_APP_REGION", "eu-west-1")
    at = AppTest.from_file(script, default_timeout=60).run()
    caption = [c.value for c in at.caption if "predictions from the" in c.value]
    assert len(caption) == 1 and "![" not in outside_code(caption[0]) and "\n" not in caption[0]


def test_the_messages_naming_the_endpoint_quote_it_as_one_bounded_printable_line():
    # The failure messages ("The app cannot call the {description} ...") named an environment value whole: a newline
    # forged a line, a lone surrogate (a value that is not UTF-8) made the page a traceback.
    from app.config import DESCRIBED_CHARS, AppConfig

    named = AppConfig(endpoint_name="a\nForged line\ud800" + "e" * 10_000, region="eu-west-1\u202e").description
    named.encode("utf-8")
    assert named.isprintable() and len(named) < 3 * DESCRIBED_CHARS
    assert named.startswith("SageMaker endpoint 'a\\nForged line\\ud800e") and named.endswith("…' in eu-west-1\\u202e")
