"""The endpoint's CSV answer, written and read in one place: :func:`csv_answer` writes it (the handler's ``render`` for
``Accept: text/csv``), :func:`read_csv_answer` reads it back as the JSON answer's predictions. A request answered in
CSV is captured so, by SageMaker and by the local server alike, and the monitor, retraining and the feedback check
read it from the capture: they used to take only JSON, and dropped every patient of it ("output has no JSON
predictions")."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Callable

CSV = "text/csv"
FIXED = ("patient_id", "category")  # then p[<label>] per category, model_version, and differential when asked for


def media_type(content_type: str | None) -> str:
    """A Content-Type's media type, lower case, without its parameters ('text/csv; charset=utf-8' → 'text/csv')."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def csv_answer(prediction: list[dict[str, Any]]) -> bytes:
    """Predictions as CSV: a header, one row per patient; the differential as "ORPHA:1 0.5;OMIM:2 0.4" (disease id
    and score, best first)."""
    out = io.StringIO()
    labels = list(prediction[0]["probabilities"]) if prediction else []
    writer = csv.writer(out, lineterminator="\n")
    differential = any("differential" in p for p in prediction)
    writer.writerow([*FIXED, *(f"p[{label}]" for label in labels), "model_version",
                     *(["differential"] if differential else [])])
    for p in prediction:
        extra = [";".join(f"{d['disease_id']} {d['score']}" for d in p.get("differential", []))] if differential else []
        writer.writerow([p["patient_id"] or "", p["category"], *(p["probabilities"][label] for label in labels),
                         p["model_version"], *extra])
    return out.getvalue().encode("utf-8", errors="backslashreplace")


def answer_predictions(body: bytes, content_type: str | None, loads: Callable[[str], Any] = json.loads) -> list[Any]:
    """The predictions of an endpoint's answer ``body`` in the media it was given in (``content_type``, a capture's
    ``observedContentType``): a CSV answer's (:func:`read_csv_answer`), else the JSON answer's ``predictions``, parsed
    with ``loads``. ValueError (UnicodeDecodeError included), KeyError or TypeError for what is neither."""
    if media_type(content_type) == CSV:
        return read_csv_answer(body)
    predictions = loads(body.decode("utf-8"))["predictions"]
    if not isinstance(predictions, list):
        raise TypeError("'predictions' is not a list")
    return predictions


def read_csv_answer(body: bytes) -> list[dict[str, Any]]:
    """The predictions of an answer :func:`csv_answer` wrote, shaped as the JSON answer's (``patient_id`` None for
    an empty cell, ``probabilities`` by label, ``differential`` as entries when its column is there). A ValueError
    (a UnicodeDecodeError for bytes that are not UTF-8) names what is not such an answer."""
    try:
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline=""), strict=True))
    except csv.Error as err:  # not a ValueError
        raise ValueError(f"the CSV answer cannot be read: {err}") from None
    if not rows:
        raise ValueError("the CSV answer is empty: it has no header")
    header = rows[0]
    labels = [name[2:-1] for name in header[len(FIXED):] if name.startswith("p[") and name.endswith("]")]
    expected = [*FIXED, *(f"p[{label}]" for label in labels), "model_version"]
    differential = header == [*expected, "differential"]
    if header != expected and not differential:
        raise ValueError(f"the CSV answer's header is not the endpoint's: {','.join(header)[:200]!r}")
    predictions = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"the CSV answer's line {number} has {len(row)} cells, its header {len(header)}")
        try:
            probabilities = {label: float(cell) for label, cell in zip(labels, row[len(FIXED):])}
        except ValueError:
            raise ValueError(f"the CSV answer's line {number} has a probability that is not a number") from None
        prediction: dict[str, Any] = {"patient_id": row[0] or None, "category": row[1], "probabilities": probabilities,
                                      "model_version": row[len(expected) - 1]}
        if differential:
            prediction["differential"] = [_entry(text, number) for text in row[-1].split(";") if text]
        predictions.append(prediction)
    return predictions


def _entry(text: str, number: int) -> dict[str, Any]:
    disease_id, _, score = text.rpartition(" ")
    try:
        return {"disease_id": disease_id, "score": float(score)}
    except ValueError:
        raise ValueError(f"the CSV answer's line {number} has a differential entry that is not 'id score'") from None
