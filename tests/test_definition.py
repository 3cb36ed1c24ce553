"""The pipeline definition: reproducible, valid request by request, gated per class, upsertable."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from diagnosa.labels import CATEGORIES
from diagnosa.lake import DataLake
from pipelines.definition import (
    DEFAULT_FAMILIES,
    PipelineSettings,
    build_pipeline,
    class_parameter,
    parameter_from_text,
    parameter_range_problems,
    validate_definition,
)
from pipelines.graph import build_graph, order
from pipelines.staging import stage_code

SNAPSHOT = Path(__file__).parent / "snapshots" / "pipeline-definition.json"
ROLE = "arn:aws:iam::123456789012:role/diagnosa-pipeline"


@pytest.fixture(scope="module")
def aws():
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="diagnosa-lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        staged = stage_code(DataLake.from_uri("s3://diagnosa-lake", s3_client=s3))
        from sagemaker.core.workflow.pipeline_context import PipelineSession

        session = PipelineSession(boto_session=boto3.Session(region_name="eu-west-1"), default_bucket="diagnosa-lake")
        settings = PipelineSettings(bucket="diagnosa-lake", role_arn=ROLE, code_sha256=staged.sha256,
                                    code_uri=f"s3://diagnosa-lake/{staged.key}")
        yield settings, session, staged


@pytest.fixture(scope="module")
def definition(aws):
    settings, session, _ = aws
    return build_pipeline(settings, session).definition()


def test_same_code_and_settings_give_byte_identical_json(aws, definition):
    settings, session, _ = aws
    assert build_pipeline(settings, session).definition() == definition


def test_snapshot(aws, definition):
    # The code hash changes with every commit; everything else must match the reviewed snapshot.
    text = json.dumps(json.loads(definition), indent=1, ensure_ascii=False, sort_keys=True)
    text = text.replace(aws[2].sha256, "<code-sha>").replace(aws[2].sha256[:16], "<code-sha>")
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == SNAPSHOT.read_text(encoding="utf-8"), "run with UPDATE_SNAPSHOTS=1 after reviewing the diff"


def test_every_request_fits_botocore(definition):
    report = validate_definition(json.loads(definition))
    assert set(report) == {"Preprocess", "Transform", "Train-mlp", "Train-logistic_regression", "Train-xgboost",
                           "Train-gradient_boosting", "Select", "Evaluate", "Register", "CreateModel", "EndpointConfig",
                           "Deploy"}
    assert report == {name: None for name in report}, report


def test_a_broken_request_is_reported():
    broken = {"Parameters": [], "Steps": [{"Name": "P", "Type": "Processing", "Arguments": {
        "AppSpecification": {"ImageUri": "i"}, "RoleArn": "short",
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": "1", "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 30}}}}]}
    problems = validate_definition(broken)["P"]
    assert "Invalid length for parameter RoleArn" in problems and "InstanceCount" in problems


def test_shape_parallel_training_and_gate(definition):
    d = json.loads(definition)
    waves = order(build_graph(d))
    assert waves[:5] == [["Preprocess"], ["Transform"],
                         ["Train-gradient_boosting", "Train-logistic_regression", "Train-mlp", "Train-xgboost"],
                         ["Select"], ["Evaluate"]]
    gate = next(s for s in d["Steps"] if s["Name"] == "RecallGate")
    train = next(s for s in d["Steps"] if s["Name"] == "Train-xgboost")
    conditions = gate["Arguments"]["Conditions"]
    assert len(conditions) == len(CATEGORIES) + 2
    for label, condition in zip(CATEGORIES, conditions):
        assert condition["RightValue"] == {"Get": f"Parameters.{class_parameter(label)}"}
        assert label in condition["LeftValue"]["Std:JsonGet"]["Path"]
    assert conditions[-2]["RightValue"] == {"Get": "Parameters.OrphanRecallThreshold"}
    # Orphan diseases held out of training: their own condition (issue 14).
    assert conditions[-1]["RightValue"] == {"Get": "Parameters.UnseenOrphanRecallThreshold"}
    assert conditions[-1]["LeftValue"]["Std:JsonGet"]["Path"] == "diagnosa.slices.orphan_unseen.macro_recall"
    [fail] = gate["Arguments"]["ElseSteps"]
    assert fail["Arguments"]["ErrorMessage"]["Std:JsonGet"]["Path"] == "gate.message"
    register, deploy = gate["Arguments"]["IfSteps"]
    assert register["Arguments"]["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert register["Arguments"]["ModelMetrics"]["ModelQuality"]["Statistics"]["ContentType"] == "application/json"
    assert register["Arguments"]["CustomerMetadataProperties"]["diagnosa:execution"] == {
        "Get": "Execution.PipelineExecutionId"}
    # Deployment only for an approved registration, after it; data capture on; the endpoint named by a parameter.
    assert deploy["DependsOn"] == ["Register"] and deploy["Arguments"]["Conditions"] == [
        {"Type": "Equals", "LeftValue": {"Get": "Parameters.ModelApprovalStatus"}, "RightValue": "Approved"}]
    model, config, endpoint = deploy["Arguments"]["IfSteps"]
    container = model["Arguments"]["PrimaryContainer"]
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "serve_endpoint.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"  # the artifact's own code
    # Python 3.11 images: the pinned libraries install on them (the scikit-learn 1.2-1 image's Python is older).
    assert container["Image"].endswith("/pytorch-inference:2.5-cpu-py311")
    assert register["Arguments"]["InferenceSpecification"]["Containers"][0]["Image"] == container["Image"]
    assert train["Arguments"]["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.5-cpu-py311")
    capture = config["Arguments"]["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["DestinationS3Uri"] == "s3://diagnosa-lake/capture"
    assert config["Arguments"]["ProductionVariants"][0]["ModelName"] == {"Get": "Steps.CreateModel.ModelName"}
    assert endpoint["Arguments"]["EndpointName"] == {"Get": "Parameters.EndpointName"}
    # Every processing job gets the container root explicitly, so executors can map it.
    for step in d["Steps"]:
        if step["Type"] == "Processing":
            assert step["Arguments"]["AppSpecification"]["ContainerArguments"][:2] == ["--base-dir", "/opt/ml/processing"]
    train = next(s for s in d["Steps"] if s["Name"] == "Train-xgboost")
    assert train["Arguments"]["HyperParameters"]["family"] == "xgboost"
    assert train["RetryPolicies"] and train["CacheConfig"]["Enabled"] is True
    assert train["Arguments"]["OutputDataConfig"]["S3OutputPath"]["Std:Join"]["Values"][-2:] == ["models", "xgboost"]
    # Instance types and counts are run-time parameters; the counts reach only what spreads: the Transform
    # step (its curated input sharded by key) and XGBoost's training (its train channel sharded by key).
    assert train["Arguments"]["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    counts = {p["Name"]: p for p in d["Parameters"] if p["Name"].endswith("InstanceCount")}
    assert counts == {name: {"Name": name, "Type": "Integer", "DefaultValue": 1}
                      for name in ("ProcessingInstanceCount", "TrainingInstanceCount")}
    for step in d["Steps"]:
        if step["Type"] == "Processing":
            cluster = step["Arguments"]["ProcessingResources"]["ClusterConfig"]
            assert cluster["InstanceType"] == {"Get": "Parameters.ProcessingInstanceType"}
            assert cluster["InstanceCount"] == ({"Get": "Parameters.ProcessingInstanceCount"}
                                                if step["Name"] == "Transform" else 1), step["Name"]
            sharded = {i["InputName"] for i in step["Arguments"]["ProcessingInputs"]
                       if i["S3Input"].get("S3DataDistributionType") == "ShardedByS3Key"}
            assert sharded == ({"curated"} if step["Name"] == "Transform" else set()), step["Name"]
        if step["Type"] == "Training":
            spread = step["Name"] == "Train-xgboost"
            assert step["Arguments"]["ResourceConfig"]["InstanceCount"] == (
                {"Get": "Parameters.TrainingInstanceCount"} if spread else 1), step["Name"]
            distribution = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3DataDistributionType"]
                            for c in step["Arguments"]["InputDataConfig"]}
            assert distribution == {"train": "ShardedByS3Key" if spread else "FullyReplicated",
                                    "validation": "FullyReplicated", "transformer": "FullyReplicated"}


def test_upsert_and_start_with_overrides(aws):
    settings, session, _ = aws
    pipeline = build_pipeline(settings, session)
    first = pipeline.upsert(role_arn=ROLE)["PipelineArn"]
    assert pipeline.upsert(role_arn=ROLE)["PipelineArn"] == first
    execution = pipeline.start(parameters={"Resampling": "smote", class_parameter("ENFERMEDAD TERMINAL"): 0.9})
    described = boto3.client("sagemaker", region_name="eu-west-1").describe_pipeline_execution(
        PipelineExecutionArn=execution.arn)
    assert described["PipelineArn"] == first


@pytest.mark.parametrize("change, message", [
    ({"families": ("catboost",)}, "families names 'catboost', not among logistic_regression"),
    ({"families": ("mlp", "mlp")}, "families names 'mlp' more than once"),
    ({"orphan_threshold": 1.5}, "must be in \\[0, 1\\]"),
    ({"code_uri": "s3://elsewhere/code.tar.gz"}, "must be in the pipeline's bucket"),
    ({"kms_key": "alias/diagnosa"}, "kms_key 'alias/diagnosa' must be a KMS key ARN"),
    ({"processing_instance_count": 0}, "processing_instance_count \\(the default of ProcessingInstanceCount\\) must be "
                                       "1 to 100, got 0"),
    ({"processing_instance_count": 101}, "must be 1 to 100, got 101"),
    ({"training_instance_count": 0}, "training_instance_count \\(the default of TrainingInstanceCount\\) must be at "
                                     "least 1, got 0"),
    ({"training_instance_count": 2.0}, "must be a whole number, got 2.0"),
    # "$" matches before a final "\n": each of these passed, and would have been sent to SageMaker as written.
    ({"endpoint_name": "diagnosa\n"}, "endpoint_name 'diagnosa\\\\n' is not a SageMaker name"),
    ({"endpoint_name": "e" * 51}, "endpoint_name 'e{51}' is 51 characters, at most 50"),
    ({"name": "diagnosa\n"}, "name 'diagnosa\\\\n' is not a SageMaker name"),
    ({"kms_key": "arn:aws:kms:eu-west-1:123456789012:key/k1\n"}, "kms_key '.*k1\\\\n' must be a KMS key ARN"),
    ({"subnets": ("subnet-1\n",), "security_group_ids": ("sg-1",)}, "subnet id\\(s\\) \\['subnet-1\\\\n'\\]"),
    ({"subnets": ("subnet-1",), "security_group_ids": ("sg-1\n",)}, "security group id\\(s\\) \\['sg-1\\\\n'\\]"),
    ({"job_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/jobs:1\n"}, "job_image '.*:1\\\\n' must be an ECR"),
    # \d took any digit: an account of Arabic-Indic digits passed as an image's.
    ({"serving_image": "١٢٣٤٥٦٧٨٩٠١٢.dkr.ecr.eu-west-1.amazonaws.com/serve:1"}, "serving_image '.*' must be an ECR"),
    ({"kms_key": "arn:aws:kms:eu-west-1:١٢٣٤٥٦٧٨٩٠١٢:key/k1"}, "must be a KMS key ARN"),
    ({"training_max_runtime": 0}, "training_max_runtime must be a whole number of seconds from 1 to 2,419,200"),
    ({"training_max_runtime": 28 * 86400 + 1}, "from 1 to 2,419,200 \\(28 days, SageMaker's limit\\), got 2419201"),
    ({"training_max_runtime": 3600.0}, "training_max_runtime must be a whole number of seconds"),
])
def test_bad_settings_fail_before_building(aws, change, message):
    from dataclasses import replace

    settings, session, _ = aws
    with pytest.raises(ValueError, match=message):
        build_pipeline(replace(settings, **change), session)


def test_every_training_job_has_the_settings_time_limit_not_the_sdks_hour(aws, definition):
    # ModelTrainer writes MaxRuntimeInSeconds 3600 when given none: a search on a hospital's table that ran past an
    # hour was stopped by SageMaker, no reason of Diagnosa's, where the local run had no limit at all.
    from dataclasses import replace

    settings, session, _ = aws
    limits = {s["Name"]: s["Arguments"]["StoppingCondition"] for s in json.loads(definition)["Steps"]
              if s["Type"] == "Training"}
    assert len(limits) == len(settings.families) and set(map(str, limits.values())) == {"{'MaxRuntimeInSeconds': 86400}"}
    longer = json.loads(build_pipeline(replace(settings, training_max_runtime=7 * 86400), session).definition())
    assert {s["Arguments"]["StoppingCondition"]["MaxRuntimeInSeconds"] for s in longer["Steps"]
            if s["Type"] == "Training"} == {604800}


def test_deploy_steps_can_be_left_to_the_approval_event(aws):
    from dataclasses import replace

    settings, session, _ = aws
    d = json.loads(build_pipeline(replace(settings, deploy_steps=False), session).definition())
    gate = next(s for s in d["Steps"] if s["Name"] == "RecallGate")
    assert [s["Name"] for s in gate["Arguments"]["IfSteps"]] == ["Register"]
    assert "EndpointName" not in {p["Name"] for p in d["Parameters"]}
    assert set(validate_definition(d)) == {"Preprocess", "Transform", "Train-mlp", "Train-logistic_regression",
                                           "Train-xgboost", "Train-gradient_boosting", "Select", "Evaluate",
                                           "Register"}


def test_a_kms_key_encrypts_every_jobs_volume_and_outputs(aws, definition):
    from dataclasses import replace

    settings, session, _ = aws
    key = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    d = json.loads(build_pipeline(replace(settings, kms_key=key), session).definition())
    assert validate_definition(d) == {name: None for name in validate_definition(d)}
    jobs = {s["Name"]: s["Arguments"] for s in d["Steps"] if s["Type"] in ("Processing", "Training")}
    assert len(jobs) == 8  # Preprocess, Transform, four trainings, Select, Evaluate
    for name, job in jobs.items():
        volume = job["ProcessingResources"]["ClusterConfig"] if "ProcessingResources" in job else job["ResourceConfig"]
        output = job.get("ProcessingOutputConfig") or job["OutputDataConfig"]
        assert (volume["VolumeKmsKeyId"], output["KmsKeyId"]) == (key, key), name
    assert "KmsKeyId" not in definition  # without a key: the account's default encryption, no field at all


def test_class_parameter_names_are_ascii_and_keep_the_built_in_ones():
    from pipelines.definition import slice_parameter

    assert [class_parameter(label) for label in CATEGORIES] == [
        "RecallThresholdNoEnfermo", "RecallThresholdEnfermedadLeve", "RecallThresholdEnfermedadAguda",
        "RecallThresholdEnfermedadCronica", "RecallThresholdEnfermedadTerminal"]
    assert [class_parameter(x) for x in ("1", "4.0", "stage II", "non-small cell", "Ödem", "肺癌")] == [
        "RecallThreshold1", "RecallThreshold40", "RecallThresholdStageIi", "RecallThresholdNonSmallCell",
        "RecallThresholdOdem", "RecallThresholdU80bau764c"]
    assert slice_parameter("orphan") == "OrphanRecallThreshold" and slice_parameter("advanced") == "AdvancedRecallThreshold"
    with pytest.raises(ValueError, match="no letter or digit"):
        class_parameter("—")


def test_a_label_too_long_for_a_parameter_name_is_refused_naming_it_and_the_limit():
    """A 303-character label named a 318-character parameter (SageMaker: at most 256) and an Evaluate argument over
    256: CreatePipeline, or Evaluate after every training job, would have refused it. CJK letters count five each."""
    from pipelines.definition import MAX_LABEL_NAME, parameter_names

    long = "muy" + "grave" * 60
    with pytest.raises(ValueError, match=rf"label 'muygrave\S* is spelt 303 ASCII characters long .*at most "
                                         rf"{MAX_LABEL_NAME} \(SageMaker takes parameter names and job arguments of up "
                                         rf"to 256 characters\); shorten it"):
        parameter_names(("leve", "grave", long))
    with pytest.raises(ValueError, match="spelt 205 ASCII characters"):
        parameter_names(("a", "肺" * 41))
    fits = "x" * MAX_LABEL_NAME
    name = parameter_names(("a", fits))[fits]
    argument = f"--recall-threshold={fits}={repr(1.0000000000000002e-308)}"
    assert len(name) <= 256 and len(argument) <= 256  # botocore's PipelineParameterName and ContainerArgument


def test_a_definition_for_another_dataset(aws):
    from dataclasses import replace

    from pipelines.definition import dataset_settings

    settings, session, _ = aws
    d = json.loads(build_pipeline(replace(settings, **dataset_settings("pbc_study", ("1", "2", "3", "4"), None)),
                                  session).definition())
    parameters = {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]}
    assert [n for n in parameters if n.startswith("RecallThreshold")] == [
        "RecallThreshold1", "RecallThreshold2", "RecallThreshold3", "RecallThreshold4"]
    assert "OrphanRecallThreshold" not in parameters and parameters["Seed"] == 0
    assert parameters["InputDataUri"] == "s3://diagnosa-lake/curated/pbc_study/"
    assert parameters["EndpointName"] == "pbc-study"
    steps = {s["Name"]: s for s in d["Steps"]}
    gate = steps["RecallGate"]
    conditions = gate["Arguments"]["Conditions"]
    assert [c["RightValue"]["Get"] for c in conditions] == [f"Parameters.RecallThreshold{i}" for i in range(1, 5)]
    assert [c["LeftValue"]["Std:JsonGet"]["Path"] for c in conditions] == [
        f"diagnosa.per_class['{i}'].recall" for i in range(1, 5)]
    assert gate["Arguments"]["IfSteps"][0]["Arguments"]["ModelPackageGroupName"] == "pbc-study"
    evaluate_args = steps["Evaluate"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert "--orphan-threshold" not in evaluate_args and "--slice-threshold" not in evaluate_args
    # The seed reaches the split and every model.
    preprocess_args = steps["Preprocess"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    seed = preprocess_args[preprocess_args.index("--seed") + 1]
    assert seed == {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.Seed"}]}}
    for name in ("Train-mlp", "Train-logistic_regression", "Train-xgboost"):
        assert steps[name]["Arguments"]["HyperParameters"]["seed"] == seed
    # Whether Select may ship the candidates' vote: a parameter with its allowed values, handed to the job.
    [ensemble] = [p for p in d["Parameters"] if p["Name"] == "Ensemble"]
    assert ensemble["DefaultValue"] == "auto" and ensemble["EnumValues"] == ["auto", "never"]
    select_args = steps["Select"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert select_args[select_args.index("--ensemble") + 1] == {"Get": "Parameters.Ensemble"}
    # How the numbers' missing-value indicators are scaled: a parameter with the feature library's choices,
    # handed to Preprocess (whose fitted pipeline Transform and serving then apply).
    [indicators] = [p for p in d["Parameters"] if p["Name"] == "MissingIndicators"]
    assert indicators["DefaultValue"] == "scaled" and indicators["EnumValues"] == ["scaled", "binary"]
    assert preprocess_args[preprocess_args.index("--missing-indicators") + 1] == {"Get": "Parameters.MissingIndicators"}
    assert validate_definition(d) == {name: None for name in validate_definition(d)}

    # A dataset with a named slice: one slice condition, its own parameter, the evaluation told its name.
    d = json.loads(build_pipeline(replace(settings, **dataset_settings("pbc", ("1", "2"), "advanced")),
                                  session).definition())
    assert "AdvancedRecallThreshold" in {p["Name"] for p in d["Parameters"]}
    steps = {s["Name"]: s for s in d["Steps"]}
    last = steps["RecallGate"]["Arguments"]["Conditions"][-1]
    assert last["LeftValue"]["Std:JsonGet"]["Path"] == "diagnosa.slices.advanced.macro_recall"
    assert last["RightValue"] == {"Get": "Parameters.AdvancedRecallThreshold"}
    evaluate_args = steps["Evaluate"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert evaluate_args[evaluate_args.index("--slice-threshold") + 1] == {"Std:Join": {"On": "", "Values": [
        "advanced=", {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.AdvancedRecallThreshold"}]}}]}}


@pytest.mark.parametrize("change, message", [
    ({"labels": ("a b", "c", "A-B")}, "labels 'a b' and 'A-B' both map to the parameter name RecallThresholdAB"),
    ({"labels": ("x", "x")}, "at least two distinct values"),
    ({"labels": tuple(f"c{i}" for i in range(91))}, "91 labels: the pipeline takes at most 90"),
    ({"labels": ("a", "b"), "recall_thresholds": {"a": 0.5}}, "needs exactly the labels \\['a', 'b'\\]"),
    ({"labels": ("a", "b"), "slice_name": "bad-name"}, "slice name 'bad-name'"),
    ({"dataset": "my data"}, "dataset name 'my data'"),
    ({"model_package_group": "my_group"}, "model_package_group 'my_group' is not a SageMaker name"),
    ({"dataset": "aids\n"}, "dataset name 'aids\\\\n' must be"),
    ({"labels": ("a", "b"), "slice_name": "orphan\n"}, "slice name 'orphan\\\\n' must start"),
])
def test_bad_dataset_settings_fail_before_building(aws, change, message):
    from dataclasses import replace

    settings, session, _ = aws
    with pytest.raises(ValueError, match=message):
        build_pipeline(replace(settings, **change), session)


def test_on_baked_images_every_job_runs_network_isolated_with_its_code_brought_by_sagemaker(aws, definition):
    from dataclasses import replace

    settings, session, _ = aws
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-dev-images:27f74652296f2703"
    d = json.loads(build_pipeline(replace(settings, job_image=image, serving_image=image), session).definition())
    assert validate_definition(d) == {name: None for name in validate_definition(d)}
    jobs = {s["Name"]: s["Arguments"] for s in d["Steps"] if s["Type"] in ("Processing", "Training")}
    processing = {name: job for name, job in jobs.items() if "ProcessingResources" in job}
    assert sorted(processing) == ["Evaluate", "Preprocess", "Select", "Transform"]
    for name, job in processing.items():
        assert job["NetworkConfig"] == {"EnableNetworkIsolation": True}, name
        # runproc.sh and the code bundle are processing inputs SageMaker downloads, not fetched by the container
        assert {i["InputName"] for i in job["ProcessingInputs"]} >= {"code", "entrypoint"}, name
    trainings = {name: job for name, job in jobs.items() if name.startswith("Train-")}
    assert len(trainings) == len(DEFAULT_FAMILIES)
    for name, job in trainings.items():
        assert job["EnableNetworkIsolation"] is True, name
        [code] = [c for c in job["InputDataConfig"] if c["ChannelName"] == "code"]
        assert code["DataSource"]["S3DataSource"]["S3Uri"] == settings.code_uri, name
        assert job["HyperParameters"]["sagemaker_submit_directory"] == "/opt/ml/input/data/code/sourcedir.tar.gz", name
    # On AWS's images the containers install the pins from the package index: no isolation, the toolkit fetches s3://
    assert "EnableNetworkIsolation" not in definition and '"ChannelName": "code"' not in definition


def test_each_gate_check_of_the_evaluation_names_its_parameter():
    from pipelines.definition import gate_parameter

    assert gate_parameter("recall[ENFERMEDAD CRÓNICA]") == "RecallThresholdEnfermedadCronica"
    assert gate_parameter("recall[4]") == "RecallThreshold4"
    assert gate_parameter("orphan_macro_recall") == "OrphanRecallThreshold"
    assert gate_parameter("orphan_unseen_macro_recall") == "UnseenOrphanRecallThreshold"
    assert gate_parameter("precision[4]") is None


def test_an_endpoint_name_parameter_with_a_trailing_newline_is_out_of_range():
    # "$" matches before a final "\n": --param EndpointName=$'diagnosa\n' passed, to be sent to SageMaker as written.
    assert parameter_range_problems({"EndpointName": "diagnosa"}) == []
    assert parameter_range_problems({"EndpointName": "diagnosa\n"}) == [
        "parameter EndpointName must be a SageMaker name (ASCII letters, digits and inner '-', at most 63); "
        "got 'diagnosa\\n'"]


def test_an_endpoint_name_leaves_room_for_the_execution_id_in_its_endpoint_configs_name(definition):
    """The endpoint config is named <EndpointName>-<execution id>, at most 63 characters; SageMaker's ids are 12
    characters. A 51-character name passed every check before any step ran and failed at EndpointConfig, after
    every job and the registration (the check filled in a 9-character id)."""
    from diagnosa.data.schema import ENDPOINT_NAME_MAX
    from pipelines.definition import parameter_problems
    from pipelines.executor import resolve_parameters

    d = json.loads(definition)
    assert ENDPOINT_NAME_MAX == 50
    longest = "e" * ENDPOINT_NAME_MAX
    assert parameter_range_problems({"EndpointName": longest}) == []
    assert parameter_problems(d, resolve_parameters(d, {"EndpointName": longest})) == []
    [problem] = parameter_range_problems({"EndpointName": longest + "e"})
    assert "51 characters, at most 50" in problem and "<EndpointName>-<execution id>" in problem
    # botocore's model of the request, with an id of SageMaker's length, says the same
    defaults = {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]}
    [problem] = parameter_problems(d, defaults | {"EndpointName": longest + "e"})
    assert problem.startswith("step EndpointConfig: parameter EndpointName=") and "EndpointConfigName" in problem


def test_a_local_execution_id_has_sagemakers_form_and_a_taken_one_is_drawn_again(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from pipelines import executor

    now = datetime(2026, 12, 4, 22, 50, 59, tzinfo=timezone.utc)
    ids = {executor.new_execution_id(now) for _ in range(50)}
    assert all(re.fullmatch(r"2612042250[a-z0-9]{2}", i) for i in ids) and len(ids) > 1
    drawn = iter(["2612042250aa", "2612042250aa", "2612042250ab"])
    monkeypatch.setattr(executor, "new_execution_id", lambda: next(drawn))
    assert executor._new_execution_folder(tmp_path, None).name == "2612042250aa"
    assert executor._new_execution_folder(tmp_path, None).name == "2612042250ab"  # the same minute drew a taken id
    with pytest.raises(FileExistsError):
        executor._new_execution_folder(tmp_path, "2612042250aa")  # a named execution is never renamed


@pytest.mark.parametrize("kind, text", [
    # str.strip() took Unicode spaces, control characters and a final newline around a number.
    ("Float", "\xa00.5\u2003"), ("Float", " 0.5\n"), ("Float", "0.5\x1c"), ("Float", "\u20280.5"),
    ("Integer", "3\x1f"), ("Integer", "\xa03\u3000"), ("Integer", "\t3"), ("Boolean", " false\n"),
    ("Boolean", "\xa0true")])
def test_a_parameter_value_is_read_as_written_with_only_ascii_spaces_around(kind, text):
    with pytest.raises(ValueError, match=rf"^parameter P is an? {kind} \(.*\), got {re.escape(repr(text))}$"):
        parameter_from_text("P", kind, text)


@pytest.mark.parametrize("kind, text, value", [
    ("Integer", " 7 ", 7), ("Float", " 0.5 ", 0.5), ("Boolean", " True ", True), ("Integer", "-0", 0),
    # Leading zeros are read alike by both kinds (int() refused 4,301 digits and more: "not within 64 bits").
    ("Integer", "0" * 5000 + "1", 1), ("Float", "0" * 5000 + "1", 1.0), ("Integer", "-" + "0" * 20, 0),
    ("Float", "1e-310", 1e-310), ("Float", "0e-999", 0.0), ("Float", "0.000e-500", 0.0)])
def test_a_parameter_value_written_plainly_is_read(kind, text, value):
    read = parameter_from_text("P", kind, text)
    assert read == value and type(read) is type(value)


@pytest.mark.parametrize("text", ["-0", "-0.0", "-.0", "-0e5"])
def test_a_negative_zero_float_is_recorded_as_zero(text):
    read = parameter_from_text("P", "Float", text)
    assert read == 0.0 and str(read) == "0.0"


@pytest.mark.parametrize("kind, text, why", [
    ("Float", "1e-400", ": too close to 0 for a float (it would be read as 0)"),
    ("Float", "-2e-324", ": too close to 0 for a float (it would be read as 0)"),
    ("Float", "1e-" + "9" * 5000, ": too close to 0 for a float (it would be read as 0)"),
    ("Float", "1e309", ": too large for a float (it would be read as infinity)"),
    ("Integer", "1" * 4301, ": outside 64 bits (4301 digits)"),
    ("Integer", str(2**63), ": outside 64 bits (19 digits)"),
    ("Integer", "-" + "0" * 5000 + str(2**64), ": outside 64 bits (20 digits)")])
def test_a_number_that_would_not_be_the_one_written_is_refused_saying_why(kind, text, why):
    with pytest.raises(ValueError) as refused:
        parameter_from_text("P", kind, text)
    message = str(refused.value)
    assert message.startswith(f"parameter P is a{'n' if kind == 'Integer' else ''} {kind} (") and message.endswith(why)
    assert len(message) < 250, "the value is quoted clipped"
