"""What the interfaces share, as functions: the CLI's commands and its retraining path call these, not
each other's argv, and nothing here parses arguments or prints.

- the input a run trains on: a dataset's latest curated version (``latest_input``), the curated manifest a
  run's definition is built from (``curated_manifest``, ``dataset_of``), the input of a retraining run
  (``retraining_input``);
- a local run: the definition for the local lake (``local_definition``) and a checked plan of what to run
  (``plan_local_run``);
- a workspace's local executor and endpoints, and an approved version deployed to its endpoint
  (``LocalWorkspace``).

The local executor maps the bucket ``s3://diagnosa-local`` (``LOCAL_BUCKET``) onto the lake folder. On AWS
the same decisions are taken by the CDK app's functions (infra/functions/), deployed without this package:
tests/infra pins them to these (``latest_input``: tests/infra/test_infra_functions.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from diagnosa.data.ingest import curated_uri, latest_version, spelled_as_endpoint, unfinished_note
from diagnosa.data.schema import BUILTIN_DATASET, RESOURCE_NAME
from diagnosa.lake import DataLake

if TYPE_CHECKING:
    from pipelines.executor import LocalExecutor, StepEvent
    from pipelines.local_endpoints import LocalEndpoints

LOCAL_BUCKET = "diagnosa-local"  # what the local executor maps onto the lake folder
LOCAL_ROLE = "arn:aws:iam::000000000000:role/diagnosa-local"


class ServiceError(Exception):
    """An operation cannot be done as asked; the message says what is wrong and what to do instead."""


class PortTaken(ServiceError):
    """A deploy refused because another process listens on the endpoint's port: the one failure another port mends."""


class EndpointBusy(ServiceError):
    """A deploy refused because another process was still deploying the endpoint when the wait ended: transient, the
    same deploy succeeds once that one ends."""


class VersionRejected(ServiceError):
    """A deploy of a version the registry says is Rejected (before it deployed, or while it did): not served, what
    served before serves on; deploying it needs it approved again."""


class DeploySuperseded(ServiceError):
    """A deploy not done because a later one was asked of the endpoint while it waited: the latest approval serves.
    Not a failure (the version's status is what was asked)."""


def latest_input(lake: DataLake, dataset: str, bucket: str) -> str:
    """The pipeline's ``InputDataUri`` for the dataset's latest curated version in ``lake``, which the
    pipeline reads as ``s3://<bucket>``; IngestError when the dataset has none."""
    return curated_uri(bucket, dataset, latest_version(lake, dataset))


