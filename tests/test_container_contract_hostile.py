"""The step containers' entry points against a hostile container contract: hyperparameters nested thousands deep,
megabytes long or naming 100,000 unknown names, SM_* variables that are empty or name a file, a FIFO or a looping
symlink, a path that is not UTF-8, a damaged resourceconfig.json or transformer, arguments of a megabyte. Each is one
bounded reason naming what is wrong, in the failure file the job's convention writes, and the exit status its
docstring promises: never a traceback, a crash writing the reason, megabytes of message, or a model written where
an empty variable pointed (the current folder) with exit 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_training import layout_fixture, write_hps  # noqa: F401  (the fixture "layout": a training container's filesystem)
from threadpoolctl import threadpool_limits

from diagnosa import files
from processing import evaluate as evaluate_job
from processing import preprocess as preprocess_job
from processing import select as select_job
from training import train as train_module
from training.distributed import cluster_from_env

ROOT = Path(__file__).resolve().parents[1]
REASON_CHARS = 4_000  # diagnosa.files.REASON_CHARS: characters of a reason at most
BOUND = 4 * REASON_CHARS  # bytes of a reason at most (UTF-8: 4 per character at worst)
DEEP = "[" * 5_000 + "]" * 5_000
FAST = {"family": "logistic_regression", "search_max_configs": 1}


@pytest.fixture(autouse=True)
def _one_native_thread():
    """One OpenMP/BLAS thread, as tests/test_training.py runs its fits."""
    with threadpool_limits(limits=1):
        yield


def failure(layout: dict[str, Path]) -> str:
    return (layout["output"] / "failure").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ training: SM_*


@pytest.mark.parametrize("name", ["SM_MODEL_DIR", "SM_CHANNEL_TRAIN", "SM_OUTPUT_DATA_DIR", "SM_INPUT_DIR"])
def test_an_empty_sm_variable_is_refused_not_taken_for_the_current_folder(layout, monkeypatch, tmp_path, name):
    """An empty SM_MODEL_DIR is the path "": the model was written into the current folder and the job exited 0."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    write_hps(layout, FAST)
    monkeypatch.setenv(name, "")
    assert train_module.main([]) == 1
    assert f"{name} is set but empty" in failure(layout)
    assert not any(cwd.iterdir())


