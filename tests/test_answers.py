"""The endpoint's CSV answer read back (inference/answers.py): what the monitor, retraining and the feedback check make
of a request answered in CSV, as the JSON answer's predictions; and what is not such an answer, refused naming why."""
from __future__ import annotations

import pytest

from inference.answers import read_csv_answer
from inference.handler import render

LABELS = ("NO ENFERMO", 'ENFERMEDAD "LEVE", AGUDA', "ENFERMEDAD CRÓNICA")


def prediction(patient_id, category, probabilities, differential=None):
    p = {"patient_id": patient_id, "category": category, "probabilities": dict(zip(LABELS, probabilities)),
         "model_version": "diagnosa-v3"}
    return p if differential is None else {**p, "differential": differential}


@pytest.mark.parametrize("differential", [False, True], ids=["plain", "with-differential"])
def test_a_csv_answer_reads_back_as_the_json_answers_predictions(differential):
    ranked = [{"disease_id": "ORPHA:558", "score": 0.5}, {"disease_id": "OMIM:154700", "score": 0.25}]
    given = [prediction("p-1", LABELS[1], (0.125, 0.75, 0.125), ranked if differential else None),
             prediction(None, LABELS[2], (0.0, 0.0, 1.0), [] if differential else None)]
    body, media = render(given, "text/csv")
    assert media == "text/csv"
    assert read_csv_answer(body) == given
    assert read_csv_answer(render([], "text/csv")[0]) == []


@pytest.mark.parametrize("body, problem", [
    (b"", "empty"),
    (b"age,sex\n40,M\n", "header is not the endpoint's"),
    (b"patient_id,category,p[A],model_version\np1,A,0.5\n", "line 2 has 3 cells, its header 4"),
    (b"patient_id,category,p[A],model_version\np1,A,high,v1\n", "line 2 has a probability that is not a number"),
    (b"patient_id,category,p[A],model_version,differential\np1,A,1,v1,ORPHA:1 big\n", "not 'id score'"),
    (b'patient_id,category,p[A],model_version\np1,"A,1,v1\n', "unexpected end of data"),
    (b"patient_id,category,p[A],model_version\np1,\xff,1,v1\n", "can't decode"),
], ids=["empty", "other-header", "short-row", "probability", "differential", "open-quote", "not-utf8"])
def test_what_is_not_a_csv_answer_is_a_value_error_naming_why(body, problem):
    with pytest.raises(ValueError, match=problem):
        read_csv_answer(body)
