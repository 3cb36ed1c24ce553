"""Test setup: fake AWS credentials and a region, so nothing can reach a real account or network."""
from __future__ import annotations

import os

# Set before any test module imports boto3 or sagemaker (the SDK refuses to import without a region).
for key, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_REGION": "eu-west-1",
    "SAGEMAKER_VALIDATE_ROLE": "false",
}.items():
    os.environ[key] = value
# OpenMP threads that spin while waiting starve each other on a busy 2-core machine (an xgboost fit
# went from 0.14 s to 63 s with the other core loaded); passive waiting keeps fits stable.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "DIAGNOSA_HOME", "DIAGNOSA_LAKE"):
    os.environ.pop(key, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

import signal  # noqa: E402

# A shell starts a background job (`make test &`, nohup) with SIGINT ignored, and every process it starts inherits
# that: the Ctrl-C tests' commands would never see their SIGINT (10 failures, each a 30 s wait). A handler, unlike
# "ignored", is reset to the default when a child starts, so the children read Ctrl-C as a terminal's would.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


import re  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402  (after the environment is set)
from packaging.utils import canonicalize_name  # noqa: E402


@pytest.fixture(autouse=True)
def every_aws_request_within_the_service_model(monkeypatch):
    """Every request the tests' boto3 clients send — the Lambda functions', the jobs', the tests' own — held, after the test,
    to what the service checks and botocore's validator does not: enum values and maximum lengths and values
    (pipelines.service_model). moto accepts them; AWS would refuse them. Recorded, not raised: a function may catch
    the error and report it its own way."""
    from botocore.client import BaseClient

    from pipelines.service_model import enum_problems, limit_problems

    problems: list[str] = []
    original = BaseClient._make_api_call

    def checked(self: BaseClient, operation_name: str, api_params: dict) -> object:
        shape = self.meta.service_model.operation_model(operation_name).input_shape
        if shape is not None:
            found = enum_problems(shape, api_params) + limit_problems(shape, api_params)
            problems.extend(f"{self.meta.service_model.service_name}.{operation_name}: {p}" for p in found)
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", checked)
    yield
    assert problems == [], "requests AWS would refuse:\n" + "\n".join(problems)


REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"


@dataclass(frozen=True)
class Locked:
    """One package of a lock (requirements/*-lock.txt, written by pip-compile): its pin, hashes and parents."""

    name: str  # as written in the lock
    version: str
    hashes: frozenset[str]
    via: frozenset[str]  # what needs it: locked packages, or the input ("diagnosa (setup.py)", "-r ...")


def read_lock(path: Path) -> dict[str, Locked]:
    """Canonical name → entry. Anything but ``name==version``, hash and via lines is refused, naming the line."""
    entries: dict[str, Locked] = {}
    blocks = re.split(r"\n(?=\S)", path.read_text(encoding="utf-8"))  # an entry: its first line and indented ones
    for block in blocks:
        if block.startswith("#") or not block.strip():
            continue
        head = re.match(r"([A-Za-z0-9._-]+)==(\S+) \\$", block.splitlines()[0])
        assert head, f"{path.name}: not an exact pin with hashes: {block.splitlines()[0]!r}"
        comments = [line.strip().lstrip("#").strip() for line in block.splitlines()[1:] if line.strip().startswith("#")]
        via = {c.removeprefix("via").strip() for c in comments if c.startswith("via")} - {""}
        via |= {c for c in comments if not c.startswith("via")}
        entries[canonicalize_name(head.group(1))] = Locked(
            head.group(1), head.group(2), frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", block)),
            frozenset(re.sub(r"\s*#.*", "", v) if v.startswith("-") else v for v in via))
    return entries


@pytest.fixture(scope="session")
def dev_lock() -> dict[str, Locked]:
    return read_lock(REQUIREMENTS / "dev-lock.txt")


@pytest.fixture(scope="session")
def step_lock() -> dict[str, Locked]:
    return read_lock(REQUIREMENTS / "steps-lock.txt")


@pytest.fixture(scope="session")
def checkov_lock() -> dict[str, Locked]:
    return read_lock(REQUIREMENTS / "checkov-lock.txt")


@pytest.fixture(scope="session")
def orphans():
    """The orphan-disease catalogue built from the shipped HPO annotations (~3 s; built once)."""
    from diagnosa.data.orphan import build_catalogue

    return build_catalogue()


@pytest.fixture(scope="session")
def curated_cohort(tmp_path_factory):
    """A small generated and ingested cohort: (curated frame, manifest), shared by the step tests."""
    from diagnosa.data.cohort import CohortConfig, generate, write_raw
    from diagnosa.data.ingest import ingest_cohort, load_curated
    from diagnosa.lake import DataLake

    lake = DataLake.from_uri(str(tmp_path_factory.mktemp("cohort") / "lake"))
    cohort = generate(CohortConfig(patients=4_000, seed=21, orphan_fraction=0.05))
    write_raw(cohort, lake, "small")
    ingest_cohort(lake, "small")
    return load_curated(lake)


@pytest.fixture(scope="session")
def baseline_dir(tmp_path_factory, curated_cohort):
    """The cohort's data baseline and a prediction baseline of the five labels, as the pipeline lays them out (a
    module may define its own, with other figures)."""
    from diagnosa.data.schema import Schema
    from diagnosa.labels import CATEGORIES
    from processing.baseline import write_data_baseline, write_json

    frame, manifest = curated_cohort
    folder = tmp_path_factory.mktemp("baseline")
    write_data_baseline(frame, Schema.from_dict(manifest["schema"]), folder)
    labels = list(CATEGORIES)
    write_json(folder / "prediction_baseline.json", {
        "version": 1, "model_version": None, "labels": labels, "n": 100,
        "predicted_distribution": {label: 20 for label in labels}, "predicted_share": {label: 0.2 for label in labels},
        "per_class": {label: {"recall": 0.9, "precision": 0.9, "support": 20} for label in labels},
        "orphan": {"n": 10, "macro_recall": 0.6, "recall_per_class": {}, "trained_groups": ["ORPHA:558"]},
        "thresholds": {"recall": {label: 0.8 for label in labels}, "orphan_macro_recall": 0.5}})
    return folder


@pytest.fixture(scope="session")
def seed_lake(curated_cohort):
    """``seed_lake(root)``: a local data lake at ``root/lake`` holding the small cohort's curated version;
    returns (lake, the version's key prefix)."""
    from diagnosa.lake import DataLake

    frame, manifest = curated_cohort

    def seed(root):
        lake = DataLake.from_uri(str(root / "lake"))
        prefix = f"curated/patients/{manifest['version']}"
        # The ingest's layout in parts of 1,000 rows (the real ones hold 5,000): four objects, so a job of two
        # instances shards them (S3 sharding by key), as with a large cohort.
        keys = []
        for number, start in enumerate(range(0, len(frame), 1_000)):
            keys.append(f"{prefix}/data/part-{number:05d}.parquet")
            frame.iloc[start:start + 1_000].to_parquet(root / "part.parquet", index=False)
            lake.put_file(root / "part.parquet", keys[-1])
        lake.put_json(f"{prefix}/manifest.json", {**manifest, "data_keys": keys})
        return lake, prefix

    return seed


def _train_model(root, curated_cohort, hyperparameters: dict, preprocess_args: tuple[str, ...] = ()) -> Path:
    """The preprocess and train jobs on the small cohort (or ``curated_cohort``: any curated frame and manifest), as
    the pipeline runs them, Preprocess with ``preprocess_args`` (its parameters); returns the model folder."""
    import json as _json

    from processing import preprocess as preprocess_job
    from training import train as train_job

    frame, manifest = curated_cohort
    source = root / "pre" / "input" / "curated"
    source.mkdir(parents=True)
    frame.to_parquet(source / "data.parquet", index=False)
    # The manifest lists the one part written here (Preprocess reads exactly the parts it lists).
    listed = [f"curated/{manifest['dataset']}/{manifest['version']}/data.parquet"]
    (source / "manifest.json").write_text(_json.dumps({**manifest, "data_keys": listed}))
    assert preprocess_job.main(["--base-dir", str(root / "pre"), *preprocess_args]) == 0
    env = {f"SM_CHANNEL_{c.upper()}": str(root / "pre" / "output" / c) for c in ("train", "validation", "transformer")}
    env |= {"SM_MODEL_DIR": str(root / "model"), "SM_OUTPUT_DATA_DIR": str(root / "out" / "data"),
            "SM_OUTPUT_DIR": str(root / "out"), "SM_INPUT_DIR": str(root / "in"),
            "SM_HPS": _json.dumps(hyperparameters)}
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    try:
        assert train_job.main([]) == 0
    finally:
        patch.undo()
    return root / "model"


@pytest.fixture(scope="session")
def train_model():
    """``train(root, (curated frame, manifest), hyperparameters) -> model folder``: the preprocess and train jobs on a
    test's own curated data (an own dataset's), as the pipeline runs them."""
    return _train_model


def _own_dataset(folder: Path, name: str, csv_text: str, config: str):
    """A dataset of one's own (``csv_text``, its TOML ``config``) ingested into ``folder``/lake: (curated frame,
    manifest)."""
    from diagnosa.data.ingest import ingest_csv, load_curated
    from diagnosa.lake import DataLake

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text(csv_text, encoding="utf-8")
    (folder / f"{name}.toml").write_text(config, encoding="utf-8")
    lake = DataLake.from_uri(str(folder / "lake"))
    ingest_csv(lake, folder / f"{name}.csv", folder / f"{name}.toml")
    return load_curated(lake, name)


@pytest.fixture(scope="session")
def own_dataset():
    """``own_dataset(folder, name, csv_text, config) -> (curated frame, manifest)``: `data ingest`'s library call."""
    return _own_dataset


def _vote_of(folder: Path, members: dict[str, Path], weights: dict[str, float]) -> Path:
    """The vote Select builds of trained ``members`` (name → model folder) with ``weights``; its model folder."""
    from processing import ensemble
    from processing.select import build_ensemble, gather_evidence, load_candidates

    (folder / "candidates").mkdir(parents=True)
    for name, model in members.items():
        (folder / "candidates" / name).symlink_to(model, target_is_directory=True)
    candidates = load_candidates(folder / "candidates")
    evidence, reason = gather_evidence(candidates)
    assert evidence is not None, reason
    build_ensemble(candidates, weights, evidence, ensemble.EnsembleChoice("stacked", weights), folder / "vote")
    return folder / "vote"


@pytest.fixture(scope="session")
def vote_of():
    """``vote_of(folder, {name: model folder}, {name: weight}) -> vote model folder``, as Select builds it."""
    return _vote_of


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, curated_cohort):
    """A real model folder: the preprocess and train jobs run on the small cohort (logistic regression)."""
    return _train_model(tmp_path_factory.mktemp("model"), curated_cohort, {"family": "logistic_regression"})