def plan_aws_start(definition: dict[str, Any], raw: Mapping[str, str], lake: DataLake, bucket: str,
                   dataset: str | None = None) -> dict[str, Any]:
    """The parameters of a SageMaker execution of ``definition`` (the pipeline as deployed: what will run), checked
    as ``run --local`` checks them, before anything is started: ``raw`` typed as the definition declares them, the
    values a job request would refuse (instance counts and types), and the input: the dataset the definition
    trains (``dataset``, when the user named one, must be it), its latest curated version in ``lake`` unless
    ``raw`` names an ``InputDataUri``, which must be a curated version of that dataset in ``bucket``, with its
    manifest. ServiceError says what is wrong."""
    from diagnosa.data.ingest import VERSION_ID, IngestError, latest_manifest, read_manifest
    from diagnosa.data.validate import clip
    from diagnosa.text import ITEM_CHARS
    from pipelines.definition import parameter_problems
    from pipelines.executor import ExecutionError, resolve_parameters
    from pipelines.graph import definition_problems

    # The document as SageMaker holds it, checked as CreatePipeline checks one: a Parameters entry that was no object
    # (or a None for the list) ended in a traceback.
    malformed = definition_problems(definition)
    if malformed:
        raise ServiceError("the deployed definition is malformed: " + "; ".join(clip(p, ITEM_CHARS) for p in malformed))
    declared = {p["Name"]: p.get("DefaultValue") for p in definition.get("Parameters", [])}
    default = declared.get("InputDataUri")
    prefix = f"s3://{bucket}/curated/"
    if not (isinstance(default, str) and default.startswith(prefix) and default.count("/") == 5):
        raise ServiceError(f"the deployed pipeline's InputDataUri default is {default!r}, not s3://{bucket}/curated/"
                           "<dataset>/: was it deployed with another --bucket? Give that bucket")
    trained = default[len(prefix):].strip("/")
    if dataset is not None and dataset != trained:
        raise ServiceError(f"the deployed pipeline trains dataset {trained!r}, not {dataset!r}: start it with "
                           f"--dataset {trained} (or upsert it for {dataset!r} first)")
    try:
        parameters = resolve_parameters(definition, dict(raw))
    except ExecutionError as err:
        raise ServiceError(str(err)) from None
    overrides = {name: parameters[name] for name in raw}
    problems = parameter_problems(definition, parameters)
    if problems:  # each bounded: a 100,000-character value was quoted whole by each step's request problem
        raise ServiceError("; ".join(clip(problem, ITEM_CHARS) for problem in problems))
    given = overrides.get("InputDataUri")
    try:
        if given is None:
            version, manifest = latest_manifest(lake, trained)
            overrides["InputDataUri"] = curated_uri(bucket, trained, version)
        else:
            version = str(given).rstrip("/").removeprefix(f"{prefix}{trained}/")
            if not VERSION_ID.fullmatch(version):
                raise ServiceError(f"InputDataUri={given!r} is not a curated version of {trained!r} in this "
                                   f"pipeline's bucket (s3://{bucket}/curated/{trained}/<version>)")
            named = read_manifest(lake, trained, version)
            if named is None:
                raise ServiceError(f"InputDataUri={given!r}: no curated version {version} of {trained!r} (no "
                                   "manifest.json there)")
            manifest = named
    except IngestError as err:
        raise ServiceError(f"{err} (or give --param InputDataUri=s3://...)") from None
    class_size_preflight(manifest)  # as run --local: an execution whose Preprocess would stop is not started
    return overrides


def class_size_preflight(manifest: Mapping[str, Any]) -> None:
    """A curated version whose classes the split cannot place (too few rows, or too few patients where the split
    keeps a patient's rows together) stops a run before any step: ServiceError naming every such class. Ingestion
    refuses such versions; one curated by an older Diagnosa (or copied in) may still hold them."""
    from diagnosa.data.schema import too_small_classes
    from diagnosa.data.validate import shown

    where = f"curated dataset {manifest.get('dataset')} version {manifest.get('version')}"  # said as one line (cli)

    def damaged(what: str) -> ServiceError:  # a value of the wrong kind was a TypeError or OverflowError traceback
        return ServiceError(f"{where}: its manifest.json is damaged ({what}): ingest the data again")

    if "schema" not in manifest:
        return  # not a manifest ingestion writes (a test's stand-in): Preprocess says what is wrong with it
    schema = manifest["schema"]
    labels = schema.get("labels") if isinstance(schema, dict) else None
    if not (isinstance(labels, list) and labels and all(isinstance(label, str) for label in labels)):
        raise damaged(f"its schema's labels are {shown(labels, 80)}, not a list of names")
    problem = None
    for key, unit in (("label_counts", "row"), ("patient_counts", "patient")):
        counts = manifest.get(key)
        if counts is None:
            continue
        if not isinstance(counts, dict):
            raise damaged(f"{key} is {shown(counts, 80)}, not an object")
        for label, count in counts.items():
            if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
                raise damaged(f"{key} gives {shown(label, 80)} {shown(count, 80)}, not a count")
        if not problem:  # patients: the split's unit where the dataset names them
            problem = too_small_classes(counts, labels, unit=unit)
    if problem:
        raise ServiceError(f"{where}: {problem}; then ingest again")


def retraining_input(dataset: str, version: str) -> str:
    """The ``InputDataUri`` of a local retraining run: the curated ``version`` of ``dataset`` that
    ``monitoring.retrain.feedback_dataset`` wrote (its raw data + accepted feedback)."""
    return curated_uri(LOCAL_BUCKET, dataset, version)


