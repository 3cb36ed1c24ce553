"""`diagnosa run --local`, `executions` and `endpoint` on bad input: one clear line, exit status 2, nothing run."""
from __future__ import annotations

import json

import pytest

from diagnosa.cli import main


@pytest.fixture
def ws(tmp_path):
    return ["--workspace", str(tmp_path / "ws")]


def test_run_needs_curated_data_first(ws, tmp_path, capsys):
    assert main([*ws, "run", "--local"]) == 2
    err = capsys.readouterr().err
    assert "no curated dataset" in err and "`diagnosa data ingest`" in err
    assert not (tmp_path / "ws").exists()  # the run's code was uploaded to a new lake before data was looked for


@pytest.mark.parametrize("argv, message", [
    (["run"], "only --local runs here"),
    (["run", "--local", "--param", "Nope=1"], "unknown pipeline parameter(s) Nope"),
    (["run", "--local", "--param", "OrphanRecallThreshold=high"], "parameter OrphanRecallThreshold is a Float"),
    (["run", "--local", "--param", "Resampling"], "--param takes NAME=VALUE"),
    (["run", "--local", "--param", "InputDataUri=s3://diagnosa-local/curated/patients/none"],
     "parameter InputDataUri='s3://diagnosa-local/curated/patients/none' is not a curated version"),
    # The definition's own default (the dataset's prefix) named no version: Preprocess failed 6 s in.
    (["run", "--local", "--param", "InputDataUri=s3://diagnosa-local/curated/patients/"],
     "InputDataUri='s3://diagnosa-local/curated/patients/' is not a curated version (no manifest.json under it)"),
    (["run", "--local", "--families", "catboost"], "families names 'catboost', not among"),
    (["run", "--local", "--resume", "nope"], "no local execution 'nope'"),
    (["executions", "nope"], "no local execution 'nope'"),
    (["endpoint", "stop", "nope"], "no local endpoint nope"),
    # empty values from unset shell variables: refused, not read as "the default"
    (["run", "--local", "--families", ""], "--families takes a comma-separated list of families, got ''"),
    (["run", "--local", "--families", ","], "--families takes a comma-separated list of families, got ','"),
    (["run", "--local", "--families", "mlp,mlp"], "--families names mlp more than once"),
    (["run", "--local", "--resume", ""], "--resume takes an execution id (`diagnosa executions` lists them)"),
    (["executions", ""], "no local execution ''"),  # listed every execution
    (["run", "--local", "--param", "Seed=" + "9" * 100_000], "got '999999"),  # quoted clipped, on one line
    (["--lake", "", "run", "--local"], "the lake is empty or blank (--lake or DIAGNOSA_LAKE)"),
    (["--raw-lake", " ", "run", "--local"], "the lake is empty or blank (--raw-lake or DIAGNOSA_RAW_LAKE)"),
    (["--workspace", "", "executions"], "the workspace is empty or blank"),
    (["run", "--local", "--param", "Seed=1", "--param", "Seed=2"], "--param Seed given twice ('1' and '2')"),
])
def test_bad_input_is_one_line_and_nothing_runs(ws, tmp_path, capsys, argv, message):
    assert main([*ws, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and len(err) < 1000
    # Nothing written: no execution, and no lake with the pipeline's code uploaded to it (a refused run made one).
    assert not (tmp_path / "ws").exists()


def test_a_saved_definition_is_checked_before_it_runs(ws, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main([*ws, "run", "--local", "--definition", str(broken)]) == 2
    assert "cannot read the definition" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text("\n")  # json's words were "Expecting value: line 2 column 1 (char 1)"
    assert main([*ws, "run", "--local", "--definition", str(empty)]) == 2
    assert f"the definition {empty} is empty" in capsys.readouterr().err
    emr = tmp_path / "emr.json"
    emr.write_text(json.dumps({"Version": "2020-12-01", "Parameters": [],
                               "Steps": [{"Name": "Cluster", "Type": "EMR", "Arguments": {}}]}))
    assert main([*ws, "run", "--local", "--definition", str(emr)]) == 2
    assert "step 'Cluster' has type 'EMR', which the local executor does not run" in capsys.readouterr().err


FAIL = {"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "stopped"}}


@pytest.mark.parametrize("definition, message", [
    # Each was a Python traceback (exit 1), or read as something else: DependsOn "Ab" as the steps A and b.
    ({"Steps": [{**FAIL, "Name": ["Stop"]}]}, "Steps[0]: Name must be a string, got ['Stop']"),
    ({"Steps": [{**FAIL, "Arguments": []}]}, "step 'Stop': Arguments must be an object, got list"),
    ({"Steps": [{**FAIL, "DependsOn": "Ab"}]}, "step 'Stop': DependsOn must be a list of step names, got 'Ab'"),
    ({"Steps": [{**FAIL, "DependsOn": [["A"]]}]}, "DependsOn must be a list of step names"),
    ({"Parameters": "Seed", "Steps": [FAIL]}, "Parameters must be a list of parameter objects, got str"),
    ({"Parameters": [{"Name": 5, "Type": "String", "DefaultValue": "x"}], "Steps": [FAIL]},
     "Parameters[0]: Name must be a string, got 5"),
    ({"Steps": [{"Name": "Gate", "Type": "Condition", "Arguments": {"Conditions": "x", "IfSteps": [FAIL]}}]},
     "step 'Gate': Conditions must be a list of condition objects, got 'x'"),
    ({"Steps": [{"Name": "Gate", "Type": "Condition", "Arguments": {"Conditions": [], "ElseSteps": FAIL}}]},
     "step 'Gate': ElseSteps must be a list of steps"),
    ({"Steps": [{"Name": "Gate", "Type": "Condition", "Arguments": {"Conditions": [], "IfSteps": [7]}}]},
     "step 'Gate' IfSteps[0]: a step is an object with a Name and a Type, got 7"),
    # Names SageMaker's StepName refuses (CreatePipeline): a space, more than 64 characters.
    ({"Steps": [{**FAIL, "Name": "my step"}]}, "Name 'my step' must match SageMaker's StepName pattern"),
    ({"Steps": [{**FAIL, "Name": "S" * 65}]}, "Steps[0]: Name must be 1 to 64 characters, got 65"),
    # A lone surrogate (a JSON \ud800 escape) anywhere: a traceback when the execution record was written.
    ({"Steps": [{**FAIL, "Arguments": {"ErrorMessage": "\ud800"}}]},
     "Steps[0].Arguments.ErrorMessage: a string holds a lone UTF-16 surrogate"),
    ({"Steps": [{**FAIL, "Arguments": {"\udc80": "x"}}]}, "Steps[0].Arguments.<key>: a string holds a lone UTF-16"),
])
def test_a_malformed_saved_definition_is_refused_whole_before_it_runs(ws, tmp_path, capsys, definition, message):
    saved = tmp_path / "definition.json"
    saved.write_text(json.dumps(definition), encoding="utf-8")  # ensure_ascii: surrogates written as escapes
    assert main([*ws, "run", "--local", "--definition", str(saved)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert f"the definition {saved} is not a pipeline definition: " in err  # which file, of those a user keeps
    assert not (tmp_path / "ws" / "executions").exists()


def test_every_problem_of_a_saved_definition_is_named_at_once(ws, tmp_path, capsys):
    saved = tmp_path / "definition.json"
    saved.write_text(json.dumps({"Parameters": [{"Name": "a b"}], "Steps": [{**FAIL, "Name": "x y"}, 3]}))
    assert main([*ws, "run", "--local", "--definition", str(saved)]) == 2
    err = capsys.readouterr().err
    assert "Parameters[0]: Name 'a b' must match" in err and "Steps[0]: Name 'x y' must match" in err
    assert "Steps[1]: a step is an object" in err


@pytest.mark.parametrize("junk, named", [({"Steps": [1] * 100_000}, "Steps"),
                                         ({"Parameters": [1] * 100_000, "Steps": [FAIL]}, "Parameters")])
def test_a_definition_of_junk_gets_a_short_answer(ws, tmp_path, capsys, junk, named):
    # One problem per junk step made a 9 MB definition's message 200 MB (1.2 GB to build).
    saved = tmp_path / "definition.json"
    saved.write_text(json.dumps(junk))
    assert main([*ws, "run", "--local", "--definition", str(saved)]) == 2
    err = capsys.readouterr().err
    assert f"{named}[19]:" in err and f"{named}[20]" not in err
    assert "(the first 20 problems; there are more)" in err and len(err) < 3000


def test_a_fail_step_of_ones_own_is_not_called_the_recall_gate(ws, tmp_path, capsys):
    # A saved definition's own Fail step was reported as "the recall gate kept the model out of the registry".
    saved = tmp_path / "definition.json"
    saved.write_text(json.dumps({"Version": "2020-12-01", "Parameters": [], "Steps": [FAIL]}))
    assert main([*ws, "run", "--local", "--definition", str(saved)]) == 1
    out = capsys.readouterr().out
    assert "failed: stopped" in out and "the definition's Fail step Stop was reached" in out, out
    assert "recall gate" not in out and "--resume" not in out  # a resumed run would end there again


def test_a_malformed_join_fails_its_step_by_name(ws, tmp_path, capsys):
    saved = tmp_path / "definition.json"
    saved.write_text(json.dumps({"Steps": [{**FAIL, "Arguments": {"ErrorMessage": {"Std:Join": {"On": 1, "Values": 5}}}}]}))
    assert main([*ws, "run", "--local", "--definition", str(saved)]) == 1
    out = capsys.readouterr().out
    assert "step Stop: Std:Join needs On (a string) and Values (a list)" in out and "internal error" not in out, out


def test_listing_an_empty_workspace(ws, capsys):
    assert main([*ws, "executions"]) == 0
    assert "no local executions" in capsys.readouterr().out
    assert main([*ws, "endpoint", "list"]) == 0
    assert "no local endpoints" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    # names that become lake keys and local folders: checked as names, before anything is written under them
    (["run", "--local", "--dataset", "../toy"], "argument --dataset: '../toy' is not a dataset name"),
    (["run", "--local", "--dataset", ""], "argument --dataset: '' is not a dataset name"),
    (["registry", "approve", "1", "--group", "toy", "--endpoint-name", "../../x"],
     "argument --endpoint-name: '../../x' is not a SageMaker name"),
    (["registry", "list", "--group", "../x"], "argument --group: '../x' is not a SageMaker name"),
    (["serve", "--endpoint-name", "bad name!"], "argument --endpoint-name: 'bad name!' is not a SageMaker name"),
    (["feedback", "e1", "leve", "--endpoint-name", "../x"], "argument --endpoint-name: '../x' is not a SageMaker name"),
    (["monitor", "--endpoint-name", "a_b"], "argument --endpoint-name: 'a_b' is not a SageMaker name"),
    (["predict", "x.json", "--timeout", "0"], "argument --timeout: '0' is not a positive number of seconds"),
    (["predict", "x.json", "--timeout", "nan"], "argument --timeout: 'nan' is not a positive number of seconds"),
])
def test_names_and_numbers_are_checked_as_the_command_line_is_read(ws, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        main([*ws, *argv])
    assert exited.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").rglob("*.json"))


def test_an_endpoint_name_parameter_is_a_sagemaker_name_before_any_step_runs():
    from pipelines.definition import parameter_range_problems

    assert parameter_range_problems({"EndpointName": "../../x", "Seed": 3}) == [
        "parameter EndpointName must be a SageMaker name (ASCII letters, digits and inner '-', at most 63); got '../../x'"]
    assert parameter_range_problems({"EndpointName": "my-endpoint-2"}) == []


@pytest.mark.parametrize("param, message", [
    ("Reduction=bogus", "parameter Reduction must be one of ['none', 'pca', 'lda', 'both'], got 'bogus'"),
    ("Ensemble=always", "parameter Ensemble must be one of ['auto', 'never'], got 'always'"),
    ("MissingIndicators=0/1", "parameter MissingIndicators must be one of ['scaled', 'binary'], got '0/1'"),
    # Ranges SageMaker's parameter types cannot declare: each failed inside a step or at the gate before.
    ("RecallThresholdEnfermedadTerminal=1.5",
     "parameter RecallThresholdEnfermedadTerminal is a recall threshold, in [0, 1]; got 1.5"),
    ("OrphanRecallThreshold=nan", "parameter OrphanRecallThreshold is a Float (a finite decimal number, e.g. 0.8 or "
     "1e-3), got 'nan'"),
    ("OrphanRecallThreshold=-0.1", "parameter OrphanRecallThreshold is a recall threshold, in [0, 1]; got -0.1"),
    ("Seed=+3", "parameter Seed is an Integer (ASCII digits within 64 bits, e.g. 3 or -3), got '+3'"),
    ("Seed=-3", "parameter Seed must be in [0, 4294967295] (numpy's and xgboost's seeds); got -3"),
    # Enum fields of the job requests (botocore's validator leaves them to the service, at job creation).
    ("TrainingInstanceType=ml.m5.xlarg", "step Train-xgboost: parameter TrainingInstanceType='ml.m5.xlarg' gives an "
     "invalid request: Invalid value for parameter ResourceConfig.InstanceType, value: ml.m5.xlarg: not one of the "
     "service's TrainingInstanceType values; did you mean ml.m5.xlarge"),
])
def test_a_bad_parameter_value_is_refused_before_any_step_runs(tmp_path, capsys, param, message):
    from diagnosa.cli import main

    ws = ["--workspace", str(tmp_path / "ws")]
    from diagnosa.services import LOCAL_BUCKET

    # An input named outright: the run's requests are checked before the data is looked for.
    given = ["--param", f"InputDataUri=s3://{LOCAL_BUCKET}/curated/diagnosa/none/"]
    assert main([*ws, "run", "--local", "--quiet", "--param", param, *given]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count(message) == 1, "one clear error, printed once"
    # Nothing written: no execution, and no lake with the pipeline's code uploaded to it (a refused run made one).
    assert not (tmp_path / "ws").exists()


def test_resume_refuses_options_it_would_ignore(tmp_path, capsys):
    from diagnosa.cli import main

    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "run", "--local", "--resume", "20261127T183254Z-c32c2c", "--param", "Reduction=none",
                 "--families", "xgboost"]) == 2
    err = capsys.readouterr().err
    assert "--resume reruns execution 20261127T183254Z-c32c2c with its own definition and parameters" in err
    assert "--param, --families cannot change them" in err
    # --dataset was ignored without a word: the execution's own dataset was resumed.
    assert main([*ws, "run", "--local", "--resume", "20261127T183254Z-c32c2c", "--dataset", "mydata"]) == 2
    assert "--dataset cannot change them" in capsys.readouterr().err


def test_what_the_machine_refuses_is_one_line_not_a_traceback(tmp_path, capsys):
    # A workspace that is a file; a lake on s3:// without AWS credentials (no network needed: refused locally).
    (tmp_path / "afile").write_text("x")
    csv, config = tmp_path / "x.csv", tmp_path / "x.toml"
    csv.write_text("case,age,outcome\n" + "".join(f"c{i},{30 + i},{'ab'[i % 2]}\n" for i in range(6)))
    config.write_text('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n')
    assert main(["--workspace", str(tmp_path / "afile"), "data", "ingest", str(csv), "--config", str(config)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["--workspace", " ", "executions"]) == 2
    assert "the workspace is empty or blank" in capsys.readouterr().err
    import os
    from unittest import mock

    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_DEFAULT_REGION"}
    with mock.patch.dict(os.environ, {**bare, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                                      "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"},
                         clear=True):
        code = main(["--workspace", str(tmp_path / "ws"), "--lake", "s3://no-such-bucket-here/p", "data", "ingest",
                     str(csv), "--config", str(config)])
    err = capsys.readouterr().err  # no credentials; or, with a session another test left, no network
    assert code == 1 and err.startswith(("diagnosa: error: this needs AWS credentials", "diagnosa: error: AWS: "))
    assert err.count("\n") == 1
    assert "a local lake is a folder: --lake PATH" in err or err.startswith("diagnosa: error: AWS: ")


def test_a_failed_deploy_is_not_reported_as_a_version_left_unapproved(tmp_path, capsys):
    # The summary said "not deployed (ModelApprovalStatus is not Approved)" for an Approved version whose Deploy failed.
    from types import SimpleNamespace

    from diagnosa.commands.local import _report
    from diagnosa.lake import DataLake

    arn = "arn:aws:sagemaker:local:000000000000:model-package/toy/1"
    steps = {"Register": {"StepType": "RegisterModel", "StepStatus": "Succeeded", "Properties": {"ModelPackageArn": arn}},
             "Deploy": {"StepType": "Lambda", "StepStatus": "Failed", "Properties": {}}}
    record = SimpleNamespace(id="e1", status="Failed", path="x", steps=steps,
                             data={"FailureReason": "step Deploy: port 8080 is in use"})
    _report(record, DataLake.from_uri(str(tmp_path)))
    out = capsys.readouterr().out
    assert "not Approved" not in out and "failed: step Deploy: port 8080 is in use" in out
    del steps["Deploy"]  # a version the gate registered but nobody approved: the hint stays
    record.status = "Succeeded"
    _report(record, DataLake.from_uri(str(tmp_path)))
    assert "not deployed (ModelApprovalStatus is not Approved): approve it with `diagnosa registry approve 1 --group " \
           "toy`" in capsys.readouterr().out
    # A run on another port than the default (taken, as it may be again): the hint repeats it.
    _report(record, DataLake.from_uri(str(tmp_path)), port=0)
    assert "approve it with `diagnosa registry approve 1 --group toy --port 0`" in capsys.readouterr().out


def test_executions_name_the_dataset_each_trained_on_and_filter_by_it(ws, tmp_path, capsys):
    # With two datasets in a workspace their runs could not be told apart without opening each.
    def record(execution_id: str, created: str, input_uri: str) -> None:
        folder = tmp_path / "ws" / "executions" / execution_id
        folder.mkdir(parents=True)
        (folder / "execution.json").write_text(json.dumps({
            "PipelineExecutionId": execution_id, "PipelineExecutionStatus": "Succeeded", "CreationTime": created,
            "Parameters": {"InputDataUri": input_uri}, "Steps": {}}))

    record("e1", "2026-12-02T07:00:00Z", "s3://diagnosa-local/curated/pbc/6a091cce2227")
    record("e2", "2026-12-02T08:00:00Z", "s3://diagnosa-local/curated/aids_2/0f1e2d3c4b5a")
    record("e3", "2026-12-02T09:00:00Z", "s3://elsewhere/data/")
    assert main([*ws, "executions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["e3", "e2", "e1"]
    assert lines[1].endswith("aids_2 0f1e2d3c4b5a") and lines[2].endswith("pbc 6a091cce2227")
    assert lines[0].endswith("s3://elsewhere/data/")
    assert main([*ws, "executions", "--dataset", "pbc"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["e1"]
    assert main([*ws, "executions", "--dataset", "nope"]) == 0
    assert "no local executions of dataset nope" in capsys.readouterr().out


def test_a_lake_that_is_a_file_is_named(ws, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main([*ws, "--lake", str(afile), "run", "--local"]) == 2
    assert f"lake {afile} is a file, not a folder" in capsys.readouterr().err


def test_serve_shows_an_example_with_the_served_models_own_fields(tmp_path):
    """`serve` printed the cohort's example (age, sex, temperature_c, symptoms) for any model: a dataset's endpoint
    refuses it. It shows the first curated row of the version the model trained on, or no request at all."""
    from diagnosa.cli import _served_example, build_parser
    from diagnosa.services import EXAMPLE_REQUEST

    ws = str(tmp_path / "ws")
    (tmp_path / "x.csv").write_text("case,edad,sexo,outcome\n" + "".join(
        f"c{i},{40 + i},{'FM'[i % 2]},{'ab'[i % 2]}\n" for i in range(30)))
    (tmp_path / "x.toml").write_text('name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n')
    assert main(["--workspace", ws, "data", "ingest", str(tmp_path / "x.csv"), "--config", str(tmp_path / "x.toml")]) == 0
    version = json.loads((tmp_path / "ws" / "lake" / "curated" / "x" / "LATEST.json").read_text())["version"]

    def example(dataset):
        model = tmp_path / "model"
        model.mkdir(exist_ok=True)
        (model / "metadata.json").write_text(json.dumps({"dataset": dataset}))
        return _served_example(build_parser().parse_args(["--workspace", ws, "serve", "--model", str(model)]), model)

    assert example({"name": "x", "version": version}) == {"edad": 40, "sexo": "F"}
    assert example({"name": "patients", "version": "abc"}) == EXAMPLE_REQUEST
    assert example({"name": "elsewhere", "version": "abc"}) is None  # not in this lake: no example, not the cohort's
