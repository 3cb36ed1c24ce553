"""The decision-support differential: the endpoint, the client and the doctors' app, on the session's real model."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from diagnosa.data.orphan import build_catalogue
from inference.client import DiagnosaClient, PredictionRejected
from inference.handler import MAX_DIFFERENTIAL, RequestError, load_service, parse_request, predict, render
from processing.phenotype import PhenotypeSimilarity

PATIENT = {"patient_id": "A1", "age": 8, "sex": "F", "symptoms": ["HP:0001250", "HP:0001249", "HP:0000252"]}
CAMPOMELIC = "OMIM:114290"  # Campomelic dysplasia: a distinctive profile


@pytest.fixture(scope="module")
def service(trained_model_dir):
    return load_service(str(trained_model_dir))


@pytest.fixture(scope="module")
def catalogue():
    return build_catalogue()


def _ask(service, n, instances=(PATIENT,)):
    body = json.dumps({"instances": list(instances), "differential": n})
    return predict(parse_request(body, "application/json", service), service)


def test_the_model_carries_the_knowledge_base_similarity(service):
    assert isinstance(service.phenotype, PhenotypeSimilarity) and service.phenotype_field == "symptoms"
    names = service.model.metadata.get("feature_names") or []
    assert any(n.startswith("phenotype:symptoms__") for n in names), names[-12:]


def test_differential_shape_bounds_sorting_and_ids(service, catalogue):
    [result] = _ask(service, 7)
    differential = result["differential"]
    assert len(differential) == 7
    ids = set(catalogue.diseases["disease_id"])
    for d in differential:
        assert set(d) == {"disease_id", "name", "source", "category", "score"}
        assert d["disease_id"] in ids and d["source"] == d["disease_id"].split(":")[0] and d["name"]
        assert 0.0 <= d["score"] <= 1.0 and round(d["score"], 3) == d["score"]
    keys = [(-d["score"], d["disease_id"]) for d in differential]
    assert keys == sorted(keys)  # best first, ties by id
    assert differential[0]["score"] > 0
    note = result["differential_note"]
    assert note.startswith("Decision support:") and "not a diagnosis" in note and catalogue.release in note
    # Without the option, no differential; the rest of the answer is unchanged.
    [plain] = predict(parse_request(json.dumps(PATIENT), "application/json", service), service)
    assert "differential" not in plain and "differential_note" not in plain
    assert plain["probabilities"] == result["probabilities"]
    [none] = _ask(service, 0)
    assert "differential" not in none


def test_a_diseases_own_profile_ranks_it_first(service, catalogue):
    terms = catalogue.phenotypes.loc[catalogue.phenotypes["disease_id"] == CAMPOMELIC, "hpo_id"].tolist()
    assert terms, f"{CAMPOMELIC} is not in the catalogue any more: pick another distinctive disease"
    empty = {"patient_id": "E", "age": 40}
    first, nothing = _ask(service, 3, [{"patient_id": "C", "symptoms": terms}, empty])
    assert first["differential"][0]["disease_id"] == CAMPOMELIC
    assert first["differential"][0]["score"] > first["differential"][1]["score"]
    assert [d["score"] for d in nothing["differential"]] == [0.0, 0.0, 0.0]  # no symptom: nothing matches


def test_largest_differential_and_csv_rendering(service):
    [result] = _ask(service, MAX_DIFFERENTIAL)
    assert len(result["differential"]) == MAX_DIFFERENTIAL
    out, content_type = render([result], "text/csv")
    header, row = out.decode().splitlines()
    assert header.endswith(",differential") and row.count(";") == MAX_DIFFERENTIAL - 1
    assert result["differential"][0]["disease_id"] in row


@pytest.mark.parametrize("value", [True, False, 1.0, 2.5, "5", "\ud800", -1, MAX_DIFFERENTIAL + 1, None, [3], {"n": 3},
                                   10**30])
def test_bad_differential_is_a_4xx_naming_it(service, value):
    body = json.dumps({"instances": [PATIENT], "differential": value})
    with pytest.raises(RequestError) as err:
        parse_request(body, "application/json", service)
    # A lone surrogate is refused before the option is read, naming where it is (issue 15).
    expected = "differential: a string holds a lone UTF-16 surrogate" if value == "\ud800" else \
        "differential must be an integer from 1 to 20"
    assert err.value.status == 400 and err.value.message.startswith(expected)
    json.dumps(err.value.body())  # a lone surrogate is shown escaped, so the body is valid JSON
    assert len(err.value.message) < 200


def test_differential_refused_where_it_does_not_apply(service):
    with pytest.raises(RequestError) as err:  # a single record has no top-level options
        parse_request(json.dumps({**PATIENT, "differential": 3}), "application/json", service)
    assert err.value.status == 400 and "differential" in [e.field for e in err.value.errors]
    # CSV: no options, no differential column.
    results = predict(parse_request("patient_id,symptoms\nB1,HP:0001250\n", "text/csv", service), service)
    assert "differential" not in results[0]
    # A model without the knowledge-base similarity (a dataset without HPO symptoms).
    bare = replace(service, phenotype=None, phenotype_field=None)
    with pytest.raises(RequestError) as err:
        parse_request(json.dumps({"instances": [PATIENT], "differential": 3}), "application/json", bare)
    assert err.value.status == 400 and err.value.message.startswith("differential is not available")
    assert predict(parse_request(json.dumps({"instances": [PATIENT]}), "application/json", bare), bare)


def test_client_asks_for_the_differential(local_endpoint):
    client = DiagnosaClient("diagnosa", endpoint_url=local_endpoint.url)
    [result] = client.predict(PATIENT, differential=4).results
    assert len(result["differential"]) == 4 and "not a diagnosis" in result["differential_note"]
    assert "differential" not in client.predict(PATIENT).results[0]
    with pytest.raises(PredictionRejected) as err:
        client.predict(PATIENT, differential=21)
    assert err.value.status == 400 and "differential" in str(err.value)


def test_app_lists_the_differential(local_endpoint):
    from app.config import AppConfig
    from app.form import load_form_spec
    from app.results import diagnose, differential_rows, make_client

    config = AppConfig(endpoint_url=local_endpoint.url, attempts=1, differential=3)
    outcome = diagnose(make_client(config), {"age": 8, "symptoms": PATIENT["symptoms"]}, config, load_form_spec(None))
    assert outcome.ok and len(outcome.result["differential"]) == 3
    rows = differential_rows(outcome.result)
    first = outcome.result["differential"][0]
    assert rows[0] == f"{first['name']} ({first['disease_id']}) — {first['score']:.3f}"
    # No symptoms: the differential is not asked for; 0 turns it off.
    assert "differential" not in diagnose(make_client(config), {"age": 8}, config, load_form_spec(None)).result
    off = replace(config, differential=0)
    assert "differential" not in diagnose(make_client(off), {"age": 8, "symptoms": ["HP:0001250"]}, off,
                                          load_form_spec(None)).result
    assert differential_rows({"differential": [{"name": "x", "disease_id": "OMIM:1", "score": 0.0}]}) == []


def test_app_page_shows_the_differential_as_plain_text(monkeypatch, local_endpoint, trained_model_dir):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    script = str(Path(__file__).resolve().parents[1] / "app" / "web" / "diagnosa_app.py")
    for key, value in {"ENDPOINT_URL": local_endpoint.url, "MODEL": str(trained_model_dir), "ATTEMPTS": "1",
                       "DIFFERENTIAL": "3"}.items():
        monkeypatch.setenv(f"DIAGNOSA_APP_{key}", value)
    at = AppTest.from_file(script, default_timeout=60).run()
    at.checkbox(key="policy_accepted").check().run()
    at.text_input(key="symptom_query").input("seizure").run()
    at.button(key="add-HP_0001250").click().run()
    at.text_input(key="in-age").input("8")
    at.button(key="submit").click().run()
    assert not at.exception
    section = at.get_by_key("differential")
    texts = [m.value for m in section.markdown]
    assert texts[0] == "**Decision support — not a diagnosis**"
    items = texts[1].splitlines()
    assert len(items) == 3 and all(line[0].isdigit() and "\\(" in line and "— " in line for line in items)
    assert "](" not in texts[1] and "http" not in texts[1]  # plain text, no links
    assert "not a diagnosis" in section.caption[0].value and "Orphanet/OMIM via HPO" in section.caption[0].value
