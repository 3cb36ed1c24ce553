"""The inference library: load a model, parse and validate a request, score it, render the answer.

``load_service`` loads the training artifact (feature pipeline + classifier) from the model folder;
``parse_request`` parses and validates a request (``application/json``: one patient, a list, or
``{"instances": [...], "top_k": 3, "differential": 5}``; ``text/csv`` with a header row, lists
``;``-separated); ``predict`` scores it and, when asked (``differential``: 1 to 20), adds per patient
the rare diseases of the knowledge base whose HPO annotations best match the symptoms — decision
support from the model's fitted :class:`processing.phenotype.PhenotypeSimilarity`, not a diagnosis;
``render`` writes ``application/json`` (default) or ``text/csv``; ``invoke`` chains the three. Bad
input raises :class:`RequestError` carrying a 4xx status and, per problem, the row, the field and
what is wrong. ``diagnosa serve`` (inference/server.py) and SageMaker's serving toolkits (through
inference/toolkit.py, the model artifact's entry module) both call these.
"""
from __future__ import annotations

import csv
import gc
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable

import numpy as np
import pandas as pd

from diagnosa.data.csv_cells import csv_problem, fit_to_header, header_problem, is_blank_row, misfit_problem, named_width
from diagnosa.data.schema import Schema, other_delimiter
from diagnosa.data.validate import clip
from diagnosa.model import DiagnosaModel, model_version
from inference.answers import CSV, csv_answer, media_type
from inference.fastpath import CompiledFeatures, compile_model
from inference.limits import (
    MAX_BODY_BYTES,
    MAX_LISTED_PROBLEMS,
    MAX_RECORDS,
    MAX_REFUSAL_BYTES,
    RepeatedKeys,
    json_problem,
    loads,
    not_text,
    printable,
    surrogate_path,
)
from inference.schema import SHOWN_FIELD_CHARS, Problem, RequestSchema, shown
from processing.features import category_vocabularies, list_vocabularies
from processing.phenotype import PhenotypeSimilarity, find_similarity

MAX_RESPONSE_BYTES = 6 * 1024 * 1024  # SageMaker refuses replies over 6 MB too: so does the endpoint, clearly
# A JSON text can carry a lone UTF-16 surrogate only as a \uD800-\uDFFF escape (UTF-8 cannot encode one).
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
JSON = "application/json"
DEFAULT_TOP_K = 3
MAX_DIFFERENTIAL = 20
DIFFERENTIAL_NOTE = ("Decision support: rare diseases whose HPO annotations best match the reported symptoms "
                     "(Orphanet/OMIM via HPO {release}); not a diagnosis.")


class RequestError(Exception):
    """A request the endpoint refuses: ``status`` is 4xx and ``errors`` name each problem (``more`` counts those
    found but not kept: a refusal lists at most MAX_LISTED_PROBLEMS)."""

    def __init__(self, status: int, message: str, errors: list[Problem] | None = None, more: int = 0):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.more = more

    def body(self, limit: int = MAX_REFUSAL_BYTES) -> dict[str, Any]:
        """The refusal as JSON: at most MAX_LISTED_PROBLEMS problems, and those up to ``limit`` bytes
        (``more_errors`` counts the rest), so a body of junk cannot become a reply many times its size. (Each
        message quotes values clipped, :func:`~inference.schema.shown`; this bounds their sum.)"""
        listed: list[dict[str, Any]] = []
        size = len(encode_json({"error": self.message, "errors": [], "more_errors": len(self.errors) + self.more}))
        for error in self.errors[:MAX_LISTED_PROBLEMS]:
            problem = error.to_dict()
            size += len(encode_json(problem)) + 2
            if size > limit:
                break
            listed.append(problem)
        out: dict[str, Any] = {"error": self.message, "errors": listed}
        more = len(self.errors) - len(listed) + self.more
        if more:
            out["more_errors"] = more
        return out


class NotText(RequestError):
    """A 400 for a body holding a lone UTF-16 surrogate (a JSON ``\\ud800`` escape; a str body): text that no UTF-8
    writer can hold, which the monitor counts under a reason of its own."""