@pytest.fixture(scope="session")
def xgboost_model_dir(tmp_path_factory, curated_cohort):
    """A real model folder of the champion's family (XGBoost on the sparse indicators), 40 trees."""
    return _train_model(tmp_path_factory.mktemp("xgboost-model"), curated_cohort,
                        {"family": "xgboost", "n_estimators": "40"})


@pytest.fixture(scope="session")
def two_label_model_dir(tmp_path_factory, curated_cohort):
    """A real model of two labels (ill or not: the cohort's four illnesses merged), as a user's own yes/no table
    trains one: the label set is not the cohort's five."""
    import copy

    frame, manifest = curated_cohort
    labels = ("NO ENFERMO", "ENFERMO")
    manifest = copy.deepcopy(manifest)
    schema = manifest["schema"]
    schema["labels"] = list(labels)
    for spec in schema["fields"]:
        if spec.get("role") == "target":
            spec["values"] = list(labels)
    target = frame["label"].where(frame["label"] == "NO ENFERMO", "ENFERMO")
    return _train_model(tmp_path_factory.mktemp("two-labels"), (frame.assign(label=target), manifest),
                        {"family": "logistic_regression"})


@pytest.fixture(scope="module")
def local_endpoint(trained_model_dir):
    """The local endpoint serving ``trained_model_dir`` on a free port, ready (no data capture)."""
    from inference.server import EndpointServer

    with EndpointServer(str(trained_model_dir)) as endpoint:
        endpoint.wait_until_ready()
        yield endpoint


