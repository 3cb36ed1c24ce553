"""The stack's functions run as Lambda runs them: the synthesized template's code asset, handler, runtime and
variables, loaded and answered by awslambdaric (the runtime AWS's python3.x images run), AWS at a moto server.

The other function tests call ``handler(event)`` in their own process; Lambda's runtime does more between the event
and the invoker: it imports the handler by the template's name from the asset's folder, encodes the result with its
own JSON encoder (on python3.12 and later with ``ensure_ascii=False``, so a lone surrogate in a result cannot be sent:
the runtime ended, and Lambda retried the event), and turns an exception into an error document."""
from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest
from deploy_env import MONITOR_ENV, REGION, RETRAIN_ENV
from lambda_functions import RUNTIME, create_pipeline
from lambda_runtime import LambdaFunction
from moto import mock_aws


def _functions(cloud, stack_name: str, cfn_text) -> dict[str, tuple[Path, str, str, dict[str, str]]]:
    """The stage's functions by name (``retrain``, …): code folder in the cloud assembly, handler, runtime, variables
    (tokens as the template writes them)."""
    [stack] = [s for s in cloud.stacks_recursively if s.stack_name == stack_name]
    prefix = "diagnosa-" + stack_name.removeprefix("Diagnosa-") + "-"
    found = {}
    for resource in json.loads(Path(stack.template_full_path).read_text())["Resources"].values():
        props = resource["Properties"]
        name = props.get("FunctionName")
        if resource["Type"] != "AWS::Lambda::Function" or not isinstance(name, str):
            continue  # CDK's own (the bucket deployment's), unnamed
        code = Path(cloud.directory) / ("asset." + props["Code"]["S3Key"].removesuffix(".zip"))
        variables = {k: cfn_text(v) for k, v in props.get("Environment", {}).get("Variables", {}).items()}
        found[name.removeprefix(prefix)] = (code, props["Handler"], props["Runtime"], variables)
    return found


@pytest.fixture(scope="module")
def functions(assembly, delivery_assembly, cfn_text):
    """Every function of the stack: the dev stage's, and the promote function of a stage promoting from another."""
    promoting = _functions(delivery_assembly[1], "Diagnosa-prod", cfn_text)
    return {**_functions(assembly[1], "Diagnosa-dev", cfn_text), "promote": promoting["promote"]}


@pytest.fixture
def moto_server():
    """A moto server sharing this process's moto state: what the function's process calls as AWS."""
    from moto.server import ThreadedMotoServer

    with mock_aws():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
        server.stop()


@pytest.fixture
def run_function(functions, moto_server, tmp_path):
    started = []

    def start(name: str, variables: dict[str, str]) -> LambdaFunction:
        code, handler, runtime, declared = functions[name]
        assert set(variables) == set(declared), f"{name}: the test's variables are not the stack's"
        function = LambdaFunction(code, handler, runtime, {**variables, **moto_server}, tmp_path)
        started.append(function)
        return function

    yield start
    for function in started:
        function.close()


RETRAIN_VARIABLES = {k: v for k, v in RETRAIN_ENV.items() if k != "AWS_REGION"}  # the stack's
MONITOR_VARIABLES = {k: v for k, v in MONITOR_ENV.items() if k != "AWS_REGION"}


def _lake() -> None:
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in ("lake", "raw"):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="lake", Key="curated/patients/LATEST.json",
                  Body=json.dumps({"version": "d1e44cbc09b6", "manifest": "curated/patients/d1e44cbc09b6/manifest.json"}))
    create_pipeline(boto3.client("sagemaker", region_name=REGION), "diagnosa-dev")


def test_a_manual_retraining_whose_reason_holds_lone_surrogates_is_answered(run_function):
    """``aws lambda invoke --payload '{"reason": "… \\ud800"}'``: the execution starts, and the invoker hears so."""
    _lake()
    retrain = run_function("retrain", RETRAIN_VARIABLES)
    answer = retrain.invoke(json.loads('{"reason": "nuevo lote \\ud800 y \\udfff", "parameters": {}}'))
    assert answer.outcome == "response", answer
    result = answer.json()
    assert result["reason"] == "nuevo lote \\ud800 y \\udfff"
    assert len(boto3.client("sagemaker", region_name=REGION).list_pipeline_executions(
        PipelineName="diagnosa-dev")["PipelineExecutionSummaries"]) == 1
    assert retrain.process is not None and retrain.process.poll() is None  # the same runtime takes the next event