def encode_json(payload: Any) -> bytes:
    """JSON as UTF-8 that never fails: a lone surrogate (only possible in text we echo) is written as its
    \\uXXXX escape, which JSON readers accept. The answers are trees built here (no cycles to look for: 15 %
    of a 100-patient answer's encoding went to that check)."""
    return json.dumps(payload, ensure_ascii=False, check_circular=False).encode("utf-8", errors="backslashreplace")


def load_json(body: bytes) -> Any:
    """A JSON body, or :class:`RequestError` 400 naming what is wrong: not UTF-8, malformed, nested too deeply,
    or a string that is not Unicode text (a lone UTF-16 surrogate, which nothing downstream can write). A UTF-8
    byte-order mark is read past, as in a CSV body; an object naming a key twice is a
    :class:`~inference.limits.RepeatedKeys`, for its reader to refuse where it knows which record holds it."""
    try:
        data = loads(body[3:].decode("utf-8") if body.startswith(b"\xef\xbb\xbf") else body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RequestError(400, f"the body is not UTF-8 (byte {err.start})") from None
    except (ValueError, RecursionError) as err:  # malformed; an integer literal longer than Python converts
        raise RequestError(400, f"malformed JSON: {json_problem(err)}") from None
    if SURROGATE_ESCAPE.search(body):  # valid pairs (astral characters) pass the scan below
        where = surrogate_path(data)
        if where is not None:
            # The path's own surrogate escaped; clipped as a field name is (its keys are the request's).
            raise NotText(400, f"{clip(printable(where), SHOWN_FIELD_CHARS)}: {not_text()}")
    return data


@dataclass
class Service:
    model: DiagnosaModel
    schema: RequestSchema
    version: str
    columns: list[str] = field(default_factory=list)
    fast: CompiledFeatures | None = None  # the compiled feature path, when it gives the pipeline's probabilities
    classifier: Any = None  # what scores the compiled features in the classifier's place (None: the classifier)
    phenotype: PhenotypeSimilarity | None = None  # the fitted knowledge-base similarity (the differential)
    phenotype_field: str | None = None  # the HPO list field it scores
    vocabularies: dict[str, frozenset[str]] = field(default_factory=dict)  # codes the model knows, per list field
    categories: dict[str, frozenset[str]] = field(default_factory=dict)  # values it knows, per category field
    # The differential's shortest entries (JSON, CSV) and how many diseases it ranks: :func:`answer_floor`'s, on first use.
    least_entries: tuple[dict[str, Any], dict[str, Any], int] | None = field(default=None, repr=False)
    # (media, top_k, differential) -> the shortest answer's (fixed bytes, bytes per patient): answer_floor's, per shape
    answer_floors: dict[tuple[str, int, int], tuple[int, int]] = field(default_factory=dict, repr=False)


@dataclass
class Request:
    records: list[dict[str, Any]]
    ids: list[str | None]
    columns: list[str]
    top_k: int = DEFAULT_TOP_K
    differential: int = 0  # rare diseases listed per patient (0: none)

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=self.columns)


def _probe_records(schema: RequestSchema, features: Any) -> list[dict[str, Any]]:
    """Records that exercise every input (missing, typical, edge values) to check the fast path."""
    empty: dict[str, Any] = {name: ([] if f.type in ("hpo_terms", "codes") else None) for name, f in schema.fields.items()}
    probes = [dict(empty)]
    for pick in (0, -1):
        record = dict(empty)
        for name, f in schema.fields.items():
            if f.type in ("number", "integer"):
                low = f.min if f.min is not None else 0.0
                high = f.max if f.max is not None else low + 10.0
                record[name] = float(low if pick == 0 else (low + high) / 2)
            elif f.type == "boolean":
                record[name] = bool(pick)
            elif f.type in ("category", "string"):
                record[name] = f.values[pick] if f.values else "zz-unseen"
            else:
                vocabulary = []
                for _, transformer, selected in getattr(features.steps[0][1], "transformers_", []):
                    if selected == name and hasattr(transformer, "vocabulary_"):
                        vocabulary = list(transformer.vocabulary_)
                record[name] = vocabulary[pick * 3:][:3] if pick == 0 else vocabulary[-3:]
        probes.append(record)
    return probes