@pytest.fixture
def model_workspace(tmp_path, trained_model_dir):
    """A local workspace whose lake (its default folder, ``<workspace>/lake``) holds ``trained_model_dir`` as
    ``artifacts/m/model.tar.gz`` (``s3://<local bucket>/artifacts/m/model.tar.gz`` to a registered version); the
    servers of every endpoint deployed from it are stopped afterwards."""
    import tarfile

    from diagnosa.lake import DataLake
    from diagnosa.services import LocalWorkspace

    lake = DataLake.from_uri(str(tmp_path / "ws" / "lake"))
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(trained_model_dir.iterdir()):
            tar.add(entry, arcname=entry.name)
    lake.put_file(archive, "artifacts/m/model.tar.gz")
    workspace = LocalWorkspace(tmp_path / "ws", lake)
    yield workspace
    endpoints = workspace.endpoints()
    for folder in sorted(endpoints.root.glob("*/")):
        for pid in endpoints.servers(folder.name):
            endpoints._stop(pid)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.needs("chromium")``: skip without the tool, or fail when the run declares it (tests/tools.py)."""
    from tools import need

    for mark in item.iter_markers("needs"):
        need(*mark.args)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """A test's report as UTF-8 can carry it: the hostile-input tests feed lone surrogates ("\\ud800"), which a
    captured log record or a failure's text may quote, and pytest-xdist's worker, which sends each report to the
    controller as UTF-8, died on one (and with it the rest of its tests). Escaped, as the server's logs escape them."""
    from inference.limits import printable

    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, printable(text)) for title, text in report.sections]
    if report.failed and printable(text := str(report.longrepr)) != text:
        report.longrepr = printable(text)


