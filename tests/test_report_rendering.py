"""The evaluation report and the monitoring page show a dataset's labels and values as written.

A dataset's labels are anyone's text: a label is allowed '*', '<', '|', '$' and '@' (only quotes, backslashes,
brackets and control characters are refused, docs/data.md). report.md is read rendered, on GitHub or in Studio:
it is rendered here by cmark-gfm, GitHub's own renderer, with its table, autolink, strikethrough and tag-filter
extensions. The plots are drawn by matplotlib, which reads text between two '$' as TeX math.
"""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import cmarkgfm
import numpy as np
import pytest
from cmarkgfm.cmark import Options

from processing.calibration import honest_section
from processing.metrics import evaluate, write_report

HOSTILE_LABELS = [
    "**Grave** _sí_",                      # emphasis
    "<img src=x onerror=alert(1)>",        # raw HTML
    "Leve | www.example.org|x",            # a cell's end, an autolink holding a pipe
    "Grade $^^$",                          # TeX math matplotlib cannot parse
    "$10k-$50k ~~tachado~~",               # TeX math it can, strikethrough
    "contacto@example.org &amp; #1",       # an e-mail autolink, an entity
]


class _Cells(HTMLParser):
    """The text of each table's cells, row by row, and every tag met outside code spans."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.tags: list[str] = []
        self.images: list[str | None] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs).get("src"))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _rendered(markdown: str) -> tuple[str, _Cells]:
    html = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)
    cells = _Cells()
    cells.feed(html)
    return html, cells


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    labels = HOSTILE_LABELS
    rng = np.random.default_rng(3)
    y = np.arange(60) % len(labels)
    proba = rng.dirichlet(np.ones(len(labels)), size=y.size)
    proba[np.arange(y.size), y] += 0.4 * (np.arange(y.size) % 2)  # some rows right, so recalls differ
    proba /= proba.sum(axis=1, keepdims=True)
    evaluation = evaluate([labels[i] for i in y], proba, labels)
    evaluation["diagnosa"]["honest"] = honest_section(y, proba, proba, proba.argmax(axis=1), labels)
    paths = write_report(evaluation, tmp_path_factory.mktemp("report"))  # the math parser stopped it here
    for name in ("confusion_matrix", "per_class_recall", "reliability"):
        assert Path(paths[name]).stat().st_size > 1000
    return Path(paths["report"])


def test_the_reports_tables_show_each_label_as_written_in_its_own_cell(report):
    _, cells = _rendered(report.read_text(encoding="utf-8"))
    per_class, recall_with_intervals = cells.tables[0], cells.tables[1]
    for table, width in ((per_class, 7), (recall_with_intervals, 6)):
        body = table[1:]
        assert [row[0] for row in body] == HOSTILE_LABELS
        assert {len(row) for row in body} == {width}  # no label's '|' split its row


def test_the_report_formats_links_and_typesets_nothing_of_a_label(report):
    html, cells = _rendered(report.read_text(encoding="utf-8"))
    made = set(cells.tags) & {"a", "strong", "em", "del", "script"}
    assert made == set(), html
    assert sorted(cells.images) == ["confusion_matrix.png", "per_class_recall.png", "reliability.png"]
    assert "\\$" in report.read_text(encoding="utf-8")  # GitHub's math reads '$…$' outside code; an escaped '$' is text


def test_the_reports_lines_quote_the_worst_class_and_the_order_as_written(report):
    html, _ = _rendered(report.read_text(encoding="utf-8"))
    text = _text(html)
    worst = [line for line in text.splitlines() if line.startswith("Worst class recall")]
    assert len(worst) == 1 and any(label in worst[0] for label in HOSTILE_LABELS)
    assert " < ".join(HOSTILE_LABELS) in text


def _text(html: str) -> str:
    class _Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.parts: list[str] = []

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    reader = _Text()
    reader.feed(html)
    return "".join(reader.parts)


@pytest.mark.parametrize("title, values", [
    ("income $^$", ["low", "high"]),  # a feature's name
    ("band", ["$10k-$50k", "$^^$"]),  # its category values
], ids=["name", "values"])
def test_the_monitoring_pages_charts_draw_dollars_as_text(title, values):
    from monitoring.report import _bars, _recall_plot

    assert _bars(title, values, [0.5, 0.5], [0.2, 0.8]).startswith("data:image/png;base64,")
    per_class = {value: {"recall": 0.5, "status": "ok", "interval_95": [0.2, 0.8], "n": 4, "threshold": 0.6}
                 for value in values}
    assert _recall_plot(per_class).startswith("data:image/png;base64,")


def test_every_function_that_makes_a_figure_draws_plain_text():
    """A plot added later gets the same rule: each function of the project's code that makes a matplotlib Figure is
    decorated with processing.plots.plain_text."""
    import ast

    root = Path(__file__).resolve().parents[1]
    makers, bare = [], []
    for package in ("diagnosa", "processing", "training", "inference", "monitoring", "pipelines", "app"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.FunctionDef):
                    continue
                makes = any(isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Figure"
                            for call in ast.walk(node))
                if makes:
                    makers.append(node.name)
                    if not any(isinstance(d, ast.Name) and d.id == "plain_text" for d in node.decorator_list):
                        bare.append(f"{path.relative_to(root)}:{node.name}")
    assert len(makers) >= 5 and bare == []


@pytest.mark.parametrize("texts, limit, shown", [
    (["Leve", "Grave"], 8, ["Leve", "Grave"]),
    (["Leve", "Enfermedad muy grave"], 12, ["Leve", "Enfermedad…"]),  # cut, the space before '…' dropped
    # cut to the same text: numbered in their order, so the axis still tells them apart
    (["Enfermedad muy grave", "Leve", "Enfermedad muy leve"], 15,
     ["1. Enfermedad muy…", "2. Leve", "3. Enfermedad muy…"]),
], ids=["short", "cut", "cut-alike"])
def test_an_axis_names_long_labels_cut_and_tells_them_apart(texts, limit, shown):
    from processing.plots import tick_labels

    assert tick_labels(texts, limit) == shown
