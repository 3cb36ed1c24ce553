"""The training job under AWS's training toolkit itself, on the toy channels of tests/test_training.py — no Docker.

``python -m sagemaker_training.cli.train`` (the framework images' ``train``) reads a SAGEMAKER_BASE_DIR-rooted
/opt/ml, unpacks the staged bundle (``sagemaker_submit_directory``, here a local sourcedir.tar.gz), installs its
pins and runs ``train_job.py`` with the hyperparameters as ITS command line (``mapping.to_cmd_args``: a
one-character name gets one dash, ``-C 0.5``; a JSON null becomes an empty string). So what reaches the program
here is what reaches it in SageMaker, and nothing in these tests rebuilds that command line by hand.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_training import make_frame, write_channels  # tests/ (conftest's folder): the toy channels

from pipelines.local_jobs import container_environment
from pipelines.staging import build_bundle, bundle_files

ROOT = Path(__file__).resolve().parents[2]
TOOLKIT = [sys.executable, "-m", "sagemaker_training.cli.train"]
CHANNELS = ("train", "validation", "transformer")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """The staged step code, as the pipeline stages it; and the same without its requirements.txt."""
    folder = tmp_path_factory.mktemp("bundles")
    files = bundle_files(ROOT)
    full, bare = folder / "full" / "sourcedir.tar.gz", folder / "bare" / "sourcedir.tar.gz"
    for path, content in ((full, files), (bare, {k: v for k, v in files.items() if k != "requirements.txt"})):
        path.parent.mkdir()
        path.write_bytes(build_bundle(content))
    return {"full": full, "without requirements": bare}


def run_toolkit(root: Path, hyperparameters: dict[str, str], bundle: Path) -> tuple[int, str]:
    """A container root as the service lays it out (hyperparameters.json: the request's strings as they are), the
    toolkit run in it. Returns the exit status and the log."""
    write_channels(root, make_frame([120] * 5, seed=1), make_frame([40] * 5, seed=2))
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(
        {**hyperparameters, "sagemaker_program": "train_job.py", "sagemaker_submit_directory": str(bundle)}))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {c: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
         for c in CHANNELS}))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"], "current_group_name": "homogeneousCluster",
         "current_instance_type": "local", "network_interface_name": "eth0",
         "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local",
                              "hosts": ["algo-1"]}]}))
    (root / "model").mkdir()
    (root / "output" / "data").mkdir(parents=True)
    env = container_environment(root / ".run", sys.executable, {
        "SAGEMAKER_BASE_DIR": str(root), "TRAINING_JOB_NAME": "toolkit-test", "SM_STUDIO_LOCAL_MODE": "true",
        "OMP_NUM_THREADS": "1"})
    for key in [k for k in env if k.startswith("SM_") and k != "SM_STUDIO_LOCAL_MODE"]:
        del env[key]  # the toolkit sets them for the program
    done = subprocess.run(TOOLKIT, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    return done.returncode, done.stdout


def outputs(root: Path) -> list[str]:
    """Everything the job left in the model dir and the output data dir."""
    return sorted(p.relative_to(root).as_posix() for folder in (root / "model", root / "output" / "data")
                  for p in folder.rglob("*"))


@pytest.mark.parametrize(("family", "extra"), [("logistic_regression", {}), ("svm", {"n_components": "\"50\""})])
def test_the_one_character_hyperparameter_C_reaches_the_model(family, extra, bundles, tmp_path):
    # The toolkit passes C as "-C 0.5" (one dash for a one-character name); the SDK sends '"0.5"' (JSON in a string).
    code, log = run_toolkit(tmp_path, {"family": json.dumps(family), "C": "\"0.5\"", "search_max_configs": "1",
                                       **extra}, bundles["full"])
    assert code == 0, log[-4000:]
    assert " -C 0.5" in log  # the toolkit's own command line of the program
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["family"] == family and metadata["hyperparameters"]["C"] == 0.5
    assert (tmp_path / "model" / "code" / "serve_endpoint.py").is_file()
    assert (tmp_path / "output" / "data" / "validation.json").is_file()


@pytest.mark.parametrize(("hyperparameters", "expected"), [
    ({"family": "logistic_regression", "max_iter": "-h"}, "'max_iter' must be an integer, got '-h'"),
    ({"family": "random_forest", "n_estimators": "--help"}, "'n_estimators' must be an integer, got '--help'"),
    ({"family": "--help"}, "unknown model family '--help'"),
])
def test_a_value_that_reads_like_a_help_flag_fails_the_job(hyperparameters, expected, bundles, tmp_path):
    code, log = run_toolkit(tmp_path, hyperparameters, bundles["full"])
    assert code != 0, log[-4000:]
    assert expected in (tmp_path / "output" / "failure").read_text()
    assert "usage: python -m training.train" not in log
    assert outputs(tmp_path) == []


def test_a_null_family_is_named_as_empty_with_the_families(bundles, tmp_path):
    # A JSON null: the toolkit's SM_HPS has null, the program's command line "--family ''".
    code, log = run_toolkit(tmp_path, {"family": "null"}, bundles["full"])
    assert code != 0, log[-4000:]
    failure = (tmp_path / "output" / "failure").read_text()
    assert "'family' is empty or null" in failure and "logistic_regression, random_forest, xgboost" in failure
    assert outputs(tmp_path) == []


def test_a_job_that_cannot_write_its_serving_code_leaves_no_output(bundles, tmp_path):
    # Without requirements.txt the toolkit installs nothing and the program runs, but the model cannot carry its pins.
    code, log = run_toolkit(tmp_path, {"family": "logistic_regression", "search_max_configs": "1"},
                            bundles["without requirements"])
    assert code != 0, log[-4000:]
    assert "no requirements.txt" in (tmp_path / "output" / "failure").read_text()
    assert outputs(tmp_path) == []
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".model")]  # the staging dir cleaned up
