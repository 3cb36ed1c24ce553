"""The local executor on small hand-written definitions: checks before running, order, branches, failure, resume.

The steps are real processing requests (validated against botocore) whose container command is a
few lines of Python, so each behaviour is visible in what the steps wrote.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from diagnosa.lake import DataLake
from pipelines.executor import ExecutionError, LocalExecutor, coerce_parameter, list_executions, resolve_parameters
from pipelines.registry import LocalModelRegistry

BUCKET = "test-lake"
RUN = {"Std:Join": {"On": "/", "Values": [f"s3://{BUCKET}/artifacts/runs", {"Get": "Execution.PipelineExecutionId"}]}}

# Copies every input file to the output, appending the step name; fails while a marker file exists.
SCRIPT = """
import os, pathlib, sys, time
name, marker, sleep, root = sys.argv[1], sys.argv[2], float(sys.argv[3]), pathlib.Path(sys.argv[4])
if os.path.exists(marker):
    sys.exit(f"{name}: injected failure")
out = root / "output" / "out"
out.mkdir(parents=True, exist_ok=True)
seen = sorted(p.read_text() for p in (root / "input").rglob("*.txt"))
(out / f"{name}.txt").write_text("|".join(seen + [name]))
(out / "started").write_text(str(time.time()))
print(f"{name} working", flush=True)
time.sleep(sleep)
"""


def script_file(folder: Path, text: str) -> str:
    """``text`` as a script file in ``folder``: a container argument holds at most 256 characters (the executor checks
    it, as SageMaker does), so a step's code goes in a file, as the pipeline's steps bring theirs."""
    import hashlib

    path = folder / f"step-{hashlib.sha256(text.encode()).hexdigest()[:12]}.py"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def processing(name: str, inputs: list, marker: Path, sleep: float = 0.0, **extra) -> dict:
    return processing_step(name, inputs, script_file(marker.parent, SCRIPT), [name, str(marker), str(sleep)], **extra)


def processing_step(name: str, inputs: list, script: str, arguments: list[str], **extra) -> dict:
    """A Processing step running ``python3 script *arguments /opt/ml/processing``, its inputs ``in0``, ``in1``...
    and its one output ``out`` under the run's prefix."""
    return {"Name": name, "Type": "Processing", **extra, "Arguments": {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                  "VolumeSizeInGB": 1}},
        "AppSpecification": {"ImageUri": "local", "ContainerEntrypoint": ["python3", script],
                             "ContainerArguments": [*arguments, "/opt/ml/processing"]},
        "RoleArn": "arn:aws:iam::000000000000:role/test",
        "ProcessingInputs": [{"InputName": f"in{i}", "S3Input": {
            "S3Uri": uri, "LocalPath": f"/opt/ml/processing/input/in{i}", "S3DataType": "S3Prefix",
            "S3InputMode": "File"}} for i, uri in enumerate(inputs)],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
            "S3Uri": {"Std:Join": {"On": "/", "Values": [RUN, name]}}, "LocalPath": "/opt/ml/processing/output/out",
            "S3UploadMode": "EndOfJob"}}]},
    }}


def output_of(step: str) -> dict:
    return {"Get": f"Steps.{step}.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"}