@pytest.fixture
def aws_endpoints(monkeypatch, tmp_path):
    """``point(**urls)``: every boto3 client made after it (region eu-west-1, dummy credentials, no AWS configuration
    file or instance role) sends each service named to its URL (``sagemaker=``, ``s3=``, ``sagemaker_runtime=``:
    botocore's ``AWS_ENDPOINT_URL_<SERVICE>``), to a test's own server of :func:`http_server`."""
    import boto3

    def point(**urls: str) -> None:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL",
                     "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
            monkeypatch.delenv(name, raising=False)
        for name, value in {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "eu-west-1", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                            "AWS_EC2_METADATA_DISABLED": "true",
                            **{f"AWS_ENDPOINT_URL_{service.upper()}": url for service, url in urls.items()}}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # not one whose settings an earlier test resolved

    return point


@pytest.fixture
def http_server():
    """``start(handler_class, **attributes) -> (URL, handler)``: a real HTTP server (the stdlib's threading one, on a
    free loopback port) for a test's fake endpoint, its handler a subclass with those class attributes (and a fresh
    ``received`` list, no request log); every server started is shut down after the test."""
    import threading
    from http.server import ThreadingHTTPServer

    servers = []

    def start(base: type, **attributes: object) -> tuple[str, type]:
        quiet = {"log_message": lambda self, *args: None}  # a request line per request on stderr says nothing here
        handler = type("Handler", (base,), {"received": [], **quiet, **attributes})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
