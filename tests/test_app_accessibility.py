"""What assistive technology gets from the doctors' app, in a real browser (headless Chromium, `streamlit run`).

Streamlit copies a widget's label source into the input's aria-label, so the backslashes with which the app kept a
label from being formatted were read out ("Age backslash left paren years…"): a label is escaped only where Streamlit's
label markdown acts (diagnosa.text.label_literal). st.caption text is drawn at 60 % opacity of the text colour, which
was 3.9:1 on white (WCAG AA asks 4.5:1); the notice that a result is of earlier values was such a caption, and was
not announced either. Contrast is computed here from the browser's computed colours (WCAG's relative luminance).
"""
from __future__ import annotations

import pytest
from test_app_e2e import HOSTILE_NAME, _form_page, needs_chromium

from app.e2e import click_get_diagnosis

# ------------------------------------------------------------------------------------------------ label_literal

# Ordinary clinical labels, and text Streamlit's label markdown leaves alone (checked in Chromium): no backslash.
LEFT_AS_WRITTEN = {
    "parentheses": "Age (years)",
    "hyphen-slash": "C-reactive protein (mg/L)",
    "period-colon-space": "Temp. 1: max",
    "plus": "Na+ (mmol/L)",
    "caret": "White blood cells (10^9/L)",
    "brackets": "Glucose [mg/dL]",
    "underscore-in-word": "heart_rate_max",
    "star-between-spaces": "a * b",
    "tilde-between-spaces": "a ~ b",
    "time": "12:30",
    "heading-marker": "# of episodes",
    "list-marker": "- item",
    "ordered-list-marker": "1. first",
    "quote-marker": "> 5 days",
    "less-than": "SpO2 <90%",
    "html-shown-as-text": "a <5 b>",
    "ampersand": "A & E",
    "one-dollar": "Cost ($)",
    "percent-hash": "Hb% #2",
    "backslash-before-letter": "a\\b",
}

# What the label markdown would format, link, typeset or drop, and its escape.
ESCAPED = {
    "emphasis-underscore": ("_em_", "\\_em\\_"),
    "emphasis-star-in-word": ("2*3*4", "2\\*3\\*4"),
    "strikethrough": ("H~2~O", "H\\~2\\~O"),
    "code": ("`x`", "\\`x\\`"),
    "latex": ("$x$ and $y$", "\\$x\\$ and \\$y\\$"),
    "colour-directive": (":red[x] y", "\\:red[x] y"),
    "directive-alone": ("pressure:red", "pressure\\:red"),
    "emoji-shortcode": ("a :smile: b", "a \\:smile\\: b"),
    "emoji-number": ("a :100: b", "a :100\\: b"),
    "material-icon": ("a :material/home: b", "a \\:material\\/home\\: b"),
    "material-icon-underscore": ("a :material_home: b", "a `:material_home:` b"),
    "autolink": ("<abc:1>", "\\<abc:1>"),
    "entity": ("a &amp; b &#65;", "a \\&amp; b \\&#65;"),
    "inline-link": ("[a](b)", "\\[a]\\(b)"),
    "image": ("x ![a](b)", "x ![a]\\(b)"),
    "link-definition": ("[a]: b", "\\[a]: b"),
    "thematic-break": ("---", "\\---"),
    "backslash-escape": ("a\\*b", "a\\\\\\*b"),
    "url": ("see www.x.org", "see `www.x.org`"),
    "email": ("ask a@b.c", "ask `a@b.c`"),
    "leading-spaces-code-block": ("    x", "x"),
}


@pytest.mark.parametrize("text", LEFT_AS_WRITTEN.values(), ids=LEFT_AS_WRITTEN.keys())
def test_label_literal_leaves_what_a_label_shows_as_written(text):
    from diagnosa import text as texts

    assert texts.label_literal(text) == text


@pytest.mark.parametrize(("text", "escaped"), ESCAPED.values(), ids=ESCAPED.keys())
def test_label_literal_escapes_what_a_label_would_format(text, escaped):
    from diagnosa import text as texts

    assert texts.label_literal(text) == escaped


def test_label_literal_of_more_than_one_line_is_markdown_literal():
    from diagnosa import text as texts

    assert texts.label_literal("a (b)\n---") == texts.markdown_literal("a (b)\n---")