def definition(marker: Path, *, sleep: float = 0.0) -> dict:
    """seed → (left, right in parallel) → join → gate: join's result passes a threshold → ok, else Fail."""
    return {
        "Version": "2020-12-01",
        "Parameters": [{"Name": "InputUri", "Type": "String", "DefaultValue": f"s3://{BUCKET}/curated/seed"},
                       {"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5}],
        "Steps": [
            processing("Seed", [{"Get": "Parameters.InputUri"}], marker),
            processing("Left", [output_of("Seed")], marker, sleep),
            processing("Right", [output_of("Seed")], marker, sleep),
            processing("Join", [output_of("Left"), output_of("Right")], Path(f"{marker}.join"),
                       PropertyFiles=[{"PropertyFileName": "Result", "OutputName": "out", "FilePath": "score.json"}]),
            {"Name": "Gate", "Type": "Condition", "DependsOn": ["Join"], "Arguments": {
                "Conditions": [{"Type": "GreaterThanOrEqualTo", "LeftValue": {"Get": "Parameters.Threshold"},
                                "RightValue": 0.5}],
                "IfSteps": [processing("Publish", [output_of("Join")], marker)],
                "ElseSteps": [{"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": {"Std:Join": {
                    "On": " ", "Values": ["threshold", {"Get": "Parameters.Threshold"}, "is below 0.5"]}}}}]}},
        ],
    }


@pytest.fixture
def setup(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lake.put_bytes("curated/seed/seed.txt", b"seed")
    lines: list[str] = []
    executor = LocalExecutor(lake=lake, bucket=BUCKET, root=tmp_path / "executions",
                             registry=LocalModelRegistry(tmp_path / "registry"), max_parallel=2,
                             progress=lines.append, python=sys.executable)
    return executor, lake, tmp_path / "fail-marker", lines


def without_property_files(d: dict) -> dict:
    for step in d["Steps"]:
        step.pop("PropertyFiles", None)
    return d


def test_runs_in_dependency_order_with_parallel_branches(setup):
    executor, lake, marker, lines = setup
    record = executor.start(without_property_files(definition(marker, sleep=1.0)))
    assert record.status == "Succeeded", record.data.get("FailureReason")
    run = f"artifacts/runs/{record.id}"
    # Each step saw exactly what its inputs' steps wrote: the data edges were followed.
    assert lake.get_bytes(f"{run}/Join/Join.txt").decode() == "seed|Seed|Left|seed|Seed|Right|Join"
    assert lake.get_bytes(f"{run}/Publish/Publish.txt").decode() == "seed|Seed|Left|seed|Seed|Right|Join|Publish"
    steps = record.steps
    assert [steps[s]["StepStatus"] for s in ("Seed", "Left", "Right", "Join", "Gate", "Publish")] == ["Succeeded"] * 6
    assert "Stop" not in steps and record.data["Skipped"] == ["Stop"]
    # Left and Right overlapped: each started before the other ended.
    assert steps["Left"]["StartTime"] < steps["Right"]["EndTime"] and steps["Right"]["StartTime"] < steps["Left"]["EndTime"]
    # Not before both ended (timestamps have millisecond resolution: the same millisecond is possible).
    assert steps["Join"]["StartTime"] >= max(steps["Left"]["EndTime"], steps["Right"]["EndTime"])
    assert Path(steps["Join"]["RunFolder"], "job.log").is_file()
    assert any("Join" in line and "succeeded" in line for line in lines)
    assert [e["PipelineExecutionId"] for e in list_executions(executor.root)] == [record.id]


def test_a_condition_on_an_undefined_value_fails_the_gate_whatever_the_conditions_before_it(setup):
    """A JsonGet of a JSON null (a recall with no test patient) has no defined outcome on SageMaker. The gate stopped
    at its first false condition, so the same null either failed the step or was never looked at, by its order."""
    executor, _, marker, _ = setup
    for first_holds in (True, False):
        d = without_property_files(definition(marker))
        gate = next(step for step in d["Steps"] if step["Name"] == "Gate")
        gate["Arguments"]["Conditions"] = [
            {"Type": "GreaterThanOrEqualTo", "LeftValue": 0.9 if first_holds else 0.1, "RightValue": 0.5},
            {"Type": "GreaterThanOrEqualTo", "LeftValue": None, "RightValue": 0.5}]
        record = executor.start(d)
        assert record.status == "Failed" and record.steps["Gate"]["StepStatus"] == "Failed", first_holds
        assert "undefined value (JSON null" in record.steps["Gate"]["FailureReason"]
        assert "Stop" not in record.steps and "Publish" not in record.steps


def test_a_long_job_reports_itself_with_its_logs_last_line(setup):
    executor, lake, marker, lines = setup
    executor.heartbeat_seconds = 0.2
    record = executor.start(without_property_files(definition(marker, sleep=1.0)))
    assert record.status == "Succeeded", record.data.get("FailureReason")
    beats = [line for line in lines if "running for" in line]
    for step in ("Left", "Right"):  # the 1 s steps; the instant ones end before their first beat
        assert any(f" {step} " in line and f"log: {step} working" in line for line in beats), beats


def test_fail_step_ends_the_execution_with_its_message(setup):
    executor, lake, marker, _ = setup
    record = executor.start(without_property_files(definition(marker)), {"Threshold": "0.25"})
    assert record.status == "Failed"
    assert record.data["FailureReason"] == "threshold 0.25 is below 0.5"
    assert record.steps["Stop"]["StepStatus"] == "Failed" and "Publish" not in record.steps


def test_bad_input_is_refused_before_any_step_runs(setup):
    executor, lake, marker, _ = setup
    d = without_property_files(definition(marker))
    cases = [
        ({"Treshold": "0.4"}, "unknown pipeline parameter.*Treshold.*declared: InputUri, Threshold"),
        ({"Threshold": "high"}, r"parameter Threshold is a Float \(.*\), got 'high'"),
        ({"InputUri": f"s3://{BUCKET}/curated/missing"}, "step Seed: input s3://test-lake/curated/missing does not exist"),
        ({"InputUri": "s3://another-bucket/curated/seed"}, "outside the data lake"),
    ]
    for overrides, message in cases:
        with pytest.raises(ExecutionError, match=message):
            executor.start(d, overrides)
    unsupported = json.loads(json.dumps(d))
    unsupported["Steps"].append({"Name": "Emr", "Type": "EMR", "Arguments": {}})
    with pytest.raises(ExecutionError, match="step 'Emr' has type 'EMR', which the local executor does not run"):
        executor.start(unsupported)
    assert not executor.root.exists() or not any(executor.root.iterdir()), "nothing ran, nothing was recorded"
    assert lake.list("artifacts/") == []


def test_failed_step_leaves_logs_and_nothing_downstream_then_resume_reruns_from_it(setup):
    executor, lake, marker, _ = setup
    Path(f"{marker}.join").write_text("x")  # Join fails
    record = executor.start(without_property_files(definition(marker)))
    assert record.status == "Failed" and "Join: injected failure" in record.data["FailureReason"]
    assert record.steps["Join"]["StepStatus"] == "Failed"
    assert "injected failure" in Path(record.steps["Join"]["RunFolder"], "job.log").read_text()
    assert "Gate" not in record.steps and "Publish" not in record.steps
    assert not lake.list(f"artifacts/runs/{record.id}/Join/"), "a failed step writes nothing to the lake"
    before = {name: dict(step) for name, step in record.steps.items()}

    Path(f"{marker}.join").unlink()
    resumed = executor.resume(record.id)
    assert resumed.id == record.id and resumed.status == "Succeeded" and resumed.data["Attempts"] == 2
    for name in ("Seed", "Left", "Right"):  # reused, not rerun
        assert resumed.steps[name]["StartTime"] == before[name]["StartTime"]
    assert resumed.steps["Join"]["StartTime"] > before["Join"]["StartTime"]
    assert {"Gate", "Publish"} <= set(resumed.steps)
    assert Path(resumed.steps["Join"]["RunFolder"] + ".attempt1", "job.log").is_file(), "the failed attempt's log is kept"
    with pytest.raises(ExecutionError, match="already succeeded"):
        executor.resume(record.id)
    with pytest.raises(ExecutionError, match="no local execution 'nope'"):
        executor.resume("nope")


def test_property_files_feed_conditions(setup):
    executor, lake, marker, _ = setup
    d = definition(marker)
    # Join writes score.json through an extra command; the gate compares its value.
    join = next(s for s in d["Steps"] if s["Name"] == "Join")
    join["Arguments"]["AppSpecification"]["ContainerEntrypoint"] = ["python3", script_file(marker.parent, SCRIPT + (
        "\nimport json\n(out / 'score.json').write_text(json.dumps({'metrics': {'recall': 0.42}}))\n"))]
    gate = d["Steps"][-1]["Arguments"]
    gate["Conditions"] = [{"Type": "GreaterThanOrEqualTo", "LeftValue": {"Std:JsonGet": {
        "PropertyFile": {"Get": "Steps.Join.PropertyFiles.Result"}, "Path": "metrics.recall"}},
        "RightValue": {"Get": "Parameters.Threshold"}}]
    assert executor.start(d, {"Threshold": 0.4}).status == "Succeeded"
    failed = executor.start(d, {"Threshold": 0.5})
    assert failed.status == "Failed" and failed.steps["Join"]["Properties"]["PropertyFiles"] == {
        "Result": {"metrics": {"recall": 0.42}}}


def test_parameter_types_follow_the_service():
    declared = {"Parameters": [{"Name": "N", "Type": "Integer", "DefaultValue": 3},
                               {"Name": "On", "Type": "Boolean", "DefaultValue": False},
                               {"Name": "Mode", "Type": "String", "DefaultValue": "a", "EnumValues": ["a", "b"]},
                               {"Name": "Required", "Type": "String"}]}
    assert resolve_parameters(declared, {"Required": "x", "N": "7", "On": "true"}) == {
        "N": 7, "On": True, "Mode": "a", "Required": "x"}
    for overrides, message in [({}, "parameter Required has no default"),
                               ({"Required": "x", "N": "7.5"}, r"parameter N is an Integer \(ASCII digits.*\), got '7.5'"),
                               ({"Required": "x", "N": True}, "parameter N is a Integer"),
                               ({"Required": "x", "Mode": "c"}, "must be one of"),
                               ({"Required": "x", "On": "yes"}, "parameter On is a Boolean")]:
        with pytest.raises(ExecutionError, match=message):
            resolve_parameters(declared, overrides)
    assert coerce_parameter("F", "Float", 1) == 1.0


@pytest.mark.parametrize("kind, text", [
    ("Integer", "٣"), ("Integer", "+3"), ("Integer", "1_000"), ("Integer", "3.0"), ("Integer", str(2**63)),
    ("Integer", "9" * 5000), ("Float", "nan"), ("Float", "inf"), ("Float", "-Infinity"), ("Float", "1e999"),
    ("Float", "٠.٥"), ("Float", "0_5"), ("Float", "0x1p-1")])
def test_numbers_as_text_are_plain_ascii_decimals(kind, text):
    # int() and float() take Arabic-Indic digits, '+3', '1_000', 'nan' and 'inf': `--param Seed=٣` ran with seed 3.
    with pytest.raises(ExecutionError, match=rf"parameter P is an? {kind} \(.*\), got '") as refused:
        coerce_parameter("P", kind, text)
    assert len(str(refused.value)) < 200, "a long value is quoted clipped, not whole"


@pytest.mark.parametrize("kind, text, value", [
    ("Integer", "-3", -3), ("Integer", " 7 ", 7), ("Integer", str(2**63 - 1), 2**63 - 1), ("Float", ".5", 0.5),
    ("Float", "1.", 1.0), ("Float", "-0.25", -0.25), ("Float", "1E-3", 0.001), ("Float", "3", 3.0)])
def test_plain_decimal_numbers_are_read(kind, text, value):
    assert coerce_parameter("P", kind, text) == value


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400])
def test_a_float_default_that_is_not_finite_is_refused(value):
    # A definition's DefaultValue (JSON): NaN and infinity passed; an integer past a float raised OverflowError.
    with pytest.raises(ExecutionError, match="parameter F is a Float, got"):
        coerce_parameter("F", "Float", value)


