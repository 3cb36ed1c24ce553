"""The operations the interfaces share (diagnosa/services.py), called directly: what a local run trains on,
what it refuses before any step, and where a local workspace's runs may go."""
from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from diagnosa.data.ingest import ingest_csv
from diagnosa.lake import DataLake
from diagnosa.services import LocalWorkspace, ServiceError, curated_manifest, latest_input, plan_local_run

# The shape of the real definition's input parameter, without building the definition (the SDK's ~5 s).
DEFINITION = {"Version": "2020-12-01", "Steps": [],
              "Parameters": [{"Name": "InputDataUri", "Type": "String", "DefaultValue": "s3://diagnosa-local/curated/tiny/"},
                             {"Name": "Resampling", "Type": "String", "DefaultValue": "none"}]}


@pytest.fixture
def lake(tmp_path):
    return DataLake.from_uri(str(tmp_path / "lake"))


def ingest_tiny(lake, folder, rows=8) -> str:
    csv, config = folder / "tiny.csv", folder / "tiny.toml"
    csv.write_text("case,score,outcome\n" + "".join(f"c{i},{i},{'ab'[i % 2]}\n" for i in range(rows)), encoding="utf-8")
    config.write_text('name = "tiny"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n', encoding="utf-8")
    return ingest_csv(lake, csv, config).version


def test_a_run_trains_on_the_latest_curated_version_unless_told_otherwise(lake, tmp_path):
    ingest_tiny(lake, tmp_path, rows=6)
    latest = ingest_tiny(lake, tmp_path, rows=8)
    plan = plan_local_run(lake, dataset="tiny", overrides={"Resampling": "smote"}, definition=DEFINITION)
    assert plan.overrides == {"Resampling": "smote", "InputDataUri": f"s3://diagnosa-local/curated/tiny/{latest}"}
    assert plan.overrides["InputDataUri"] == latest_input(lake, "tiny", "diagnosa-local")
    assert plan.manifest == curated_manifest(lake, "tiny") and plan.manifest["version"] == latest
    given = "s3://elsewhere/curated/tiny/v1"
    plan = plan_local_run(lake, dataset="tiny", overrides={"InputDataUri": given}, definition=DEFINITION)
    assert plan.overrides == {"InputDataUri": given} and plan.manifest is None  # not this lake's: no manifest to read


def test_a_run_is_refused_before_any_step(lake, tmp_path):
    with pytest.raises(ServiceError, match="no curated dataset 'tiny' in .*: ingest it first"):
        plan_local_run(lake, dataset="tiny", definition=DEFINITION)
    ingest_tiny(lake, tmp_path)
    with pytest.raises(ServiceError, match=r"unknown pipeline parameter\(s\) Resampeling"):
        plan_local_run(lake, dataset="tiny", overrides={"Resampeling": "smote"}, definition=DEFINITION)


def test_local_runs_and_endpoints_need_a_lake_folder(tmp_path, lake):
    with mock_aws():
        s3 = DataLake.from_uri("s3://bucket/prefix", s3_client=boto3.client("s3", region_name="eu-west-1"))
        with pytest.raises(ServiceError, match="local lake folder; for s3:// use `diagnosa pipeline upsert`"):
            LocalWorkspace(tmp_path / "ws", s3)
    local = LocalWorkspace(tmp_path / "ws", lake)
    assert local.in_service() == [] and local.endpoints().root == tmp_path / "ws" / "endpoints"


def test_an_endpoint_serves_the_version_it_was_deployed_from_not_its_cached_twin():
    # A fully cached re-run registers a second version with the same model file: the registry marked both as
    # serving, and the monitor took the twin's baselines.
    from diagnosa.services import serves

    def package(version: int) -> dict:
        return {"ModelPackageArn": f"arn:aws:sagemaker:local:000000000000:model-package/pbc/{version}",
                "InferenceSpecification": {"Containers": [{"ModelDataUrl": "s3://lake/runs/x/model.tar.gz"}]}}

    deployed = {"EndpointName": "pbc", "ModelDataUrl": "s3://lake/runs/x/model.tar.gz",
                "ModelPackageArn": package(2)["ModelPackageArn"]}
    assert serves(deployed, package(2)) and not serves(deployed, package(3))
    from_a_file = {k: v for k, v in deployed.items() if k != "ModelPackageArn"}  # `diagnosa serve`: no version
    assert serves(from_a_file, package(2)) and serves(from_a_file, package(3))
    assert not serves({**from_a_file, "ModelDataUrl": "s3://lake/other.tar.gz"}, package(2))


def test_ingest_refuses_a_label_too_long_for_its_gate_parameter_before_anything_is_written(tmp_path, capsys):
    """`diagnosa data ingest` asks label_naming_problem first: a label whose parameter name SageMaker would refuse
    stops ingestion naming the label and the limit, and nothing reaches the lake."""
    from diagnosa.cli import main

    long = "muy" + "γ" * 45  # 48 characters, spelt 228 in ASCII (U+hex per Greek letter)
    (tmp_path / "x.csv").write_text("case,age,outcome\n" + "".join(
        f"c{i},{30 + i},{label}\n" for i, label in enumerate(["leve"] * 3 + [long] * 3)), encoding="utf-8")
    (tmp_path / "x.toml").write_text(f'name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = ["leve", "{long}"]\n',
                                     encoding="utf-8")
    code = main(["--workspace", str(tmp_path / "ws"), "data", "ingest", str(tmp_path / "x.csv"),
                 "--config", str(tmp_path / "x.toml")])
    err = capsys.readouterr().err
    assert code == 2 and "label 'muyγγ" in err and "at most 200" in err and "Nothing was written" in err, err
    assert not (tmp_path / "ws" / "lake" / "raw" / "x").exists()
    assert not list((tmp_path / "ws" / "lake").rglob("*.csv")) and not list((tmp_path / "ws" / "lake").rglob("*.parquet"))


