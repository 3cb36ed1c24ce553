"""The local endpoints' processes and records under what operators do to them: a deploy interrupted, a record
damaged, a pid reused by another program, the command run from a folder that shadows Diagnosa's packages."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from diagnosa.cli import main
from diagnosa.lake import DataLake
from diagnosa.net import free_port
from diagnosa.services import LOCAL_BUCKET
from pipelines.local_endpoints import DAMAGED, LocalEndpoints, _alive
from pipelines.local_jobs import LakeMapping


@pytest.fixture
def endpoints(tmp_path):
    return LocalEndpoints(tmp_path / "ws", LakeMapping(LOCAL_BUCKET, DataLake.from_uri(str(tmp_path / "lake"))), port=0)


def _record(endpoints: LocalEndpoints, name: str, **fields) -> None:
    folder = endpoints.root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "endpoint.json").write_text(json.dumps({"EndpointName": name, "EndpointStatus": "InService",
                                                      "EndpointConfigName": "c", "Url": "http://127.0.0.1:1",
                                                      "Port": 1, **fields}))


def test_stop_never_kills_a_program_that_took_a_dead_servers_pid(endpoints, tmp_path):
    # Any command line holding 'serve' passed for the server: `endpoint stop` killed a python -m http.server.
    other = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        time.sleep(0.3)
        _record(endpoints, "toy", Pid=other.pid)
        assert not _alive(other.pid, endpoints.workspace, "toy")
        assert endpoints.describe("toy")["EndpointStatus"] == "OutOfService"
        assert endpoints.stop("toy") is False
        assert other.poll() is None, "the unrelated program was killed"
    finally:
        other.kill()
        other.wait()


def test_a_damaged_record_is_listed_as_such_and_its_server_can_still_be_stopped(endpoints, trained_model_dir,
                                                                                  tmp_path, capsys):
    # A truncated endpoint.json: tracebacks from list, stop, registry and feedback, and a server nothing could stop.
    port = free_port("127.0.0.1")
    server = endpoints._start("toy", trained_model_dir, port, 0, tmp_path / "server.log")
    (endpoints.root / "toy").mkdir(parents=True)
    (endpoints.root / "toy" / "endpoint.json").write_text('{"EndpointName": "toy", "Endpoint')
    record = endpoints.describe("toy")
    assert record["EndpointStatus"] == DAMAGED and f"(pid {server})" in record["Problem"]
    assert main(["--workspace", str(endpoints.workspace), "endpoint", "list"]) == 0
    assert "toy              Damaged" in capsys.readouterr().out
    assert main(["--workspace", str(endpoints.workspace), "endpoint", "stop", "toy"]) == 0
    assert "endpoint toy: stopped" in capsys.readouterr().out
    assert not _alive(server, endpoints.workspace, "toy") and endpoints.servers("toy") == ()


def test_a_server_no_record_names_is_found_and_stopped_before_a_deploy_uses_its_port(endpoints, trained_model_dir,
                                                                                      tmp_path):
    # Ctrl-C on `registry approve` after the old server stopped and while the new one started: the new one served on,
    # the record named the old (dead) pid, `endpoint stop` said "was not running" and every approve found the port
    # "in use by another process".
    port = free_port("127.0.0.1")
    orphan = endpoints._start("toy", trained_model_dir, port, 0, tmp_path / "server.log")
    _record(endpoints, "toy", Pid=None, Port=port, EndpointStatus="OutOfService")
    assert endpoints.servers("toy") == (orphan,) and endpoints.servers("other") == ()
    assert endpoints.stop("toy") is True
    assert not _alive(orphan, endpoints.workspace, "toy")


def test_the_server_imports_diagnosa_not_a_package_of_the_folder_it_was_deployed_from(endpoints, trained_model_dir,
                                                                                       tmp_path, monkeypatch):
    # `python -m diagnosa.cli` put the current folder first on the import path: an ML project's own inference/ (or
    # monitoring/, training/...) was imported instead, and every deploy and its rollback failed.
    project = tmp_path / "my-project"
    (project / "inference").mkdir(parents=True)
    (project / "inference" / "__init__.py").write_text('raise SystemExit("the user\'s own inference package")\n')
    monkeypatch.chdir(project)
    server = endpoints._start("toy", trained_model_dir, free_port("127.0.0.1"), 0, tmp_path / "server.log")
    try:
        assert _alive(server, endpoints.workspace, "toy")
    finally:
        endpoints._stop(server)


def test_another_datasets_version_is_not_put_on_an_endpoint_serving_a_dataset(endpoints, trained_model_dir, tmp_path):
    # `registry approve 1 --group mi-datos --endpoint-name diagnosa` replaced the cohort's model: every cohort request
    # was then refused for its fields. A version whose archive left the lake gave no "approved, but not deployed".
    from diagnosa.services import LocalWorkspace, ServiceError
    from pipelines.registry import ARN_PREFIX

    server = endpoints._start("diagnosa", trained_model_dir, free_port("127.0.0.1"), 0, tmp_path / "server.log")
    try:
        _record(endpoints, "diagnosa", Pid=server, ModelPackageArn=f"{ARN_PREFIX}/diagnosa/3")
        workspace = LocalWorkspace(endpoints.workspace, endpoints.mapping.lake)
        package = {"ModelPackageGroupName": "mi-datos", "ModelPackageVersion": 1, "ModelApprovalStatus": "Approved",
                   "ModelPackageArn": f"{ARN_PREFIX}/mi-datos/1",
                   "InferenceSpecification": {"Containers": [{"ModelDataUrl": f"s3://{LOCAL_BUCKET}/gone/model.tar.gz"}]}}
        with pytest.raises(ServiceError, match="endpoint diagnosa serves diagnosa v3, another dataset's model than "
                                               "group mi-datos's"):
            workspace.deploy_approved(package, endpoint_name="diagnosa", port=0)
        assert _alive(server, endpoints.workspace, "diagnosa")  # untouched
        with pytest.raises(ServiceError, match="the model could not be fetched from the lake"):
            workspace.deploy_approved(package, port=0)  # to its own endpoint: its archive is not in the lake
    finally:
        endpoints._stop(server)


def test_stopping_an_endpoint_whose_server_was_killed_ships_what_it_left_in_the_spool(endpoints, capsys):
    # Answered requests of a server killed by -9 waited in the spool for good unless the endpoint started again: the
    # monitor did not see them and their feedback was "not captured".
    lake_dir = endpoints.mapping.lake.uri.removeprefix("file://")
    killed = subprocess.run([sys.executable, "-c", f"""
