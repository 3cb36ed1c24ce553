"""What the interfaces share, as functions: the CLI's commands and the retraining path call these, not
each other's argv.

The local executor maps the bucket ``s3://diagnosa-local`` onto the lake folder (``LOCAL_BUCKET``);
a local run trains on a dataset's curated version, whose manifest says how the definition is built.
"""
from __future__ import annotations

import json
from typing import Any

LOCAL_BUCKET = "diagnosa-local"
LOCAL_ROLE = "arn:aws:iam::000000000000:role/diagnosa-local"


def local_definition(lake, families: tuple[str, ...] | None = None, **dataset: Any) -> dict[str, Any]:
    """The pipeline definition for the local lake; what the SDK uploads while building it goes into the lake.

    ``dataset``: the settings of the dataset it is built for (``pipelines.definition.dataset_settings``);
    none: the built-in cohort."""
    from pipelines.offline import build_offline

    build = build_offline(LOCAL_BUCKET, LOCAL_ROLE, **({"families": families} if families else {}), **dataset)
    for key, data in build.objects.items():
        if not lake.exists(key) or lake.get_bytes(key) != data:
            lake.put_bytes(key, data)
    return json.loads(build.definition)


def curated_manifest(lake, dataset: str, input_uri: str | None = None) -> dict[str, Any] | None:
    """The manifest of the curated version a run trains on: the one ``input_uri`` names (when it is a
    curated version in this lake), else the dataset's latest; None when there is none."""
    from diagnosa.data.ingest import IngestError, curated_prefix, latest_version

    if input_uri:
        key = input_uri.removeprefix(f"s3://{LOCAL_BUCKET}/").rstrip("/") + "/manifest.json"
        return lake.get_json(key) if input_uri.startswith(f"s3://{LOCAL_BUCKET}/curated/") and lake.exists(key) else None
    try:
        version = latest_version(lake, dataset)
    except IngestError:
        return None
    return lake.get_json(f"{curated_prefix(dataset, version)}/manifest.json")


def dataset_of(manifest: dict[str, Any] | None, dataset: str) -> dict[str, Any]:
    """The definition's dataset settings: from the curated manifest's schema (labels, slice), or the
    built-in cohort's when there is no manifest yet."""
    from diagnosa.data.schema import Schema, cohort_schema
    from pipelines.definition import dataset_settings

    schema = Schema.from_dict(manifest["schema"]) if manifest else cohort_schema()
    return dataset_settings(schema.name, schema.labels, schema.slice, grouped=schema.group_column is not None)