@pytest.mark.parametrize("config, said", [
    ('labels = ["leve", "recall threshold"]\nslice_column = "recall_threshold"\n',
     "the slice 'recall_threshold' and a label both map to the parameter name RecallThresholdRecallThreshold"),
    ('labels = ["leve", "grave ' + "😷 " * 60 + '"]\n', "are longer than 100 characters"),
], ids=["label-and-slice", "label-of-emoji"])
def test_ingest_refuses_a_config_the_pipeline_could_not_be_built_for_before_anything_is_written(tmp_path, capsys,
                                                                                                config, said):
    # A label and the slice mapping to one gate parameter were refused by the first run, after ingestion; a label's
    # emoji, spaces and '/' did not count towards its length: 90 labels of 1,000 characters made a 1.16 MB template.
    from diagnosa.cli import main

    (tmp_path / "x.csv").write_text("case,age,recall_threshold,outcome\n" + "".join(
        f"c{i},{30 + i},{'true' if i % 2 else 'false'},{'leve' if i < 4 else 'x'}\n" for i in range(8)), encoding="utf-8")
    (tmp_path / "x.toml").write_text('name = "x"\nid_column = "case"\ntarget = "outcome"\n' + config, encoding="utf-8")
    code = main(["--workspace", str(tmp_path / "ws"), "data", "ingest", str(tmp_path / "x.csv"),
                 "--config", str(tmp_path / "x.toml")])
    err = capsys.readouterr().err
    assert code == 2 and said in err, err
    assert not list((tmp_path / "ws" / "lake").rglob("*.csv")) and not list((tmp_path / "ws" / "lake").rglob("*.parquet"))


def test_ingest_refuses_more_labels_than_the_pipeline_takes_before_anything_is_written(tmp_path, capsys):
    # 91 labels, each with its 3 rows, were ingested and refused only by the first run's definition build (the Evaluate
    # job's container arguments); a config of 300,000 labels ran for over 10 minutes (a quadratic name check).
    from diagnosa.cli import main

    labels = [f"clase{i}" for i in range(91)]
    (tmp_path / "x.csv").write_text("case,age,outcome\n" + "".join(
        f"c{i}-{j},{30 + j},{label}\n" for i, label in enumerate(labels) for j in range(3)), encoding="utf-8")
    (tmp_path / "x.toml").write_text(f'name = "x"\nid_column = "case"\ntarget = "outcome"\nlabels = {labels}\n'
                                     .replace("'", '"'), encoding="utf-8")
    code = main(["--workspace", str(tmp_path / "ws"), "data", "ingest", str(tmp_path / "x.csv"),
                 "--config", str(tmp_path / "x.toml")])
    err = capsys.readouterr().err
    assert code == 2 and "91 labels: the pipeline takes at most 90" in err and "Nothing was written" in err, err
    assert not list((tmp_path / "ws" / "lake").rglob("*.csv")) and not list((tmp_path / "ws" / "lake").rglob("*.parquet"))


def test_two_labels_of_one_parameter_name_are_both_named():
    from pipelines.definition import parameter_names

    many = [f"L{i}" for i in range(80)]
    assert list(parameter_names(many).values()) == [f"RecallThresholdL{i}" for i in range(80)]
    with pytest.raises(ValueError, match="labels 'Muy grave' and 'muy-grave' both map to the parameter name "
                                         "RecallThresholdMuyGrave"):
        parameter_names([*many, "Muy grave", "muy-grave"])


def test_the_baselines_of_the_served_version_are_its_folders_in_this_lake(tmp_path, lake):
    # The monitor's rule, from the command into the service layer, by the lake mapping the jobs use: a baseline URI of
    # another bucket became the path <lake>/s3:/other/... (the prefix was removed by hand, when it was there).
    from pipelines.registry import LocalModelRegistry

    local = LocalWorkspace(tmp_path / "ws", lake)
    registry = LocalModelRegistry(tmp_path / "ws" / "registry")

    def register(statistics: str, predictions: str) -> str:
        return registry.create_model_package(
            ModelPackageGroupName="diagnosa",
            InferenceSpecification={"Containers": [{"Image": "local/sklearn",
                                                    "ModelDataUrl": "s3://diagnosa-local/artifacts/m/model.tar.gz"}],
                                    "SupportedContentTypes": ["application/json"],
                                    "SupportedResponseMIMETypes": ["application/json"]},
            ModelMetrics={"ModelDataQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": statistics}},
                          "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": predictions}}},
        )["ModelPackageArn"]

    arn = register("s3://diagnosa-local/artifacts/runs/r1/baseline/statistics.json",
                   "s3://diagnosa-local/artifacts/runs/r1/evaluation/prediction_baseline.json")
    assert local.served_baselines({"ModelPackageArn": arn}) == (arn, [
        tmp_path / "lake" / "artifacts/runs/r1/baseline", tmp_path / "lake" / "artifacts/runs/r1/evaluation"])
    assert local.served_baselines({"ModelPackageArn": arn + "0"}) is None  # no version serves it
    other = register("s3://other-bucket/runs/r2/baseline/statistics.json",
                     "s3://diagnosa-local/artifacts/runs/r2/evaluation/prediction_baseline.json")
    with pytest.raises(ServiceError, match=r"baselines of .*/2: s3://other-bucket/runs/r2/baseline/statistics.json is "
                                           r"outside the data lake"):
        local.served_baselines({"ModelPackageArn": other})
