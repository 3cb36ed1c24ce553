"""What the app says about an endpoint's answer must be true: a category its model cannot have decided from the
answer's own probabilities is not shown as a diagnosis, nor is an answer of another model's categories (a label the
form does not know, a look-alike label, 100 labels, 2 of the model's 5), and a differential score is shown bounded and
never negative. The note under the headline states the reason only when the app knows the model's decision weights."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.config import AppConfig
from app.form import load_form_spec
from app.results import decision_note, diagnose, differential_rows
from diagnosa.labels import CATEGORIES
from inference.client import Prediction

SPEC = load_form_spec(None)  # the built-in cohort's five categories
URL = "http://127.0.0.1:18601"
NO, TERMINAL = "NO ENFERMO", "ENFERMEDAD TERMINAL"


class _Client:
    """A client answering one prediction as given (a stranger's endpoint, or a faulty one)."""

    def __init__(self, result: Any):
        self.result = result

    def predict(self, records, **kwargs):
        return Prediction([self.result], "event-1")


def _clean(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(c in text for c in "\n\r\x00\x1b\u2028\u2029\u202e")


def _answer(category: str = TERMINAL, version: str = "m1", **probabilities: float) -> dict[str, Any]:
    """NO ENFERMO at 96 %, ENFERMEDAD TERMINAL at 1 %, the other three at 1 % each (``probabilities`` by label, with
    '_' for ' ', override them)."""
    p = {c: 0.01 for c in CATEGORIES} | {NO: 0.96} | {k.replace("_", " "): v for k, v in probabilities.items()}
    top = sorted(p, key=lambda c: -p[c])[:3]
    return {"category": category, "probabilities": p, "model_version": version,
            "top_k": [{"category": c, "probability": p[c]} for c in top]}


def _model(tmp_path: Path, weights: dict[str, float] | None, version: str = "m1") -> str:
    """A model folder's metadata.json as training writes it (what the app's --model reads)."""
    folder = tmp_path / "model"
    folder.mkdir()
    metadata: dict[str, Any] = {"labels": list(CATEGORIES), "model_version": version}
    if weights is not None:
        metadata["decision_weights"] = weights
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    return str(folder)


def _diagnose(result: dict[str, Any], model: str | None = None):
    return diagnose(_Client(result), {"age": 40}, AppConfig(endpoint_url=URL, attempts=1, timeout=1.0, model=model),
                    SPEC)


# ------------------------------------------------------------------------------------------------ 1. the decision


@pytest.mark.parametrize("weights", [{c: 1.0 for c in CATEGORIES}, None], ids=["weights-all-one", "no-weights-argmax"])
def test_a_category_the_models_weights_cannot_give_is_not_a_diagnosis(tmp_path, weights):
    # ENFERMEDAD TERMINAL at 1 % against NO ENFERMO at 96 %, weights all 1.0 (or none: plain argmax): the model
    # decides NO ENFERMO; the page read 'ENFERMEDAD TERMINAL (1.0 %)' and invented a reason in a grey note.
    outcome = _diagnose(_answer(), _model(tmp_path, weights))
    assert not outcome.ok and outcome.failure is not None and outcome.failure.kind == "failed"
    message = outcome.failure.message
    assert "does not follow from its probabilities" in message and f"gives '{NO}'" in message
    assert _clean(message) and len(message) < 1_000


def test_a_category_the_weights_explain_is_shown_with_the_weights(tmp_path):
    weights = {c: 1.0 for c in CATEGORIES} | {TERMINAL: 200.0}  # 200 x 1 % outweighs 1 x 96 %
    outcome = _diagnose(_answer(), _model(tmp_path, weights))
    assert outcome.ok and outcome.result is not None and outcome.decision_weights == weights
    note = decision_note(outcome.result, outcome.decision_weights)
    assert note is not None and note.startswith(f"{NO} is more probable (96.0 %)")
    assert "model's decision" in note and "decision weight 200 x 1.0 %" in note and "1 x 96.0 %" in note


def test_a_tie_after_rounding_is_no_contradiction(tmp_path):
    # The endpoint decides on unrounded probabilities and sends them rounded to 6 decimals.
    result = _answer(category="ENFERMEDAD LEVE", NO_ENFERMO=0.485001, ENFERMEDAD_LEVE=0.485)  # 1e-6 apart
    outcome = _diagnose(result, _model(tmp_path, {c: 1.0 for c in CATEGORIES}))
    assert outcome.ok and outcome.decision_weights is not None


@pytest.mark.parametrize("model, version", [(False, "m1"), (True, "m2")], ids=["no-model-folder", "other-version"])
def test_without_the_models_weights_the_note_does_not_assert_the_reason(tmp_path, model, version):
    folder = _model(tmp_path, {c: 1.0 for c in CATEGORIES}) if model else None
    outcome = _diagnose(_answer(version=version), folder)  # another version: retrained, its weights unknown
    assert outcome.ok and outcome.result is not None and outcome.decision_weights is None
    note = decision_note(outcome.result, outcome.decision_weights)
    assert note is not None and "cannot tell" in note and "does not know the decision weights" in note


def test_the_note_of_an_answer_the_weights_contradict_says_it_is_not_a_diagnosis():
    note = decision_note(_answer(), {c: 1.0 for c in CATEGORIES})
    assert note is not None and note.startswith("Not a diagnosis") and "does not follow" in note
    assert "model's decision, which weighs" not in note


# ------------------------------------------------------------------------------------------------ 2. another model


def _foreign(probabilities: dict[str, float], category: str) -> dict[str, Any]:
    return {"category": category, "probabilities": probabilities, "model_version": "x",
            "top_k": [{"category": category, "probability": probabilities[category]}]}


LOOK_ALIKE = "N\u041e ENFERMO"  # a Cyrillic capital O: reads exactly as NO ENFERMO on screen


@pytest.mark.parametrize("result, says", [
    (_foreign({"FLU": 0.5} | {c: 0.125 for c in CATEGORIES[1:]}, "FLU"), "it has 'FLU'"),
    (_foreign({f"c{i}": 0.01 for i in range(100)}, "c0"), "and 95 more"),
    (_foreign({LOOK_ALIKE: 0.96} | {c: 0.01 for c in CATEGORIES[1:]}, LOOK_ALIKE),
     f"'{LOOK_ALIKE}' (U+041E CYRILLIC CAPITAL LETTER O)"),
    (_foreign({TERMINAL: 0.99, NO: 0.01}, TERMINAL),
     "it lacks 'ENFERMEDAD LEVE', 'ENFERMEDAD AGUDA', 'ENFERMEDAD CRÓNICA' of that model's 5"),
], ids=["unknown-label", "100-labels", "cyrillic-look-alike", "2-of-5-labels"])
def test_an_answer_of_another_models_categories_is_not_a_diagnosis(result, says):
    outcome = _diagnose(result)
    assert not outcome.ok and outcome.failure is not None and outcome.failure.kind == "failed"
    message = outcome.failure.message
    assert "another model's categories" in message and says in message, message
    assert _clean(message) and len(message) < 2_000


def test_a_look_alike_of_a_missing_label_names_both_readably():
    result = _foreign({LOOK_ALIKE: 0.96} | {c: 0.01 for c in CATEGORIES[1:]}, LOOK_ALIKE)
    message = _diagnose(result).failure.message
    assert f"lacks '{NO}' of that model's 5" in message  # the one it lacks, plain ASCII: no code point named
    assert message.count("U+041E") == 1


# ------------------------------------------------------------------------------------------------ 3. the differential


def test_a_huge_differential_score_is_shown_bounded():
    rows = differential_rows({"differential": [{"name": "Fever", "disease_id": "ORPHA:1", "score": 1e308},
                                               {"name": "Cough", "disease_id": "ORPHA:2", "score": 0.5}]})
    assert rows == ["Fever (ORPHA:1) — 1e+308", "Cough (ORPHA:2) — 0.500"]  # was a 309-digit number


@pytest.mark.parametrize("score", [-0.5, -1e308], ids=["negative", "hugely-negative"])
def test_a_negative_differential_score_is_a_clear_failure(score):
    result = _answer(category=NO) | {"differential": [{"name": "Fever", "disease_id": "ORPHA:1", "score": score}],
                                     "differential_note": "HPO"}
    outcome = _diagnose(result)
    assert not outcome.ok and outcome.failure is not None and outcome.failure.kind == "failed"
    assert "below 0" in outcome.failure.message and len(outcome.failure.message) < 1_000
