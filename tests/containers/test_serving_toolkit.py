"""The model artifact served by AWS's own serving stack, as the PyTorch inference image runs it — no Docker.

What the image does: SageMaker extracts ``model.tar.gz`` into ``/opt/ml/model`` and starts
``serve`` (``sagemaker_pytorch_serving_container.serving.main``), which pip-installs
``code/requirements.txt``, writes TorchServe's configuration and starts TorchServe (a Java frontend
+ Python workers) with the toolkit's handler service, whose ``Transformer`` loads
``SAGEMAKER_PROGRAM`` from ``code/``. Here the same ``main`` runs with the container root under a
temporary folder (``SAGEMAKER_BASE_DIR``, which the toolkits honour), the image's environment taken
from the definition's serving container, and three local adjustments, none in the request path:
the configuration file goes to a temporary path instead of ``/etc/sagemaker-ts.properties``; the
server binds loopback ports (``TS_*_ADDRESS``, which the toolkit's configuration lets the
environment set) instead of 0.0.0.0:8080; pip cannot reach an index (``PIP_NO_INDEX``), so the
install at start-up succeeds only because every pin is already satisfied.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from tools import need

from diagnosa.net import free_port

pytestmark = pytest.mark.slow
JSON = "application/json"
PATIENT = {"patient_id": "A1", "age": 67, "sex": "M", "temperature_c": 38.9, "heart_rate_bpm": 112,
           "spo2_pct": 90, "crp_mg_l": 180.0, "symptoms": ["HP:0001945", "HP:0012735"]}
# What runs inside the container's `serve` process: the toolkit's own main, with the config path moved.
LAUNCHER = """
import sys
from sagemaker_pytorch_serving_container import serving, torchserve
torchserve.TS_CONFIG_FILE = sys.argv[1]
serving.main()
"""


def serving_environment(definition: dict) -> tuple[str, dict[str, str]]:
    """The image and environment of the model the pipeline registers (what the endpoint runs)."""
    gate = next(step for step in definition["Steps"] if step["Type"] == "Condition")
    register = next(step for step in gate["Arguments"]["IfSteps"] if step["Type"] == "RegisterModel")
    [container] = register["Arguments"]["InferenceSpecification"]["Containers"]
    return container["Image"], {k: v for k, v in container["Environment"].items() if isinstance(v, str)}


@pytest.fixture(scope="module")
def definition():
    from pipelines.offline import build_offline

    return json.loads(build_offline("diagnosa-local", "arn:aws:iam::123456789012:role/diagnosa-local").definition)


def serving_container(root: Path, trained_model_dir: Path, environment: dict[str, str]) -> tuple[list[str], dict[str, str], int]:
    """The container's ``serve`` under ``root``: (command, environment, inference port), model.tar.gz in place."""
    need("java")
    # The service's part: model.tar.gz (as the training job packs it) extracted into <base>/model.
    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(trained_model_dir.iterdir()):
            tar.add(item, arcname=item.name)
    with tarfile.open(archive) as tar:
        tar.extractall(root / "opt-ml" / "model", filter="data")
    port, management, metrics = free_port(), free_port(), free_port()
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(root),
           "JAVA_HOME": os.environ.get("JAVA_HOME", ""), "LANG": "C.UTF-8",
           # A container's /tmp is its own: TorchServe keeps its pid file there and refuses to start beside another.
           "TMPDIR": str(root),
           **environment,
           "SAGEMAKER_BASE_DIR": str(root / "opt-ml"), "SAGEMAKER_BIND_TO_PORT": str(port),
           "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{port}", "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{management}",
           "TS_METRICS_ADDRESS": f"http://127.0.0.1:{metrics}", "LOG_LOCATION": str(root / "logs"),
           "METRICS_LOCATION": str(root / "logs"), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "PYTHONDONTWRITEBYTECODE": "1"}
    return [sys.executable, "-c", LAUNCHER, str(root / "ts.properties")], env, port


@contextlib.contextmanager
def running_torchserve(root: Path, trained_model_dir: Path, environment: dict[str, str]) -> Iterator[dict[str, Any]]:
    """TorchServe serving the model as the container would, until it answers /ping; stopped, all of it, after."""
    command, env, port = serving_container(root, trained_model_dir, environment)
    log = open(root / "serve.log", "w", encoding="utf-8")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("TorchServe did not become healthy:\n" + (root / "serve.log").read_text()[-4000:])
            time.sleep(0.5)
        yield {"url": url, "root": root, "log": root / "serve.log", "environment": environment}
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
        # The frontend runs in its own process; make sure no TorchServe outlives the test.
        subprocess.run(["pkill", "-f", f"org.pytorch.serve.ModelServer.*{root}"], check=False)
        log.close()


