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
for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "DIAGNOSA_HOME", "DIAGNOSA_LAKE"):
    os.environ.pop(key, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