def test_every_function_of_the_stack_loads_from_its_asset_and_refuses_an_event_that_is_no_object(functions,
                                                                                             run_function):
    """The template's handler name, imported from the asset's folder by Lambda's loader; an event that is no JSON
    object (a manual invocation's payload) comes back as the function's own refusal, and the same runtime answers the
    next event. The endpoint-resources function took a list for its daily drift report and a string holding
    "RequestType" for CloudFormation's request (a TypeError)."""
    assert set(functions) == {"deploy", "endpoint-resources", "retrain", "monitor", "promote"}
    for name, (_, _, runtime, variables) in functions.items():
        assert runtime == RUNTIME, f"{name}: tests/lambda_functions.py encodes answers as {RUNTIME} does"
        function = run_function(name, {k: "x" for k in variables})
        for event in (["RequestType"], "RequestType"):
            answer = function.invoke(event)
            assert answer.outcome == "error", (name, event, answer)
            document = answer.json()
            assert document["errorType"] == "Refused" and "object" in document["errorMessage"], (name, document)
        assert function.process is not None and function.process.poll() is None


@pytest.mark.parametrize("event", [
    pytest.param(b'{"detail-type": "x\\ud800", "detail": {"\\udfff": "\\ud800"}, "reason": "\\ud800"}', id="surrogates"),
    pytest.param(b'{"detail-type": "' + b"\\ud800" * 200_000 + b'"}', id="200k-surrogates"),
    pytest.param(b'{"RequestType": "Delete\\ud800", "ResourceProperties": {"\\ud800": 1}}', id="custom-resource"),
])
def test_an_event_of_lone_surrogates_gets_an_answer_the_invoker_can_read(functions, run_function, event):
    """Whatever each function makes of it (a refusal, an error, a result), the runtime sends it: no answer the
    runtime cannot encode, which ended it (the invoker told Runtime.ExitError, an asynchronous event retried)."""
    _lake()
    for name, (_, _, _, variables) in functions.items():
        given = RETRAIN_VARIABLES if name == "retrain" else {k: "x" for k in variables}
        function = run_function(name, given)
        answer = function.invoke(event)
        assert answer.outcome in ("response", "error"), (name, answer)
        assert len(answer.body) < 100_000 and answer.json() is not None, name


def _scheduled_events(cloud, cfn_text) -> dict[str, object]:
    """What each schedule rule of the dev stage sends its function (by function name), as EventBridge makes it: the
    target's Input, or its InputTransformer's template filled from a scheduled event; the template's parameters at
    their defaults."""
    [stack] = [s for s in cloud.stacks_recursively if s.stack_name == "Diagnosa-dev"]
    template = json.loads(Path(stack.template_full_path).read_text())
    resources, defaults = template["Resources"], {k: str(p.get("Default", "")) for k, p in template["Parameters"].items()}

    def text(value) -> str:
        return re.sub(r"<Ref:(\w+)>", lambda m: defaults[m[1]], cfn_text(value))

    scheduled = {"id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": "Scheduled Event", "source": "aws.events"}
    found = {}
    for rule in resources.values():
        if rule["Type"] != "AWS::Events::Rule" or "ScheduleExpression" not in rule["Properties"]:
            continue
        for target in rule["Properties"]["Targets"]:
            name = resources[target["Arn"]["Fn::GetAtt"][0]]["Properties"].get("FunctionName")
            if "Input" in target:
                found[name] = json.loads(text(target["Input"]))
            elif "InputTransformer" in target:
                transformer = target["InputTransformer"]
                filled = text(transformer["InputTemplate"])
                for key, path in transformer["InputPathsMap"].items():  # a string goes in quoted, as EventBridge does
                    filled = filled.replace(f"<{key}>", json.dumps(scheduled[path.removeprefix("$.")]))
                found[name] = json.loads(filled)
    return found


def test_what_each_schedule_sends_its_function_starts_its_run(assembly, cfn_text, run_function):
    """The schedules' inputs (the template's) are what the functions take: each field known, the run started."""
    events = _scheduled_events(assembly[1], cfn_text)
    assert set(events) == {"diagnosa-dev-monitor", "diagnosa-dev-retrain", "diagnosa-dev-endpoint-resources"}
    _lake()
    s3 = boto3.client("s3", region_name=REGION)
    for name in ("data/statistics.json", "data/constraints.json"):  # a model serving since January, with traffic
        s3.put_object(Bucket="lake", Key=f"artifacts/monitoring/diagnosa-dev/baseline/{name}", Body=b"{}",
                      Metadata={"model-package": "arn:pkg/1", "serving-since": "2026-01-01T00:00:00Z"})
    s3.put_object(Bucket="lake", Key="capture/diagnosa-dev/AllTraffic/2026/01/15/07/x.jsonl", Body=b"{}\n")
    monitored = run_function("monitor", MONITOR_VARIABLES).invoke(events["diagnosa-dev-monitor"])
    assert monitored.outcome == "response" and monitored.json()["status"] == "started", monitored
    retrained = run_function("retrain", RETRAIN_VARIABLES).invoke(events["diagnosa-dev-retrain"])
    assert retrained.outcome == "response" and retrained.json()["reason"] == "schedule", retrained
    assert "execution" in retrained.json()