def test_errors_quote_long_parameter_values_clipped():
    declared = {"Parameters": [{"Name": "Mode", "Type": "String", "DefaultValue": "a", "EnumValues": ["a", "b"]}]}
    for overrides in ({"Mode": "x" * 100_000}, {"M" * 100_000: "a"}):
        with pytest.raises(ExecutionError) as refused:
            resolve_parameters(declared, overrides)
        assert "xxx…" in str(refused.value) or "MMM…" in str(refused.value)
        assert len(str(refused.value)) < 300


def test_step_cache_reuses_an_earlier_run_with_the_same_inputs(setup):
    executor, lake, marker, _ = setup
    d = without_property_files(definition(marker))
    for step in d["Steps"][:3]:
        step["CacheConfig"] = {"Enabled": True, "ExpireAfter": "P30D"}
    first = executor.start(d)
    second = executor.start(d)
    assert first.status == second.status == "Succeeded"
    for name in ("Seed", "Left", "Right"):  # same code and inputs: the earlier outputs are reused
        assert second.steps[name]["CacheHitResult"] == {"SourcePipelineExecutionArn": first.data["PipelineExecutionArn"]}
        assert second.steps[name]["Properties"] == first.steps[name]["Properties"]
    assert "CacheHitResult" not in second.steps["Join"], "steps without CacheConfig always run"
    assert not lake.list(f"artifacts/runs/{second.id}/Seed/")
    # A changed input (parameter) misses; deleted outputs miss too.
    lake.put_bytes("curated/seed2/seed.txt", b"other")
    third = executor.start(d, {"InputUri": f"s3://{BUCKET}/curated/seed2"})
    assert "CacheHitResult" not in third.steps["Seed"]
    for key in lake.list(f"artifacts/runs/{first.id}/Left/"):
        lake.delete(key)
    fourth = executor.start(d)
    assert "CacheHitResult" in fourth.steps["Seed"] and "CacheHitResult" not in fourth.steps["Left"]
    uncached = LocalExecutor(lake=lake, bucket=BUCKET, root=executor.root, registry=executor.registry,
                             progress=lambda line: None, use_cache=False).start(d)
    assert not any("CacheHitResult" in step for step in uncached.steps.values())
    # SageMaker scopes the cache to one pipeline: the same steps under another pipeline's name run again.
    other = executor.start(d, pipeline_name="diagnosa-other")
    assert not any("CacheHitResult" in step for step in other.steps.values())
    assert "CacheHitResult" in executor.start(d, pipeline_name="diagnosa-other").steps["Seed"]