def test_the_charts_percentages_are_not_read_twice_and_its_axes_are_legible():
    # The text beside each bar had Vega's default name, "probability: 100.000000%; category: …; label: …", after the
    # bar's own "ENFERMEDAD AGUDA: over 99.9 %"; the axes were drawn #808495 by Streamlit's chart theme (3.7:1).
    from app.results import probability_chart, probability_rows

    rows = probability_rows({"category": "A", "probabilities": {"A": 0.75, "B": 0.25}})
    track, bars, labels = probability_chart(rows).to_dict()["layer"]
    assert labels["mark"]["type"] == "text" and labels["mark"]["aria"] is False and track["mark"]["aria"] is False
    assert bars["encoding"]["description"] == {"field": "aria", "type": "nominal"}  # the bar still says it
    assert bars["encoding"]["x"]["axis"]["labelColor"] == bars["encoding"]["x"]["axis"]["titleColor"] == "#0e1117"
    assert labels["mark"]["color"] == "#0e1117"


# ------------------------------------------------------------------------------------------------ in Chromium

STALE_TEXT = "The values have changed since this diagnosis"  # diagnosa_app.STALE

# [{text, ratio}] for each text node under the elements matching a selector: its colour (with the opacity of it and
# its ancestors) over its background, resolved through the ancestors' background colours (white at the root).
CONTRAST_JS = """(sel) => {
  const parse = c => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (fg, bg) => [0, 1, 2].map(i => fg[i] * fg[3] + bg[i] * (1 - fg[3])).concat([1]);
  const background = el => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    let bg = [255, 255, 255, 1]; for (const l of layers.reverse()) bg = over(l, bg); return bg; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const out = [];
  for (const el of document.querySelectorAll(sel)) {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT); let n;
    while ((n = walker.nextNode())) {
      if (!n.textContent.trim()) continue;
      const t = n.parentElement, style = getComputedStyle(t);
      if (style.visibility === 'hidden' || style.display === 'none' || !t.getClientRects().length) continue;
      let opacity = 1; for (let e = t; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
      const bg = background(t), c = parse(style.color), fg = over([c[0], c[1], c[2], c[3] * opacity], bg);
      const [a, b] = [lum(fg), lum(bg)];
      out.push({text: n.textContent.trim().slice(0, 80), ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)});
    } }
  return out;
}"""

# The accessible name each control of the patient form has (the aria-label that overrides its <label>).
NAMES_JS = """() => [...document.querySelectorAll('.st-key-patient input, .st-key-patient textarea')]
  .map(e => e.getAttribute('aria-label') || (e.labels && e.labels[0] ? e.labels[0].innerText : ''))"""


def _idle(page) -> None:
    from playwright.sync_api import expect

    page.wait_for_timeout(300)
    expect(page.locator("[data-testid=stApp][data-test-script-state=notRunning]")).to_have_count(1)


@needs_chromium
def test_each_field_is_named_by_its_title_as_written_in_chromium(trained_model_dir, tmp_path):
    from app.form import load_form_spec

    spec = load_form_spec(str(trained_model_dir))
    titles = [f.title for f in spec.fields if f.kind != "terms"]
    assert "Age (years)" in titles and any("(" in t and "-" in t for t in titles)  # punctuation to be read as written
    with _form_page(trained_model_dir, tmp_path) as page:
        page.locator(".st-key-in-age input").wait_for()
        _idle(page)
        names = page.evaluate(NAMES_JS)
        assert [t for t in titles if t not in names] == []
        assert not [n for n in names if "\\" in n]  # no backslash read out
        assert page.get_by_role("textbox", name="Age (years)", exact=True).count() == 1
        helped = [f.title for f in spec.fields if f.help and f.kind in ("integer", "number")]
        for title in helped[:3]:  # the help button is named after the label too
            assert page.get_by_role("button", name=f"Help for {title}", exact=True).count() >= 1


@needs_chromium
def test_an_own_datasets_columns_are_named_as_written_and_a_hostile_one_still_shows_as_text(tmp_path, train_model):
    from playwright.sync_api import expect

    from app.form import load_form_spec
    from diagnosa.data.ingest import ingest_csv, load_curated
    from diagnosa.lake import DataLake

    sodium, temperature = "Na+ (mmol/L)", "Temp. 1: max"
    rows = [f'id,age,"{sodium}","{temperature}","{HOSTILE_NAME}",label'] + [
        f"{i},{20 + i % 50},{130 + i % 15},{36 + (i % 5) / 2},{(i * 7) % 13},{'A' if i % 3 else 'B'}"
        for i in range(90)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "t.toml").write_text(
        'name = "t"\nid_column = "id"\ntarget = "label"\nlabels = ["A", "B"]\n'
        f'[columns."{sodium}"]\ntype = "number"\n[columns."{temperature}"]\ntype = "number"\nunit = "°C"\n'
        f'[columns."{HOSTILE_NAME}"]\ntype = "number"\n', encoding="utf-8")
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    ingest_csv(lake, tmp_path / "t.csv", tmp_path / "t.toml")
    model = train_model(tmp_path / "train", load_curated(lake, "t"), {"family": "logistic_regression"})
    spec = load_form_spec(model)
    ordinary = [spec.by_name(sodium).title, spec.by_name(temperature).title]
    assert "+ (" in ordinary[0] and ". 1: " in ordinary[1], ordinary  # the punctuation as named (ingest lowercases)
    hostile = spec.by_name(HOSTILE_NAME).title
    with _form_page(model, tmp_path) as page:
        label = page.locator(".st-key-patient label").filter(has_text="dose").first
        expect(label).to_have_text(hostile)  # shown as written
        assert label.locator("a, strong, em, del, .katex, img").count() == 0
        assert page.locator("a[href*='evil.example']").count() == 0
        _idle(page)
        names = page.evaluate(NAMES_JS)
        assert [t for t in ordinary if t not in names] == []
        for title in ordinary:
            assert page.get_by_label(title, exact=True).count() == 1
            expect(page.locator(".st-key-patient label").filter(has_text=title).first).to_have_text(title)


