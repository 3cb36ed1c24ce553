"""Names that become lake keys, local folders and SageMaker resources are matched whole: a regex's "$" also matches
before a final "\\n", so `--endpoint-name $'diagnosa\\n'` passed every check and named a folder 'diagnosa\\n'."""
from __future__ import annotations

import pytest

from diagnosa.cli import main
from diagnosa.data.ingest import BATCH_NAME, IngestError, ingest_cohort_files
from diagnosa.data.schema import DATASET_NAME, RESOURCE_NAME, SLICE_NAME, SchemaError, check_dataset_config
from diagnosa.lake import DataLake
from diagnosa.services import LOCAL_BUCKET
from pipelines.local_endpoints import DeployError, LocalEndpoints
from pipelines.local_jobs import JobError, LakeMapping


@pytest.mark.parametrize("argv, message", [
    (["feedback", "ev-1", "A", "--endpoint-name", "diagnosa\n"], "'diagnosa\\n' is not a SageMaker name"),
    (["monitor", "--endpoint-name", "diagnosa\n\n"], "'diagnosa\\n\\n' is not a SageMaker name"),
    (["registry", "list", "--group", "diagnosa\n"], "'diagnosa\\n' is not a SageMaker name"),
    (["run", "--local", "--dataset", "aids\n"], "'aids\\n' is not a dataset name"),
])
def test_a_name_flag_with_a_trailing_newline_exits_2_quoting_it(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--workspace", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.rglob("*\n*"))


def test_the_shared_name_patterns_refuse_a_final_newline_whichever_way_they_are_matched():
    # Other modules (monitoring.retrain, inference.capture) call .match on these: the pattern itself ends at \Z.
    for pattern, name in ((RESOURCE_NAME, "diagnosa"), (DATASET_NAME, "aids_2"), (SLICE_NAME, "orphan"),
                          (BATCH_NAME, "cohort-n1000-s3")):
        assert pattern.match(name) and pattern.fullmatch(name)
        assert not pattern.match(name + "\n") and not pattern.search(name + "\n") and not pattern.fullmatch(name + "\n")


def test_a_batch_name_with_a_trailing_newline_names_no_raw_file(tmp_path):
    records, labs = tmp_path / "r.jsonl", tmp_path / "l.csv"
    records.write_text("{}\n")
    labs.write_text("x\n")
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with pytest.raises(IngestError, match=r"batch name 'b1\\n' may hold only"):
        ingest_cohort_files(lake, records, labs, batch="b1\n")
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").rglob("*"))
    # `data generate --batch` names raw files too: it wrote half a batch before a lone surrogate's traceback, and a
    # retry said "nothing to do" (raw is write-once).
    from diagnosa.cli import main

    for bad in ("a\udcff", "a/b", "..", " "):
        try:  # a blank one is refused as the options are read (argparse exits), the others by the command
            code = main(["--workspace", str(tmp_path / "ws"), "data", "generate", "--patients", "1000", "--batch", bad])
        except SystemExit as exited:
            code = exited.code
        assert code == 2, bad
    assert not any((tmp_path / "ws").rglob("*.jsonl"))


@pytest.mark.parametrize("bad", ["../x", "a b", "a\udcff"])
def test_data_ingest_batch_names_the_batch_rule_not_a_lake_key(tmp_path, capsys, bad):
    # `data ingest --batch ../x` said "invalid key 'raw/clinical_records/../x.jsonl'": a key the user never typed.
    assert main(["--workspace", str(tmp_path), "data", "ingest", "--batch", bad]) == 2
    err = capsys.readouterr().err
    assert "may hold only letters, digits, '.', '_' and '-'" in err and "key" not in err


@pytest.mark.parametrize("change, message", [
    ({"name": "aids\n"}, r"name 'aids\\n' must be 1 to 50"),
    # It names the endpoint, whose endpoint configs are <endpoint>-<12-character execution id>, at most 63.
    ({"name": "a" * 51}, r"name 'a{51}' must be 1 to 50 .*<endpoint>-<12-character execution id>, at most 63"),
    ({"slice": {"column": "rare", "name": "orphan\n"}}, r"\[slice\] name 'orphan\\n' must start with a letter"),
])
def test_a_dataset_config_name_with_a_trailing_newline_is_refused(change, message):
    config = {"name": "aids", "id_column": "id", "target": "y", "labels": ["a", "b"], **change}
    with pytest.raises(SchemaError, match=message):
        check_dataset_config(config, "dataset config x.toml")


def test_a_local_deploy_to_an_endpoint_name_with_a_trailing_newline_files_nothing(tmp_path):
    endpoints = LocalEndpoints(tmp_path / "ws", LakeMapping(LOCAL_BUCKET, DataLake.from_uri(str(tmp_path / "lake"))))
    with pytest.raises(DeployError, match=r"endpoint name 'diagnosa\\n' is not a SageMaker name"):
        endpoints.deploy_model_package({"ModelApprovalStatus": "Approved"}, endpoint_name="diagnosa\n")
    with pytest.raises(JobError, match=r"endpoint name 'diagnosa\\n' is not a SageMaker name"):
        endpoints.deploy("diagnosa\n", "config")
    assert not any(tmp_path.rglob("*"))