def charset(content_type: str | None) -> str | None:
    """The charset a Content-Type names, lower case, or None."""
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _quality(media_range: str) -> float:
    """A media range's q (RFC 9110 12.4.2): 1 when not given, 0 (not acceptable) when unreadable."""
    for parameter in media_range.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value)
            except ValueError:
                return 0.0
            return q if 0 <= q <= 1 else 0.0
    return 1.0


def _accepted(accept: str | None) -> str:
    """The media type to answer in: of an Accept list's ranges we can produce, the most preferred (its q; list
    order on a tie); JSON when none is given. A type with q=0 is one the client refuses."""
    ranges = [(_quality(candidate), media_type(candidate)) for candidate in (accept or "").split(",")]
    refused = {media for q, media in ranges if q == 0}
    for _, media in sorted((r for r in ranges if r[0] > 0), key=lambda r: -r[0]):
        matches = {"": (JSON,), "*/*": (JSON, CSV), "application/*": (JSON,), "text/*": (CSV,)}.get(media, (media,))
        answer = next((m for m in matches if m in (JSON, CSV) and m not in refused), None)
        if answer is not None:
            return answer
    raise RequestError(406, f"cannot answer in {shown(accept)}: accept {JSON} or {CSV}")


SERVING_THREADS = 1  # math-library threads per serving worker


def limit_threads(model: DiagnosaModel, threads: int = SERVING_THREADS) -> None:
    """One request's arithmetic on ``threads`` threads in the classifier's own pool (xgboost and random
    forests train with n_jobs=-1). The servers run requests concurrently, so a pool per request only
    oversubscribes the cores: a 100-patient batch took 40 ms with two threads, 8.5 ms with one (issue 15).
    The process-wide BLAS/OpenMP pools are the serving processes' to limit (:func:`limit_process_threads`)."""
    classifier = model.pipeline.steps[-1][1]
    if hasattr(classifier, "get_params"):  # the estimator itself, or a step of its pipeline (xgboost's)
        updates = {k: threads for k in classifier.get_params(deep=True) if k == "n_jobs" or k.endswith("__n_jobs")}
        if updates:
            classifier.set_params(**updates)


def limit_process_threads(threads: int = SERVING_THREADS) -> None:
    """BLAS/OpenMP pools of this process to ``threads``: called by the serving entry points (``diagnosa
    serve``, the toolkit's model_fn), not by the library, so a test or notebook keeps its own."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)


def freeze_loaded() -> None:
    """Everything alive now (the loaded model, the ontology, what warm-up cached) out of the cyclic garbage
    collector's reach for the rest of the process: a full collection walked those ~147,000 objects in 64 ms
    (the 20k champion) about every 700 requests of 100 patients, stalling the request it fell on. Garbage made
    later is collected as before. The pre-fork servers' practice (``gc.freeze``, as gunicorn documents);
    called by the serving processes once loaded, not by the library."""
    gc.collect()
    gc.freeze()


def load_service(model_dir: str) -> Service:
    model = DiagnosaModel.load(model_dir)
    limit_threads(model)
    schema = Schema.from_dict(model.metadata["schema"])
    request_schema = RequestSchema(schema, spreads=model.metadata.get("number_spreads"))
    version = model_version(model.metadata)
    columns = [schema.id_column, *request_schema.fields]
    probes = _probe_records(request_schema, model.features)
    fast, classifier = compile_model(model, probes, columns)  # only if it gives the pipeline's probabilities exactly
    phenotype, phenotype_field = find_similarity(model.features)
    return Service(model, request_schema, version, columns, fast, classifier, phenotype, phenotype_field,
                   list_vocabularies(model.features), category_vocabularies(model.features))


def warm_up(service: Service) -> None:
    """Pay one-off costs (HPO ontology, first predict) before the endpoint reports ready, not on a patient's request."""
    fields = service.schema.fields
    record = {name: (["HP:0000118"] if f.type == "hpo_terms" else None) for name, f in fields.items()}
    if not any(v is not None for v in record.values()):
        record = {next(iter(fields)): None}
    try:
        request = parse_request(json.dumps(record).encode("utf-8"), JSON, service)
    except RequestError:
        return  # the record is not valid for this schema; the lazy costs are paid on first use instead
    predict(request, service)


