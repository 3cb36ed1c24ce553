"""Network isolation in the local executor: a job whose request sets it reaches nothing outside its own namespace
(neither the machine's address nor the machine's loopback), its hosts still reach each other; a job without it can."""
from __future__ import annotations

import logging
import socket
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from diagnosa.lake import DataLake
from pipelines import isolation, local_jobs
from pipelines.local_jobs import JobError, LakeMapping, run_processing, run_training

UNAVAILABLE = isolation.unavailable_reason()
needs_namespaces = pytest.mark.skipif(bool(UNAVAILABLE), reason=f"no network namespaces here: {UNAVAILABLE}")
# The job's program: connect to the address given, exit 0 when it answered (the error, if any, ends the log).
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close(); print('answered')"


def outside_address() -> str | None:
    """This machine's address on its default route (a UDP "connect" sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.fixture
def listener(request):
    """A server on the host's network accepting connections; yields (address, port)."""
    address = request.param if request.param != "outside" else outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to listen on")
    server = socket.create_server((address, 0))
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                pass
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[:2]
    stop.set()
    thread.join()
    server.close()


def connecting_job(name: str, address: str, port: int, isolated: bool | None) -> dict:
    request = {
        "ProcessingJobName": name, "RoleArn": "arn:aws:iam::123456789012:role/diagnosa-processing",
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-dev-images:1",
                             "ContainerEntrypoint": ["python3", "-c", CONNECT], "ContainerArguments": [address, str(port)]},
    }
    if isolated is not None:
        request["NetworkConfig"] = {"EnableNetworkIsolation": isolated}
    return request


@pytest.fixture
def mapping(tmp_path):
    return LakeMapping("lake", DataLake.from_uri(str(tmp_path / "lake")))


@needs_namespaces
@pytest.mark.parametrize("listener", ["outside", "127.0.0.1"], indirect=True)
def test_an_isolated_job_reaches_nothing_outside_its_namespace(tmp_path, mapping, listener):
    address, port = listener
    with pytest.raises(JobError, match=r"job isolated exited with 1 .*(Network is unreachable|Connection refused)"):
        run_processing(connecting_job("isolated", address, port, True), tmp_path / "isolated", mapping)


@pytest.mark.parametrize("listener", ["outside", "127.0.0.1"], indirect=True)
@pytest.mark.parametrize("isolated", [None, False])
def test_a_job_without_isolation_reaches_the_machines_network(tmp_path, mapping, listener, isolated):
    address, port = listener
    result = run_processing(connecting_job("open", address, port, isolated), tmp_path / "open", mapping)
    assert "answered" in Path(result["LogPath"]).read_text()


@needs_namespaces
def test_the_hosts_of_an_isolated_training_job_reach_each_other(tmp_path, mapping):
    """SageMaker's isolation keeps the calls between the peers of a training cluster: here the hosts share one
    namespace. Host 1 listens on its address, host 2 connects to it and both write what they saw."""
    program = (
        "import json, socket, sys, time, pathlib\n"
        "config = json.loads(pathlib.Path(sys.argv[1]).read_text())\n"
        "me, first = config['current_host'], config['hosts'][0]\n"
        "if me == first:\n"
        "    server = socket.create_server((first, 7071)); server.settimeout(30)\n"
        "    peer = server.accept()[0]; said = peer.recv(64).decode()\n"
        "else:\n"
        "    for attempt in range(100):\n"
        "        try:\n"
        "            peer = socket.create_connection((first, 7071), timeout=5); break\n"
        "        except ConnectionRefusedError:\n"
        "            time.sleep(0.1)\n"
        "    peer.sendall(me.encode()); said = 'sent'\n"
        "pathlib.Path(sys.argv[2], me).write_text(said)\n")
    program_file = tmp_path / "peers.py"
    program_file.write_text(program, encoding="utf-8")
    request = {
        "TrainingJobName": "peers", "RoleArn": "arn:aws:iam::123456789012:role/diagnosa-training",
        "AlgorithmSpecification": {"TrainingImage": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-dev-images:1",
                                   "TrainingInputMode": "File",
                                   # A file: a container argument holds at most 256 characters, as SageMaker checks.
                                   "ContainerEntrypoint": [sys.executable, str(program_file)],
                                   "ContainerArguments": ["/opt/ml/input/config/resourceconfig.json", "/opt/ml/model"]},
        "OutputDataConfig": {"S3OutputPath": "s3://lake/artifacts/models"},
        "ResourceConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "EnableNetworkIsolation": True,
    }
    result = run_training(request, tmp_path / "peers", mapping)
    mapping.lake.get_file(mapping.key(result["ModelArtifacts"]["S3ModelArtifacts"]), tmp_path / "model.tar.gz")
    with tarfile.open(tmp_path / "model.tar.gz") as archive:
        seen = {member.name: archive.extractfile(member).read().decode() for member in archive.getmembers()}
    first, second = sorted(seen)
    assert seen == {first: second, second: "sent"}


