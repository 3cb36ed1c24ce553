"""A stage for a dataset of your own (``dataset_config``, docs/deploy.md): the stack's pipeline is built for that
dataset's labels, slice and gate, the retrain function trains on that dataset's latest curated version (and may
read only its pointer), the dashboard plots its labels' live recall; a config that cannot be used stops synth."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from infra.config import stage_config

CONFIG = """name = "mi_hospital"
id_column = "paciente"
target = "gravedad"
labels = ["leve", "grave", "crítico"]

[slice]
column = "diagnostico_raro"
name = "rare"
group = "enfermedad"

[gate]
recall = { "crítico" = 0.6 }
"""


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "mi_hospital.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_the_stage_settings_come_from_the_dataset_config(config_path):
    config = stage_config("hosp", {"region": "eu-west-1", "dataset_config": str(config_path), "recall_threshold": 0.7})
    assert config.dataset == "mi_hospital" and config.labels == ("leve", "grave", "crítico")
    from infra.pipeline_definition import pipeline_settings

    settings = pipeline_settings(config)
    # The config's [gate] sets its labels' defaults (the others keep the gate's default), over the stage's.
    assert settings["recall_thresholds"] == {"leve": 0.8, "grave": 0.8, "crítico": 0.6}
    assert settings["slice_name"] == "rare" and settings["slice_grouped"] is True
    # The stage's names stay: one pipeline, group and endpoint per stage.
    assert settings["name"] == settings["model_package_group"] == "diagnosa-hosp" and "endpoint_name" not in settings
    cohort = stage_config("dev", {"region": "eu-west-1"})
    assert cohort.dataset == "patients" and "labels" not in pipeline_settings(cohort)


@pytest.mark.parametrize("text, message", [
    (None, r"dataset config not found: .*missing\.toml"),
    ('name = "x"\n', r"missing required key 'id_column'"),
    (CONFIG.replace('"crítico"]', '"crítico", "+"]'), r"'\+'.*no letter or digit"),
    # 91 labels passed the stage's check and failed only at synth, in the definition's build.
    (CONFIG.replace('"crítico"]', '"crítico", ' + ", ".join(f'"c{i}"' for i in range(88)) + "]"),
     r"91 labels: the pipeline takes at most 90"),
])
def test_a_dataset_config_that_cannot_be_used_is_refused_naming_the_stage(tmp_path, text, message):
    path = tmp_path / "missing.toml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"stage hosp: dataset_config: .*" + message):
        stage_config("hosp", {"region": "eu-west-1", "dataset_config": str(path)})


def test_the_stack_trains_serves_and_retrains_the_stages_dataset(tmp_path, config_path):
    from aws_cdk.assertions import Template

    from infra.app import build_app, new_app
    from infra.nag import findings, synth

    stage = stage_config("hosp", {"region": "eu-west-1", "account": "123456789012",
                                  "dataset_config": str(config_path)})
    cloud = synth(build_app(new_app(outdir=str(tmp_path / "cdk.out")), [stage]))
    assert findings(cloud.directory) == []
    [artifact] = [s for s in cloud.stacks_recursively if s.stack_name == "Diagnosa-hosp"]
    template = Template.from_json(json.loads(Path(artifact.template_full_path).read_text()))
    text = json.dumps(template.to_json())

    [pipeline] = template.find_resources("AWS::SageMaker::Pipeline").values()
    body = json.dumps(pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"])
    parameters = set(re.findall(r'\\"Name\\": \\"(\w+)\\"', body))
    assert {"RecallThresholdLeve", "RecallThresholdGrave", "RecallThresholdCritico", "RareRecallThreshold",
            "UnseenRareRecallThreshold"} <= parameters
    assert not any("ENFERMO" in name or "Orphan" in name for name in parameters)
    assert "curated/mi_hospital/" in body

    [retrain] = [f for f in template.find_resources("AWS::Lambda::Function").values()
                 if f["Properties"].get("FunctionName") == "diagnosa-hosp-retrain"]
    assert retrain["Properties"]["Environment"]["Variables"]["DATASET"] == "mi_hospital"
    assert "curated/mi_hospital/LATEST.json" in text and "curated/patients/LATEST.json" not in text
    # Its feedback-folding job adds versions of that dataset only.
    [fold] = [p for p in template.find_resources("AWS::IAM::ManagedPolicy").values()
              if p["Properties"]["ManagedPolicyName"] == "diagnosa-hosp-fold-feedback"]
    granted = json.dumps(fold["Properties"]["PolicyDocument"])
    assert "/curated/mi_hospital/*" in granted and "/quarantine/mi_hospital/*" in granted
    assert "curated/patients" not in granted and "quarantine/patients" not in granted
    # The dashboard plots each of the dataset's labels' live recall, named in ASCII as the monitoring job publishes
    # them, with the dataset's gate (its [gate]: 0.6 for crítico, the default 0.8 for the rest) and no orphan slice.
    [dashboard] = template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"], ensure_ascii=False)
    assert all(f'\\"Class\\",\\"{name}\\"' in body for name in ("Leve", "Grave", "Critico")), body[:2000]
    assert "NO ENFERMO" not in body and "crítico" in body  # the line's label stays the label
    assert '{\\"value\\":0.6,\\"label\\":\\"gate: crítico\\"' in body
    assert '{\\"value\\":0.8,\\"label\\":\\"gate: leve, grave\\"' in body
    assert "orphan" not in body.lower()


def test_a_dataset_with_many_long_labels_keeps_every_function_environment_within_lambdas_4_kb(tmp_path):
    """70 labels of disease-name length: the retrain function's environment carried every RecallThreshold<Label>
    parameter name (PIPELINE_PARAMETERS, 3,937 bytes alone), over Lambda's 4,096, and only CloudFormation would
    have said so. The function asks the pipeline for its parameters instead; every function's environment fits."""
    from infra.app import build_app, new_app
    from infra.nag import synth

    words = ("Enfermedad", "pulmonar", "obstructiva", "crónica", "cardíaca", "renal", "hepática", "autoinmune")
    labels = [f"{words[i % 8]} {words[(i // 8) % 8]} {words[(i + 3) % 8]} grado {i}"[:43].ljust(43, "x")
              for i in range(70)]
    assert len(set(labels)) == 70 and sum(map(len, labels)) / 70 >= 42
    path = tmp_path / "realistic.toml"
    path.write_text(CONFIG.replace('labels = ["leve", "grave", "crítico"]', f"labels = {json.dumps(labels)}")
                    .replace('recall = { "crítico" = 0.6 }', ""), encoding="utf-8")
    stage = stage_config("hosp", {"region": "eu-west-1", "account": "123456789012", "dataset_config": str(path)})
    cloud = synth(build_app(new_app(outdir=str(tmp_path / "cdk.out")), [stage]))
    [artifact] = [s for s in cloud.stacks_recursively if s.stack_name == "Diagnosa-hosp"]
    functions = {f["Properties"]["FunctionName"]: f["Properties"].get("Environment", {}).get("Variables", {})
                 for f in json.loads(Path(artifact.template_full_path).read_text())["Resources"].values()
                 if f["Type"] == "AWS::Lambda::Function" and "FunctionName" in f["Properties"]}
    assert "diagnosa-hosp-retrain" in functions and "PIPELINE_PARAMETERS" not in functions["diagnosa-hosp-retrain"]
    for name, env in functions.items():  # a deploy-time value counted at 160 bytes, the longest (an image URI)
        size = sum(len(k) + (len(v.encode()) if isinstance(v, str) else 160) for k, v in env.items())
        assert size < 4096 / 2, (name, size)  # Lambda's limit: 4096


