"""The app's pure logic against hostile input: what a paste handler, a faulty endpoint or a bad environment can hand
it. Each answer is a clear message of bounded size, in bounded time, that cannot format or forge what the doctor
reads (a newline, a link, HTML), and that the page can send to the browser (a lone UTF-16 surrogate, as a JSON
"\\ud800" escape decodes to, made Streamlit raise UnicodeEncodeError: a traceback instead of the page)."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
from markdown_source import outside_code, read_as

from app.config import AppConfig, ConfigError
from app.form import ValueProblem, display_text, field_errors, load_form_spec, parse_codes, parse_number
from app.results import (
    diagnose,
    differential_rows,
    headline,
    input_warnings,
    label_problem,
    top_k_rows,
)
from app.terms import TermIndex
from diagnosa.labels import CATEGORIES
from inference.client import Prediction

SPEC = load_form_spec(None)
INJECTION = "[click](http://evil.example) <img src=x onerror=alert(1)>\n\nDiagnosis confirmed: healthy"


def _sendable(text: str) -> bool:
    """What Streamlit can put in its (UTF-8) protobuf messages."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(text: str) -> bool:
    """Sendable, with no line break or other control character to forge a line with."""
    return _sendable(text) and not any(c in text for c in "\n\r\x00\x1b\u2028\u2029\u202e")


def _answer(**extra: Any) -> dict[str, Any]:
    probabilities = {c: 0.2 for c in CATEGORIES}
    return {"category": CATEGORIES[0], "probabilities": probabilities, "model_version": "v1",
            "top_k": [{"category": c, "probability": 0.2} for c in CATEGORIES[:3]], **extra}


# ------------------------------------------------------------------------------------------------ the form


@pytest.mark.parametrize("typed", ["\ud800", "38\udfff", "38\n\nDiagnosis confirmed", "3\x1b[31m8", "\u202e83"])
def test_a_measurement_with_a_surrogate_or_control_character_is_refused_in_a_message_that_can_be_shown(typed):
    with pytest.raises(ValueProblem) as err:
        parse_number(typed, SPEC.by_name("temperature_c"))
    assert _clean(str(err.value)) and "is not a number" in str(err.value)


def test_codes_pasted_by_the_thousand_are_read_in_linear_time():
    codes = " ".join(f"A{i}" for i in range(30_000)) + " a1 A1"  # was quadratic: 7 s here, hours for a 6 MB paste
    start = time.perf_counter()
    parsed = parse_codes(codes)
    assert time.perf_counter() - start < 1.0
    assert len(parsed) == 30_000 and parsed[:2] == ["A0", "A1"]  # order kept, duplicates dropped


def test_the_endpoints_field_errors_are_bounded_sendable_and_none_dropped_silently():
    many = field_errors(SPEC, [{"field": f"x{i}", "problem": "bad"} for i in range(100_000)])
    assert sum(map(len, many.general)) < 5_000  # was 1.5 million characters of messages
    assert "99,980 more" in many.general[-1]  # said, not dropped silently
    huge = field_errors(SPEC, [{"field": "age", "problem": "p" * 1_000_000}] * 100)
    assert sum(map(len, huge.by_field["age"])) < 5_000 and "more" in huge.by_field["age"][-1]
    odd = field_errors(SPEC, [{"field": "age", "problem": "too \ud800 big\n\nDiagnosis confirmed"},
                              {"field": "\ud800\n", "problem": "x"}], message="\ud800")
    assert all(_clean(p) for p in odd.by_field["age"] + odd.general)
    assert all(_clean(p) for p in field_errors(SPEC, [], "m\ud800\n" * 100_000).general)
    assert sum(map(len, field_errors(SPEC, [], "m" * 1_000_000).general)) < 5_000


# ------------------------------------------------------------------------------------------------ the endpoint's answer