@needs_chromium
def test_captions_and_the_stale_notice_are_legible_and_the_notice_is_announced_in_chromium(trained_model_dir,
                                                                                         tmp_path):
    from playwright.sync_api import expect

    with _form_page(trained_model_dir, tmp_path) as page:
        age = page.locator(".st-key-in-age input")
        age.fill("50")
        age.press("Tab")
        _idle(page)
        click_get_diagnosis(page)
        result = page.locator(".st-key-result")
        expect(result).to_contain_text("Model version")
        _idle(page)
        age.fill("51")  # edited after the diagnosis: the result is of the earlier values
        age.press("Tab")
        expect(result).to_contain_text(STALE_TEXT)
        _idle(page)

        captions = page.evaluate(CONTRAST_JS, "[data-testid=stCaptionContainer]")
        shown = " ".join(c["text"] for c in captions)
        assert "Model version" in shown and "predictions from the" in shown  # the result's and the header's
        assert [c for c in captions if c["ratio"] < 4.5] == []

        notice = [c for c in page.evaluate(CONTRAST_JS, ".st-key-result") if STALE_TEXT in c["text"]]
        assert notice and [c for c in notice if c["ratio"] < 4.5] == []
        announced = page.get_by_text(STALE_TEXT).first.evaluate("e => !!e.closest('[role=alert], [role=status]')")
        assert announced  # a live region: a screen reader says that the result is of the earlier values


# The chart's text (each row's name and percentage, the axis's labels): where each is drawn, and the bars' width.
CHART_GEOMETRY_JS = """() => {
  const chart = document.querySelector('.st-key-result .vega-embed'), box = chart.getBoundingClientRect();
  const texts = [...chart.querySelectorAll('svg text')].filter(t => t.textContent.trim()).map(t => {
    const r = t.getBoundingClientRect();
    return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom}; });
  const bars = [...chart.querySelectorAll('svg path')].map(p => p.getBoundingClientRect().width);
  return {left: box.left, right: box.right, texts, widest: Math.max(...bars)}; }"""


@needs_chromium
@pytest.mark.parametrize("width, height", [(768, 1024), (320, 640)], ids=["tablet-portrait", "reflow-320"])
def test_the_chart_is_readable_in_a_tablets_or_a_phones_narrow_column_in_chromium(trained_model_dir, tmp_path, width,
                                                                                  height):
    # With the names as the y axis's labels, a tablet's result column (230 px) left the bars 33 px, printed the
    # axis's "0%" over its "100%", and at 320 px cut the leading bar's percentage at the chart's edge (WCAG 1.4.10).
    from app.e2e import ask_for_diagnosis

    with _form_page(trained_model_dir, tmp_path) as page:
        ask_for_diagnosis(page)
        page.set_viewport_size({"width": width, "height": height})  # the chart fits the column's new width
        page.wait_for_timeout(500)
        _idle(page)
        chart = page.evaluate(CHART_GEOMETRY_JS)
        texts = chart["texts"]
        # Within the chart, but for a glyph's own sub-pixel overhang.
        assert [t["text"] for t in texts if t["left"] < chart["left"] - 1 or t["right"] > chart["right"] + 1] == []
        overlapping = [(a["text"], b["text"]) for i, a in enumerate(texts) for b in texts[i + 1:]
                       if a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"]
                       and b["top"] < a["bottom"]]
        assert overlapping == []
        named = [t["text"] for t in texts if ": " in t["text"]]
        assert len(named) == 5 and all(t.endswith("%") for t in named)  # every category, with its percentage
        assert chart["widest"] >= 0.9 * (chart["right"] - chart["left"])  # the bars' track: the chart's width