@dataclass
class Body:
    """A request's body as the endpoint reads it, before any record is validated: its patient records (JSON values, or
    for CSV the cells' texts by header name) and the options it names (JSON only; top_k None: the default)."""
    records: list[Any]
    top_k: Any = None
    differential: Any = 0
    text: bool = False  # the records are CSV rows: their values are texts, read as ingestion reads a CSV cell


def read_body(body: bytes | str, content_type: str | None, fields: Collection[str] = frozenset()) -> Body:
    """How the endpoint reads a request's bytes (no model needed): size, media type and charset, then JSON or CSV.
    :class:`RequestError` (:class:`NotText` for a lone surrogate) for a body it refuses. The one reader of a request:
    :func:`parse_request` validates what it reads, and the monitor and retraining read captured requests with it
    (monitoring/traffic.py), so a request answered 200 is read there into the records it was scored on. ``fields``:
    the names a CSV header may have (a header of one of them is not taken for a ';'-separated one)."""
    if isinstance(body, str):
        try:
            body = body.encode("utf-8")
        except UnicodeEncodeError as err:  # a str body with a lone surrogate (a toolkit may hand us text)
            raise NotText(400, f"the body is not Unicode text (character {err.start} is a lone surrogate)") from None
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"the body is {len(body):,} bytes; the limit is {MAX_BODY_BYTES:,} (6 MB)")
    if not body.strip():
        raise RequestError(400, "the body is empty: send one patient record or a list of them")
    media = media_type(content_type)
    if media not in (JSON, CSV):
        raise RequestError(415, f"unsupported content type {shown(content_type)}: use {JSON} or {CSV}")
    named = charset(content_type)
    if named not in (None, "utf-8", "utf8"):
        raise RequestError(415, f"unsupported charset {shown(named)}: send the body as UTF-8 (charset=utf-8)")
    read = _records_from_json(body) if media == JSON else Body(_records_from_csv(body, frozenset(fields)), text=True)
    if not read.records:
        raise RequestError(400, "no patient records in the request")
    if len(read.records) > MAX_RECORDS:
        raise _too_many(f"{len(read.records):,}")
    return read


def _too_many(count: str) -> RequestError:
    return RequestError(413, f"{count} records in one request; the limit is {MAX_RECORDS:,}: split them over several "
                             "requests")


def _records_from_json(body: bytes) -> Body:
    data = load_json(body)
    top_k, differential = None, 0  # top_k None: the default, as many as the model has labels if fewer
    if isinstance(data, dict) and "instances" in data:
        extra = sorted(set(data) - {"instances", "top_k", "differential"})
        if extra:
            named = ", ".join(clip(str(key), SHOWN_FIELD_CHARS) for key in extra[:10]) + ", …" * (len(extra) > 10)
            raise RequestError(400, f"unknown top-level keys: {named} (allowed: instances, top_k, differential)")
        if isinstance(data, RepeatedKeys):
            raise RequestError(400, f"top-level key(s) given twice: {', '.join(data.repeated)}")
        top_k = data.get("top_k")
        differential = data.get("differential", 0)
        data = data["instances"]
        if not isinstance(data, list):
            raise RequestError(400, "'instances' must be a list of patient records")
    records = data if isinstance(data, list) else [data]
    return Body(records, top_k, differential)