def test_inputs_the_model_ignored_are_said_in_bounded_sendable_messages():
    def size(warnings: dict[str, list[str]]) -> int:
        return sum(len(w) for ws in warnings.values() for w in ws)

    keys = input_warnings(_answer(unknown_values={f"k{i}": "v" * 100 for i in range(10_000)}), SPEC)
    assert size(keys) < 10_000 and "9,980 more" in keys[""][-1]  # was 2.2 million characters
    value = input_warnings(_answer(unknown_values={"sex": "v" * 1_000_000 + "\ud800"}), SPEC)
    assert size(value) < 2_000 and all(_clean(w) for w in value["sex"])
    codes = input_warnings(_answer(unused_codes={"prior_diagnoses": [f"C{i}" for i in range(100_000)]}), SPEC)
    assert size(codes) < 2_000 and "99,980 more" in codes["prior_diagnoses"][0]
    forged = input_warnings(_answer(unknown_values={"a\n\nb\ud800": "x\n\ny"}), SPEC)
    assert all(_clean(w) for w in forged[""])


def test_a_category_of_another_model_is_named_in_a_bounded_sendable_line():
    line = label_problem(_answer(category="x" * 1_000_000 + "\ud800\n"), SPEC)
    assert line is not None and len(line) < 2_000 and _clean(line)


def test_a_label_cannot_format_link_or_forge_lines_in_the_top_k_table():
    probabilities = {c: 0.2 for c in CATEGORIES[:4]} | {INJECTION: 0.2}
    rows = top_k_rows(_answer(probabilities=probabilities, top_k=[{"category": INJECTION, "probability": 0.2}]))
    shown = rows[0]["category"]  # st.table renders GitHub-flavoured markdown and HTML in its cells
    outside = outside_code(shown)  # a code span shows its text as written, never as a link
    assert _clean(shown) and "](" not in outside and "://" not in outside and "\\<img" in outside
    assert read_as(shown) == display_text(INJECTION)
    assert top_k_rows(_answer())[0]["category"] == CATEGORIES[0]  # a plain label is unchanged


def test_the_headline_and_the_differential_cannot_forge_lines():
    probabilities = {c: 0.2 for c in CATEGORIES[:4]} | {INJECTION: 0.2}
    assert _clean(headline(_answer(category=INJECTION, probabilities=probabilities)))
    rows = differential_rows(_answer(differential=[{"name": "Fever\n\n1. Forged\ud800", "disease_id": "ORPHA:1\n",
                                                    "score": 0.5}]))
    assert len(rows) == 1 and _clean(rows[0])
    long = differential_rows(_answer(differential=[{"name": "n" * 1_000_000, "disease_id": "ORPHA:1", "score": 0.5}]))
    assert len(long[0]) < 1_000


class _Client:
    """A client answering one prediction as given (a stranger's endpoint, or a faulty one)."""

    def __init__(self, result: Any):
        self.result = result

    def predict(self, records, **kwargs):
        return Prediction([self.result], "event-1")


CONFIG = AppConfig(endpoint_url="http://127.0.0.1:18601", attempts=1, timeout=1.0)


def _huge() -> dict[str, Any]:
    many = {f"c{i}": 1 / 100_000 for i in range(100_000)}
    return _answer(category="c0", probabilities=many, top_k=[{"category": "c0", "probability": 1e-5}])


@pytest.mark.parametrize("result, says", [
    (_huge(), "100,000 categories"),  # its chart took a minute to build, 17 MB sent to the browser
    (_answer(top_k=[{"category": CATEGORIES[0], "probability": 0.2}] * 100_000), "100,000 top-k items"),
    (_answer(differential=[{"name": "n", "disease_id": "ORPHA:1", "score": 0.5}] * 100_000), "100,000 diseases"),
    (_answer(category="\ud800", probabilities={c: 0.2 for c in CATEGORIES[:4]} | {"\ud800": 0.2}), "not valid text"),
    (_answer(model_version="v\udfff"), "not valid text"),
])
def test_an_answer_the_page_cannot_show_is_a_clear_failure_in_bounded_time(result, says):
    start = time.perf_counter()
    outcome = diagnose(_Client(result), {"age": 40}, CONFIG, SPEC)
    assert time.perf_counter() - start < 5.0
    assert not outcome.ok and outcome.failure is not None and outcome.failure.kind == "failed"
    assert says in outcome.failure.message and _clean(outcome.failure.message)
    assert len(outcome.failure.message) < 1_000


