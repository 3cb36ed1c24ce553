"""The promote function under moto given hostile or broken input: a gate file that is empty, truncated or of the wrong
shape, evaluation values that overflow, nest too deep or are megabytes long, events and model packages of the wrong
shape. Each is refused with a short message that names what is wrong and where; nothing is promoted."""
from __future__ import annotations

import json
from typing import Any

import pytest
from test_promote import GATE, GATE_KEY, IMAGE, RUN, evaluation_of, register, serve, stages

GATE_URI = f"s3://prod-lake/{GATE_KEY}"
RECALL = "diagnosa.per_class['NO ENFERMO'].recall"
KEYS = "check 1's keys are not a non-empty list of names and indexes"
MAX_MESSAGE = 1000  # a refusal ends up in CloudWatch and in the delivery pipeline's failure text


@pytest.fixture
def aws():
    with stages() as world:
        yield world


def _refusal(promote_fn, sm, s3, env, event: Any = None) -> str:
    """The handler's refusal message, checked to be short and valid UTF-8, with nothing promoted."""
    with pytest.raises(promote_fn.Refused) as refused:
        promote_fn.handler({} if event is None else event, source=sm, target=sm, s3=s3, env=env)
    message = str(refused.value)
    assert len(message) <= MAX_MESSAGE, (len(message), message[:300])
    message.encode("utf-8")  # no lone surrogates
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="prod-lake").get("Contents", [])] == [GATE_KEY]
    assert sm.list_model_packages(ModelPackageGroupName="diagnosa-prod")["ModelPackageSummaryList"] == []
    return message


# ------------------------------------------------------------------------------------------ this stage's gate file

def _check(**changes: Any) -> list[dict[str, Any]]:
    """The gate with its first check changed (a key set to ``None`` is removed)."""
    first = {**GATE[0], **changes}
    return [{k: v for k, v in first.items() if v is not None}, *GATE[1:]]


@pytest.mark.parametrize("body, wrong", [
    (b"[]", "it has no checks"),
    (b"{}", "not a list of checks"),
    (b"null", "not a list of checks"),
    (b'"checks"', "not a list of checks"),
    (b'{"path": "x", "keys": ["a"], "at_least": 0.5}', "not a list of checks"),
    (b"", "not JSON"),
    (json.dumps(GATE).encode()[:30], "not JSON"),
    (b"\xff\xfe[]", "not JSON"),
    (b"[" * 200_000, "not JSON"),
    (b"[1]", "check 1 is not an object"),
    (json.dumps(_check(at_least=None)).encode(), "check 1's at_least is not a finite number"),
    (json.dumps(_check(at_least="0.8")).encode(), "check 1's at_least is not a finite number"),
    (json.dumps(_check(at_least=True)).encode(), "check 1's at_least is not a finite number"),
    (json.dumps(_check(at_least=None)).replace('"path"', '"at_least": 1' + "0" * 400 + ', "path"', 1).encode(),
     "check 1's at_least is not a finite number"),
    (json.dumps(_check(keys=None)).encode(), KEYS),
    (json.dumps(_check(keys=[])).encode(), KEYS),
    (json.dumps(_check(keys="diagnosa.macro_recall")).encode(), KEYS),
    (json.dumps(_check(keys=["diagnosa", True])).encode(), KEYS),
    (json.dumps(_check(path=None)).encode(), "check 1's path is not a non-empty string"),
    (json.dumps(_check(path=7)).encode(), "check 1's path is not a non-empty string"),
    (json.dumps(_check(parameter=["x"])).encode(), "check 1's parameter is not a string"),
])
def test_a_gate_file_that_is_empty_broken_or_of_the_wrong_shape_refuses_the_promotion(
        aws, promote_fn, body, wrong):
    """A gate that has no checks must never pass everything: the stack writes a non-empty list of
    ``{"path", "keys", "at_least", "parameter"}`` (pipelines.expressions.registration_gate)."""
    sm, s3, env = aws
    s3.put_object(Bucket="prod-lake", Key=GATE_KEY, Body=body)
    serve(sm, register(sm, s3, "Approved"))
    for event in ({}, {"version": 1, "force": True}):  # force never skips the gate
        message = _refusal(promote_fn, sm, s3, env, event)
        assert f"this stage's gate {GATE_URI} is not a gate file" in message, message
        assert wrong in message, message
        assert "deploy this stage's stack again" in message and "nothing promoted" in message