def local_definition(lake: DataLake, families: tuple[str, ...] | None = None, **dataset: Any) -> dict[str, Any]:
    """The pipeline definition for the local lake; what the SDK uploads while building it goes into the lake.

    ``dataset``: the settings of the dataset it is built for (``pipelines.definition.dataset_settings``);
    none: the built-in cohort."""
    build = _local_build(families, **dataset)
    _upload(lake, build.objects)
    return json.loads(build.definition)


def _local_build(families: tuple[str, ...] | None = None, **dataset: Any) -> Any:
    """The offline build (definition + the objects it names) for the local lake; nothing written."""
    from pipelines.offline import build_offline

    chosen: dict[str, Any] = {"families": families} if families else {}  # else the definition's default families
    return build_offline(LOCAL_BUCKET, LOCAL_ROLE, **chosen, **dataset)


def _upload(lake: DataLake, objects: Mapping[str, bytes]) -> None:
    for key, data in objects.items():
        if not lake.exists(key) or lake.get_bytes(key) != data:
            lake.put_bytes(key, data)


def serves(record: dict[str, Any], package: dict[str, Any]) -> bool:
    """Whether an endpoint's record serves a registered version: the version it was deployed from, or, for an endpoint
    deployed from a model file (no version recorded), the version whose model it loads. A cached re-run registers a
    second version with the same model file; only the one deployed serves. A record an older Diagnosa's run wrote
    names no version: LocalEndpoints.describe() fills in the one that run registered, so it is matched by model file
    only when the run cannot say (every version of that file is then taken as serving)."""
    deployed = record.get("ModelPackageArn")
    if deployed:
        return bool(deployed == package.get("ModelPackageArn"))
    return bool(record.get("ModelDataUrl") == package["InferenceSpecification"]["Containers"][0].get("ModelDataUrl"))


def label_naming_problem(config_path: Path) -> str | None:
    """Why the pipeline could not be built for a dataset config (more labels than it takes; a label with no letter or
    digit to name its recall-threshold parameter, two labels, or a label and the slice, mapping to one name), so
    ingestion can refuse it before anything is written rather than the first run after it; None when it can, or when
    the config does not load (ingestion says why). The definition's own check (``check_settings``) decides."""
    from diagnosa.data.schema import SchemaError, load_dataset_config
    from pipelines.definition import PipelineSettings, check_settings, config_dataset_settings

    try:
        config = load_dataset_config(config_path)
    except SchemaError:
        return None
    try:  # where the pipeline would run is not the config's: the local run's bucket and role
        check_settings(PipelineSettings(bucket=LOCAL_BUCKET, role_arn=LOCAL_ROLE, code_uri=f"s3://{LOCAL_BUCKET}/code",
                                        code_sha256="0" * 64, **config_dataset_settings(config)))
    except ValueError as err:
        return f"{config_path}: {err}; each label and the slice need a gate parameter of their own. Nothing was written"
    return None


EXAMPLE_REQUEST = {"age": 67, "sex": "M", "temperature_c": 38.9, "symptoms": ["HP:0001945"]}  # the built-in cohort's