@pytest.fixture(scope="module")
def torchserve(tmp_path_factory, trained_model_dir, definition):
    image, environment = serving_environment(definition)
    assert "pytorch-inference" in image
    with running_torchserve(tmp_path_factory.mktemp("container"), trained_model_dir, environment) as served:
        yield served


def invoke(url: str, body: bytes, content_type: str | None = JSON, accept: str | None = None) -> tuple[int, str, bytes]:
    headers = {k: v for k, v in {"Content-Type": content_type, "Accept": accept}.items() if v is not None}
    request = urllib.request.Request(f"{url}/invocations", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def test_the_definition_serves_the_artifacts_entry_module(definition):
    _, environment = serving_environment(definition)
    assert environment["SAGEMAKER_PROGRAM"] == "serve_endpoint.py"
    assert environment["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"


def test_json_and_csv_predictions_through_torchserve(torchserve):
    status, content_type, body = invoke(torchserve["url"], json.dumps(PATIENT).encode())
    assert status == 200, body[:2000]
    assert content_type.startswith(JSON)
    [prediction] = json.loads(body)["predictions"]
    assert prediction["patient_id"] == "A1"
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    status, content_type, body = invoke(torchserve["url"], json.dumps({"instances": [PATIENT, {"age": 30}],
                                                                        "top_k": 2}).encode())
    assert status == 200 and [len(p["top_k"]) for p in json.loads(body)["predictions"]] == [2, 2]
    csv_body = b"patient_id,age,sex,symptoms\nB2,45,F,HP:0001945;HP:0002094\n"
    status, content_type, body = invoke(torchserve["url"], csv_body, "text/csv", "text/csv")
    assert status == 200, body[:2000]
    assert content_type.startswith("text/csv")
    header, row = body.decode().strip().splitlines()
    assert header.startswith("patient_id,category,") and row.startswith("B2,")


@pytest.mark.parametrize("body, content_type, accept, status, field, text", [
    (b"{", JSON, None, 400, None, "malformed JSON"),
    (b"[]", JSON, None, 400, None, "no patient records"),
    (json.dumps({"age": 40, "blood_type": "A"}).encode(), JSON, None, 400, "blood_type", "unknown field"),
    (json.dumps({"age": "forty"}).encode(), JSON, None, 400, "age", "expected a number"),
    (json.dumps({"heart_rate_bpm": 900}).encode(), JSON, None, 400, "heart_rate_bpm", "impossible value"),
    (json.dumps({"symptoms": ["HP:9999999"]}).encode(), JSON, None, 400, "symptoms", "unknown HPO term"),
    (json.dumps({"instances": [PATIENT], "top_k": 9}).encode(), JSON, None, 400, None, "top_k must be"),
    (b"age,colour\n40,red\n", "text/csv", None, 400, "colour", "unknown field"),
    (b"age\n", "text/csv", None, 400, None, "no patient records"),
    (json.dumps(PATIENT).encode(), "application/x-npy", None, 415, None, "unsupported content type"),
    (json.dumps(PATIENT).encode(), JSON, "application/xml", 406, None, "cannot answer in"),
    # Over SageMaker's 6 MB payload limit but under TorchServe's own request limit: refused by the handler.
    (b'{"patient_id": "' + b"x" * (6 * 1024 * 1024 + 100) + b'", "age": 40}', JSON, None, 413, None, "the limit is"),
])
def test_bad_input_is_a_4xx_json_body_without_traceback(torchserve, body, content_type, accept, status, field, text):
    got, media, answer = invoke(torchserve["url"], body, content_type, accept)
    assert got == status, answer[:2000]
    assert media.startswith(JSON)
    assert b"Traceback" not in answer and b'File "' not in answer
    payload = json.loads(answer)
    messages = [payload["error"]] + [e["problem"] for e in payload["errors"]]
    assert any(text in m for m in messages), payload
    if field:
        assert field in [e["field"] for e in payload["errors"]]


def test_a_body_over_torchserves_own_limit_is_refused_by_its_frontend(torchserve):
    # TorchServe's frontend (max_request_size, 6,553,500 bytes by default) refuses before any Python runs:
    # a 413 or, while the client is still sending, a closed connection. (SageMaker's runtime refuses
    # bodies over 6 MB before they reach the container at all.)
    try:
        status, _, answer = invoke(torchserve["url"], b"[" + b"1," * 3_400_000 + b"1]")
    except (urllib.error.URLError, ConnectionError):
        pass
    else:
        assert status == 413 and b"Traceback" not in answer, answer[:500]
    with urllib.request.urlopen(f"{torchserve['url']}/ping", timeout=5) as reply:
        assert reply.status == 200


def test_the_server_stays_healthy_after_refusals(torchserve):
    with urllib.request.urlopen(f"{torchserve['url']}/ping", timeout=5) as reply:
        assert reply.status == 200
    assert invoke(torchserve["url"], json.dumps(PATIENT).encode())[0] == 200
    log = torchserve["log"].read_text(encoding="utf-8", errors="replace")
    # The toolkit installed the artifact's pins before serving, with no index to reach: all were satisfied.
    assert "requirements.txt" in log and "ERROR: " not in log


# Inside the endpoint's namespace: wait for /ping, then one prediction; print the answer (or why there is none).
ISOLATED_CLIENT = """
import json, sys, time, urllib.request
url, body = sys.argv[1], sys.argv[2].encode()
deadline = time.monotonic() + 180
while True:
    try:
        with urllib.request.urlopen(url + "/ping", timeout=5) as reply:
            if reply.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("TorchServe did not become healthy")
    time.sleep(0.5)
request = urllib.request.Request(url + "/invocations", data=body, headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=60) as reply:
    print(reply.status, reply.read().decode())
"""


def test_the_endpoint_answers_with_no_network_at_all(tmp_path, trained_model_dir):
    """With baked images the model runs network-isolated (docs/deploy.md §5): the serving toolkit starts — its pip
    install of code/requirements.txt satisfied, PIP_NO_INDEX=1 — and answers with loopback as its only interface.
    Server and client share one network namespace; nothing outside it is reachable."""
    from pipelines.isolation import isolated_network, unavailable_reason
    from pipelines.offline import build_offline

    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no network namespaces here: {reason}")
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-dev-images:27f74652296f2703"
    baked = json.loads(build_offline("diagnosa-local", "arn:aws:iam::123456789012:role/diagnosa-local",
                                     job_image=image, serving_image=image).definition)
    registered, environment = serving_environment(baked)
    assert registered == image
    command, env, port = serving_container(tmp_path, trained_model_dir, environment)
    with isolated_network() as inside, open(tmp_path / "serve.log", "w", encoding="utf-8") as log:
        # The namespace as a process inside it sees it (the server's own pid shows the host's until nsenter has run).
        namespace = subprocess.run(inside(["readlink", "/proc/self/ns/net"]), capture_output=True, text=True,
                                   check=True, timeout=60).stdout.strip()
        assert namespace.startswith("net:") and namespace != os.readlink("/proc/self/ns/net")
        server = subprocess.Popen(inside(command), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            client = subprocess.run(inside([sys.executable, "-c", ISOLATED_CLIENT, f"http://127.0.0.1:{port}",
                                            json.dumps(PATIENT)]), capture_output=True, text=True, timeout=300)
            outside = subprocess.run([sys.executable, "-c", "import urllib.request, sys; "
                                      "urllib.request.urlopen(sys.argv[1], timeout=5)", f"http://127.0.0.1:{port}/ping"],
                                     capture_output=True, text=True, timeout=60)
        finally:
            _stop_namespace(server, namespace)
    assert client.returncode == 0, client.stderr[-2000:] + (tmp_path / "serve.log").read_text()[-4000:]
    status, body = client.stdout.split(" ", 1)
    [prediction] = json.loads(body)["predictions"]
    assert status == "200" and prediction["patient_id"] == "A1"
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert outside.returncode != 0 and "Connection refused" in outside.stderr  # the host's loopback is another one
    assert "Requirement already satisfied" in (tmp_path / "serve.log").read_text()  # the toolkit's install ran


def _stop_namespace(server: subprocess.Popen, namespace: str) -> None:
    """Stop the server's process group, then any process of ours still in its namespace (TorchServe's frontend)."""
    if namespace == os.readlink("/proc/self/ns/net"):  # never the host's: that would kill every process on it
        raise AssertionError(f"refusing to stop every process in the test's own network namespace {namespace}")
    try:
        os.killpg(server.pid, 15)
    except ProcessLookupError:
        pass
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)
        server.wait()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "net") == namespace:
                os.kill(int(entry.name), 9)
        except OSError:
            pass