def test_each_step_is_announced_when_it_starts_and_ends(setup):
    executor, lake, marker, _ = setup
    events = []
    executor.on_step = events.append
    d = without_property_files(definition(marker))
    d["Steps"][0]["CacheConfig"] = {"Enabled": True, "ExpireAfter": "P30D"}
    first = executor.start(d)
    assert first.status == "Succeeded"
    by_step = {}
    for event in events:
        by_step.setdefault(event.step, []).append(event)
    assert set(by_step) == {"Seed", "Left", "Right", "Join", "Gate", "Publish"}
    for name, (started, ended) in by_step.items():
        assert (started.status, ended.status) == ("Executing", "Succeeded")
        assert started.log == Path(first.steps[name]["RunFolder"], "job.log")  # where a display reads the phase
    assert "Seed working" in by_step["Seed"][0].log.read_text()
    events.clear()
    marker.write_text("fail")  # every step but Join fails now; Seed comes from the cache
    second = executor.start(d)
    assert second.status == "Failed"
    assert [(e.step, e.status) for e in events[:2]] == [("Seed", "Executing"), ("Seed", "Reused")]
    assert f"{first.id} (cache)" in events[1].note
    failed = [e for e in events if e.status == "Failed"]
    assert failed and all("injected failure" in e.note for e in failed)


