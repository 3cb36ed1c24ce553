"""The ``diagnosa data`` commands as a user runs them, including bad input and the S3 lake."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from diagnosa.cli import main
from diagnosa.data.card import render_card
from diagnosa.data.cohort import CohortConfig, generate
from diagnosa.data.orphan import build_catalogue

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_then_ingest_in_a_workspace(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    code, out, _ = run(capsys, "--workspace", ws, "data", "generate", "--patients", "1000", "--seed", "3")
    assert code == 0 and "generated batch cohort-n1000-s3: 1,000 patients" in out
    lake = tmp_path / "ws" / "lake"
    assert sorted(p.name for p in lake.iterdir()) == sorted(
        ["raw", "curated", "features", "artifacts", "capture", "capture-errors", "feedback", "quarantine"])
    summary = json.loads((lake / "raw/cohort_cards/cohort-n1000-s3.json").read_text())
    code, out, _ = run(capsys, "--workspace", ws, "data", "ingest")
    assert code == 0
    expected = summary["expected_ingestion"]
    assert (f"clinical_records: read {expected['records_read']:,} / accepted {expected['records_accepted']:,} / "
            f"quarantined {expected['records_quarantined']:,}") in out
    # Generating the same batch again is a no-op: raw data is write-once.
    code, out, _ = run(capsys, "--workspace", ws, "data", "generate", "--patients", "1000", "--seed", "3")
    assert code == 0 and "nothing to do" in out
    # A second batch makes the default ambiguous: the user is told to choose.
    run(capsys, "--workspace", ws, "data", "generate", "--patients", "1000", "--seed", "4")
    code, _, err = run(capsys, "--workspace", ws, "data", "ingest")
    assert code == 2 and "several raw batches" in err and "cohort-n1000-s4" in err
    code, out, _ = run(capsys, "--workspace", ws, "data", "ingest", "--batch", "cohort-n1000-s4")
    assert code == 0 and "curated rows" in out


@pytest.mark.parametrize("argv, message", [
    (["data", "generate", "--patients", "5"], "--patients must be between 1,000 and 1,000,000, got 5"),
    (["data", "generate", "--patients", "lots"], "--patients must be an integer, got 'lots'"),
    (["data", "generate", "--orphan-fraction", "2"], "--orphan-fraction must be in [0, 1), got 2.0"),
    (["data", "generate", "--seed", "-1"], "--seed must be between 0"),
    # A dataset's name where its endpoint's is meant: the endpoint is named ('_' cannot be in a SageMaker name).
    (["feedback", "ev-1", "A", "--endpoint-name", "aids_2"], "dataset aids_2's endpoint and model package group are 'aids-2'"),
    (["monitor", "--endpoint-name", "my_data_set"], "are 'my-data-set'"),
    (["feedback", "ev-1", "A", "--endpoint-name", "../x"],
     "'../x' is not a SageMaker name (ASCII letters, digits and inner '-', at most 63)\n"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--workspace", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["data", "ingest"], "no raw batch in"),
    (["data", "ingest", "--batch", "ghost"], "no raw batch 'ghost' in "),
    (["data", "ingest", "missing.jsonl", "--labs", "missing.csv"], "input file not found: missing.jsonl"),
    (["data", "ingest", "records.jsonl"], "need their lab results: add --labs"),
    (["data", "ingest", "own.csv"], "describe it with --config"),
    (["data", "ingest", "--config", "x.toml"], "give its path too"),
])
def test_bad_ingest_input_exits_2_with_one_clear_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "--workspace", str(tmp_path / "ws"), *argv)
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_lake_on_s3_from_the_command_line(capsys):
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        assert run(capsys, "--lake", "s3://lake/dev", "data", "generate", "--patients", "1000")[0] == 0
        code, out, _ = run(capsys, "--lake", "s3://lake/dev", "data", "ingest")
        assert code == 0 and "curated rows" in out
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="lake")["Contents"]]
        assert "dev/raw/clinical_records/cohort-n1000-s7.jsonl" in keys
        assert any(k.startswith("dev/curated/patients/") and "/data/part-00000.parquet" in k for k in keys)


def test_raw_zone_in_its_own_bucket_from_the_command_line(capsys, monkeypatch):
    """--raw-lake (the stack's object-locked raw bucket): generate writes raw there, ingest reads it there."""
    with mock_aws():
        s3 = boto3.client("s3")
        for bucket in ("lake", "raw"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        assert run(capsys, "--lake", "s3://lake", "--raw-lake", "s3://raw", "data", "generate", "--patients", "1000")[0] == 0
        monkeypatch.setenv("DIAGNOSA_RAW_LAKE", "s3://raw")  # the environment variable does the same
        code, out, _ = run(capsys, "--lake", "s3://lake", "data", "ingest")
        assert code == 0 and "curated rows" in out
        raw = [o["Key"] for o in s3.list_objects_v2(Bucket="raw")["Contents"]]
        lake = [o["Key"] for o in s3.list_objects_v2(Bucket="lake")["Contents"]]
        assert "raw/clinical_records/cohort-n1000-s7.jsonl" in raw and all(k.startswith("raw/") for k in raw)
        assert not [k for k in lake if k.startswith("raw/")]
        assert any(k.startswith("curated/patients/") and k.endswith("/data/part-00000.parquet") for k in lake)


def test_bad_lake_uri_is_refused(capsys):
    code, _, err = run(capsys, "--lake", "gs://somewhere", "data", "ingest")
    assert code == 2 and "gs://somewhere" in err


def test_console_script_is_installed(tmp_path):
    result = subprocess.run([str(Path(sys.executable).parent / "diagnosa"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "data" in result.stdout


def test_committed_data_card_is_current():
    orphans = build_catalogue()
    cohort = generate(CohortConfig(), orphans=orphans)
    assert (ROOT / "docs" / "data.md").read_text(encoding="utf-8") == render_card(cohort.summary(), orphans), (
        "docs/data.md is stale: run `diagnosa --workspace /tmp/card data generate --card docs/data.md`")


def test_python_dash_m_diagnosa_is_the_same_command_line(tmp_path):
    import os

    out = subprocess.run([sys.executable, "-m", "diagnosa", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("usage: diagnosa ")
    bad = subprocess.run([sys.executable, "-m", "diagnosa", "pipeline", "definition", "--bucket", "b-bucket"],
                         capture_output=True, text=True, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")})
    assert bad.returncode == 2 and "give an AWS region with --region (or AWS_REGION)" in bad.stderr


@pytest.mark.parametrize("environment, expected", [
    ({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-east-1"}, "eu-west-1"),
    ({"AWS_DEFAULT_REGION": "us-east-1"}, "us-east-1"),
    ({}, None),
])
def test_every_aws_command_reads_the_region_the_same_way(monkeypatch, environment, expected):
    import argparse

    from diagnosa.cli import _region

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert _region(argparse.Namespace(region=None)) == expected
    assert _region(argparse.Namespace(region="ap-south-1")) == "ap-south-1"


@pytest.mark.parametrize("workers", ["0", "2"])
def test_serve_exits_2_when_the_model_cannot_load(tmp_path, capsys, workers):
    model = tmp_path / "not-a-model"
    model.mkdir()
    (model / "metadata.json").write_text("{}", encoding="utf-8")
    code = main(["--workspace", str(tmp_path / "ws"), "serve", "--model", str(model), "--port", "0",
                 "--capture-sampling", "0", "--workers", workers])
    assert code == 2
    err = capsys.readouterr().err
    assert f"not serving {model}" in err and "no model.joblib" in err


def test_every_option_has_help_every_page_renders_and_the_main_commands_show_examples():
    import argparse

    from diagnosa.cli import EXAMPLES, build_parser

    pages: dict[str, str] = {}
    silent: list[str] = []

    def walk(parser, path):
        pages[" ".join(path)] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif action.option_strings and not action.help:
                silent.append(f"{' '.join(path)} {action.option_strings[-1]}")

    walk(build_parser(), ["diagnosa"])
    assert silent == []
    assert set(EXAMPLES) <= set(pages)  # every example belongs to a real command
    for command in EXAMPLES:
        assert "examples:" in pages[command]
    assert "(default: 20000)" in " ".join(pages["diagnosa data generate"].split()) and "``" not in pages["diagnosa"]


def test_a_models_endpoint_is_its_datasets_as_a_run_deploys_it(tmp_path, trained_model_dir):
    # `diagnosa serve` named every model's endpoint 'diagnosa', and the app (which finds a model's endpoint by its
    # dataset) could not reach a dataset of one's own served so.
    from diagnosa.model import ModelLoadError, model_endpoint

    assert model_endpoint(trained_model_dir) == "diagnosa"
    own = tmp_path / "own"
    own.mkdir()
    (own / "metadata.json").write_text(json.dumps({"dataset": {"name": "aids_2", "version": "v1"}}), encoding="utf-8")
    assert model_endpoint(own) == "aids-2"
    (own / "metadata.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="no dataset name"):
        model_endpoint(own)


def test_a_reader_that_stops_reading_is_no_error(tmp_path, monkeypatch, capsys):
    # `diagnosa registry list | head` printed "diagnosa: error: Broken pipe" and exited 1.
    import signal

    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr("sys.stdout", Closed())
    assert main(["--workspace", str(tmp_path / "ws"), "registry", "list"]) == 128 + signal.SIGPIPE
    assert "Broken pipe" not in capsys.readouterr().err


def test_running_out_of_memory_is_one_line_saying_what_to_do(monkeypatch, capsys, tmp_path):
    # A 1M-row export ended in pyarrow's traceback (ArrowMemoryError: malloc of size ... failed), a monitor over 800k
    # requests in Python's MemoryError: nothing said the input was too big for the machine.
    import pyarrow as pa

    import diagnosa.cli as cli

    def out_of_memory(args):
        raise pa.lib.ArrowMemoryError("malloc of size 1073741824 failed")

    monkeypatch.setattr(cli, "cmd_data_ingest", out_of_memory)
    assert cli.main(["--workspace", str(tmp_path / "ws"), "data", "ingest", "x.csv"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("diagnosa: error: out of memory: this machine cannot hold what the command reads at once")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_ctrl_c_in_a_command_is_one_line_and_status_130(monkeypatch, capsys, tmp_path):
    """Ctrl-C before a local run has a record (its checks take seconds) printed Python's traceback."""
    import diagnosa.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_data_generate", interrupted)
    assert cli.main(["--workspace", str(tmp_path / "ws"), "data", "generate"]) == 130
    assert capsys.readouterr().err == "diagnosa: interrupted\n"


def test_registry_list_shows_a_datasets_own_slice_by_its_name(tmp_path):
    # Only an 'orphan' slice was shown: a dataset's gated 'pediatrico' slice never appeared.
    import argparse

    from diagnosa.cli import _test_summary
    from diagnosa.lake import DataLake

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    args = argparse.Namespace(lake=str(tmp_path / "lake"), raw_lake=None, workspace=str(tmp_path / "ws"))
    package = {"ModelMetrics": {"ModelQuality": {"Statistics": {"S3Uri": "s3://diagnosa-local/artifacts/runs/r/evaluation.json"}}}}
    for slices, says in (({"pediatrico": {"macro_recall": 0.9}, "common": {"macro_recall": 1.0}}, ", pediatrico slice 0.900"),
                         ({"orphan": {"macro_recall": 0.571}, "common": {"macro_recall": 0.9},
                           "orphan_seen": {"macro_recall": 0.6}, "orphan_unseen": {"macro_recall": 0.5}},
                          ", orphan slice 0.571, orphan_unseen slice 0.500")):
        lake.put_json("artifacts/runs/r/evaluation.json", {"diagnosa": {
            "macro": {"recall": 0.8}, "worst_class_recall": {"label": "alto", "recall": 0.7}, "slices": slices}})
        assert _test_summary(args, package) == "test recall: macro 0.800, worst alto 0.700" + says


def test_a_dataset_named_by_its_endpoint_is_pointed_at_its_own_name(tmp_path, capsys):
    # `run --local --dataset mi-hospital` said only "no curated dataset 'mi-hospital' ... ingest it first" (and
    # ingesting under that name is refused as a collision); `--dataset diagnosa` the same, of the built-in cohort.
    from diagnosa.cli import main
    from diagnosa.data.ingest import ingest_csv
    from diagnosa.lake import DataLake

    rows = "".join(f"P{i};{30 + i % 40};{'grave' if i % 3 == 0 else 'leve'}\n" for i in range(60))
    (tmp_path / "m.csv").write_text("id;edad;gravedad\n" + rows, encoding="utf-8")
    (tmp_path / "m.toml").write_text('name = "mi_hospital"\nid_column = "id"\ntarget = "gravedad"\nlabels = ["leve", '
                                     '"grave"]\n[csv]\ndelimiter = ";"\n', encoding="utf-8")
    ingest_csv(DataLake.from_uri(str(tmp_path / "ws" / "lake")), tmp_path / "m.csv", tmp_path / "m.toml")
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "run", "--local", "--dataset", "mi-hospital"]) == 2
    assert ("'mi-hospital' is the endpoint and model package group of dataset 'mi_hospital': give --dataset "
            "mi_hospital") in capsys.readouterr().err
    assert main([*ws, "executions", "--dataset", "diagnosa"]) == 0
    assert "of dataset 'patients': give --dataset patients" in capsys.readouterr().out


def test_the_command_says_its_version(capsys):
    # A user who installed the wheel had no way to say which Diagnosa ran (a probe).
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"diagnosa {version('diagnosa')}\n"
