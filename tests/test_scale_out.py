"""Scale-out through the local executor: the pipeline definition run with ProcessingInstanceCount=2 and
TrainingInstanceCount=2 — the Transform step as two processes, each with its share of the curated parts, and
XGBoost trained by two processes joined by xgboost's collective — beside the same run on one instance each.

The small cohort (4,000 patients in four parts of 1,000) keeps this to a few minutes: XGBoost is the only
candidate and tries one configuration (150 trees), and the validation split selects with 20 rows per class (the smallest
class has ~38 validation rows; the pipeline's default of 50 would send it to cross-validation, which trains on
one instance only).
"""
from __future__ import annotations

import json
import re
import tarfile

import numpy as np
import pytest

from diagnosa.model import DiagnosaModel, unpack_model
from diagnosa.services import LOCAL_BUCKET, local_definition
from pipelines.executor import open_local
from processing.split import read_split

pytestmark = pytest.mark.slow
LOW = {"RecallThresholdNoEnfermo": "0.3", "RecallThresholdEnfermedadLeve": "0.3", "RecallThresholdEnfermedadAguda": "0.3",
       "RecallThresholdEnfermedadCronica": "0.3", "RecallThresholdEnfermedadTerminal": "0.3",
       "OrphanRecallThreshold": "0.1", "UnseenOrphanRecallThreshold": "0.0"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, seed_lake):
    root = tmp_path_factory.mktemp("scale-out")
    lake, prefix = seed_lake(root)
    executor = open_local(root, lake, LOCAL_BUCKET, progress=lambda line: None, use_cache=False)
    definition = local_definition(lake, ("xgboost",))
    for step in definition["Steps"]:
        if step["Name"] == "Train-xgboost":
            step["Arguments"]["HyperParameters"].update({"holdout_min_class": "20", "search_max_configs": "1",
                                                         "n_estimators": "150"})
    records = {}
    for count in (1, 2):
        records[count] = executor.start(definition, {
            "InputDataUri": f"s3://{LOCAL_BUCKET}/{prefix}", **LOW,
            "ProcessingInstanceCount": str(count), "TrainingInstanceCount": str(count)})
    return {"root": root, "lake": lake, "executor": executor, "records": records}


def fetched(runs, uri: str, target):
    runs["lake"].get_file(uri.removeprefix(f"s3://{LOCAL_BUCKET}/"), target)
    return target


def test_two_instances_transform_and_train_and_register(runs):
    record = runs["records"][2]
    assert record.status == "Succeeded", record.data.get("FailureReason")
    # Two hosts per scaled step, each with its own container root and logs; the others on one.
    for step in ("Transform", "Train-xgboost"):
        folder = runs["root"] / "executions" / record.id / "steps" / step
        hosts = sorted(p.name for p in folder.iterdir() if (p / "opt-ml").is_dir())
        assert len(hosts) == 2, (step, hosts)
        config = json.loads(next((folder / hosts[1] / "opt-ml").rglob("resourceconfig.json")).read_text())
        assert config["current_host"] == hosts[1] and config["hosts"] == hosts
    train = runs["root"] / "executions" / record.id / "steps" / "Train-xgboost"
    leader, other = sorted(p for p in train.iterdir() if (p / "opt-ml").is_dir())
    # Each training host read two of the four training parts (the channel sharded by key; a succeeded job's input
    # copies are removed, its log says what it read) ...
    for host in (leader, other):
        assert re.search(r"read 2 part\(s\) from \S+/opt-ml/input/data/train: X", (host / "job.log").read_text()), host
        assert not (host / "opt-ml" / "input" / "data" / "train").exists()
    # ... both joined the collective, and only the first wrote the model (SageMaker packs every host's folder).
    assert "joined the collective as rank 0 of 2" in (leader / "job.log").read_text()
    assert "joined the collective as rank 1 of 2" in (other / "job.log").read_text()
    assert not any((other / "opt-ml" / "model").iterdir())
    package = runs["executor"].registry.describe_model_package(record.steps["Register"]["Properties"]["ModelPackageArn"])
    archive = fetched(runs, package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
                      runs["root"] / "registered.tar.gz")
    with tarfile.open(archive) as tar:
        assert {"model.joblib", "metadata.json", "code/serve_endpoint.py"} <= set(tar.getnames())
    metadata = json.loads(tarfile.open(archive).extractfile("metadata.json").read())
    single = runs["records"][1]
    assert single.status == "Succeeded", single.data.get("FailureReason")
    single_meta = DiagnosaModel.load(unpack_model(fetched(
        runs, single.steps["Train-xgboost"]["Properties"]["ModelArtifacts"]["S3ModelArtifacts"],
        runs["root"] / "single.tar.gz"), runs["root"] / "single")).metadata
    # The model saw every training row, and the data fingerprint does not depend on how it was sharded.
    assert metadata["n_train"] == single_meta["n_train"] > 0
    assert metadata["fingerprint"] == single_meta["fingerprint"]


def test_two_instance_quality_matches_one_instance_within_tolerance(runs):
    """Tolerance: each class's test recall within two patients of that class or 3 points, whichever is more,
    and the same predicted category for at least 95 % of test patients. The distributed fit is not the same
    computation: each host sketches the quantiles of its own rows and xgboost merges the sketches, so the
    histogram cut points — and with them some splits — move a little; patients near a decision boundary can
    change category, nothing else does (on 12,000 patients the largest per-class change was 2 of 316)."""
    models, evaluations = {}, {}
    for count, record in runs["records"].items():
        assert record.status == "Succeeded", record.data.get("FailureReason")
        artifact = record.steps["Train-xgboost"]["Properties"]["ModelArtifacts"]["S3ModelArtifacts"]
        models[count] = DiagnosaModel.load(unpack_model(fetched(runs, artifact, runs["root"] / f"m{count}.tar.gz"),
                                                        runs["root"] / f"m{count}"))
        outputs = record.steps["Evaluate"]["Properties"]["ProcessingOutputConfig"]["Outputs"]
        evaluations[count] = json.loads(runs["lake"].get_bytes(
            outputs["evaluation"]["S3Output"]["S3Uri"].removeprefix(f"s3://{LOCAL_BUCKET}/") + "/evaluation.json"))
    test_uri = runs["records"][1].steps["Transform"]["Properties"]["ProcessingOutputConfig"]["Outputs"]["test"]
    test_dir = runs["root"] / "test"
    for key in runs["lake"].list(test_uri["S3Output"]["S3Uri"].removeprefix(f"s3://{LOCAL_BUCKET}/") + "/"):
        runs["lake"].get_file(key, test_dir / key.rsplit("/", 1)[-1])
    test = read_split(test_dir)
    target = models[1].metadata["target"]
    agreement = np.mean(np.array(models[1].predict(test.drop(columns=[target])))
                        == np.array(models[2].predict(test.drop(columns=[target]))))
    assert agreement >= 0.95, agreement
    one, two = (evaluations[c]["diagnosa"]["per_class"] for c in (1, 2))
    for label, scores in one.items():
        rows = int((test[target] == label).sum())
        assert abs(scores["recall"] - two[label]["recall"]) <= max(0.03, 2 / rows) + 1e-9, (label, scores, two[label])