def test_a_killed_execution_can_be_resumed_but_a_running_one_cannot(setup):
    import os
    import subprocess

    executor, lake, marker, _ = setup
    Path(f"{marker}.join").write_text("x")
    record = executor.start(without_property_files(definition(marker)))
    Path(f"{marker}.join").unlink()
    # As if the process running it had been killed mid-step: status never closed.
    data = json.loads(record.path.read_text())
    data["PipelineExecutionStatus"] = "Executing"
    data["ExecutorPid"] = os.getppid()  # a live process that is not this one
    record.path.write_text(json.dumps(data))
    with pytest.raises(ExecutionError, match=r"still executing \(process \d+\)"):
        executor.resume(record.id)
    gone = subprocess.Popen(["true"])
    gone.wait()
    data["ExecutorPid"] = gone.pid  # that process has ended
    record.path.write_text(json.dumps(data))
    resumed = executor.resume(record.id)
    assert resumed.status == "Succeeded" and resumed.data["ExecutorPid"] == os.getpid()


def test_the_last_log_line_is_read_from_the_tail_and_shortened(tmp_path):
    from pipelines.local_jobs import last_line

    log = tmp_path / "job.log"
    log.write_text("x" * 10_000 + "\nphase fit: 12.0 s\n\n  \n", encoding="utf-8")
    assert last_line(log) == "phase fit: 12.0 s"
    log.write_text("y" * 500, encoding="utf-8")
    assert last_line(log, limit=20) == "y" * 19 + "…"
    assert last_line(tmp_path / "missing.log") == ""