def test_the_note_and_model_version_of_an_answer_cannot_forge_lines():
    outcome = diagnose(_Client(_answer(model_version="v1\n\n# Forged" + "v" * 100_000, differential=[],
                                       differential_note="none\n\nDiagnosis confirmed: healthy")),
                       {"age": 40}, CONFIG, SPEC)
    assert outcome.ok and outcome.result is not None
    assert _clean(outcome.result["model_version"]) and len(outcome.result["model_version"]) < 1_000
    assert _clean(outcome.result["differential_note"])
    assert json.dumps(outcome.result["probabilities"]) == json.dumps({c: 0.2 for c in CATEGORIES})  # data kept


# ------------------------------------------------------------------------------------------------ search, config


def test_a_pasted_query_of_megabytes_is_searched_in_bounded_time():
    index = TermIndex({"HP:0002027": "Abdominal pain", "HP:0001945": "Fever"})
    start = time.perf_counter()
    assert index.search("x" * 6_000_000) == []
    assert [t.id for t in index.search("fever " * 1_000_000)] == ["HP:0001945"]  # its beginning is still searched
    assert time.perf_counter() - start < 0.5  # was 3.5 s, twice per keystroke
    assert [t.id for t in index.search("abd\ud800 pain\n")] == ["HP:0002027"]


@pytest.mark.parametrize("name, raw", [("ATTEMPTS", "5" * 5_000), ("ATTEMPTS", "9" * 4_000), ("TIMEOUT", "x" * 100_000),
                                       ("DIFFERENTIAL", "\ud800\n" * 1_000), ("TOP_K", "9" * 4_200)])
def test_a_bad_setting_is_named_in_a_bounded_sendable_message(name, raw):
    with pytest.raises(ConfigError) as err:
        AppConfig.settings_from_env({f"DIAGNOSA_APP_{name}": raw})
    message = str(err.value)
    assert f"DIAGNOSA_APP_{name}" in message and len(message) < 300 and _clean(message)


# ------------------------------------------------------------------------------------------------ the page


from test_app_session import _app, endpoint_fixture  # noqa: E402, F401  (the fixture "endpoint")


def test_a_refusal_holding_a_json_surrogate_escape_leaves_the_page(monkeypatch, endpoint):
    url, script = endpoint
    # json.dumps writes the lone surrogate as the escape "\ud800": valid JSON, which decodes to no valid text. The
    # refusal as the local endpoint wraps its container's 400 (inference.server: AWS's ModelError).
    refusal = json.dumps({"error": "1 problem(s)", "errors": [{"row": 0, "field": "age",
                                                               "problem": "too old \ud800\n\n**forged**"}]})
    script.answers = [(424, {"__type": "ModelError", "message": "Received client error (400)", "OriginalStatusCode": 400,
                             "OriginalMessage": refusal})]
    at = _app(monkeypatch, url)
    at.text_input(key="in-age").input("40")
    at = at.button(key="submit").click().run()
    assert not at.exception, at.exception
    assert any("too old" in e.value for e in at.error), [e.value for e in at.error]


@pytest.mark.parametrize("text", ["x`[a](http://e.x)`y", "``http://e.x``", "`", "a@b.c`", "www.e.x ` [b](c)"])
def test_a_link_like_run_holding_backticks_stays_in_its_code_span(text):
    # A one-backtick span was closed by a backtick of the text itself, and what followed rendered as a link.
    from diagnosa.text import markdown_literal

    shown = markdown_literal(text)
    assert read_as(shown) == text and "](" not in outside_code(shown) and "://" not in outside_code(shown)
