"""The deploy function's environment as the stack sets it (shared by the function tests)."""
REGION = "eu-west-1"
ENV = {
    "ENDPOINT_NAME": "diagnosa-dev", "MODEL_PACKAGE_GROUP": "diagnosa-dev", "VARIANT_NAME": "AllTraffic",
    "MODEL_ROLE_ARN": "arn:aws:iam::123456789012:role/diagnosa-dev-model",
    "KMS_KEY_ARN": "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555",
    "CAPTURE_URI": "s3://lake/capture", "CAPTURE_PERCENT": "100",
    "INSTANCE_TYPE": "ml.m5.large", "MIN_INSTANCES": "1", "MAX_INSTANCES": "3", "INVOCATIONS_PER_INSTANCE": "200",
    "TRAFFIC_SHIFTING": "CANARY", "CANARY_PERCENT": "10", "BAKE_SECONDS": "600",
    "ROLLBACK_ALARMS": "diagnosa-dev-5xx,diagnosa-dev-model-latency",
    "MANAGED_BY": "diagnosa-dev-deploy",
    "RESOURCE_TAGS": '{"data-classification": "phi", "project": "diagnosa", "stage": "dev"}',
}