def test_bad_instance_counts_are_refused_before_any_step_runs_naming_the_parameter(setup):
    """Instance counts are Integer parameters (the service has no range for them): every job request is checked
    with the run's values against the service model before anything runs, and the error names the parameter."""
    executor, lake, marker, _ = setup
    d = without_property_files(definition(marker))
    d["Parameters"].append({"Name": "ProcessingInstanceCount", "Type": "Integer", "DefaultValue": 1})
    for step in d["Steps"][1:3]:  # Left and Right run on ProcessingInstanceCount instances
        step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = {
            "Get": "Parameters.ProcessingInstanceCount"}
    cases = [("0", r"step Left: parameter ProcessingInstanceCount=0 gives an invalid request: .*"
                   r"ProcessingResources.ClusterConfig.InstanceCount.*must be 1 to 100, got 0; step Right: "),
             ("101", "ProcessingInstanceCount=101 .*must be 1 to 100, got 101"),
             ("-3", "ProcessingInstanceCount=-3"),
             ("2.5", r"parameter ProcessingInstanceCount is an Integer \(.*\), got '2.5'")]
    for value, message in cases:
        with pytest.raises(ExecutionError, match=message):
            executor.start(d, {"ProcessingInstanceCount": value})
    assert not executor.root.exists() or not any(executor.root.iterdir()), "nothing ran, nothing was recorded"
    assert lake.list("artifacts/") == []
    _, parameters = executor.preflight(d, {"ProcessingInstanceCount": "100"})  # the service's most is fine
    assert parameters["ProcessingInstanceCount"] == 100


def test_an_instance_count_the_local_executor_cannot_place_is_refused_before_any_step_runs(setup):
    """The service takes 1,000,000 training instances as a request; here each is a process with an address of one
    loopback block (at most 254)."""
    executor, lake, marker, _ = setup
    d = without_property_files(definition(marker))
    d["Parameters"].append({"Name": "TrainingInstanceCount", "Type": "Integer", "DefaultValue": 1})
    with pytest.raises(ExecutionError, match="parameter TrainingInstanceCount is 1000000: the local executor runs each "
                                             "instance as a process on this machine, at most 254"):
        executor.start(d, {"TrainingInstanceCount": "1000000"})
    assert executor.preflight(d, {"TrainingInstanceCount": "254"})[1]["TrainingInstanceCount"] == 254


@pytest.mark.parametrize("name, value, message", [
    ("TrainingInstanceCount", "0", "a training job's instance count must be at least 1, got 0"),
    ("TrainingInstanceCount", "-5", "a training job's instance count must be at least 1, got -5"),
    ("ProcessingInstanceCount", "101", "a processing job's instance count must be 1 to 100, got 101"),
])
def test_a_bad_instance_count_no_step_reads_is_refused_too(setup, name, value, message):
    # TrainingInstanceCount is read by Train-xgboost only: with other families a 0 was accepted, ignored silently
    # and recorded as the run's value, while the same 0 with xgboost was refused.
    executor, lake, marker, _ = setup
    d = without_property_files(definition(marker))
    d["Parameters"] += [{"Name": "ProcessingInstanceCount", "Type": "Integer", "DefaultValue": 1},
                        {"Name": "TrainingInstanceCount", "Type": "Integer", "DefaultValue": 1}]
    with pytest.raises(ExecutionError, match=rf"^parameter {name}={value}: {message} \(refused though no step of "
                                             r"this run reads it\)$"):
        executor.start(d, {name: value})
    assert not executor.root.exists() or not any(executor.root.iterdir()), "nothing ran, nothing was recorded"
    assert executor.preflight(d, {name: "1"})[1][name] == 1


