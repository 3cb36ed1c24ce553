"""A dataset of one's own with two fields of HPO terms (symptoms, and a family history): the doctors' app gives each
its own picker and sends both. It drew one picker, for the first, and a second field's terms were never sent: the
endpoint answered as if the patient had none (class c with probability 1.0 for a patient whose record says a)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from diagnosa.model import DiagnosaModel

SCRIPT = str(Path(__file__).resolve().parents[1] / "app" / "web" / "diagnosa_app.py")
FEVER, COUGH, HEADACHE, ABDOMINAL_PAIN = "HP:0001945", "HP:0012735", "HP:0002315", "HP:0002027"


@pytest.fixture(scope="module")
def model(tmp_path_factory, own_dataset, train_model):
    """The symptoms say nothing of the class; the family history says a (headache) or b (abdominal pain), else c."""
    folder = tmp_path_factory.mktemp("two-terms")
    rng = np.random.default_rng(1)
    rows = ["pid,age,symptoms,family_terms,label"]
    for i in range(300):
        k = i % 3
        rows.append(f"p{i},{rng.integers(20, 80)},{(FEVER, COUGH)[i % 2]},{(HEADACHE, ABDOMINAL_PAIN, '')[k]},"
                    f"{'abc'[k]}")
    data = own_dataset(folder, "two", "\n".join(rows) + "\n",
                       'name = "two"\nid_column = "pid"\ntarget = "label"\nlabels = ["a", "b", "c"]\n'
                       '[columns.symptoms]\ntype = "hpo_terms"\n[columns.family_terms]\ntype = "hpo_terms"\n')
    return train_model(folder / "train", data, {"family": "logistic_regression"})


@pytest.fixture(scope="module")
def endpoint(model):
    from inference.server import EndpointServer

    with EndpointServer(str(model), endpoint_name="two") as served:
        served.wait_until_ready()
        yield served


def _pick(at: AppTest, query_key: str, search: str, button: str) -> None:
    at.text_input(key=query_key).input(search).run()
    at.button(key=button).click().run()


def test_each_field_of_terms_has_its_picker_and_the_diagnosis_reads_both(monkeypatch, endpoint, model):
    import pandas as pd

    monkeypatch.setenv("DIAGNOSA_APP_ENDPOINT_URL", endpoint.url)
    monkeypatch.setenv("DIAGNOSA_APP_ENDPOINT_NAME", "two")
    monkeypatch.setenv("DIAGNOSA_APP_MODEL", str(model))
    monkeypatch.setenv("DIAGNOSA_APP_ATTEMPTS", "1")
    at = AppTest.from_file(SCRIPT, default_timeout=60).run()
    assert not at.exception, at.exception
    assert {"symptom_query", "terms_query-family_terms"} <= {w.key for w in at.text_input}
    at.checkbox(key="policy_accepted").check().run()
    _pick(at, "symptom_query", "fever", "add-HP_0001945")
    _pick(at, "terms_query-family_terms", "headache", "add-family_terms-HP_0002315")
    assert [b.key for b in at.get_by_key("field-family_terms").button if b.key.startswith("remove-")] == [
        "remove-family_terms-HP_0002315"]
    assert [b.key for b in at.get_by_key("field-symptoms").button if b.key.startswith("remove-")] == [
        "remove-HP_0001945"]  # each field's terms are its own
    at.text_input(key="in-age").input("50")
    at.button(key="submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    served = DiagnosaModel.load(model)
    record = {"pid": "x", "age": 50, "symptoms": [FEVER], "family_terms": [HEADACHE]}
    expected = served.predict(pd.DataFrame([record]))[0]
    without = served.predict(pd.DataFrame([{**record, "family_terms": []}]))[0]
    assert (expected, without) == ("a", "c")  # the family history decides: sent, it says a
    headline = next(m.value for m in at.get_by_key("result").markdown if m.value.startswith("### "))
    assert headline.startswith("### a"), headline

    at.button(key="remove-family_terms-HP_0002315").click().run()  # removed from its own field only
    assert [b.key for b in at.get_by_key("field-symptoms").button if b.key.startswith("remove-")] == [
        "remove-HP_0001945"]
    assert "Diagnosis of the earlier values" in [s.value for s in at.subheader]  # the family history changed
    at.button(key="new-patient").click().run()
    assert not [b for b in at.get_by_key("field-family_terms").button if b.key.startswith("remove-")]
    assert not [b for b in at.get_by_key("field-symptoms").button if b.key.startswith("remove-")]