def test_a_gate_file_with_megabytes_in_a_check_gives_a_short_refusal(aws, promote_fn):
    sm, s3, env = aws
    s3.put_object(Bucket="prod-lake", Key=GATE_KEY, Body=json.dumps(_check(at_least="\ud800" * 100_000)).encode())
    serve(sm, register(sm, s3, "Approved"))
    message = _refusal(promote_fn, sm, s3, env)
    assert GATE_URI in message and "check 1's at_least is not a finite number (it is '\\ud800" in message


def test_an_oversized_gate_file_is_refused_without_reading_it_whole(aws, promote_fn):
    # a gate file is a few KB: one of megabytes is not what the stack wrote, even if its JSON holds valid checks
    sm, s3, env = aws
    s3.put_object(Bucket="prod-lake", Key=GATE_KEY, Body=json.dumps(GATE).encode() + b" " * 2**21)
    serve(sm, register(sm, s3, "Approved"))
    message = _refusal(promote_fn, sm, s3, env)
    assert f"this stage's gate {GATE_URI} is not a gate file (it is over 1048576 bytes)" in message


def test_a_refusal_names_the_first_failures_of_a_large_gate_not_all(aws, promote_fn):
    sm, s3, env = aws
    gate = [{"path": f"m{i}", "keys": [f"m{i}"], "at_least": 0.5, "parameter": ""} for i in range(5000)]
    s3.put_object(Bucket="prod-lake", Key=GATE_KEY, Body=json.dumps(gate).encode())
    serve(sm, register(sm, s3, "Approved"))
    message = _refusal(promote_fn, sm, s3, env)
    assert "m0 is missing, needs >= 0.5; m1 is missing" in message and "(and 4980 more)" in message, message


# ------------------------------------------------------------------------------------------ the evaluation's values

def _evaluation(value_json: str) -> bytes:
    """An evaluation passing the gate but for RECALL, whose value is ``value_json`` as written."""
    text = json.dumps(evaluation_of({RECALL: 0.123456}))
    assert text.count("0.123456") == 1
    return text.replace("0.123456", value_json).encode()


@pytest.mark.parametrize("value_json, shown", [
    ("1" + "0" * 400, "is an integer too large to compare"),
    ("-1" + "0" * 400, "is an integer too large to compare"),
    (json.dumps("m" * 9_000_000), "is 'mmmmmmmm"),
    (json.dumps("\ud800" * 1_000_000), "is '\\ud800\\ud800"),
    (json.dumps(list(range(500_000))), "is a list of 500000 items"),
    (json.dumps({str(i): i for i in range(200_000)}), "is an object of 200000 keys"),
    ("[" * 500 + "]" * 500, "is a list of 1 item,"),
])
def test_an_evaluation_value_that_is_no_usable_number_gives_a_short_refusal_naming_its_path(
        aws, promote_fn, value_json, shown):
    sm, s3, env = aws
    arn = register(sm, s3, "Approved", evaluation=_evaluation(value_json))
    serve(sm, arn)
    message = _refusal(promote_fn, sm, s3, env)
    assert f"{arn} does not pass diagnosa-prod's gate: {RECALL} {shown}" in message, message[:400]
    assert "needs >= 0.8 (RecallThresholdNoEnfermo)" in message


def test_a_huge_integer_that_passes_a_threshold_is_still_not_a_recall(aws, promote_fn):
    # a recall of 10**400 is no recall: it cannot be compared as the pipeline's gate compares (floats)
    sm, s3, env = aws
    serve(sm, register(sm, s3, "Approved", evaluation=_evaluation("9" * 4000)))
    assert f"{RECALL} is an integer too large to compare" in _refusal(promote_fn, sm, s3, env)


@pytest.mark.parametrize("evaluation", [b"[" * 200_000, b'{"diagnosa": ' * 100_000])
def test_a_deeply_nested_evaluation_is_refused_naming_it(aws, promote_fn, evaluation):
    sm, s3, env = aws
    arn = register(sm, s3, "Approved", evaluation=evaluation)
    serve(sm, arn)
    message = _refusal(promote_fn, sm, s3, env)
    assert f"{arn}'s evaluation {RUN}/evaluation/evaluation.json is not an evaluation JSON (it is nested too deeply)" \
        in message, message


# ------------------------------------------------------------------------------------------ the event

