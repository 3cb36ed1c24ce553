"""The CreateProcessingJob request of a Diagnosa job started by a function (plain boto3): the monitoring job
(``monitor.py``) and the retraining's feedback-folding job (``retrain.py``) run a root script of the staged step
code, in the image the pipeline's jobs use, on the stage's key and network. Also the one copy of how both quote a
value in a message (:func:`shown`, :func:`kind_of`, :func:`cut`): they ship together, as one asset."""
from __future__ import annotations

from typing import Any

CONTAINER = "/opt/ml/processing"
# Instance types whose storage is the instance's own (NVMe, encrypted by a hardware module on the instance):
# SageMaker refuses a VolumeKmsKeyId for them (botocore's documentation of ProcessingClusterConfig). The SageMaker
# SDK's rule (sagemaker.core.common_utils.instance_supports_kms, which a test holds this one equal to; the
# function's package has no SDK): a "d" in the family (r5d, g4dn, p4d...), or one of these families.
LOCAL_STORAGE_FAMILIES = ("g5", "g6", "g7e", "p5", "p6-b200", "trn1", "trn2")


def local_storage(instance_type: str) -> bool:
    """Whether ``instance_type`` (``ml.<family>.<size>``) runs on its own encrypted storage, no EBS volume."""
    family = instance_type.removeprefix("ml.").split(".", 1)[0]
    return "d" in family or family.startswith(LOCAL_STORAGE_FAMILIES)


def container_script(entry: str) -> str:
    """Unpack the staged code (``sourcedir.tar.gz``), install its exact pins, run the job's root script with the
    arguments that follow ("$@"): the same steps as the SDK's runproc.sh for the pipeline's jobs."""
    return ("set -euo pipefail; cd /opt/ml/processing/input/code; tar -xzf sourcedir.tar.gz; "
            "pip uninstall --yes --quiet typing >/dev/null 2>&1 || true; "
            "python -m pip install --quiet --disable-pip-version-check -r requirements.txt; "
            f'exec python {entry} "$@"')


def s3_input(name: str, uri: str, path: str) -> dict[str, Any]:
    """A ProcessingInput of an S3 prefix, downloaded to ``/opt/ml/processing/input/<path>``."""
    return {"InputName": name, "S3Input": {
        "S3Uri": uri, "LocalPath": f"{CONTAINER}/input/{path}", "S3DataType": "S3Prefix", "S3InputMode": "File",
        "S3DataDistributionType": "FullyReplicated", "S3CompressionType": "None"}}


def processing_request(env: dict[str, str], name: str, *, role_arn: str, entry: str, arguments: list[str],
                       inputs: list[dict[str, Any]], output: tuple[str, str, str]) -> dict[str, Any]:
    """The request (checked against botocore's shape in the tests). ``output``: (name, S3 URI, folder under
    ``/opt/ml/processing/output/``), uploaded at the job's end; the code comes from the lake's ``CODE_PREFIX``."""
    output_name, uri, folder = output
    request: dict[str, Any] = {
        "ProcessingJobName": name,
        "RoleArn": role_arn,
        "AppSpecification": {"ImageUri": env["IMAGE_URI"],
                             "ContainerEntrypoint": ["/bin/bash", "-c", container_script(entry), entry.removesuffix(".py")],
                             "ContainerArguments": arguments},
        "ProcessingInputs": [s3_input("code", f"s3://{env['LAKE_BUCKET']}/{env['CODE_PREFIX']}", "code"), *inputs],
        "ProcessingOutputConfig": {
            "Outputs": [{"OutputName": output_name, "S3Output": {
                "S3Uri": uri, "LocalPath": f"{CONTAINER}/output/{folder}", "S3UploadMode": "EndOfJob"}}],
            "KmsKeyId": env["KMS_KEY_ARN"]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": env["INSTANCE_TYPE"],
                                                  "VolumeSizeInGB": int(env.get("VOLUME_GB", "30"))}},
        "StoppingCondition": {"MaxRuntimeInSeconds": int(env.get("MAX_RUNTIME_SECONDS", "3600"))},
        "Environment": {"AWS_DEFAULT_REGION": env["AWS_REGION"], "PYTHONUNBUFFERED": "1"},
        "Tags": [{"Key": "diagnosa:endpoint", "Value": env["ENDPOINT_NAME"]}],
    }
    if not local_storage(env["INSTANCE_TYPE"]):  # the stage's key, else the instance's hardware encrypts the storage
        request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] = env["KMS_KEY_ARN"]
    if env.get("SUBNET_IDS"):
        request["NetworkConfig"] = {"VpcConfig": {"Subnets": env["SUBNET_IDS"].split(","),
                                                  "SecurityGroupIds": env["SECURITY_GROUP_IDS"].split(",")}}
    return request


# -- quoting in messages (the monitor and retrain functions' one copy) -------------------------------------------
SHOWN_LIMIT = 80  # characters of a value quoted in a message, by default


def cut(text: str, limit: int) -> str:
    """``text``, at most ``limit`` characters (the last one "…" when cut)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def shown(value: Any, limit: int = SHOWN_LIMIT) -> str:
    """``value``'s repr, at most ``limit`` characters (a long string is cut before its repr is made, and its repr
    after); repr escapes lone surrogates. A container is said in words (:func:`kind_of`): its repr grows with it, and a
    deep one fails."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    elif isinstance(value, (dict, list, tuple)):
        return kind_of(value)
    return cut(repr(value), limit)


NAMES_SHOWN = 10  # names of unknown fields or parameters said in a refusal; the rest counted


def named(names: list[str]) -> str:
    """``names`` for a refusal: the first NAMES_SHOWN, each quoted and cut, the rest counted."""
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return "[" + ", ".join(shown(name, 60) for name in names[:NAMES_SHOWN]) + "]" + more


def unknown_fields(event: dict[str, Any], known: tuple[str, ...]) -> str | None:
    """Why ``event`` (an invocation's own input) is refused for fields none of ``known`` names, or None: a misspelt
    field was ignored, and the run went on with that field's default."""
    unknown = sorted(key for key in event if key not in known)
    return f"unknown field(s) {named(unknown)} (it takes {', '.join(known)})" if unknown else None


def kind_of(value: Any) -> str:
    """What a JSON value is, in words (for a message naming a value of the wrong type without quoting it)."""
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return f"{'an object' if isinstance(value, dict) else 'a list'} of {len(value)} item(s)"
    return f"{shown(value, 60)} ({type(value).__name__})"


__all__ = ["CONTAINER", "LOCAL_STORAGE_FAMILIES", "NAMES_SHOWN", "SHOWN_LIMIT", "container_script", "cut", "kind_of",
           "local_storage", "named", "processing_request", "s3_input", "shown", "unknown_fields"]