def _records_from_csv(body: bytes, fields: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """The rows of a CSV body as records, read as ingestion reads a CSV file: any line ending (an old Mac's lone
    CR too), a quote never closed refused, never a row padded or cut to fit the header."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RequestError(400, f"the body is not UTF-8 (byte {err.start})") from None
    return csv_records(io.StringIO(text, newline=None), fields)  # newline=None: '\r' ends a line too


def csv_records(lines: Iterable[str], fields: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """The records of a CSV body's decoded ``lines`` (:func:`_records_from_csv`). Read up to MAX_RECORDS + 1 rows
    that are not blank, then refused: 3 million rows of one cell (6 MB) took 7 s and 600 MB when all were read
    before they were counted."""
    reader = csv.reader(lines, strict=True)
    rows: list[dict[str, str]] = []
    try:
        header = next(reader, None) or []
        width = named_width(header)  # trailing columns without a name: a spreadsheet's delimiters, as ingestion reads
        if not width:
            raise RequestError(400, "a CSV request needs a header row naming the fields")
        opening = header[0].lstrip()[:1]
        if opening in ("{", "["):
            raise RequestError(400, f"the CSV body starts with {opening!r}: it looks like JSON; send it as {JSON}")
        other = other_delimiter(header)
        if other is not None and header[0] not in fields:  # shown cut: a header may be megabytes long
            raise RequestError(400, f"the CSV header is one field, {shown(header[0], 80)}: the cells look "
                                    f"{other!r}-separated; send comma-separated cells with decimal points")
        problem = header_problem(header, width)
        if problem:
            raise RequestError(400, problem)
        for cells in reader:
            if is_blank_row(cells):  # a blank line, or a spreadsheet's formatted empty row (',,,'), as ingestion skips
                continue
            if len(rows) == MAX_RECORDS:
                raise _too_many(f"over {MAX_RECORDS:,}")
            fitted = fit_to_header(cells, width)  # empty trailing cells dropped, as ingestion drops them
            if fitted is None:
                raise RequestError(400, f"CSV row {len(rows) + 1} (line {reader.line_num}) has "
                                        f"{misfit_problem(cells, header, width)}")
            rows.append(dict(zip(header, fitted)))
    except csv.Error as err:
        raise RequestError(400, f"malformed CSV: {csv_problem(err)} (line {reader.line_num})") from None
    if not rows:
        raise RequestError(400, "no patient records in the request: the CSV has a header and no rows")
    return rows


def parse_request(body: bytes | str, content_type: str | None, service: Service) -> Request:
    """Parse and validate; every problem of every row is counted, the first MAX_LISTED_PROBLEMS kept to be named."""
    read = read_body(body, content_type, service.schema.accepted)
    records, top_k, differential = read.records, read.top_k, read.differential
    if top_k is None:  # a two-label model answers a request that names no top_k with both, not a 400
        top_k = min(DEFAULT_TOP_K, len(service.model.labels))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(service.model.labels):
        raise RequestError(400, f"top_k must be an integer from 1 to {len(service.model.labels)}, got {shown(top_k)}")
    if isinstance(differential, bool) or not isinstance(differential, int) or not 0 <= differential <= MAX_DIFFERENTIAL:
        raise RequestError(400, f"differential must be an integer from 1 to {MAX_DIFFERENTIAL} (0 or absent: none), "
                                f"got {shown(differential)}")
    if differential and service.phenotype is None:
        raise RequestError(400, "differential is not available for this model: it has no HPO symptom field, so no "
                                "rare-disease knowledge base to match against")
    clean: list[dict[str, Any]] = []
    problems: list[Problem] = []
    found_count = 0  # every problem counted; only the first MAX_LISTED_PROBLEMS kept (a junk body's millions are not)
    for row, record in enumerate(records):
        values, found = service.schema.validate(row, record, text=read.text)
        clean.append(values)
        if found:
            found_count += len(found)
            problems.extend(found[:MAX_LISTED_PROBLEMS - len(problems)])
    if found_count:
        raise RequestError(400, f"{found_count} problem(s) in the request", problems, found_count - len(problems))
    return Request(clean, [values[service.schema.id_field] for values in clean], service.columns, top_k, differential)


def _refuse_unscorable(proba: np.ndarray, request: Request) -> None:
    """A record the model cannot compute with is refused, naming its largest number. A number the schema accepts (a
    32-bit float, up to 3.4e38) far beyond the training values overflowed the model's float32 arithmetic: the
    endpoint answered 200 with NaN probabilities (not JSON), the first label as its category, and capture, monitor
    and retraining took the row as a prediction (a probe, session 68)."""
    unscorable = np.flatnonzero(~np.isfinite(proba).all(axis=1))
    if not unscorable.size:
        return
    problems = []
    for row in unscorable[:MAX_LISTED_PROBLEMS].tolist():
        numbers = {name: value for name, value in request.records[row].items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool)}
        largest = max(numbers, key=lambda name: abs(numbers[name]), default=None)
        said = f": {largest} = {numbers[largest]:.6g}" if largest is not None else ""
        problems.append(Problem(row, largest, "the model cannot compute with this record's numbers, too far beyond "
                                f"the values it was trained on (its largest{said}); check the units and the value"))
    raise RequestError(400, f"{unscorable.size} problem(s) in the request", problems, unscorable.size - len(problems))


def predict(request: Request, service: Service) -> list[dict[str, Any]]:
    if service.fast is not None:
        proba = service.model.predict_proba_features(service.fast.transform(request.records), service.classifier)
    else:
        proba = service.model.predict_proba(request.frame)
    _refuse_unscorable(proba, request)
    labels = service.model.labels
    # The category is the model's decision (argmax of decision weight x calibrated probability); the
    # probabilities and top_k shown are the calibrated probabilities themselves.
    category = service.model.decide(proba).tolist()
    order = np.argsort(-proba, axis=1, kind="stable")[:, : request.top_k]
    rounded = np.round(proba, 6).tolist()  # one numpy call instead of a float() per cell
    top_p = np.take_along_axis(np.round(proba, 6), order, axis=1).tolist()
    order = order.tolist()
    results = []
    for i, pid in enumerate(request.ids):
        results.append({
            "patient_id": pid,
            "category": labels[category[i]],
            "probabilities": dict(zip(labels, rounded[i])),
            "top_k": [{"category": labels[j], "probability": p} for j, p in zip(order[i], top_p[i])],
            "model_version": service.version,
        })
    for result, record in zip(results, request.records):
        # Well-formed codes the model never learned (too rare in training) change nothing: say so, not silently.
        unused = {name: [c for c in record.get(name) or [] if c not in known]
                  for name, known in service.vocabularies.items()}
        unused = {name: codes for name, codes in unused.items() if codes}
        if unused:
            result["unused_codes"] = unused
        # A category value training never saw encodes as none of the known ones, silently: say so (a typo, a spelling).
        unknown = {name: record[name] for name, known in service.categories.items()
                   if record.get(name) is not None and str(record[name]) not in known}
        if unknown:
            result["unknown_values"] = unknown
    scored = service.phenotype_field  # found with the similarity (processing/phenotype.find_similarity)
    if request.differential and service.phenotype is not None and scored is not None:
        ranked = service.phenotype.rank([r.get(scored) or [] for r in request.records],
                                        request.differential)
        note = DIFFERENTIAL_NOTE.format(release=service.phenotype.release or "annotations")
        for result, differential in zip(results, ranked):
            result["differential"] = differential
            result["differential_note"] = note
    return results


def render(prediction: list[dict[str, Any]], accept: str | None) -> tuple[bytes, str]:
    if _accepted(accept) != CSV:
        return encode_json({"predictions": prediction}), JSON
    return csv_answer(prediction), CSV


def _least_entries(service: Service) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The differential entries of the knowledge base that render shortest, in JSON and in CSV (score 0.0: no float
    is written shorter), and how many diseases it holds: every entry, as ``rank`` writes them, once."""
    if service.least_entries is None:
        assert service.phenotype is not None
        entries = service.phenotype.rank([[]], len(service.phenotype.disease_ids_))[0]
        entries = [{**entry, "score": 0.0} for entry in entries]
        service.least_entries = (min(entries, key=lambda e: len(encode_json(e))),
                                 min(entries, key=lambda e: len(str(e["disease_id"]).encode("utf-8"))), len(entries))
    return service.least_entries


def answer_floor(request: Request, service: Service, media: str) -> int:
    """Bytes the answer to ``request`` will at least take in ``media``, known before anything is scored: each patient's
    answer as :func:`predict` writes it, at its shortest (one label wherever a label goes, the one rendering shortest;
    every probability and score 0.0, the differential's shortest entries; no unused codes or unknown values), rendered
    as :func:`render` writes it, plus the patients' own ids. A request over MAX_RESPONSE_BYTES by this floor cannot
    be answered: 10,000 patients with a differential of 20 were scored for 10-17 s, then refused a 35 MB answer."""
    shape = (media, request.top_k, request.differential)
    if shape not in service.answer_floors:  # a few shapes per model: not worked out again on every request
        service.answer_floors[shape] = _shortest_answer(service, *shape)
    fixed, per_answer = service.answer_floors[shape]
    # An id takes at least its own bytes where the shortest answer has an empty CSV cell; in JSON at least those and
    # its two quotes (escapes only add) where it has null (4 bytes).
    given = [len(pid.encode("utf-8", errors="backslashreplace")) for pid in request.ids if pid is not None]
    ids = sum(given) - (2 * len(given) if media == JSON else 0)
    return fixed + len(request.ids) * per_answer + ids


def _shortest_answer(service: Service, media: str, top_k: int, differential: int) -> tuple[int, int]:
    """(fixed bytes, bytes per patient) of the shortest answer of that shape (:func:`answer_floor`)."""
    listed: dict[str, Any] = {}
    if differential and service.phenotype is not None and service.phenotype_field is not None:
        json_entry, csv_entry, diseases = _least_entries(service)
        listed = {"differential": [json_entry if media == JSON else csv_entry] * min(differential, diseases),
                  "differential_note": DIFFERENTIAL_NOTE.format(release=service.phenotype.release or "annotations")}
    per_answer, fixed = [], 0
    for label in service.model.labels:
        least = {"patient_id": None, "category": label, "probabilities": dict.fromkeys(service.model.labels, 0.0),
                 "top_k": [{"category": label, "probability": 0.0}] * top_k, "model_version": service.version,
                 **listed}
        if media == JSON:  # '{"predictions": [' + answers joined by ', ' + ']}'
            per_answer.append(len(encode_json(least)) + 2)
            fixed = len(encode_json({"predictions": []})) - 2
        else:  # the header, then a row per patient
            one, two = (len(render([least] * n, CSV)[0]) for n in (1, 2))
            per_answer.append(two - one)
            fixed = 2 * one - two
    return fixed, min(per_answer)


def invoke(service: Service, body: bytes | str, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    """One invocation: parse → predict → render; :class:`RequestError` for anything the client must fix."""
    output, output_type, _ = answer(service, body, content_type, accept)
    return output, output_type


def answer(service: Service, body: bytes | str, content_type: str | None, accept: str | None
           ) -> tuple[bytes, str, int]:
    """:func:`invoke`'s answer and the number of patients it answers (what feedback's event_row counts)."""
    media = _accepted(accept)  # refuse an Accept we cannot produce before scoring anything
    request = parse_request(body, content_type, service)
    floor = answer_floor(request, service, media)  # nor score what cannot be answered
    if floor > MAX_RESPONSE_BYTES:
        raise RequestError(413, f"the answer would be at least {floor:,} bytes; the limit is {MAX_RESPONSE_BYTES:,} "
                                "(6 MB, as SageMaker's): send fewer records or a smaller differential")
    prediction = predict(request, service)
    output, output_type = render(prediction, accept)
    if len(output) > MAX_RESPONSE_BYTES:
        raise RequestError(413, f"the answer would be {len(output):,} bytes; the limit is {MAX_RESPONSE_BYTES:,} "
                                "(6 MB, as SageMaker's): send fewer records or a smaller differential")
    return output, output_type, len(prediction)
