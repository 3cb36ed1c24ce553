"""A CreateProcessingJob request run locally: inputs from the lake, container paths remapped, outputs back."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from diagnosa.lake import DataLake
from pipelines.local_jobs import JobError, LakeMapping, failure_reason, run_processing, run_training

ROOT = Path(__file__).resolve().parents[1]


def request(name: str, curated_prefix: str, extra_args: list[str] | None = None) -> dict:
    def output(kind: str) -> dict:
        return {"OutputName": kind, "S3Output": {"S3Uri": f"s3://lake/features/{name}/{kind}",
                                                 "LocalPath": f"/opt/ml/processing/output/{kind}",
                                                 "S3UploadMode": "EndOfJob"}}
    return {
        "ProcessingJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/diagnosa-processing",
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sklearn:1.2-1",
                             "ContainerEntrypoint": ["python3", "-m", "processing.preprocess"],
                             "ContainerArguments": ["--base-dir", "/opt/ml/processing", *(extra_args or [])]},
        "ProcessingInputs": [{"InputName": "curated", "S3Input": {
            "S3Uri": f"s3://lake/{curated_prefix}", "LocalPath": "/opt/ml/processing/input/curated",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
        "ProcessingOutputConfig": {"Outputs": [output(k) for k in ("train", "validation", "test", "transformer")]},
        "Environment": {"PYTHONPATH": str(ROOT)},
    }


@pytest.fixture
def lake_with_curated(tmp_path, seed_lake):
    return seed_lake(tmp_path)


def test_preprocess_request_runs_against_the_lake(tmp_path, lake_with_curated):
    lake, prefix = lake_with_curated
    result = run_processing(request("pre-1", prefix, ["--resampling", "undersample"]), tmp_path / "run",
                            LakeMapping("lake", lake))
    assert result["ProcessingJobStatus"] == "Completed"
    assert result["ProcessingOutputConfig"]["Outputs"]["train"]["S3Output"]["S3Uri"] == "s3://lake/features/pre-1/train"
    assert lake.exists("features/pre-1/train/train.npz")  # undersampling: one object over all training rows
    summary = json.loads(lake.get_bytes("features/pre-1/transformer/preprocess.json"))
    assert summary["params"]["resampling"] == "undersample"
    assert "wrote" in Path(result["LogPath"]).read_text()


def test_failures_name_the_job_and_keep_the_log(tmp_path, lake_with_curated):
    lake, prefix = lake_with_curated
    with pytest.raises(JobError, match=r"job pre-2 exited with 1 .*log: .*job.log"):
        run_processing(request("pre-2", prefix, ["--pca-components", "7.5"]), tmp_path / "run2", LakeMapping("lake", lake))
    assert not lake.list("features/pre-2/"), "a failed job writes nothing back to the lake"
    with pytest.raises(JobError, match="is empty or missing"):
        run_processing(request("pre-3", "curated/patients/none"), tmp_path / "run3", LakeMapping("lake", lake))
    with pytest.raises(JobError, match="outside the data lake"):
        run_processing(request("pre-4", prefix), tmp_path / "run4", LakeMapping("other-bucket", lake))
    bad = request("pre-5", prefix)
    del bad["RoleArn"]
    with pytest.raises(JobError, match="Missing required parameter in input: \"RoleArn\""):
        run_processing(bad, tmp_path / "run5", LakeMapping("lake", lake))


def training_request(name: str, features: str, code_uri: str, family: str = "logistic_regression") -> dict:
    """A framework-image request in script mode, as the pipeline definition's training steps are."""
    return {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/diagnosa-training",
        "AlgorithmSpecification": {
            "TrainingImage": "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.5-cpu-py311",
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "validation:macro_recall", "Regex": r"validation:macro_recall=([0-9.]+)"}],
        },
        "HyperParameters": {"family": family, "seed": "0", "sagemaker_program": "train_job.py",
                            "sagemaker_submit_directory": code_uri},
        "InputDataConfig": [{"ChannelName": c, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://lake/{features}/{c}", "S3DataDistributionType": "FullyReplicated"}}}
            for c in ("train", "validation", "transformer")],
        "OutputDataConfig": {"S3OutputPath": "s3://lake/artifacts/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def test_training_request_runs_the_training_toolkit_and_publishes_model_tar_gz(tmp_path, lake_with_curated):
    import tarfile

    from pipelines.staging import stage_code

    lake, prefix = lake_with_curated
    code_uri = f"s3://lake/{stage_code(lake).key}"
    run_processing(request("pre-t", prefix), tmp_path / "pre", LakeMapping("lake", lake))
    result = run_training(training_request("train-lr", "features/pre-t", code_uri), tmp_path / "train",
                          LakeMapping("lake", lake))
    assert result["ModelArtifacts"]["S3ModelArtifacts"] == "s3://lake/artifacts/models/train-lr/output/model.tar.gz"
    [metric] = result["FinalMetricDataList"]
    assert metric["MetricName"] == "validation:macro_recall" and 0.5 < metric["Value"] <= 1.0
    log = Path(result["LogPath"]).read_text()
    assert "sagemaker-training-toolkit" in log and "Installing dependencies from requirements.txt" in log
    assert 'SM_HPS={"family":"logistic_regression","seed":0}' in log  # what the toolkit handed the program
    local = tmp_path / "model.tar.gz"
    lake.get_file("artifacts/models/train-lr/output/model.tar.gz", local)
    with tarfile.open(local) as archive:
        assert {"model.joblib", "metadata.json", "code/serve_endpoint.py"} <= set(archive.getnames())
    with pytest.raises(JobError, match=r"job train-bad exited with 1 .*log: .*job.log\): .*catboost"):
        run_training(training_request("train-bad", "features/pre-t", code_uri, family="catboost"), tmp_path / "bad",
                     LakeMapping("lake", lake))
    with pytest.raises(JobError, match=r"sagemaker_submit_directory s3://lake/artifacts/code/none.tar.gz does not exist"):
        run_training(training_request("train-nocode", "features/pre-t", "s3://lake/artifacts/code/none.tar.gz"),
                     tmp_path / "nocode", LakeMapping("lake", lake))


SDK_RUNNER_LOG = """Files in /opt/ml/processing/input/code/ before extraction:
total 292
drwxr-xr-x 2 root root   4096 Dec  2 01:13 .
-rw-r--r-- 1 root root 289585 Dec  2 01:13 sourcedir.tar.gz
Files after extraction:
total 408
drwxr-xr-x 4 root root   4096 Dec  2 01:13 diagnosa
-rw-r--r-- 1 root root    163 Jan  1  1970 evaluate_job.py
WARNING: Skipping typing as it is not installed.
2026-11-30 13:20:46 diagnosa.preprocess ERROR preprocessing failed: class ENFERMEDAD LEVE has 2 rows
"""
TOOLKIT_LOG = """2026-11-30 13:20:46,210 sagemaker-training-toolkit INFO     Installing dependencies from requirements.txt
ERROR: Could not find a version that satisfies the requirement numpy==0.0.1 (from versions: none)
ERROR: No matching distribution found for numpy==0.0.1
2026-11-30 13:20:48,001 sagemaker-training-toolkit ERROR    Reporting training FAILURE
2026-11-30 13:20:48,001 sagemaker-training-toolkit ERROR    InstallRequirementsError:
ExitCode 1
ErrorMessage ""
Command "/venv/bin/python -m pip install -r requirements.txt"
2026-11-30 13:20:48,002 sagemaker-training-toolkit ERROR    Encountered exit_code 1
"""


def test_failure_reasons_show_the_jobs_own_error_not_the_runners_noise():
    reason = failure_reason(SDK_RUNNER_LOG)
    assert "Skipping typing" not in reason and reason.endswith("preprocessing failed: class ENFERMEDAD LEVE has 2 rows")
    assert reason == "2026-11-30 13:20:46 diagnosa.preprocess ERROR preprocessing failed: class ENFERMEDAD LEVE has 2 rows"
    failure = ('InstallRequirementsError:\nExitCode 1\nErrorMessage ""\n'
               'Command "/venv/bin/python -m pip install -r requirements.txt"\n')
    reason = failure_reason(TOOLKIT_LOG, failure)
    assert reason.startswith("InstallRequirementsError: ExitCode 1")  # the failure file: the service's FailureReason
    assert reason.endswith("ERROR: No matching distribution found for numpy==0.0.1")  # the pin, from pip
    assert "Encountered exit_code" not in reason  # the toolkit's closing lines repeat the failure file
    runner = SDK_RUNNER_LOG.splitlines()[:9] + [
        "ERROR: No matching distribution found for numpy==0.0.1", "Traceback (most recent call last):",
        '  File "install_requirements.py", line 191, in install_requirements', "    subprocess.check_call(pip_cmd)",
        "subprocess.CalledProcessError: Command 'pip install -r requirements.txt' returned non-zero exit status 1."]
    assert failure_reason("\n".join(runner)) == ("ERROR: No matching distribution found for numpy==0.0.1 | "
                                                 "subprocess.CalledProcessError: Command 'pip install -r requirements.txt' "
                                                 "returned non-zero exit status 1.")
    traceback = "Framework Error: \nTraceback (most recent call last):\n  File \"x.py\", line 1\nOSError: gone\ngone"
    assert failure_reason("", traceback) == "Framework Error: gone"


def stage_request(name: str, inputs: dict[str, str], outputs: tuple[str, ...], args: list[str], count: int = 1,
                  sharded: tuple[str, ...] = ()) -> dict:
    """A processing request for one stage of the preprocessing job, on ``count`` instances."""
    base = request(name, "unused", args)
    base["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = count
    base["ProcessingInputs"] = [{"InputName": input_name, "S3Input": {
        "S3Uri": uri, "LocalPath": f"/opt/ml/processing/input/{input_name}", "S3DataType": "S3Prefix",
        "S3InputMode": "File", "S3DataDistributionType": "ShardedByS3Key" if input_name in sharded else "FullyReplicated"}}
        for input_name, uri in inputs.items()]
    base["ProcessingOutputConfig"]["Outputs"] = [
        {"OutputName": kind, "S3Output": {"S3Uri": f"s3://lake/features/{name}/{kind}",
                                          "LocalPath": f"/opt/ml/processing/output/{kind}", "S3UploadMode": "EndOfJob"}}
        for kind in outputs]
    return base


def test_a_sharded_transform_on_two_instances_writes_what_one_instance_writes(tmp_path, lake_with_curated):
    """The Transform step's request on 2 instances: each host gets its own container root, resourceconfig.json
    and every other curated object (ShardedByS3Key); their outputs, gathered in the lake, equal one instance's."""
    lake, prefix = lake_with_curated
    mapping = LakeMapping("lake", lake)
    run_processing(stage_request("fit", {"curated": f"s3://lake/{prefix}"}, ("transformer", "split"),
                                 ["--stage", "fit", "--transform-instances", "2"]), tmp_path / "fit", mapping)
    inputs = {"curated": f"s3://lake/{prefix}", "transformer": "s3://lake/features/fit/transformer",
              "split": "s3://lake/features/fit/split"}
    results = {count: run_processing(stage_request(f"transform-{count}", inputs, ("train", "validation", "test"),
                                                   ["--stage", "transform"], count, sharded=("curated",)),
                                     tmp_path / f"transform-{count}", mapping) for count in (1, 2)}
    assert all(r["ProcessingJobStatus"] == "Completed" for r in results.values())
    one = {k.split("/", 2)[2]: lake.get_bytes(k) for k in lake.list("features/transform-1/")}
    two = {k.split("/", 2)[2]: lake.get_bytes(k) for k in lake.list("features/transform-2/")}
    assert sorted(one) == sorted(two) and len([k for k in one if k.startswith("train/")]) == 4
    for key in one:
        if key.endswith(".npz"):
            with np.load(io.BytesIO(one[key])) as a, np.load(io.BytesIO(two[key])) as b:
                assert a.files == b.files, key  # the same layout (CSR or dense), the same arrays
                for array in a.files:
                    np.testing.assert_array_equal(a[array], b[array])
        else:
            assert one[key] == two[key], key
    # Each host: its own root and cluster view, and half of the four parts (manifest.json is one more object). The
    # job's input copies are gone once it succeeded: what each host is given is rendered again, as the run did.
    from pipelines.local_jobs import cluster_hosts, host_root, lake_fetcher, render_processing

    request = stage_request("transform-2", inputs, ("train", "validation", "test"), ["--stage", "transform"], 2,
                            sharded=("curated",))
    for index, host in enumerate(cluster_hosts(2)):
        root = tmp_path / "transform-2" / host.current / "opt-ml"
        config = json.loads((root / "config" / "resourceconfig.json").read_text())
        assert config == {"current_host": host.current, "hosts": ["algo-1", "algo-2"]}
        assert not (root / "processing" / "input" / "curated").exists()
        again = host_root(tmp_path / "again", host)
        render_processing(request, again, lake_fetcher(mapping, "transform-2"), "arn:job", host=host)
        curated = again / "processing" / "input" / "curated"
        held = sorted(p.relative_to(curated).as_posix() for p in curated.rglob("*") if p.is_file())
        every = sorted([*(f"data/part-{i:05d}.parquet" for i in range(4)), "manifest.json"])
        assert held == every[index::2]


def test_two_instances_writing_one_name_differently_fail_the_job(tmp_path, lake_with_curated):
    lake, _ = lake_with_curated
    script = ("import json, pathlib; c = json.loads(pathlib.Path('/opt/ml/config/resourceconfig.json').read_text()); "
              "pathlib.Path('/opt/ml/processing/output/train/same.txt').write_text(c['current_host'])")
    clash = stage_request("clash", {}, ("train",), [], count=2)
    clash["AppSpecification"] = {"ImageUri": "local", "ContainerEntrypoint": ["python3", "-c", script]}
    with pytest.raises(JobError, match="train/same.txt was written by two instances with different content"):
        run_processing(clash, tmp_path / "clash", LakeMapping("lake", lake))
    assert not lake.list("features/clash/")


def _sleeper(name: str, script: str, seconds: int) -> dict:
    """A processing job whose container runs ``script`` and has ``seconds`` to do it."""
    return {"ProcessingJobName": name, "RoleArn": "arn:aws:iam::123456789012:role/diagnosa-processing",
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                      "VolumeSizeInGB": 30}},
            "AppSpecification": {"ImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sklearn:1.2-1",
                                 "ContainerEntrypoint": ["python3", "-c", script]},
            "StoppingCondition": {"MaxRuntimeInSeconds": seconds}}


@pytest.mark.parametrize("handles_sigterm", [True, False], ids=["ends-on-sigterm", "ignores-sigterm"])
def test_a_job_past_its_time_limit_is_stopped_as_sagemaker_stops_it(tmp_path, monkeypatch, handles_sigterm):
    # MaxRuntimeInSeconds was not held locally: a training that ran past SageMaker's limit succeeded here.
    import time

    import pipelines.local_jobs as local_jobs

    monkeypatch.setattr(local_jobs, "RUNTIME_STOP_GRACE_SECONDS", 1.0)  # SageMaker's is 120 s
    on_term = ("lambda *_: (print('SIGTERM: saving what can be saved', flush=True), sys.exit(143))" if handles_sigterm
               else "signal.SIG_IGN")
    script = (f"import signal, sys, time\nsignal.signal(signal.SIGTERM, {on_term})\nprint('working', flush=True)\n"
              "time.sleep(60)\nprint('done', flush=True)\n")
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    started = time.monotonic()
    with pytest.raises(JobError, match=r"job slow stopped at its time limit, StoppingCondition.MaxRuntimeInSeconds 1 s "
                                       r"\(what SageMaker shows as MaxRuntimeExceeded"):
        run_processing(_sleeper("slow", script, 1), tmp_path / "run", LakeMapping("lake", lake))
    assert time.monotonic() - started < 30  # not the 60 s the job would have taken
    log = next((tmp_path / "run").rglob("*.log")).read_text(encoding="utf-8")
    assert "working" in log and "done" not in log
    assert ("SIGTERM: saving what can be saved" in log) is handles_sigterm  # it had the SIGTERM first, as on SageMaker


def test_a_job_within_its_time_limit_runs_to_its_end(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    result = run_processing(_sleeper("quick", "print('done')", 60), tmp_path / "run", LakeMapping("lake", lake))
    assert result["ProcessingJobStatus"] == "Completed"


@pytest.mark.parametrize("succeeds", [True, False], ids=["succeeded", "failed"])
def test_a_succeeded_jobs_input_copies_leave_the_execution_folder_a_failed_ones_stay(tmp_path, succeeds):
    # Copies of lake objects, they were 64 MB of the default run's 104 MB execution folder, and never removed.
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lake.put_bytes("features/in/part-0.csv", b"a,b\n1,2\n")
    script = ("import pathlib, sys\nprint(pathlib.Path('/opt/ml/processing/input/data/part-0.csv').read_text())\n"
              f"sys.exit({0 if succeeds else 3})\n")
    request = {**_sleeper("copies", script, 60), "ProcessingInputs": [{"InputName": "data", "S3Input": {
        "S3Uri": "s3://lake/features/in", "LocalPath": "/opt/ml/processing/input/data", "S3DataType": "S3Prefix",
        "S3InputMode": "File"}}]}
    if succeeds:
        run_processing(request, tmp_path / "run", LakeMapping("lake", lake))
    else:
        with pytest.raises(JobError, match="exited with 3"):
            run_processing(request, tmp_path / "run", LakeMapping("lake", lake))
    copies = list((tmp_path / "run").rglob("part-0.csv"))
    assert len(copies) == (0 if succeeds else 1)
    assert "1,2" in next((tmp_path / "run").rglob("*.log")).read_text(encoding="utf-8")  # the job did read it
    assert lake.get_bytes("features/in/part-0.csv") == b"a,b\n1,2\n"  # the lake's object untouched