@pytest.mark.parametrize("event, kind", [(["x"], "a list"), ("promote", "a string"), (None, "null"), (7, "a number"),
                                         ("\ud800" * 3_000_000, "a string")])
def test_an_event_that_is_not_an_object_is_refused(aws, promote_fn, event, kind):
    sm, s3, env = aws
    serve(sm, register(sm, s3, "Approved"))
    with pytest.raises(promote_fn.Refused) as refused:
        promote_fn.handler(event, source=sm, target=sm, s3=s3, env=env)
    message = str(refused.value)
    assert len(message) <= MAX_MESSAGE and message.encode("utf-8")
    assert "the event must be a JSON object" in message and f"got {kind}" in message, message


@pytest.mark.parametrize("event, expected", [
    ({"version": "9" * 6_000_000}, "version must be a positive integer, got '99999"),
    ({"version": "\ud800" * 3_000_000}, "version must be a positive integer, got '\\ud800"),
    ({"version": list(range(1_000_000))}, "version must be a positive integer, got a list of 1000000 items"),
    ({"version": 1, "force": "t" * 6_000_000}, "force must be true or false"),
    ({"version": 1, "force": "\udfff" * 3_000_000}, "force must be true or false"),
])
def test_a_megabyte_version_or_force_gives_a_short_refusal(aws, promote_fn, event, expected):
    sm, s3, env = aws
    serve(sm, register(sm, s3, "Approved"))
    message = _refusal(promote_fn, sm, s3, env, event)
    assert expected in message, message[:300]
    assert "characters)" in message or "items" in message


@pytest.mark.parametrize("event, expected", [
    ({"versoin": 1}, "unknown field(s) 'versoin' (the event takes version and force): nothing promoted"),
    ({"version": 1, "Force": True}, "unknown field(s) 'Force' (the event takes"),
    ({f"k{i:06d}\ud800": i for i in range(200_000)}, "'k000009\\ud800' and 199990 more (the event takes"),
])
def test_a_field_the_event_does_not_take_is_refused(aws, promote_fn, event, expected):
    """A misspelt "version" was ignored, and what dev serves was promoted instead of the version asked for."""
    sm, s3, env = aws
    serve(sm, register(sm, s3, "Approved"))
    assert expected in _refusal(promote_fn, sm, s3, env, event)


# ------------------------------------------------------------------------------------------ the model package

def _package(sm, s3, specification: dict[str, Any] | None) -> str:
    """A version of dev's group with ``specification`` as its InferenceSpecification (none if None), its evaluation
    passing prod's gate."""
    bucket = RUN[5:].split("/", 1)[0]
    s3.put_object(Bucket=bucket, Key="artifacts/runs/exec-3/evaluation/evaluation.json",
                  Body=json.dumps(evaluation_of()).encode())
    s3.put_object(Bucket=bucket, Key="artifacts/runs/exec-3/champion/model.tar.gz", Body=b"model")
    return sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
        **({"InferenceSpecification": specification} if specification is not None else {}),
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                      "S3Uri": f"{RUN}/evaluation/evaluation.json"}}},
    )["ModelPackageArn"]


TYPES = {"SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}


@pytest.mark.parametrize("specification, expected", [
    (None, "has no InferenceSpecification"),
    ({"Containers": [{"Image": IMAGE, "ModelDataSource": {"S3DataSource": {
        "S3Uri": f"{RUN}/champion/model/", "S3DataType": "S3Prefix", "CompressionType": "None"}}}], **TYPES},
     "container 1 has no ModelDataUrl"),
    ({"Containers": [{"ModelDataUrl": f"{RUN}/champion/model.tar.gz"}], **TYPES}, "container 1 has no Image"),
    ({"Containers": [{"Image": IMAGE, "ModelDataUrl": f"{RUN}/champion/model.tar.gz"},
                     {"Image": IMAGE}], **TYPES}, "container 2 has no ModelDataUrl"),
])
def test_a_version_whose_package_lacks_what_serving_needs_is_refused_naming_it(
        aws, promote_fn, specification, expected):
    sm, s3, env = aws
    arn = _package(sm, s3, specification)
    serve(sm, arn)
    message = _refusal(promote_fn, sm, s3, env)
    assert f"{arn} {expected}" in message or f"{arn}'s {expected}" in message, message
    assert "nothing promoted" in message