def test_without_namespaces_the_job_runs_with_the_network_and_one_warning_says_why(tmp_path, mapping, monkeypatch,
                                                                                    caplog):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no unshare, no nsenter: what a machine without util-linux has
    python = str(Path(sys.executable).resolve())
    isolation._mode.cache_clear()
    try:
        reason = isolation.unavailable_reason(python)
        assert reason == "unshare and nsenter (util-linux) not found"
        with socket.create_server(("127.0.0.1", 0)) as server, caplog.at_level(logging.WARNING, "pipelines.local_jobs"):
            result = run_processing(connecting_job("open-anyway", "127.0.0.1", server.getsockname()[1], True),
                                    tmp_path / "run", mapping, python=python)
    finally:
        isolation._mode.cache_clear()
    assert "answered" in Path(result["LogPath"]).read_text()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == ("job open-anyway asks for network isolation; not applied, it runs with this machine's network: "
                       + reason)


def test_a_requested_isolation_is_checked_against_the_service_model(tmp_path, mapping):
    bad = connecting_job("bad", "127.0.0.1", 9, True)
    bad["NetworkConfig"]["EnableNetworkIsolation"] = "yes"
    with pytest.raises(JobError, match="EnableNetworkIsolation"):
        run_processing(bad, tmp_path / "bad", mapping)


@needs_namespaces
@pytest.mark.slow
def test_the_pipeline_on_baked_images_runs_every_job_network_isolated(tmp_path, seed_lake, monkeypatch):
    """The definition a baked stage deploys: every processing and training job isolated, the training jobs' step
    code brought as a channel. Run whole by the local executor (loopback only per job), it trains and registers."""
    from diagnosa.services import LOCAL_BUCKET, local_definition
    from pipelines.executor import open_local

    lake, prefix = seed_lake(tmp_path)
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-dev-images:27f74652296f2703"
    definition = local_definition(lake, ("logistic_regression",), job_image=image, serving_image=image)
    namespaces = []  # one per job the executor ran isolated
    monkeypatch.setattr(local_jobs, "isolated_network", lambda python: namespaces.append(python) or
                        isolation.isolated_network(python))
    low = {name: "0.05" for name in (p["Name"] for p in definition["Parameters"]) if "Threshold" in name}
    record = open_local(tmp_path, lake, LOCAL_BUCKET, use_cache=False).start(definition, {
        "InputDataUri": f"s3://{LOCAL_BUCKET}/{prefix}", **low})
    assert record.status == "Succeeded", record.data.get("FailureReason")
    jobs = [step for step in definition["Steps"] if step["Type"] in ("Processing", "Training")]
    assert len(jobs) == 5  # Preprocess, Transform, Train-logistic_regression, Select, Evaluate
    for step in jobs:
        arguments = step["Arguments"]
        assert (arguments.get("NetworkConfig") or arguments)["EnableNetworkIsolation"] is True, step["Name"]
    assert "ModelPackageArn" in record.steps["Register"]["Properties"]
    assert len(namespaces) == len(jobs)