import os
from datetime import datetime, timezone
from diagnosa.lake import DataLake
from inference.capture import DataCapture, new_event_id
capture = DataCapture(DataLake.from_uri({lake_dir!r}), "toy", flush_seconds=3600)
for _ in range(3):
    assert capture.record(new_event_id(), None, b'{{"age": 40}}', "application/json", b'{{"predictions": [{{}}]}}',
                          "application/json", datetime.now(timezone.utc))
os._exit(0)  # as SIGKILL leaves it: nothing shipped
"""], capture_output=True, text=True)
    assert killed.returncode == 0, killed.stderr
    assert not endpoints.mapping.lake.list("capture/toy/")
    _record(endpoints, "toy", Pid=None, EndpointStatus="OutOfService")
    assert main(["--workspace", str(endpoints.workspace), "--lake", lake_dir, "endpoint", "stop", "toy"]) == 0
    assert ("endpoint toy: was not running; 3 captured request(s) a killed server had left in its spool shipped to the "
            "lake") in capsys.readouterr().out
    assert endpoints.mapping.lake.list("capture/toy/")


def test_a_damaged_model_archive_is_named_by_its_lake_object_and_leaves_no_partial_copy(endpoints, trained_model_dir):
    import gzip

    from diagnosa.services import LocalWorkspace, ServiceError
    from pipelines.registry import ARN_PREFIX

    endpoints.mapping.lake.put_bytes("artifacts/x/model.tar.gz", gzip.compress(b"x" * 10_000)[:200])  # cut short
    url = f"s3://{LOCAL_BUCKET}/artifacts/x/model.tar.gz"
    package = {"ModelPackageGroupName": "toy", "ModelPackageVersion": 1, "ModelApprovalStatus": "Approved",
               "ModelPackageArn": f"{ARN_PREFIX}/toy/1", "InferenceSpecification": {"Containers": [{"ModelDataUrl": url}]}}
    with pytest.raises(ServiceError, match=f"the model {url} cannot be loaded"):
        LocalWorkspace(endpoints.workspace, endpoints.mapping.lake).deploy_approved(package, port=0)
    assert not any((endpoints.root / "toy" / "models").iterdir())


def test_stopping_a_datasets_endpoint_by_the_datasets_name_says_the_endpoints(endpoints):
    from pipelines.local_endpoints import DeployError

    _record(endpoints, "mi-datos", Pid=None, EndpointStatus="OutOfService")
    with pytest.raises(DeployError, match="did you mean mi-datos\\? \\(a dataset's endpoint is its name with '_' written '-'"):
        endpoints.stop("mi_datos")
    with pytest.raises(DeployError, match=r"no local endpoint nope: the local endpoints are mi-datos$"):
        endpoints.stop("nope")


def test_a_new_endpoint_that_never_started_leaves_no_record_and_a_gone_previous_model_says_nothing_serves(
        endpoints, capsys):
    from pipelines.local_endpoints import DeployError

    folder = endpoints.root / "toy"
    with pytest.raises(DeployError, match="x; no previous model to roll back to: endpoint toy serves nothing now"):
        endpoints._roll_back("toy", None, folder, DeployError("x"))
    assert not (folder / "endpoint.json").exists()  # a partial record broke `endpoint list`
    # A stopped endpoint that does not start again (its port taken): it served nothing before, so nothing is rolled
    # back to (it was "the rollback to <the same config> failed too (<the same sentence>)").
    _record(endpoints, "toy", Pid=None, EndpointStatus="OutOfService", ModelDir=str(folder))
    with pytest.raises(DeployError, match="^x: endpoint toy was not serving, and serves nothing now$"):
        endpoints._roll_back("toy", endpoints.describe("toy"), folder, DeployError("x"), "c")
    _record(endpoints, "toy", Pid=None, ModelDir=str(folder / "models" / "gone"))
    previous = endpoints.describe("toy")
    with pytest.raises(DeployError, match=r"the previous model .*gone is gone: endpoint toy serves nothing now"):
        endpoints._roll_back("toy", previous, folder, DeployError("x"))
    assert endpoints.describe("toy")["EndpointStatus"] == "OutOfService"
    assert main(["--workspace", str(endpoints.workspace), "endpoint", "list"]) == 0


def test_a_copied_workspace_neither_lists_nor_stops_the_servers_of_the_one_it_was_copied_from(endpoints,
                                                                                            trained_model_dir, tmp_path,
                                                                                            capsys):
    # `cp -a W W2`: W2's records name W's pids, and any Diagnosa server with that pid passed for W2's own: W2 listed
    # W's endpoint as InService, its `registry list` said "[serving on diagnosa]" and `endpoint stop` killed W's server.
    import shutil

    port = free_port("127.0.0.1")
    server = endpoints._start("toy", trained_model_dir, port, 0, tmp_path / "server.log")
    try:
        _record(endpoints, "toy", Pid=server, Port=port, Url=f"http://127.0.0.1:{port}")
        _record(endpoints, "other", Pid=server, Port=port)  # the same workspace's other endpoint: not its server either
        assert endpoints.describe("toy")["EndpointStatus"] == "InService"
        assert endpoints.describe("other")["EndpointStatus"] == "OutOfService" and endpoints.servers("other") == ()
        assert endpoints.stop("other") is False and _alive(server, endpoints.workspace, "toy")
        copy = tmp_path / "copy"
        shutil.copytree(endpoints.workspace, copy, symlinks=True)
        copied = LocalEndpoints(copy, endpoints.mapping, port=0)
        assert copied.describe("toy")["EndpointStatus"] == "OutOfService" and copied.servers("toy") == ()
        assert not _alive(server, copy, "toy") and copied.list()[-1]["EndpointStatus"] == "OutOfService"
        from diagnosa.services import LocalWorkspace  # what `registry list` marks "[serving on toy]" from

        assert LocalWorkspace(copy, endpoints.mapping.lake).in_service() == []
        assert [r["EndpointName"] for r in LocalWorkspace(endpoints.workspace, endpoints.mapping.lake).in_service()] \
            == ["toy"]
        assert main(["--workspace", str(copy), "endpoint", "list"]) == 0
        assert "toy              OutOfService" in capsys.readouterr().out
        assert main(["--workspace", str(copy), "endpoint", "stop", "toy"]) == 0
        assert "endpoint toy: was not running" in capsys.readouterr().out
        assert _alive(server, endpoints.workspace, "toy"), "the copy's `endpoint stop` killed the original's server"
        assert endpoints.describe("toy")["EndpointStatus"] == "InService"
        # A workspace named through a symbolic link is the same workspace: its server is its own.
        (tmp_path / "link").symlink_to(endpoints.workspace)
        assert LocalEndpoints(tmp_path / "link", endpoints.mapping).describe("toy")["EndpointStatus"] == "InService"
    finally:
        endpoints._stop(server)
    assert not _alive(server, endpoints.workspace, "toy")


def test_stop_on_a_disk_that_refuses_the_record_stops_the_server_and_says_so(endpoints, trained_model_dir, tmp_path):
    # A full disk: the lock's pid write failed first and nothing was stopped; past it, the record's write did.
    import resource
    import signal

    port = free_port("127.0.0.1")
    server = endpoints._start("toy", trained_model_dir, port, 0, tmp_path / "server.log")
    _record(endpoints, "toy", Pid=server, Port=port)

    def full_disk() -> None:  # every byte written refused by the kernel (EFBIG, as a full disk's ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    try:
        done = subprocess.run([sys.executable, "-B", "-m", "diagnosa.cli", "--workspace", str(endpoints.workspace),
                               "endpoint", "stop", "toy"], capture_output=True, text=True, timeout=120,
                              preexec_fn=full_disk)
        left_serving = _alive(server, endpoints.workspace, "toy")
    finally:
        if _alive(server, endpoints.workspace, "toy"):  # the bug left it serving: not left behind by the test too
            endpoints._stop(server)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"endpoint toy: its server (pid {server}) is stopped, but its record " in done.stderr
    assert "could not be updated (File too large); it still says InService" in done.stderr
    assert not left_serving
    assert endpoints.describe("toy")["EndpointStatus"] == "OutOfService"


@pytest.mark.parametrize("asked, meant", [("Urgencias", "urgencias"), ("mi_datos", "mi-datos"), ("MI_DATOS", "mi-datos"),
                                          ("urgencia", "urgencias"), ("zzz", None)])
def test_a_name_no_local_endpoint_has_names_the_one_it_was_likely_meant_for(endpoints, asked, meant):
    from pipelines.local_endpoints import DeployError

    assert endpoints.unknown_name(asked) == ""  # no endpoint at all: nothing to name
    for name in ("urgencias", "mi-datos", "diagnosa"):
        _record(endpoints, name)
    hint = endpoints.unknown_name(asked)
    listed = "the local endpoints are diagnosa, mi-datos, urgencias"
    assert hint.startswith(f"did you mean {meant}? (") and hint.endswith(f"{listed})") if meant else hint == listed
    assert ("written '-'" in hint) == (asked == "mi_datos")  # the dataset's spelling says why
    with pytest.raises(DeployError, match=re.escape(f"no local endpoint {asked}: {hint}")):
        endpoints.stop(asked)


@pytest.mark.parametrize("command", [["monitor", "--endpoint-name", "Urgencias"],
                                     ["predict", "-", "--endpoint-name", "Urgencias"]])
def test_the_commands_name_the_endpoint_a_mistyped_name_was_likely_meant_for(endpoints, tmp_path, capsys,
                                                                               monkeypatch, command):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO('{"edad": 3}\n'))
    _record(endpoints, "urgencias")
    assert main(["--workspace", str(tmp_path / "ws"), "--lake", str(tmp_path / "lake"), *command]) == 2
    err = capsys.readouterr().err
    assert "no local endpoint" in err and "did you mean urgencias? (the local endpoints are urgencias)" in err, err


def test_servers_are_the_serving_layers_process_and_older_ones_are_still_known():
    # The executor started every server as the CLI (`python -m diagnosa.cli ... serve ...`): the assembly layer
    # building an interface's argv. It now runs the serving layer's own entry point; a server started the old way
    # is still found, so `endpoint stop` stops what an earlier version started.
    from pipelines.local_endpoints import SERVER_MODULE, _is_server

    assert SERVER_MODULE == "inference.serve"
    assert _is_server([b"python", b"-P", b"-m", b"inference.serve", b"--workspace", b"/w"])
    assert _is_server([b"python", b"-P", b"-m", b"diagnosa.cli", b"--workspace", b"/w", b"serve", b"--model", b"m"])
    assert not _is_server([b"python", b"-m", b"http.server"]) and not _is_server([b"jupyter-server", b"serve"])


def test_the_server_process_refuses_a_folder_without_a_model_with_exit_status_2(tmp_path):
    # What a deploy's log ends with when the model does not load: the server's own words, exit status 2.
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-P", "-m", "inference.serve", "--workspace", str(tmp_path), "--lake",
                           str(tmp_path / "lake"), "--model", str(tmp_path / "empty"), "--endpoint-name", "diagnosa",
                           "--port", "0", "--capture-sampling", "0"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DIAGNOSA_WORKERS": "0"})
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after the server's log of the failed load
    assert last.startswith(f"python -m inference.serve: error: not serving {tmp_path / 'empty'}")
    assert "has no model.joblib" in last