def test_an_empty_sm_output_dir_writes_nothing_in_the_current_folder(layout, monkeypatch, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    write_hps(layout, FAST)
    monkeypatch.setenv("SM_OUTPUT_DIR", "")
    assert train_module.main([]) == 1
    assert not any(cwd.iterdir()) and not layout["model"].exists()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _loop(path: Path) -> None:
    path.symlink_to(path.name)


def _file(path: Path) -> None:
    path.write_text("not a folder", encoding="utf-8")


@pytest.mark.parametrize(("name", "make", "said"), [
    ("SM_MODEL_DIR", _file, "it is a file, not a folder"),
    ("SM_CHANNEL_TRAIN", _fifo, "it is a named pipe (FIFO), not a folder"),
    ("SM_CHANNEL_TRANSFORMER", _loop, "it is a symbolic link that loops"),
    ("SM_OUTPUT_DATA_DIR", _file, "it is a file, not a folder"),
])
def test_a_folder_that_is_no_folder_is_named_before_any_training(layout, monkeypatch, name, make, said):
    """A model dir that was a file failed only after the whole training, as "FileExistsError: [Errno 17]"; a channel
    that was a FIFO or a looping symlink as "no training data" or "preprocess.json not found"."""
    path = layout["root"] / "odd"
    make(path)
    monkeypatch.setenv(name, str(path))
    write_hps(layout, FAST)
    assert train_module.main([]) == 1
    assert said in failure(layout) and str(path) in failure(layout)
    assert not layout["model"].exists()


def test_a_channel_path_that_is_not_utf8_still_leaves_its_reason(layout, monkeypatch):
    """The reason quoting the path crashed its own write (UnicodeEncodeError) and left the failure file empty."""
    monkeypatch.setenv("SM_CHANNEL_TRAIN", os.fsdecode(os.fsencode(str(layout["root"])) + b"/caf\xe9"))
    write_hps(layout, FAST)
    assert train_module.main([]) == 1
    assert "caf\\udce9" in failure(layout)


# ------------------------------------------------------------------------------------------------ hyperparameters


@pytest.mark.parametrize(("make", "said"), [
    (lambda path: path.mkdir(), "is a directory"),
    (_fifo, "is a named pipe (FIFO)"),
    (_loop, "Too many levels of symbolic links"),
])
def test_a_hyperparameters_file_that_is_no_file_is_named(layout, make, said):
    """A folder, a FIFO or a looping symlink there was "no hyperparameters file": 'family' missing, though given."""
    make(layout["config"])
    assert train_module.main([]) == 1
    assert "hyperparameters file" in failure(layout) and said in failure(layout)


def test_hyperparameters_nested_too_deeply_are_named(layout, monkeypatch):
    layout["config"].write_text(DEEP, encoding="utf-8")
    assert train_module.main([]) == 1
    assert failure(layout) == f"{layout['config']} is not valid JSON: nested too deeply\n"
    monkeypatch.setenv("SM_HPS", DEEP)
    assert train_module.main([]) == 1
    assert failure(layout) == "SM_HPS is not valid JSON: nested too deeply\n"


@pytest.mark.parametrize(("hps", "said"), [
    ({**FAST, "C": "x" * 10_000_000}, "hyperparameter 'C' must be a finite number"),
    ({**FAST, **{f"unknown_{i}": "1" for i in range(100_000)}}, "unknown hyperparameter(s) 'unknown_0'"),
    ({**FAST, "seed": "9" * 50_000}, "seed must be an integer"),
    ({**FAST, "k" * 1_000_000: "1"}, "unknown hyperparameter(s) 'kkk"),
])
def test_the_reason_for_huge_hyperparameters_is_bounded(layout, monkeypatch, hps, said):
    """A 10 MB value made a 10 MB failure file (and a 20 MB log), 100,000 unknown names a 1 MB one."""
    monkeypatch.setenv("SM_HPS", json.dumps(hps))
    assert train_module.main([]) == 1
    text = failure(layout)
    assert said in text and len(text.encode("utf-8")) <= BOUND


def test_a_huge_hyperparameters_file_is_refused_unread(layout):
    layout["config"].write_text(json.dumps({**FAST, "C": "x" * 10_000_000}), encoding="utf-8")
    assert train_module.main([]) == 1
    assert "is over 1,048,576 bytes, the most read" in failure(layout)


def test_a_family_with_a_lone_surrogate_is_refused_without_a_logging_error(tmp_path):
    """The family was logged before it was checked: a lone surrogate made Python's "--- Logging error ---" and its
    traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SM_HPS": '{"family": "\\ud800"}',
           "SM_INPUT_DIR": str(tmp_path / "input"), "SM_MODEL_DIR": str(tmp_path / "model"),
           "SM_OUTPUT_DIR": str(tmp_path / "output")}
    run = subprocess.run([sys.executable, "-m", "training.train"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, errors="replace", check=False)
    assert run.returncode == 1
    assert "Traceback" not in run.stdout + run.stderr and "Logging error" not in run.stderr
    assert (tmp_path / "output" / "failure").read_text(encoding="utf-8").startswith(
        "unknown model family '\\ud800' (expected one of: ")


def test_a_damaged_transformer_channel_is_named(layout):
    (layout["transformer"] / "feature_pipeline.joblib").write_bytes(b"garbage")
    write_hps(layout, FAST)
    assert train_module.main([]) == 1
    assert failure(layout).startswith("transformer channel: feature_pipeline.joblib cannot be loaded: ")
    (layout["transformer"] / "preprocess.json").write_text(DEEP, encoding="utf-8")
    assert train_module.main([]) == 1
    assert failure(layout) == "transformer channel: preprocess.json cannot be read: not JSON: nested too deeply\n"


# ------------------------------------------------------------------------------------------------ the cluster


def test_sm_hosts_naming_a_host_twice_is_refused():
    """Two 'algo-1' made a cluster of two whose second worker never joins: every host waited until the timeout."""
    with pytest.raises(ValueError, match="SM_HOSTS: it names 'algo-1' more than once"):
        cluster_from_env({"SM_HOSTS": '["algo-1", "algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2"})


def test_sm_hosts_nested_too_deeply_or_huge_is_one_bounded_error():
    with pytest.raises(ValueError, match="SM_HOSTS is not a JSON list of host names"):
        cluster_from_env({"SM_HOSTS": DEEP})
    hosts = json.dumps([f"algo-{i}" for i in range(100_000)])
    with pytest.raises(ValueError, match="SM_CURRENT_HOST 'nope' is not one of SM_HOSTS") as raised:
        cluster_from_env({"SM_HOSTS": hosts, "SM_CURRENT_HOST": "nope"})
    assert len(str(raised.value)) <= REASON_CHARS


# ------------------------------------------------------------------------------------------------ processing jobs


def test_an_argument_error_quoting_a_megabyte_is_bounded(tmp_path, capsys):
    """argparse quotes the refused value: a 1 MB --ensemble made a 1 MB failure file and message on stderr."""
    base = tmp_path / "processing"
    base.mkdir()
    with pytest.raises(SystemExit) as stopped:
        select_job.main(["--base-dir", str(base), "--ensemble", "y" * 1_000_000])
    assert stopped.value.code == 2
    text = (base / "output" / "failure").read_text(encoding="utf-8")
    assert "argument --ensemble: invalid choice: 'yyy" in text and len(text.encode("utf-8")) <= BOUND
    assert len(capsys.readouterr().err) <= BOUND + 1_000  # the usage line, and the reason


@pytest.mark.parametrize(("thresholds", "said"), [
    (DEEP, "--thresholds must be a JSON object: it is nested too deeply"),
    ('{"NO ENFERMO": ' + "9" * 400 + "}", "--thresholds must be numbers in [0, 1], got NO ENFERMO: 999"),
])
def test_evaluate_thresholds_nested_too_deeply_or_too_large_are_argument_errors(tmp_path, thresholds, said):
    """Both were tracebacks (RecursionError, OverflowError) with no failure file at all."""
    base = tmp_path / "processing"
    base.mkdir()
    with pytest.raises(SystemExit) as stopped:
        evaluate_job.main(["--base-dir", str(base), "--thresholds", thresholds])
    assert stopped.value.code == 2
    assert said in (base / "output" / "failure").read_text(encoding="utf-8")


def _resource_config(tmp_path: Path, text: str) -> Path:
    base = tmp_path / "processing"
    (tmp_path / "config").mkdir(parents=True)
    (tmp_path / "config" / "resourceconfig.json").write_text(text, encoding="utf-8")
    return base


@pytest.mark.parametrize(("text", "said"), [
    ('{"current_host": "algo-1", "hosts": ', "not JSON"),
    (DEEP, "not JSON: nested too deeply"),
    ('["algo-1"]', "a JSON object is expected, got list"),
    ('{"current_host": "algo-1", "hosts": "algo-1"}', "'hosts': it must list at least one host name, got 'algo-1'"),
    ('{"current_host": "algo-1", "hosts": ["algo-1", "algo-2", "algo-1"]}', "'hosts': it names 'algo-1' more than once"),
])
def test_a_damaged_resource_config_is_named(tmp_path, text, said):
    """A damaged file was a JSONDecodeError or AttributeError naming no file, a host named twice counted twice (the
    transform sharded for an instance that is not there)."""
    base = _resource_config(tmp_path, text)
    with pytest.raises(ValueError, match="the job's resource config .*resourceconfig.json: ") as raised:
        preprocess_job.instance_count(base)
    assert said in str(raised.value)


def test_a_resource_config_of_distinct_hosts_counts_them(tmp_path):
    base = _resource_config(tmp_path, '{"current_host": "algo-2", "hosts": ["algo-1", "algo-2", "algo-3"]}')
    assert preprocess_job.instance_count(base) == 3


@pytest.mark.parametrize(("make", "said"), [(_fifo, "it is a named pipe (FIFO), not a file"),
                                            (lambda path: path.write_text(DEEP), "nested too deeply")])
def test_a_curated_manifest_that_is_a_fifo_or_nested_too_deeply_is_named(tmp_path, make, said):
    """A FIFO was "does not exist"; nesting too deep a RecursionError naming no file."""
    make(tmp_path / "manifest.json")
    with pytest.raises(ValueError, match="manifest.json") as raised:
        preprocess_job.read_manifest(tmp_path)
    assert said in str(raised.value)


def test_monitoring_job_reason_quoting_a_megabyte_is_bounded(tmp_path):
    from monitoring import job as monitor_job

    base = tmp_path / "processing"
    base.mkdir()
    assert monitor_job.main(["--base-dir", str(base), "--since", "x" * 1_000_000]) == 1
    text = (base / "output" / "failure").read_text(encoding="utf-8")
    assert text.startswith("--since 'xxx") and len(text.encode("utf-8")) <= BOUND


def test_feedback_folding_job_reason_quoting_a_megabyte_is_bounded(tmp_path):
    from monitoring import retrain_job

    base, lake = tmp_path / "processing", tmp_path / "lake"
    base.mkdir()
    lake.mkdir()
    assert retrain_job.main(["--base-dir", str(base), "--lake", str(lake), "--endpoint-name", "e" * 1_000_000]) == 1
    text = (base / "output" / "failure").read_text(encoding="utf-8")
    assert "deploys to the endpoint 'eee" in text and len(text.encode("utf-8")) <= BOUND


def test_reason_escapes_lone_surrogates_and_clips(tmp_path):
    assert files.REASON_CHARS == REASON_CHARS
    assert files.job_reason("caf\udce9") == "caf\\udce9"
    assert files.job_reason("x" * 10_000) == "x" * (files.REASON_CHARS - 1) + "…"
    files.write_job_failure(tmp_path, "x" * 10_000_000)  # bounded where every job writes its reason
    assert len((tmp_path / "output" / "failure").read_text(encoding="utf-8")) == REASON_CHARS + 1