def test_enum_fields_of_a_request_are_held_to_the_service_models_values():
    """botocore's validator checks types and required members, not enum values: a bad instance type, an enum inside
    a list, or one inside a map would pass it and fail at job creation on the service."""
    from pipelines.service_model import request_problems

    request = {"ProcessingJobName": "p", "RoleArn": "arn:aws:iam::111122223333:role/r",
               "AppSpecification": {"ImageUri": "image"},
               "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                         "VolumeSizeInGB": 30}},
               "ProcessingInputs": [{"InputName": "a", "S3Input": {"S3Uri": "s3://b/k", "LocalPath": "/opt/ml/x",
                                                                   "S3DataType": "S3Prefix", "S3InputMode": "File"}}]}
    assert request_problems("CreateProcessingJob", request) is None
    request["ProcessingResources"]["ClusterConfig"]["InstanceType"] = "ml.bogus"
    request["ProcessingInputs"][0]["S3Input"]["S3InputMode"] = "Stream"
    import botocore.session

    types = botocore.session.get_session().get_service_model("sagemaker").shape_for("ProcessingInstanceType").enum
    problems = sorted(request_problems("CreateProcessingJob", request).splitlines())
    assert problems == [
        "Invalid value for parameter ProcessingInputs[0].S3Input.S3InputMode, value: Stream: not one of the service's "
        "ProcessingS3InputMode values (2 valid values, e.g. Pipe)",
        "Invalid value for parameter ProcessingResources.ClusterConfig.InstanceType, value: ml.bogus: not one of the "
        f"service's ProcessingInstanceType values ({len(types)} valid values, e.g. {types[0]})"]
    request["ProcessingResources"]["ClusterConfig"]["InstanceType"] = "ml.m5.xlarg"
    assert "value: ml.m5.xlarg: not one of the service's ProcessingInstanceType values; did you mean ml.m5.xlarge, " \
        in request_problems("CreateProcessingJob", request)