def example_request(lake: DataLake, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """A request to show in the hints that call an endpoint: the built-in cohort's (``manifest`` None or the
    cohort's), else the first curated row's feature values of the version ``manifest`` describes, and its patient for
    a dataset of visits (a value missing there is left out); None when that version is not in ``lake``."""
    import io
    import math

    import pyarrow.parquet as pq

    from diagnosa.data.ingest import curated_data_keys
    from diagnosa.lake import LakeError

    if not manifest or manifest.get("dataset") == BUILTIN_DATASET:
        return dict(EXAMPLE_REQUEST)
    try:  # the first data part's first row: the whole version was read for one row (at every run's end, serve's start)
        part = pq.ParquetFile(io.BytesIO(lake.get_bytes(curated_data_keys(manifest)[0])))
        frame = part.read_row_group(0).slice(0, 1).to_pandas() if part.num_row_groups else None
    except (LakeError, OSError, KeyError, IndexError, ValueError):
        return None
    if frame is None:
        return None
    features = [f["name"] for f in manifest["schema"]["fields"] if f.get("role", "feature") == "feature"]
    patient = manifest["schema"].get("patient_column")  # a dataset of visits: the monitor counts its patients
    example: dict[str, Any] = {}
    for name in [*features, *([patient] if isinstance(patient, str) and patient not in features else [])]:
        value = frame[name].iloc[0] if name in frame.columns and len(frame) else None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        example[name] = value.tolist() if hasattr(value, "tolist") else value
    return example


def curated_manifest(lake: DataLake, dataset: str, input_uri: str | None = None) -> dict[str, Any] | None:
    """The manifest of the curated version a run trains on: the one ``input_uri`` names (when it is a
    curated version in this lake), else the dataset's latest; None when there is none."""
    from diagnosa.data.ingest import NoCuratedData, latest_manifest

    if input_uri:
        key = input_uri.removeprefix(f"s3://{LOCAL_BUCKET}/").rstrip("/") + "/manifest.json"
        return lake.get_json(key) if input_uri.startswith(f"s3://{LOCAL_BUCKET}/curated/") and lake.exists(key) else None
    try:
        return latest_manifest(lake, dataset)[1]  # a damaged LATEST.json or manifest is said, not read as none
    except NoCuratedData:
        return None


def dataset_of(manifest: dict[str, Any] | None, dataset: str) -> dict[str, Any]:
    """The definition's dataset settings: from the curated manifest's schema (labels, slice), or the
    built-in cohort's when there is no manifest yet."""
    from diagnosa.data.schema import Schema, cohort_schema, config_gate, config_missing_indicators
    from pipelines.definition import dataset_settings

    schema = Schema.from_dict(manifest["schema"]) if manifest else cohort_schema()
    return dataset_settings(schema.name, schema.labels, schema.slice, grouped=schema.group_column is not None,
                            gate=config_gate((manifest or {}).get("config")),
                            missing_indicators=config_missing_indicators((manifest or {}).get("config")))


@dataclass(frozen=True)
class RunPlan:
    """What a new local execution runs: its definition, its parameter overrides (``InputDataUri`` set) and the
    manifest of the curated version it trains on (None for an input outside this lake's curated zone)."""

    definition: dict[str, Any]
    overrides: dict[str, str]
    manifest: dict[str, Any] | None


def plan_local_run(lake: DataLake, *, dataset: str, overrides: Mapping[str, str] | None = None,
                   families: tuple[str, ...] | None = None, definition: dict[str, Any] | None = None) -> RunPlan:
    """Check a local run before any step: the curated data it trains on (the dataset's latest version unless
    ``overrides`` names an ``InputDataUri``), the definition (``definition``, else built for that dataset's
    labels and slice with ``families``), the overrides' names and types. ServiceError says what is wrong."""
    from pipelines.definition import parameter_problems
    from pipelines.executor import ExecutionError, resolve_parameters
    from pipelines.graph import definition_problems

    if definition is not None and (malformed := definition_problems(definition)):  # a saved one: all of it at once
        raise ServiceError("; ".join(malformed))
    overrides = dict(overrides or {})
    manifest = curated_manifest(lake, dataset, overrides.get("InputDataUri"))
    built = definition is None
    if manifest is None and dataset != BUILTIN_DATASET and "InputDataUri" not in overrides:
        raise ServiceError(f"no curated dataset '{dataset}' in {lake.uri}: ingest it first "
                           f"(`diagnosa data ingest FILE.csv --config FILE.toml`, docs/data.md)"
                           + unfinished_note(lake, dataset) + spelled_as_endpoint(lake, dataset))
    if manifest is not None:
        class_size_preflight(manifest)
    objects: Mapping[str, bytes] = {}  # what a built definition names (its code), written once the plan holds
    if definition is None:
        try:
            # Built for the dataset it trains on: its labels and slice come from the curated manifest.
            build = _local_build(families, **dataset_of(manifest, dataset))
        except ValueError as err:
            raise ServiceError(str(err)) from None
        definition, objects = json.loads(build.definition), build.objects
    try:
        # Names, types, ranges and the job requests they make first: a typo is reported before data is looked for
        # (a definition of the user's own: its graph is the executor's preflight to check, the requests with it).
        parameters = resolve_parameters(definition, overrides)
        problems = parameter_problems(definition, parameters) if built else []
    except ExecutionError as err:
        raise ServiceError(str(err)) from None
    if problems:
        raise ServiceError("; ".join(problems))
    if manifest is None and "InputDataUri" in overrides and built:
        # Preprocess reads <InputDataUri>/manifest.json: a prefix without one (the dataset's folder, the
        # definition's own default s3://diagnosa-local/curated/<dataset>/) used to pass preflight and fail the step.
        uri = overrides["InputDataUri"]
        latest = curated_manifest(lake, dataset, None)
        hint = (f": name a version, e.g. {curated_uri(LOCAL_BUCKET, dataset, latest['version'])}, or leave "
                "InputDataUri out for the latest") if latest else ""
        raise ServiceError(f"parameter InputDataUri={uri!r} is not a curated version (no manifest.json under it){hint}")
    declared = {p["Name"] for p in definition.get("Parameters", [])}
    if "InputDataUri" in declared and "InputDataUri" not in overrides:
        if manifest is None:
            raise ServiceError(f"no curated dataset in {lake.uri}: run `diagnosa data generate` and "
                               "`diagnosa data ingest` first (or give --param InputDataUri=...)")
        overrides["InputDataUri"] = curated_uri(LOCAL_BUCKET, dataset, manifest["version"])
    _upload(lake, objects)  # a refused run left code in a lake (or made one where there was none)
    return RunPlan(definition, overrides, manifest)


@dataclass(frozen=True)
class LocalWorkspace:
    """A workspace folder (executions, registry, endpoints) and the lake folder its local executor and
    endpoints read and write."""

    root: Path
    lake: DataLake
    lake_uri: str | None = None  # the lake as the user named it (None: the workspace's own); endpoint servers get it

    def __post_init__(self) -> None:
        if self.lake.uri.startswith("s3://"):
            raise ServiceError("the local executor runs against a local lake folder; for s3:// use "
                               "`diagnosa pipeline upsert` and `diagnosa pipeline start`")

    def endpoints(self, port: int | None = None, *, wait: float | None = None,
                  on_wait: Callable[[str], None] | None = None) -> LocalEndpoints:
        """The workspace's local endpoints (records under <workspace>/endpoints/, servers deployed from the lake);
        ``port``: a new endpoint's (default 8080, 0 any free one); an existing endpoint moves to a port given (0:
        a free one). ``wait``: how long a deploy waits for another process deploying the endpoint (None: a few
        seconds), saying so with ``on_wait``."""
        from pipelines.local_endpoints import LocalEndpoints
        from pipelines.local_jobs import LakeMapping

        return LocalEndpoints(self.root, LakeMapping(LOCAL_BUCKET, self.lake), lake_uri=self.lake_uri, port=port,
                              lock_wait=wait, on_wait=on_wait)

    def executor(self, *, port: int | None = None, max_parallel: int | None = None, use_cache: bool = True,
                 progress: Callable[[str], None] = print,
                 on_step: Callable[[StepEvent], None] | None = None) -> LocalExecutor:
        """The executor of this workspace's local runs; ``port``: an endpoint its runs create; ``progress`` and
        ``on_step``: what it says as it goes (lines) and its steps' starts and ends (for a live display). A run's
        Endpoint step waits for another process's deploy of the endpoint as `registry approve` does (DEPLOY_WAIT,
        saying so): two runs at once, each approving its version, both deploy, the later one serving."""
        from pipelines.executor import open_local
        from pipelines.local_endpoints import DEPLOY_WAIT

        endpoints = self.endpoints(port, wait=DEPLOY_WAIT, on_wait=lambda line: progress(f"{line}, then deploys"))
        return open_local(self.root, self.lake, LOCAL_BUCKET, endpoints=endpoints,
                          max_parallel=max_parallel, use_cache=use_cache, progress=progress, on_step=on_step)

    def endpoint_labels(self, endpoint_name: str) -> list[str] | None:
        """The labels of the model a local endpoint of this workspace serves (None: no such endpoint here)."""
        from diagnosa.model import model_labels

        return self._served(endpoint_name, model_labels)

    def endpoint_dataset(self, endpoint_name: str) -> str | None:
        """The dataset of the model a local endpoint of this workspace serves (None: no such endpoint here, or its
        model does not say): another dataset's model may serve on an endpoint once its own was stopped."""
        from diagnosa.model import model_dataset

        return self._served(endpoint_name, model_dataset)

    def served_baselines(self, record: dict[str, Any]) -> tuple[str, list[Path]] | None:
        """The registered version an endpoint's ``record`` serves and its baseline folders in this lake (its
        ModelMetrics: the data statistics, then the prediction baseline's); None when no version with both serves it.
        ServiceError when a baseline lies outside this lake (a version registered against another)."""
        from diagnosa.lake import LocalStorage
        from pipelines.executor import local_registry
        from pipelines.local_jobs import JobError, LakeMapping

        registry, mapping = local_registry(self.root), LakeMapping(LOCAL_BUCKET, self.lake)
        for group in registry.groups():
            for package in reversed(registry.list_model_packages(group)):
                if not serves(record, package):  # the version deployed (a cached re-run's twin has the same model)
                    continue
                metrics = package.get("ModelMetrics", {})
                uris = [metrics.get("ModelDataQuality", {}).get("Statistics", {}).get("S3Uri"),
                        metrics.get("ModelQuality", {}).get("Statistics", {}).get("S3Uri")]
                if not all(uris):
                    return None
                try:
                    keys = [mapping.key(uri).rsplit("/", 1)[0] for uri in uris]
                except JobError as err:
                    raise ServiceError(f"the baselines of {package['ModelPackageArn']}: {err}") from None
                storage = self.lake.storage
                assert isinstance(storage, LocalStorage)  # a local lake (__post_init__)
                return package["ModelPackageArn"], [storage.root / key for key in keys]
        return None

    def served_families(self, endpoint_name: str) -> tuple[tuple[str, ...], str] | None:
        """The candidate families among which the run that trained the model a local endpoint serves chose it, and that
        run's id (its artifacts/runs/<id>/selection/selection.json, kept in the lake with the model): a retraining
        trains them again, as SageMaker's retraining runs the pipeline as it was deployed. None when this workspace
        cannot say (no such endpoint, a model from elsewhere, that selection gone or damaged)."""
        from diagnosa.lake import LakeError
        from pipelines.definition import families_problem
        from processing.select import SELECTION, selection_families

        record = self.endpoints().describe(endpoint_name)
        url = record.get("ModelDataUrl") if record else None
        prefix = f"s3://{LOCAL_BUCKET}/artifacts/runs/"  # where a run's step outputs are (the champion's)
        if not isinstance(url, str) or not url.startswith(prefix):
            return None
        run = url[len(prefix):].split("/", 1)[0]
        if not RESOURCE_NAME.fullmatch(run):  # one folder of runs/, no "..": else nothing
            return None
        try:
            selection = self.lake.get_json(f"artifacts/runs/{run}/{SELECTION}")
        except (LakeError, OSError, ValueError):
            return None
        families = selection_families(selection)
        return (families, run) if families and families_problem(families) is None else None  # families it knows

    def _served(self, endpoint_name: str, read: Callable[[str], Any]) -> Any:
        """``read`` of the model folder a local endpoint serves (its metadata); None without one, or unreadable."""
        from diagnosa.model import ModelLoadError

        record = self.endpoints().describe(endpoint_name)
        if not record or not record.get("ModelDir"):
            return None
        try:
            return read(record["ModelDir"])
        except ModelLoadError:
            return None

    def in_service(self) -> list[dict[str, Any]]:
        """The records of this workspace's local endpoints in service."""
        return [r for r in self.endpoints().list() if r["EndpointStatus"] == "InService"]

    def deploy_problem(self, package: dict[str, Any], endpoint_name: str, port: int | None = None) -> str | None:
        """Why deploying ``package`` to ``endpoint_name`` would fail, known before `registry approve` writes its
        status (a version approved that can never deploy stayed Approved): its model archive gone, outside the lake
        or unreadable as the deploy reads it (fetched and unpacked by the loader's own unpack_model, then its
        metadata read), the endpoint another dataset's (the deploy's own check), or the names of the model and
        endpoint config it would create not SageMaker's. None: nothing known against it."""
        import tempfile

        from diagnosa.lake import LakeError
        from diagnosa.model import ModelLoadError, read_metadata, unpack_model
        from pipelines.local_endpoints import names_problem
        from pipelines.local_jobs import JobError

        endpoints = self.endpoints(port)
        named = names_problem(endpoint_name, package)
        if named:
            return named
        if port:  # the port asked for is another endpoint's of this workspace: the deploy would be refused
            holder = endpoints.port_holder(port, endpoint_name)
            if holder:
                return endpoints.port_held(endpoint_name, port, holder)
        containers = (package.get("InferenceSpecification") or {}).get("Containers") or [{}]
        url = containers[0].get("ModelDataUrl") if isinstance(containers[0], dict) else None
        if not url:
            return "it names no model (InferenceSpecification.Containers[0].ModelDataUrl)"
        with tempfile.TemporaryDirectory(prefix="diagnosa-approve-") as scratch:
            archive = Path(scratch) / "model.tar.gz"
            try:
                endpoints.mapping.lake.get_file(endpoints.mapping.key(url), archive)
                read_metadata(unpack_model(archive, Path(scratch) / "model"))
            except JobError as err:  # a model outside the local lake
                return str(err)
            except ModelLoadError as err:  # truncated, not a tar.gz, no metadata: named by the lake's object
                return f"its model {url} cannot be loaded: {str(err).replace(str(archive), 'the archive')}"
            except (LakeError, OSError) as err:  # gone from the lake, or the disk full
                return f"its model could not be fetched from the lake: {err}"
        try:
            endpoints.check_dataset(endpoint_name, endpoints.describe(endpoint_name), package.get("ModelPackageArn"))
        except JobError as err:
            return str(err)
        return None

    def deploy_approved(self, package: dict[str, Any], *, endpoint_name: str | None = None,
                        port: int | None = None, wait: float | None = None,
                        on_wait: Callable[[str], None] | None = None) -> dict[str, Any]:
        """The local counterpart of the AWS deploy function: an approved version goes to its endpoint (each
        dataset's group has the endpoint of its name: diagnosa for the built-in cohort). The endpoint's record;
        ServiceError when it does not serve the version (the previous one serves on, rolled back; PortTaken when its
        port was taken). The checks are
        the endpoints' (LocalEndpoints.deploy), which a run's Endpoint step passes too: another dataset's endpoint
        is refused, and a version rejected while it deployed is not recorded as served. Another process deploying
        the endpoint is waited for ``wait`` seconds (None: a few; ``on_wait`` says it waits), then this deploy
        goes ahead, as the AWS deploy function's kept approval does; EndpointBusy when it was still deploying.
        VersionRejected when the registry says the version is Rejected (a reject since the approval);
        DeploySuperseded when a later deploy of the endpoint was asked while this one waited (that one serves)."""
        from diagnosa.lake import LakeError
        from pipelines.local_endpoints import EndpointBusy as Busy
        from pipelines.local_endpoints import PortInUse, Superseded
        from pipelines.local_endpoints import VersionRejected as Rejected
        from pipelines.local_jobs import JobError

        name = endpoint_name or package["ModelPackageGroupName"]
        endpoints = self.endpoints(port, wait=wait, on_wait=on_wait)
        try:
            return endpoints.deploy_model_package(package, endpoint_name=name)
        except PortInUse as err:
            raise PortTaken(str(err)) from None
        except Busy as err:
            raise EndpointBusy(str(err)) from None
        except Rejected as err:
            raise VersionRejected(str(err)) from None
        except Superseded as err:
            raise DeploySuperseded(str(err)) from None
        except JobError as err:  # DeployError, or a model outside the local lake
            raise ServiceError(str(err)) from None
        except (LakeError, OSError) as err:  # the model archive gone from the lake, or the disk full
            raise ServiceError(f"the model could not be fetched from the lake: {err}") from None