def test_a_function_environment_over_lambdas_limit_stops_synth_naming_the_stage_function_and_setting():
    from infra.stack import environment_problem

    sizes = {"ENDPOINT_NAME": 27, "METRICS_NAMESPACE": 3957, "LAKE_BUCKET": 171}
    assert environment_problem("hosp", "diagnosa-hosp-deploy", {"LAKE_BUCKET": 171}) is None
    assert environment_problem("hosp", "diagnosa-hosp-deploy", sizes) == (
        "stage hosp: the function diagnosa-hosp-deploy's environment would be about 4155 bytes, over Lambda's 4096 "
        "(keys and values); the largest: METRICS_NAMESPACE 3957 bytes (from drift_metric_namespace), "
        "LAKE_BUCKET 171 bytes, ENDPOINT_NAME 27 bytes")


def test_a_stack_whose_function_environment_is_too_large_is_refused(tmp_path, monkeypatch):
    """The check runs on every function the stack builds. No setting left makes an environment that large (every
    one that reaches an environment is bounded; the unbounded serving_program was removed), so Lambda's limit is
    lowered below the functions' real environments, and synth stops naming the stage, the function and its largest
    variables."""
    import infra.stack
    from infra.app import build_app, new_app

    monkeypatch.setattr(infra.stack, "LAMBDA_ENVIRONMENT_MAX", 1000)
    stage = stage_config("hosp", {"region": "eu-west-1", "account": "123456789012"})
    with pytest.raises(ValueError, match=r"stage hosp: the function diagnosa-hosp-\S+'s environment would be about "
                                         r"\d+ bytes, over Lambda's 1000 \(keys and values\); the largest: "
                                         r"\w+ \d+ bytes"):
        build_app(new_app(outdir=str(tmp_path / "cdk.out")), [stage])