def test_lengths_over_the_service_models_maximum_are_problems():
    """botocore's validator checks a length's minimum only: a container argument over 256 characters (Evaluate's
    thresholds of 16 labels), over 100 arguments, or an environment variable's name over its maximum passed it and
    would be refused when SageMaker creates the job, after the steps before it have run."""
    from pipelines.service_model import request_problems

    request = {"ProcessingJobName": "p", "RoleArn": "arn:aws:iam::111122223333:role/r",
               "AppSpecification": {"ImageUri": "image", "ContainerArguments": ["a" * 256]},
               "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                         "VolumeSizeInGB": 30}}, "Environment": {"K" * 256: "v"}}
    assert request_problems("CreateProcessingJob", request) is None
    request["AppSpecification"]["ContainerArguments"] = ["a" * 257] + ["b"] * 100
    request["Environment"] = {"K" * 257: "v"}
    assert sorted(request_problems("CreateProcessingJob", request).splitlines()) == [
        "Invalid length for parameter AppSpecification.ContainerArguments, value: 101, valid max length: 100",
        "Invalid length for parameter AppSpecification.ContainerArguments[0], value: 257, valid max length: 256",
        f"Invalid length for parameter Environment<{'K' * 257}>, value: 257, valid max length: 256"]


def _interrupting(name: str, inputs: list, marker: Path) -> dict:
    """A step whose job does what Ctrl-C does to the command running the pipeline (SIGINT to that process), then
    ends well."""
    import os

    step = processing(name, inputs, marker)
    step["Arguments"]["AppSpecification"]["ContainerEntrypoint"] = ["python3", script_file(marker.parent, (
        "import os, pathlib, signal, sys, time\n"
        "out = pathlib.Path(sys.argv[1]) / 'output' / 'out'\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        f"(out / '{name}.txt').write_text('{name}')\n"
        f"os.kill({os.getpid()}, signal.SIGINT)\n"
        "time.sleep(0.5)\n"))]
    step["Arguments"]["AppSpecification"]["ContainerArguments"] = ["/opt/ml/processing"]
    return step


@pytest.mark.parametrize("interrupted_by", ["First", "Last"])
def test_an_interrupt_stops_what_is_left_and_one_after_the_last_step_stops_nothing(setup, interrupted_by):
    # Ctrl-C during the last step (the Deploy of a run) let it end, then recorded the run as Stopped, "stopped
    # before the end", with every step succeeded; --resume only flipped it to Succeeded.
    executor, _, marker, lines = setup
    first = (_interrupting if interrupted_by == "First" else processing)("First", [{"Get": "Parameters.InputUri"}],
                                                                          marker)
    last = (_interrupting if interrupted_by == "Last" else processing)("Last", [output_of("First")], marker)
    pipeline = {"Version": "2020-12-01", "Steps": [first, last],
                "Parameters": [{"Name": "InputUri", "Type": "String", "DefaultValue": f"s3://{BUCKET}/curated/seed"}]}
    try:
        record = executor.start(pipeline)
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped the executor")
    assert any(line.startswith("interrupted") for line in lines)
    if interrupted_by == "Last":
        assert record.status == "Succeeded" and "FailureReason" not in record.data
        assert [record.steps[s]["StepStatus"] for s in ("First", "Last")] == ["Succeeded"] * 2
    else:
        assert (record.status, record.data["FailureReason"]) == ("Stopped", "interrupted")
        assert "Last" not in record.steps  # not started once interrupted
        resumed = executor.resume(record.id)
        assert resumed.status == "Succeeded", resumed.data.get("FailureReason")
        assert resumed.steps["Last"]["StepStatus"] == "Succeeded"


def test_a_failed_execution_whose_record_was_damaged_is_not_resumed_and_is_listed_as_damaged(setup):
    # A truncated execution.json: resume was a JSONDecodeError traceback, and the listing left the execution out.
    from pipelines.executor import DAMAGED, DamagedExecution

    executor, lake, marker, lines = setup
    marker.write_text("fail")
    record = executor.start(without_property_files(definition(marker)))
    assert record.status == "Failed"
    record.path.write_text(record.path.read_text()[:40])
    with pytest.raises(DamagedExecution, match=f"execution {record.id}: its record {record.path} is damaged "
                                               r"\(not JSON: .*\): it cannot be shown or resumed"):
        executor.resume(record.id)
    [listed] = list_executions(executor.root)
    assert (listed["PipelineExecutionId"], listed["PipelineExecutionStatus"]) == (record.id, DAMAGED)
    record.path.write_text(json.dumps({"PipelineExecutionId": record.id, "PipelineExecutionStatus": "Failed"}))
    with pytest.raises(ExecutionError, match=r"is damaged \(no CreationTime\)"):
        executor.resume(record.id)


def test_an_environment_without_the_step_pins_is_refused_before_any_step_runs(setup, monkeypatch, tmp_path):
    # Installed from a wheel with pip's own resolution (fonttools 4.69.1 where the lock pins 4.68.0), the run started
    # and Preprocess failed on pip's "No matching distribution found": a local job installs nothing.
    from importlib.metadata import version

    import pipelines.executor as executor_module
    from pipelines.local_jobs import unmet_pins

    numpy = version("numpy")
    assert unmet_pins(f"numpy=={numpy} \\\n    --hash=sha256:ab\n# via x\n") == []
    assert unmet_pins("numpy==0.0.1 \\\n    --hash=sha256:ab\nno-such-package-here==1.0\n") == [
        f"numpy==0.0.1 (installed: {numpy})", "no-such-package-here==1.0 (installed: not installed)"]
    executor, lake, marker, _ = setup
    lock = tmp_path / "steps-lock.txt"
    lock.write_text(f"numpy=={numpy}\nfonttools==0.0.1\n", encoding="utf-8")
    monkeypatch.setattr(executor_module, "step_lock", lambda root: lock)
    with pytest.raises(ExecutionError, match=r"does not hold the step pins every job installs .*fonttools==0\.0\.1 "
                                             r"\(installed: .*\)\. Install them \(pip install fonttools==0\.0\.1\)"):
        executor.start(without_property_files(definition(marker)))
    assert not executor.root.exists() or not any(executor.root.iterdir()), "nothing ran, nothing was recorded"
