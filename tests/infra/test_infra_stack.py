"""CDK assertions on the synthesized stacks: every security property of the lake, the roles, the
pipeline, the deployment and retraining wiring."""
from __future__ import annotations

import json
from pathlib import Path

from aws_cdk.assertions import Match

ZONES = ("raw", "curated", "features", "artifacts", "capture", "feedback", "quarantine")


def resources(template, kind):
    return template.find_resources(kind)


def logical(template, kind, predicate):
    found = [k for k, v in resources(template, kind).items() if predicate(v.get("Properties", {}))]
    assert len(found) == 1, found
    return found[0]


def role_id(template, name):
    return logical(template, "AWS::IAM::Role", lambda p: p.get("RoleName") == name)


def statements_of(template, name):
    """Every statement granted to the role (its managed policies and any inline/default policy)."""
    rid = role_id(template, name)
    role = resources(template, "AWS::IAM::Role")[rid]["Properties"]
    out = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
    for kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
        for policy in resources(template, kind).values():
            props = policy["Properties"]
            if {"Ref": rid} in props.get("Roles", []):
                out += props["PolicyDocument"]["Statement"]
    return out


def actions(statements):
    return sorted({a for s in statements if s.get("Effect", "Allow") == "Allow"
                   for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])})


def text(value):
    return json.dumps(value, sort_keys=True)


def _list(action):
    return [action] if isinstance(action, str) else action


def _resources(statement):
    """A statement's Resource as a list (one ARN may be a string or an Fn::Join)."""
    return statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]


# ------------------------------------------------------------------------------------------ data lake

def lake(template):
    return logical(template, "AWS::S3::Bucket", lambda p: p.get("LoggingConfiguration", {}).get("LogFilePrefix") == "lake/")


def raw_bucket(template):
    return logical(template, "AWS::S3::Bucket", lambda p: "ObjectLockConfiguration" in p)


def test_lake_is_kms_encrypted_with_a_rotated_customer_key(dev):
    dev.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    key = next(iter(resources(dev, "AWS::KMS::Key")))
    props = resources(dev, "AWS::S3::Bucket")[lake(dev)]["Properties"]
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms",
                                                     "KMSMasterKeyID": {"Fn::GetAtt": [key, "Arn"]}}
    assert rule["BucketKeyEnabled"] is True


def test_buckets_block_public_access_are_versioned_and_logged(dev):
    for bucket in resources(dev, "AWS::S3::Bucket").values():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert bucket["DeletionPolicy"] == "Retain"
    props = resources(dev, "AWS::S3::Bucket")[lake(dev)]["Properties"]
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "lake/"
    assert props["ObjectLockEnabled"] is True


def test_bucket_policies_deny_plain_http_and_old_tls(dev):
    for policy in resources(dev, "AWS::S3::BucketPolicy").values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                   for s in statements)
        assert any(s["Effect"] == "Deny" and s["Condition"] == {"NumericLessThan": {"s3:TlsVersion": 1.2}}
                   for s in statements)


def test_raw_zone_cannot_be_deleted_or_unlocked_by_anyone(dev):
    [policy] = [p for p in resources(dev, "AWS::S3::BucketPolicy").values()
                if p["Properties"]["Bucket"] == {"Ref": lake(dev)}]
    [raw] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "RawZoneIsImmutable"]
    assert raw["Effect"] == "Deny" and raw["Principal"] == {"AWS": "*"}
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"} <= set(raw["Action"])
    assert raw["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [lake(dev), "Arn"]}, "/raw/*"]]}


def test_lifecycle_expires_capture_and_ages_out_noncurrent_versions_but_never_raw(dev):
    rules = {r["Id"]: r for r in resources(dev, "AWS::S3::Bucket")[lake(dev)]["Properties"]
             ["LifecycleConfiguration"]["Rules"]}
    assert rules["capture-expires"]["Prefix"] == "capture/" and rules["capture-expires"]["ExpirationInDays"] == 90
    for zone in ("curated", "features", "artifacts", "feedback", "quarantine"):
        assert rules[f"noncurrent-{zone}"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert not any(r.get("Prefix", "").startswith("raw") for r in rules.values())
    assert all("Prefix" in r for r in rules.values() if "ExpirationInDays" in r or "NoncurrentVersionExpiration" in r)


def test_raw_bucket_keeps_every_object_for_the_default_retention(dev, prod, stacks):
    """The raw zone's own bucket: object lock with a default retention (the stage's mode and days), KMS,
    access-logged, retained, and no lifecycle rule that could ever expire or age out a raw object."""
    for template, stage in ((dev, "dev"), (prod, "prod")):
        config = stacks[f"Diagnosa-{stage}"].config
        bucket = resources(template, "AWS::S3::Bucket")[raw_bucket(template)]
        props = bucket["Properties"]
        assert props["ObjectLockEnabled"] is True and bucket["DeletionPolicy"] == "Retain"
        assert props["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {
            "Mode": config.raw_retention_mode, "Days": config.raw_retention_days}}}
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"][
            "SSEAlgorithm"] == "aws:kms"
        assert props["LoggingConfiguration"]["LogFilePrefix"] == "raw/"
        [rule] = props["LifecycleConfiguration"]["Rules"]
        assert set(rule) == {"Id", "Status", "AbortIncompleteMultipartUpload"}  # no expiration of any kind
        [policy] = [p for p in resources(template, "AWS::S3::BucketPolicy").values()
                    if p["Properties"]["Bucket"] == {"Ref": raw_bucket(template)}]
        [deny] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "RawZoneIsImmutable"]
        assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"}
        assert {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention",
                "s3:PutObjectRetention"} <= set(deny["Action"])
        assert deny["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [raw_bucket(template), "Arn"]}, "/*"]]}
        assert template.find_outputs("RawBucket")["RawBucket"]["Value"] == {"Ref": raw_bucket(template)}
    # The test stages keep the default: COMPLIANCE for six years (cdk.json's dev chooses GOVERNANCE, 30 days).
    assert stacks["Diagnosa-prod"].config.raw_retention_mode == "COMPLIANCE"


def test_only_the_feedback_folding_job_may_touch_the_raw_bucket_and_only_to_read_and_add(dev):
    raw, fold = raw_bucket(dev), role_id(dev, "diagnosa-dev-fold-feedback")
    for kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
        for name, policy in resources(dev, kind).items():
            if {"Ref": fold} not in policy["Properties"].get("Roles", []):
                assert raw not in text(policy["Properties"]["PolicyDocument"]), name
    granted = {a for s in statements_of(dev, "diagnosa-dev-fold-feedback") if raw in text(s["Resource"])
               for a in _list(s["Action"])}
    assert granted == {"s3:GetObject", "s3:PutObject", "s3:ListBucket"}


def test_access_logs_bucket_receives_lake_logs(dev):
    logs_bucket = resources(dev, "AWS::S3::Bucket")[lake(dev)]["Properties"]["LoggingConfiguration"]["DestinationBucketName"]
    assert logs_bucket["Ref"] in resources(dev, "AWS::S3::Bucket")


# ------------------------------------------------------------------------------------------ roles

def test_no_full_access_managed_policies_and_no_action_star(templates):
    for template in templates.values():
        for role in resources(template, "AWS::IAM::Role").values():
            assert "FullAccess" not in text(role["Properties"].get("ManagedPolicyArns", []))
        for kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            for policy in resources(template, kind).values():
                for s in policy["Properties"]["PolicyDocument"]["Statement"]:
                    acts = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
                    assert "*" not in acts and not any(a.endswith(":*") for a in acts), s


def test_app_role_may_invoke_the_endpoint_and_record_its_feedback_only(dev):
    # The doctors' app over SageMaker records confirmed diagnoses straight into the lake (no feedback route there):
    # the role could only invoke the endpoint, so every record was refused.
    statements = {s.get("Sid", "(kms)"): s for s in statements_of(dev, "diagnosa-dev-app")}
    assert set(statements) == {"InvokeDiagnosaEndpoint", "RecordFeedback", "ListFeedback", "(kms)"}
    assert statements["(kms)"]["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
    assert actions([statements["InvokeDiagnosaEndpoint"]]) == ["sagemaker:InvokeEndpoint"]
    assert text(statements["InvokeDiagnosaEndpoint"]["Resource"]).endswith(':endpoint/diagnosa-dev"]]}')
    assert sorted(_list(statements["RecordFeedback"]["Action"])) == ["s3:GetObject", "s3:PutObject"]
    assert text(statements["RecordFeedback"]["Resource"]).endswith('/feedback/diagnosa-dev/*"]]}')
    assert statements["ListFeedback"]["Condition"] == {"StringLike": {"s3:prefix": ["feedback/diagnosa-dev/*"]}}
    role = resources(dev, "AWS::IAM::Role")[role_id(dev, "diagnosa-dev-app")]["Properties"]
    assert "ManagedPolicyArns" not in role


def test_job_role_reads_curated_writes_features_and_runs_only(dev):
    statements = statements_of(dev, "diagnosa-dev-jobs")
    writes = text([s["Resource"] for s in statements if "s3:PutObject" in s["Action"]])
    reads = text([s["Resource"] for s in statements if s["Action"] == "s3:GetObject"])
    assert "/features/*" in writes and "/artifacts/runs/*" in writes
    for zone in ("raw", "curated", "capture", "feedback", "quarantine"):
        assert f"/{zone}/" not in writes
    assert "/artifacts/code/" not in writes  # jobs cannot tamper with the step code
    # Only the stage's dataset (the built-in cohort's: patients), not every dataset the lake holds.
    assert "/curated/patients/*" in reads and "/curated/*" not in reads
    assert "/raw/" not in reads and "/capture/" not in reads
    [listing] = [s for s in statements if s["Action"] == "s3:ListBucket"]
    assert "curated/patients/*" in listing["Condition"]["StringLike"]["s3:prefix"]
    assert "curated/*" not in listing["Condition"]["StringLike"]["s3:prefix"]
    assert not any(a.startswith(("s3:Delete", "iam:", "sagemaker:")) for a in actions(statements))
    kms = [s for s in statements if "kms:Decrypt" in s["Action"]]
    assert kms and all(s["Condition"]["StringEquals"]["kms:ViaService"] == "s3.eu-west-1.amazonaws.com" for s in kms)


def test_pipeline_role_passes_only_the_job_role_to_sagemaker(dev, prod):
    statements = statements_of(dev, "diagnosa-dev-pipeline")
    [passrole] = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert passrole["Resource"] == {"Fn::GetAtt": [role_id(dev, "diagnosa-dev-jobs"), "Arn"]}
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert {"sagemaker:CreateProcessingJob", "sagemaker:CreateTrainingJob", "sagemaker:CreateModelPackage"} <= set(
        actions(statements))
    assert "sagemaker:CreateEndpoint" not in actions(statements)
    resources_text = text([s["Resource"] for s in statements if "sagemaker:CreateModelPackage" in s["Action"]])
    assert "model-package-group/diagnosa-dev" in resources_text and "model-package/diagnosa-dev/*" in resources_text
    assert not [s for s in statements if "s3:PutObject" in s["Action"]]
    # Encrypted job volumes: whoever creates jobs (the pipeline, the monitoring function) may grant the stage's
    # key to AWS resources only (SageMaker's volumes).
    [key] = resources(dev, "AWS::KMS::Key")
    for creator in (statements, statements_of(dev, "diagnosa-dev-monitor-function")):
        [grant] = [s for s in creator if s.get("Sid") == "EncryptJobVolumes"]
        assert grant["Action"] == "kms:CreateGrant" and grant["Resource"] == {"Fn::GetAtt": [key, "Arn"]}
        assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
        # DescribeKey apart: kms:GrantIsForAWSResource is in grant requests only, so under it DescribeKey was never
        # granted; SageMaker reads the key's metadata for the caller (kms:ViaService).
        [describe] = [s for s in creator if "kms:DescribeKey" in s["Action"]]
        assert describe["Action"] == "kms:DescribeKey" and describe["Resource"] == {"Fn::GetAtt": [key, "Arn"]}
        assert describe["Condition"] == {"StringEquals": {"kms:ViaService": "sagemaker.eu-west-1.amazonaws.com"}}
    for template in (dev, prod):  # nowhere else either (the deploy role's capture grant was the same)
        documents = [p["Properties"]["PolicyDocument"] for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
                     for p in resources(template, kind).values()]
        documents += [p["PolicyDocument"] for r in resources(template, "AWS::IAM::Role").values()
                      for p in r["Properties"].get("Policies", [])]
        for statement in (s for d in documents for s in d["Statement"]):
            if "kms:GrantIsForAWSResource" in json.dumps(statement.get("Condition", {})):
                granted = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert set(granted) <= {"kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"}, statement


def test_model_role_reads_artifacts_and_writes_capture_only(dev):
    statements = statements_of(dev, "diagnosa-dev-model")
    writes = text([s["Resource"] for s in statements if "s3:PutObject" in s["Action"]])
    assert writes.count("/capture/diagnosa-dev/*") == 1 and "/artifacts/" not in writes
    reads = text([s["Resource"] for s in statements if s["Action"] == "s3:GetObject"])
    # the registered model artifact only (it carries the serving code), no other object of the run folders
    assert "/artifacts/runs/*/champion/model.tar.gz" in reads and "/artifacts/code/" not in reads
    assert "/artifacts/runs/*\"" not in reads and "/curated/" not in reads
    assert not any(a.startswith(("iam:", "sagemaker:")) for a in actions(statements))


def test_model_role_in_vpc_mode_may_attach_the_endpoints_network_interfaces(dev, prod):
    # The deploy function sends CreateModel a VpcConfig in VPC mode: SageMaker attaches the model's network
    # interfaces with the model role, which needs AWS's list for hosting in a VPC (SageMaker guide, host-vpc).
    [network] = [s for s in statements_of(prod, "diagnosa-prod-model") if s.get("Sid") == "EndpointNetworkInterfaces"]
    assert set(_list(network["Action"])) == {
        "ec2:DescribeVpcEndpoints", "ec2:DescribeDhcpOptions", "ec2:DescribeVpcs", "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterfacePermission",
        "ec2:DeleteNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:CreateNetworkInterface"}
    assert network["Resource"] == "*"
    assert not any(a.startswith("ec2:") for a in actions(statements_of(dev, "diagnosa-dev-model")))


def test_model_role_writes_its_endpoints_own_log_group(dev, prod, cfn_text):
    # SageMaker writes an endpoint's container logs to /aws/sagemaker/Endpoints/<endpoint>, stream
    # <variant>/<instance id>: the grant names that group, not /aws/sagemaker/Endpoints.
    from fnmatch import fnmatchcase

    for template, stage in ((dev, "dev"), (prod, "prod")):
        [logs] = [s for s in statements_of(template, f"diagnosa-{stage}-model")
                  if any(a.startswith("logs:") for a in _list(s["Action"]))]
        assert sorted(_list(logs["Action"])) == ["logs:CreateLogGroup", "logs:CreateLogStream",
                                                 "logs:DescribeLogStreams", "logs:PutLogEvents"]
        [resource] = [cfn_text(r) for r in _resources(logs)]
        assert resource == (f"arn:<Ref:AWS::Partition>:logs:eu-west-1:123456789012:log-group:"
                            f"/aws/sagemaker/Endpoints/diagnosa-{stage}:*")
        stream = (f"arn:<Ref:AWS::Partition>:logs:eu-west-1:123456789012:log-group:/aws/sagemaker/Endpoints/"
                  f"diagnosa-{stage}:log-stream:AllTraffic/i-0123456789abcdef0")
        assert fnmatchcase(stream, resource)


def test_the_endpoints_log_group_is_the_stacks_with_its_retention_and_key(dev, prod):
    # SageMaker creates /aws/sagemaker/Endpoints/<endpoint> itself when nothing holds the name: kept forever, not
    # encrypted with the stage's key. The stack owns it, as it owns its functions' groups.
    for template, stage in ((dev, "dev"), (prod, "prod")):
        [group] = [g for g in resources(template, "AWS::Logs::LogGroup").values()
                   if g["Properties"].get("LogGroupName") == f"/aws/sagemaker/Endpoints/diagnosa-{stage}"]
        assert group["Properties"]["RetentionInDays"] == 365 and "KmsKeyId" in group["Properties"]
        assert group["DeletionPolicy"] == "Retain"


def test_deploy_function_role_is_scoped_to_the_stage(dev):
    statements = statements_of(dev, "diagnosa-dev-deploy-function")
    acts = actions(statements)
    assert {"sagemaker:DescribeModelPackage", "sagemaker:CreateModel", "sagemaker:CreateEndpointConfig",
            "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint", "application-autoscaling:RegisterScalableTarget",
            "application-autoscaling:PutScalingPolicy"} <= set(acts)
    assert "sagemaker:DeleteEndpoint" not in acts
    # S3: read the registered baselines from the run folders, replace the endpoint's monitoring baselines; no more
    assert {a for a in acts if a.startswith("s3:")} == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                                        "s3:ListBucket"}
    writes = [s for s in statements if {"s3:PutObject", "s3:DeleteObject"} & set(_list(s["Action"]))]
    assert writes and all(text(s["Resource"]).endswith('/artifacts/monitoring/diagnosa-dev/baseline/*"]]}')
                          for s in writes)
    reads = text([s["Resource"] for s in statements if "s3:GetObject" in _list(s["Action"])])
    assert "/artifacts/runs/*" in reads and "/curated/" not in reads and "/capture/" not in reads
    [listing] = [s for s in statements if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["artifacts/monitoring/diagnosa-dev/baseline/*"]}}
    [passrole] = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert passrole["Resource"] == {"Fn::GetAtt": [role_id(dev, "diagnosa-dev-model"), "Arn"]}
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    sm = text([s["Resource"] for s in statements if any(a.startswith("sagemaker:") for a in
                                                          ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))])
    assert "endpoint/diagnosa-dev" in sm and "model-package/diagnosa-dev/*" in sm and '"*"' not in sm


# Patient-derived outputs of a run: the split (rows by patient), and the transformed training, validation and test sets.
PATIENT_DATA_OUTPUTS = ("Preprocess/split", "Transform/train", "Transform/validation", "Transform/test")


def readable_run_objects(template, statements, cfn_text, run_objects):
    """Which objects of one pipeline run (every registered object, and sample files in every job output folder)
    the statements let the role read (s3:GetObject), by lake key."""
    from fnmatch import fnmatchcase

    registered, outputs = run_objects(template)
    names = {"part-00000.parquet", "data.csv", *(key.rsplit("/", 1)[1] for key in registered.values())}
    candidates = {*registered.values(), *(f"{folder}/{name}" for folder in outputs.values() for name in names)}
    patterns = [cfn_text(r) for s in statements if "s3:GetObject" in _list(s["Action"]) for r in _resources(s)]
    arn = f"<Att:{lake(template)}.Arn>/"
    return {key for key in candidates if any(fnmatchcase(arn + key, p) for p in patterns)}


def test_model_and_deploy_roles_read_only_what_a_version_registers_for_them(dev, prod, cfn_text, run_objects,
                                                                            deploy_fn):
    # The model reads its artifact; the deploy function copies the four baseline files the serving version names
    # into the monitoring prefix. Neither may read the run's patient-derived outputs (split, train, validation,
    # test) or anything else the run writes.
    baselines = {".".join(path) for paths in deploy_fn.BASELINE_FILES.values() for path in paths}
    for template, stage in ((dev, "dev"), (prod, "prod")):
        registered, outputs = run_objects(template)
        model = readable_run_objects(template, statements_of(template, f"diagnosa-{stage}-model"), cfn_text,
                                     run_objects)
        assert model == {registered["InferenceSpecification.Containers.0.ModelDataUrl"]}
        deploy = readable_run_objects(template, statements_of(template, f"diagnosa-{stage}-deploy-function"),
                                      cfn_text, run_objects)
        assert deploy == {registered[where] for where in baselines}
        assert deploy == {f"artifacts/runs/exec-0001/{name}" for name in (
            "baseline/statistics.json", "baseline/constraints.json", "evaluation/prediction_baseline.json",
            "evaluation/model_quality_constraints.json")}
        for output in PATIENT_DATA_OUTPUTS:
            assert not any(key.startswith(outputs[output] + "/") for key in model | deploy), output
    from infra.stack import MONITORING_BASELINES  # the stack's copy of what the deploy function copies

    assert set(MONITORING_BASELINES) == baselines


def test_the_pipeline_role_reads_only_the_property_file_its_gate_reads(dev, prod, cfn_text, run_objects):
    # SageMaker Pipelines reads a JsonGet's property file (Evaluate's evaluation.json) with the pipeline's role;
    # the jobs read and write the run with the job role. It read all of artifacts/runs/* before.
    for template, stage in ((dev, "dev"), (prod, "prod")):
        _, outputs = run_objects(template)
        readable = readable_run_objects(template, statements_of(template, f"diagnosa-{stage}-pipeline"), cfn_text,
                                        run_objects)
        assert readable == {outputs["Evaluate/evaluation"] + "/evaluation.json"}


def test_a_promoted_copy_is_readable_by_the_model_and_deploy_roles(prod, cfn_text, run_objects):
    # The promote function copies a version's objects to artifacts/runs/promoted/<group>-v<N>/<source key after
    # artifacts/runs/>: the same grants cover the copies.
    from fnmatch import fnmatchcase

    registered, _ = run_objects(prod)
    arn = f"<Att:{lake(prod)}.Arn>/"
    for role, wheres in (("diagnosa-prod-model", ["InferenceSpecification.Containers.0.ModelDataUrl"]),
                         ("diagnosa-prod-deploy-function", ["ModelMetrics.ModelDataQuality.Statistics",
                                                            "CustomerMetadataProperties.diagnosa:prediction-baseline"])):
        patterns = [cfn_text(r) for s in statements_of(prod, role) if "s3:GetObject" in _list(s["Action"])
                    for r in _resources(s)]
        for where in wheres:
            copy = "artifacts/runs/promoted/diagnosa-dev-v3/" + registered[where].removeprefix("artifacts/runs/")
            assert any(fnmatchcase(arn + copy, p) for p in patterns), (role, copy)


def test_unscoped_actions_say_truly_why_they_stay_on_any_resource():
    # The Service Authorization Reference (as cfn-lint ships it) gives resource types for some actions: those may be
    # on "*" only where AWS documents them so (the ec2 network-interface actions of SageMaker in a VPC), and their
    # reason must say that, not "no resource-level permissions". ListModelPackages is scoped (model-package).
    from pathlib import Path as _Path

    import cfnlint

    from infra.stack import UNSCOPED_ACTIONS

    reference = json.loads((_Path(cfnlint.__file__).parent / "data/AdditionalSpecs/Policies.json").read_text())
    scopable = {a for a in UNSCOPED_ACTIONS
                if reference[a.split(":")[0]]["Actions"].get(a.split(":")[1].lower(), {}).get("Resources")}
    assert "sagemaker:ListModelPackages" not in UNSCOPED_ACTIONS
    assert scopable - {"cloudwatch:PutMetricData"} == {
        "ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface",
        "ec2:DeleteNetworkInterfacePermission"}
    for action in scopable:
        reason = UNSCOPED_ACTIONS[action]
        assert "no resource-level" not in reason and "resource-level scoping" not in reason, action
    for action in scopable - {"cloudwatch:PutMetricData"}:  # PutMetricData: limited by its namespace condition
        assert 'AWS documents this action on Resource "*"' in UNSCOPED_ACTIONS[action]
        assert "only sagemaker.amazonaws.com" in UNSCOPED_ACTIONS[action]
    for action in set(UNSCOPED_ACTIONS) - scopable:
        assert not reference[action.split(":")[0]]["Actions"][action.split(":")[1].lower()].get("Resources"), action


def test_retrain_function_may_only_start_this_pipeline_and_its_feedback_folding_job(dev):
    statements = statements_of(dev, "diagnosa-dev-retrain-function")
    sm = {s.get("Sid"): s for s in statements if any(a.startswith("sagemaker:") for a in _list(s["Action"]))}
    # It starts the pipeline and reads which parameters it declares (the overrides it may pass), nothing else.
    assert sorted(sm["StartThePipeline"]["Action"]) == ["sagemaker:DescribePipeline", "sagemaker:StartPipelineExecution"]
    assert text(sm["StartThePipeline"]["Resource"]).endswith(':pipeline/diagnosa-dev"]]}')
    # DescribeProcessingJob: a failed folding job's own reason (ExitMessage), on the stage's folding jobs only.
    assert sorted(sm["StartFeedbackFolding"]["Action"]) == ["sagemaker:AddTags", "sagemaker:CreateProcessingJob",
                                                            "sagemaker:DescribeProcessingJob"]
    assert text(sm["StartFeedbackFolding"]["Resource"]).endswith(':processing-job/diagnosa-dev-fold-*"]]}')
    # Whether a retraining is in flight: this pipeline's executions; the processing jobs in progress (ListProcessingJobs
    # has no resource-level permissions: Resource "*", in the role's -unscoped policy).
    assert sm["FindRunningExecutions"]["Action"] == "sagemaker:ListPipelineExecutions"
    assert text(sm["FindRunningExecutions"]["Resource"]).endswith(':pipeline/diagnosa-dev"]]}')
    assert sm["FindRunningFeedbackFolding"]["Action"] == "sagemaker:ListProcessingJobs"
    assert sm["FindRunningFeedbackFolding"]["Resource"] == "*"
    assert set(sm) == {"StartThePipeline", "StartFeedbackFolding", "FindRunningExecutions", "FindRunningFeedbackFolding"}
    [passes] = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert "FoldRole" in text(passes["Resource"]) and "JobRole" not in text(passes["Resource"])
    # It reads the pointer to the latest curated version, lists only the endpoint's feedback, and reads and
    # writes only its own request/result folders.
    s3 = {s.get("Sid"): s for s in statements if any(a.startswith("s3:") for a in _list(s["Action"]))}
    assert s3["ReadLatestCuratedVersion"]["Action"] == "s3:GetObject"
    assert text(s3["ReadLatestCuratedVersion"]["Resource"]).endswith('/curated/patients/LATEST.json"]]}')
    assert s3["FindFeedback"]["Condition"] == {"StringLike": {"s3:prefix": [
        "feedback/diagnosa-dev/*", "artifacts/monitoring/diagnosa-dev/retraining/*", "curated/patients/LATEST.json"]}}
    assert text(s3["RequestAndResult"]["Resource"]).endswith(
        '/artifacts/monitoring/diagnosa-dev/retraining/*"]]}')
    assert set(s3) == {"ReadLatestCuratedVersion", "FindFeedback", "RequestAndResult"}


def test_the_feedback_folding_job_writes_only_its_dataset_and_adds_raw_data_it_cannot_change(dev):
    statements = {s.get("Sid"): s for s in statements_of(dev, "diagnosa-dev-fold-feedback")}
    writes = text(statements["WriteTheNewVersion"]["Resource"])
    for prefix in ("curated/patients/", "quarantine/patients/", "artifacts/monitoring/diagnosa-dev/retraining/",
                   "feedback/diagnosa-dev/events/"):  # each feedback object given its patient's captured record
        assert f"/{prefix}*" in writes
    assert "capture/" not in writes and "artifacts/code/" not in writes
    assert writes.count("feedback/") == 1  # the endpoint's events/ objects only: no other endpoint's, no old layout
    raw = statements["ReadAndAddRawData"]
    assert sorted(raw["Action"]) == ["s3:GetObject", "s3:PutObject"] and "/raw/*" in text(raw["Resource"])
    # Deleting: only what a failed ingest wrote of its version can need it, in its dataset's curated and quarantine
    # prefixes; never a version (s3:DeleteObjectVersion), never raw data, another dataset, capture or feedback.
    deletes = [s for s in statements.values() if any("Delete" in a for a in _list(s["Action"]))]
    assert [s.get("Sid") for s in deletes] == ["RemoveAFailedVersion"] and deletes[0]["Action"] == "s3:DeleteObject"
    removable = text(deletes[0]["Resource"])
    assert "/curated/patients/*" in removable and "/quarantine/patients/*" in removable
    assert "raw/" not in removable and "capture/" not in removable and "feedback/" not in removable


def test_only_acknowledged_wildcards(dev, prod):
    # Resource "*" appears only for actions AWS gives no resource-level permissions, and only in the
    # "-unscoped" policies (the one place the wildcard finding is acknowledged).
    for template in (dev, prod):
        for policy in resources(template, "AWS::IAM::ManagedPolicy").values():
            for s in policy["Properties"]["PolicyDocument"]["Statement"]:
                if s["Resource"] != "*":
                    continue
                assert policy["Properties"]["ManagedPolicyName"].endswith("-unscoped"), policy
                if s["Action"] == "cloudwatch:PutMetricData":  # limited to the drift metric's namespace
                    assert s["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Diagnosa/Monitoring"}}, s
                elif s.get("Sid") == "FindRunningFeedbackFolding":  # the retrain function: a retraining in flight?
                    assert s["Action"] == "sagemaker:ListProcessingJobs", s
                elif s.get("Sid") == "FindConfigsAndModels":  # the endpoint-resources function's listing
                    assert sorted(s["Action"]) == ["sagemaker:ListEndpointConfigs", "sagemaker:ListModels"], s
                elif s.get("Sid") == "DescribeAutoscaling":  # no resource-level permissions (AWS's reference)
                    assert sorted(s["Action"]) == ["application-autoscaling:DescribeScalableTargets",
                                                   "application-autoscaling:DescribeScalingPolicies"], s
                elif s.get("Sid") in ("JobNetworkInterfaces", "EndpointNetworkInterfaces"):  # VPC mode only
                    assert template is prod and all(a.startswith("ec2:") for a in s["Action"]), s
                else:
                    assert s["Action"] == "ecr:GetAuthorizationToken", s


# ------------------------------------------------------------------------------------------ SageMaker

def test_model_package_group_and_pipeline(dev, prod):
    dev.has_resource_properties("AWS::SageMaker::ModelPackageGroup", {"ModelPackageGroupName": "diagnosa-dev"})
    # The registry (versions, approvals, promotion records) is data: it outlives `cdk destroy` like the lake.
    for template in (dev, prod):
        [group] = resources(template, "AWS::SageMaker::ModelPackageGroup").values()
        assert group["DeletionPolicy"] == "Retain" and group["UpdateReplacePolicy"] == "Retain"
    dev.has_resource_properties("AWS::SageMaker::Pipeline", {
        "PipelineName": "diagnosa-dev",
        "RoleArn": {"Fn::GetAtt": [role_id(dev, "diagnosa-dev-pipeline"), "Arn"]},
        "PipelineDefinition": {"PipelineDefinitionBody": {"Fn::Join": ["", Match.any_value()]}}})


def test_the_step_code_copier_writes_artifacts_code_only_and_reads_only_its_asset(dev, prod):
    for template in (dev, prod):
        statements = statements_of(template, f"diagnosa-{'dev' if template is dev else 'prod'}-step-code")
        granted = set(actions(statements))
        assert granted & {"s3:DeleteObject", "s3:DeleteObjectVersion", "s3:GetObject*", "s3:List*"} == set()
        [read] = [s for s in statements if s.get("Sid") == "ReadTheAsset"]
        assert "cdk-hnb659fds-assets" in text(read["Resource"]) and ".zip" in text(read["Resource"])
        [write] = [s for s in statements if s.get("Sid") == "WriteTheCode"]
        assert text(write["Resource"]).endswith('/artifacts/code/*"]]}')
        [listing] = [s for s in statements if s.get("Sid") == "ListTheCodePrefix"]
        assert listing["Condition"] == {"StringLike": {"s3:prefix": ["artifacts/code/*"]}}
        # Only its own grants: CDK's (read-write on the whole lake) never reach it.
        assert not [s for s in statements if text(s["Resource"]).endswith('.Arn"]}, "/*"]]}')]
    [copier] = [f for f in resources(prod, "AWS::Lambda::Function").values()
                if f["Properties"]["Role"] == {"Fn::GetAtt": [role_id(prod, "diagnosa-prod-step-code"), "Arn"]}]
    assert copier["Properties"]["VpcConfig"]["SubnetIds"]  # prod: in the isolated subnets like every function
    role = resources(prod, "AWS::IAM::Role")[role_id(prod, "diagnosa-prod-step-code")]["Properties"]
    assert "AWSLambdaVPCAccessExecutionRole" in text(role["ManagedPolicyArns"])  # as every function's role


def test_step_code_is_copied_into_artifacts_code_without_pruning(dev):
    [deployment] = resources(dev, "Custom::CDKBucketDeployment").values()
    props = deployment["Properties"]
    assert props["DestinationBucketKeyPrefix"] == "artifacts/code/"
    assert props["Prune"] is False and props["SystemMetadata"]["sse"] == "aws:kms"


def test_the_step_code_assets_source_is_laid_out_in_the_assembly_not_left_in_the_temp_dir(assembly, stacks):
    # Every synth left a /tmp/diagnosa-code-* folder (half a megabyte; 109 of them after one test run). The source
    # now lives in the stage's cloud assembly, beside the asset CDK stages from it, one folder per stack.
    import aws_cdk as cdk

    from infra.stack import STEP_CODE_SOURCE, DiagnosaStack

    stage_stacks = [stack for stack in stacks.values() if isinstance(stack, DiagnosaStack)]
    assert len(stage_stacks) == 2
    for stack in stage_stacks:
        source = Path(cdk.Stage.of(stack).outdir) / STEP_CODE_SOURCE / stack.artifact_id
        assert source.is_dir() and Path(assembly[1].directory) in source.parents
        gate = source / stack.definition.gate_key.removeprefix("artifacts/code/")
        staged = list(Path(assembly[1].directory).rglob(f"asset.*/{gate.relative_to(source)}"))
        assert staged and all(copy.read_bytes() == gate.read_bytes() for copy in staged)
        written = {f.relative_to(source).as_posix(): f.read_bytes() for f in source.rglob("*") if f.is_file()}
        assert {key.removeprefix("artifacts/code/"): data for key, data in stack.definition.objects} | {
            gate.relative_to(source).as_posix(): gate.read_bytes()} == written


def test_approval_rule_targets_the_deploy_function(dev):
    function = logical(dev, "AWS::Lambda::Function", lambda p: p.get("FunctionName") == "diagnosa-dev-deploy")
    dev.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
                         "detail": {"ModelPackageGroupName": ["diagnosa-dev"], "ModelApprovalStatus": ["Approved"]}},
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [function, "Arn"]},
                                       "DeadLetterConfig": Match.any_value(),
                                       "RetryPolicy": Match.object_like({"MaximumRetryAttempts": 2})})]})
    dev.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Endpoint State Change"],
                         "detail": {"EndpointName": ["diagnosa-dev"],
                                    "EndpointStatus": ["IN_SERVICE", "FAILED", "UPDATE_ROLLBACK_FAILED"]}},
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [function, "Arn"]}})]})


def test_deploy_function_configuration(dev, stacks):
    props = resources(dev, "AWS::Lambda::Function")[logical(
        dev, "AWS::Lambda::Function", lambda p: p.get("FunctionName") == "diagnosa-dev-deploy")]["Properties"]
    env = props["Environment"]["Variables"]
    assert env["ENDPOINT_NAME"] == "diagnosa-dev" and env["ROLLBACK_ALARMS"] == "diagnosa-dev-5xx,diagnosa-dev-model-latency"
    assert env["CAPTURE_URI"] == {"Fn::Join": ["", ["s3://", {"Ref": lake(dev)}, "/capture"]]}
    assert env["TRAFFIC_SHIFTING"] == "CANARY" and env["INVOCATIONS_PER_INSTANCE"] == "200"
    assert (env["MIN_INSTANCES"], env["MAX_INSTANCES"]) == ("1", "2")
    assert "CODE_URI" not in env, "a version is served by the code in its own artifact, not the stack's"
    assert "SERVING_PROGRAM" not in env, "which program serves is the registered version's, not a stage setting's"
    assert props["ReservedConcurrentExecutions"] == 1 and "DeadLetterConfig" in props and "KmsKeyArn" in props


def test_rollback_alarms_on_5xx_and_latency_notify_the_topic(dev):
    dims = [{"Name": "EndpointName", "Value": "diagnosa-dev"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    dev.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "diagnosa-dev-5xx", "MetricName": "Invocation5XXErrors", "Namespace": "AWS/SageMaker",
        "Dimensions": dims, "Threshold": 5, "AlarmActions": [Match.any_value()]})
    dev.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "diagnosa-dev-model-latency", "MetricName": "ModelLatency", "ExtendedStatistic": "p95",
        "Threshold": 500_000, "Dimensions": dims})


def test_an_event_a_function_gave_up_on_alerts_the_team(dev):
    queue = logical(dev, "AWS::SQS::Queue", lambda p: p.get("QueueName") == "diagnosa-dev-dead-letters")
    [topic] = resources(dev, "AWS::SNS::Topic")
    dev.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "diagnosa-dev-dead-letters", "Namespace": "AWS/SQS",
        "MetricName": "NumberOfMessagesSent", "Statistic": "Sum", "Threshold": 1, "Period": 300,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}],
        "AlarmActions": [{"Ref": topic}]})


def test_every_alarm_that_notifies_the_alerts_topic_may_publish_to_it_and_nothing_else_may(dev, prod, cfn_text):
    # enforce_ssl gives the topic a policy of its own, which replaces SNS's default one (the account may publish):
    # holding only its Deny, no alarm could publish, and no e-mail was ever sent (parliament's probe, session 64).
    from fnmatch import fnmatchcase

    for template, name in ((dev, "diagnosa-dev"), (prod, "diagnosa-prod")):
        [topic] = resources(template, "AWS::SNS::Topic")
        [policy] = resources(template, "AWS::SNS::TopicPolicy").values()
        assert policy["Properties"]["Topics"] == [{"Ref": topic}]
        allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
        assert allows and all(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and s["Action"] == "sns:Publish"
                              and s["Resource"] == {"Ref": topic} for s in allows)
        notifying = [a["Properties"]["AlarmName"] for a in resources(template, "AWS::CloudWatch::Alarm").values()
                     if {"Ref": topic} in a["Properties"].get("AlarmActions", []) + a["Properties"].get("OKActions", [])]
        assert len(notifying) == 5, notifying
        for alarm in [*notifying, "another-teams-alarm"]:
            arn = f"arn:aws:cloudwatch:eu-west-1:123456789012:alarm:{alarm}"
            may = [s for s in allows if s["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
                   and fnmatchcase(arn, cfn_text(s["Condition"]["ArnLike"]["aws:SourceArn"]).replace(
                       "<Ref:AWS::Partition>", "aws"))]
            assert bool(may) == alarm.startswith(f"{name}-"), alarm


def test_alarm_emails_subscribe_to_the_alerts_topic(dev, prod):
    assert resources(dev, "AWS::SNS::Subscription") == {}  # none configured: none made
    subscribed = sorted((s["Properties"]["Protocol"], s["Properties"]["Endpoint"])
                        for s in resources(prod, "AWS::SNS::Subscription").values())
    assert subscribed == [("email", "ml-team@example.org"), ("email", "oncall@example.org")]
    [topic] = resources(prod, "AWS::SNS::Topic")
    assert all(s["Properties"]["TopicArn"] == {"Ref": topic}
               for s in resources(prod, "AWS::SNS::Subscription").values())


def test_retraining_schedule_and_drift_alarm_start_the_retrain_function(dev):
    function = logical(dev, "AWS::Lambda::Function", lambda p: p.get("FunctionName") == "diagnosa-dev-retrain")
    dev.has_parameter("RetrainSchedule", {"Type": "String", "Default": "rate(7 days)"})
    dev.has_resource_properties("AWS::Events::Rule", {
        "ScheduleExpression": {"Ref": "RetrainSchedule"}, "State": "ENABLED",
        # The event's id goes along (tests/infra/test_infra_retraining.py feeds the function what this sends).
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [function, "Arn"]}, "InputTransformer": {
            "InputPathsMap": {"id": "$.id"},
            "InputTemplate": json.dumps({"reason": "schedule", "parameters": {}, "id": "<id>"},
                                        separators=(",", ":")).replace('"<id>"', "<id>")}})]})
    alarm = logical(dev, "AWS::CloudWatch::Alarm", lambda p: p.get("AlarmName") == "diagnosa-dev-drift")
    dev.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"],
                         "resources": [{"Fn::GetAtt": [alarm, "Arn"]}], "detail": {"state": {"value": ["ALARM"]}}},
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [function, "Arn"]}})]})
    # The feedback-folding job's end brings the function back (step 2 of a retraining with feedback).
    dev.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Processing Job State Change"],
                         "detail": {"ProcessingJobName": [{"prefix": "diagnosa-dev-fold-"}],
                                    "ProcessingJobStatus": ["Completed", "Failed", "Stopped"]}},
        "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": [function, "Arn"]}})]})
    env = resources(dev, "AWS::Lambda::Function")[function]["Properties"]["Environment"]["Variables"]
    assert env["PIPELINE_NAME"] == "diagnosa-dev" and "PIPELINE_PARAMETERS" not in env  # it asks the pipeline
    assert env["FOLD_JOB_PREFIX"] == "diagnosa-dev-fold" and env["ENDPOINT_NAME"] == "diagnosa-dev"
    assert env["FOLD_ROLE_ARN"] == {"Fn::GetAtt": [role_id(dev, "diagnosa-dev-fold-feedback"), "Arn"]}


def test_logs_are_encrypted_and_retained(templates):
    for template in templates.values():
        for group in resources(template, "AWS::Logs::LogGroup").values():
            assert "KmsKeyId" in group["Properties"] and group["Properties"]["RetentionInDays"] >= 365


# ------------------------------------------------------------------------------------------ VPC mode

def test_vpc_mode_private_subnets_endpoints_and_functions_inside(prod, dev):
    assert not resources(dev, "AWS::EC2::VPC")
    assert not resources(prod, "AWS::EC2::InternetGateway") and not resources(prod, "AWS::EC2::NatGateway")
    services = text([e["Properties"]["ServiceName"] for e in resources(prod, "AWS::EC2::VPCEndpoint").values()])
    for service in ("sagemaker.api", "sagemaker.runtime", "sts", "logs", "ecr.dkr", ".s3"):
        assert service in services
    prod.resource_count_is("AWS::EC2::FlowLog", 1)
    for function in ("diagnosa-prod-deploy", "diagnosa-prod-retrain"):
        props = resources(prod, "AWS::Lambda::Function")[logical(
            prod, "AWS::Lambda::Function", lambda p, name=function: p.get("FunctionName") == name)]["Properties"]
        assert props["VpcConfig"]["SubnetIds"]
    env = resources(prod, "AWS::Lambda::Function")[logical(
        prod, "AWS::Lambda::Function", lambda p: p.get("FunctionName") == "diagnosa-prod-deploy")]["Properties"][
        "Environment"]["Variables"]
    assert "SUBNET_IDS" in env and "SECURITY_GROUP_IDS" in env


# ------------------------------------------------------------------------------------------ monitoring

def test_monitoring_job_role_reads_traffic_code_and_baselines_writes_reports_only(dev, stacks):
    statements = statements_of(dev, "diagnosa-dev-monitoring")
    acts = actions(statements)
    code = stacks["Diagnosa-dev"].definition.code_prefix
    reads = text([s["Resource"] for s in statements if s["Action"] == "s3:GetObject"])
    for prefix in ("capture/diagnosa-dev/", "capture-errors/diagnosa-dev/", "feedback/diagnosa-dev/", code,
                   "artifacts/monitoring/diagnosa-dev/baseline/"):
        assert f"/{prefix}*" in reads
    for zone in ("raw/", "curated/", "features/", "quarantine/", "artifacts/runs/"):
        assert f"/{zone}" not in reads
    writes = [s for s in statements if "s3:PutObject" in _list(s["Action"])]
    assert [s["Resource"] for s in writes] == [
        {"Fn::Join": ["", [{"Fn::GetAtt": [lake(dev), "Arn"]}, "/artifacts/monitoring/diagnosa-dev/reports/*"]]}]
    assert not any(a.startswith(("s3:Delete", "iam:", "sagemaker:")) for a in acts)
    [listing] = [s for s in statements if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == [
        "capture/diagnosa-dev/*", "capture-errors/diagnosa-dev/*", "feedback/diagnosa-dev/*", f"{code}*",
        "artifacts/monitoring/diagnosa-dev/baseline/*"]
    # CloudWatch: only PutMetricData, only into the drift alarm's namespace
    [metrics] = [s for s in statements if "cloudwatch:PutMetricData" in _list(s["Action"])]
    assert metrics["Action"] == "cloudwatch:PutMetricData" and metrics["Resource"] == "*"
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Diagnosa/Monitoring"}}
    assert [a for a in acts if a.startswith("cloudwatch:")] == ["cloudwatch:PutMetricData"]
    assert {"ecr:BatchGetImage", "ecr:GetAuthorizationToken", "logs:PutLogEvents"} <= set(acts)
    kms = [s for s in statements if "kms:Decrypt" in _list(s["Action"])]
    assert kms and all(s["Condition"]["StringEquals"]["kms:ViaService"] == "s3.eu-west-1.amazonaws.com" for s in kms)
    assert not any(a.startswith("ec2:") for a in acts)  # network interfaces only in VPC mode


def _allowed(statements, action, resource_text):
    """Whether some Allow statement grants ``action`` on a resource whose rendering contains ``resource_text``."""
    return any(action in _list(s["Action"]) and resource_text in text(s["Resource"]) for s in statements
               if s.get("Effect", "Allow") == "Allow")


def test_monitoring_job_role_cannot_write_other_zones_or_other_namespaces(dev):
    statements = statements_of(dev, "diagnosa-dev-monitoring")
    for zone in ("raw/", "curated/", "features/", "capture/", "feedback/", "artifacts/code/", "artifacts/runs/",
                 "artifacts/monitoring/diagnosa-dev/baseline/"):
        assert not _allowed(statements, "s3:PutObject", f"/{zone}"), zone
    # the one PutMetricData statement carries the namespace condition; there is no other
    assert [s.get("Condition") for s in statements if "cloudwatch:PutMetricData" in _list(s["Action"])] == [
        {"StringEquals": {"cloudwatch:namespace": "Diagnosa/Monitoring"}}]


def test_monitoring_job_role_in_vpc_mode_may_attach_network_interfaces(prod):
    statements = statements_of(prod, "diagnosa-prod-monitoring")
    [network] = [s for s in statements if s.get("Sid") == "JobNetworkInterfaces"]
    assert {"ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface",
            "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"} <= set(network["Action"])


def test_monitor_function_role_starts_only_monitor_jobs_and_passes_only_the_monitoring_role(dev):
    statements = statements_of(dev, "diagnosa-dev-monitor-function")
    acts = actions(statements)
    assert [a for a in acts if a.startswith("sagemaker:")] == ["sagemaker:AddTags", "sagemaker:CreateProcessingJob"]
    [start] = [s for s in statements if "sagemaker:CreateProcessingJob" in _list(s["Action"])]
    assert text(start["Resource"]).endswith(':processing-job/diagnosa-dev-monitor-*"]]}')
    [passrole] = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert passrole["Resource"] == {"Fn::GetAtt": [role_id(dev, "diagnosa-dev-monitoring"), "Arn"]}
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert {a for a in acts if a.startswith("s3:")} == {"s3:ListBucket", "s3:GetObject"}
    [read] = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert text(read["Resource"]).endswith('/artifacts/monitoring/diagnosa-dev/baseline/*"]]}')
    [listing] = [s for s in statements if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [
        "artifacts/monitoring/diagnosa-dev/baseline/*", "capture/diagnosa-dev/*"]}}  # the job reads the feedback


def test_monitor_schedule_runs_the_monitor_function(dev, stacks):
    function = logical(dev, "AWS::Lambda::Function", lambda p: p.get("FunctionName") == "diagnosa-dev-monitor")
    dev.has_parameter("MonitorSchedule", {"Type": "String", "Default": "rate(1 day)"})
    dev.has_parameter("MonitorWindow", {"Type": "String", "Default": ""})
    [rule] = [r["Properties"] for r in resources(dev, "AWS::Events::Rule").values()
              if r["Properties"].get("Name") == "diagnosa-dev-monitor-schedule"]
    assert rule["ScheduleExpression"] == {"Ref": "MonitorSchedule"} and rule["State"] == "ENABLED"
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function, "Arn"]} and "DeadLetterConfig" in target
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2
    # {"reason": "schedule", "schedule": <MonitorSchedule>, "window": <MonitorWindow>}, resolved at deploy time
    parts = target["Input"]["Fn::Join"][1]
    assert {"Ref": "MonitorSchedule"} in parts and {"Ref": "MonitorWindow"} in parts and '"reason":"schedule"' in parts[0]
    props = resources(dev, "AWS::Lambda::Function")[function]["Properties"]
    env = props["Environment"]["Variables"]
    stack = stacks["Diagnosa-dev"]
    assert env["IMAGE_URI"] == "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
    assert env["IMAGE_URI"] == stack.definition.processing_image
    assert env["CODE_PREFIX"] == stack.definition.code_prefix == stack.definition.code_key.removesuffix("sourcedir.tar.gz")
    assert env["JOB_PREFIX"] == "diagnosa-dev-monitor" and env["METRICS_NAMESPACE"] == "Diagnosa/Monitoring"
    assert env["JOB_ROLE_ARN"] == {"Fn::GetAtt": [role_id(dev, "diagnosa-dev-monitoring"), "Arn"]}
    assert env["SCHEDULE"] == "rate(1 day)" and "WINDOW" not in env and env["FEEDBACK_LAG"] == "7d"
    assert props["ReservedConcurrentExecutions"] == 1 and "DeadLetterConfig" in props and "KmsKeyArn" in props
    # the metric the job publishes is the one the drift alarm watches
    dev.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "diagnosa-dev-drift", "Namespace": env["METRICS_NAMESPACE"], "MetricName": "DriftScore",
        "Dimensions": [{"Name": "EndpointName", "Value": "diagnosa-dev"}]})


def test_monitor_function_in_vpc_mode_puts_the_job_in_the_private_subnets(prod):
    props = resources(prod, "AWS::Lambda::Function")[logical(
        prod, "AWS::Lambda::Function", lambda p: p.get("FunctionName") == "diagnosa-prod-monitor")]["Properties"]
    assert props["VpcConfig"]["SubnetIds"]
    env = props["Environment"]["Variables"]
    assert "SUBNET_IDS" in env and "SECURITY_GROUP_IDS" in env
    prod.has_parameter("MonitorSchedule", {"Type": "String", "Default": "rate(1 day)"})


def _pulled_repositories(template, role, cfn_text):
    """(account, repository) of every ECR repository the role may pull from."""
    pulls = [s for s in statements_of(template, role) if "ecr:BatchGetImage" in _list(s["Action"])]
    assert pulls, role
    arns = [cfn_text(r).replace("<Ref:AWS::Partition>", "aws").split(":") for s in pulls
            for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])]
    assert all(arn[2] == "ecr" and arn[5].startswith("repository/") for arn in arns), arns
    return {(arn[4], arn[5].removeprefix("repository/")) for arn in arns}


def _repository(uri):
    """(account, repository) of an ECR image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>)."""
    return uri.split(".", 1)[0], uri.split("/", 1)[1].split(":", 1)[0].split("@", 1)[0]


def test_each_role_pulls_only_the_repositories_of_the_images_its_containers_run(dev, cfn_text):
    """The job, model, monitoring and feedback-folding roles could all pull both AWS images (training and inference).
    Each now pulls what its own containers run, read from the template: the job role the images of the pipeline's
    processing and training jobs (which all run with it), the monitoring and folding roles their function's
    IMAGE_URI, the model role the image of the version the pipeline registers — and nothing else."""
    [pipeline] = dev.find_resources("AWS::SageMaker::Pipeline").values()
    definition = json.loads(cfn_text(pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]))
    from pipelines.expressions import all_steps

    steps = list(all_steps(definition["Steps"]))
    job_role = f"<Att:{role_id(dev, 'diagnosa-dev-jobs')}.Arn>"
    jobs = {s["Arguments"]["AppSpecification"]["ImageUri"] for s in steps if s["Type"] == "Processing"}
    jobs |= {s["Arguments"]["AlgorithmSpecification"]["TrainingImage"] for s in steps if s["Type"] == "Training"}
    assert all(s["Arguments"]["RoleArn"] == job_role for s in steps if s["Type"] in ("Processing", "Training"))
    assert not [s for s in steps if s["Type"] in ("Model", "EndpointConfig", "Endpoint")]  # the deploy function serves
    serving = {c["Image"] for s in steps if s["Type"] == "RegisterModel"
               for c in s["Arguments"]["InferenceSpecification"]["Containers"]}

    def image_of(function):
        [props] = [f["Properties"] for f in dev.find_resources("AWS::Lambda::Function").values()
                   if f["Properties"].get("FunctionName") == function]
        return props["Environment"]["Variables"]["IMAGE_URI"]

    runs = {"diagnosa-dev-jobs": jobs, "diagnosa-dev-model": serving,
            "diagnosa-dev-monitoring": {image_of("diagnosa-dev-monitor")},
            "diagnosa-dev-fold-feedback": {image_of("diagnosa-dev-retrain")}}
    for role, images in runs.items():
        assert _pulled_repositories(dev, role, cfn_text) == {_repository(uri) for uri in images}, role
    # As AWS's images are today: PyTorch 2.5 CPU / Python 3.11, training scope for jobs, inference for the endpoint.
    assert _pulled_repositories(dev, "diagnosa-dev-model", cfn_text) == {("763104351884", "pytorch-inference")}
    for role in ("diagnosa-dev-jobs", "diagnosa-dev-monitoring", "diagnosa-dev-fold-feedback"):
        assert _pulled_repositories(dev, role, cfn_text) == {("763104351884", "pytorch-training")}, role


def test_the_pipeline_roles_account_wide_grants_are_the_documented_accepted_limit(dev, cfn_text):
    """Job and trial names are SageMaker Pipelines' (pipelines-<execution>-..., the execution id), never the
    pipeline's: these grants reach every pipeline's jobs of the account, another stage's in a one-account setup.
    Narrowing them with stage tags cannot be shown safe offline (Pipelines creates the jobs with this role and tags
    them itself), so they stay, unconditioned, as docs/deploy.md's accepted limit: this pins them as the role's only
    SageMaker grants naming no stage, and the paragraph as naming each with the reason and the mitigation."""
    account_wide: dict[str, set[str]] = {}
    for statement in statements_of(dev, "diagnosa-dev-pipeline"):
        for resource in statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]:
            arn = cfn_text(resource).replace("<Ref:AWS::Partition>", "aws")
            if arn.startswith("arn:aws:sagemaker:") and "diagnosa-dev" not in arn:
                assert arn.startswith("arn:aws:sagemaker:eu-west-1:123456789012:"), arn  # this account and region
                assert "Condition" not in statement, statement  # a condition added: the paragraph must change too
                account_wide.setdefault(arn.split(":", 5)[5], set()).update(_list(statement["Action"]))
    jobs = {"sagemaker:AddTags", "sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob",
            "sagemaker:StopProcessingJob", "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
            "sagemaker:StopTrainingJob"}
    trials = {"sagemaker:AddTags", "sagemaker:CreateExperiment", "sagemaker:DescribeExperiment", "sagemaker:CreateTrial",
              "sagemaker:DescribeTrial", "sagemaker:CreateTrialComponent", "sagemaker:UpdateTrialComponent",
              "sagemaker:DescribeTrialComponent", "sagemaker:AssociateTrialComponent", "sagemaker:AddAssociation"}
    assert account_wide == {"processing-job/pipelines-*": jobs, "training-job/pipelines-*": jobs,
                            "experiment-trial/*": trials, "experiment-trial-component/*": trials}
    docs = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text(encoding="utf-8")
    start = docs.index("- **Accepted limit: the pipeline role's jobs and trials are the account's.**")
    paragraph = docs[start:docs.index("\n- **", start + 1)]
    for resource in account_wide:
        assert f"`{resource}`" in paragraph, resource
    for reason in ("aws:RequestTag/stage", "aws:ResourceTag/stage", "sagemaker:pipeline-execution-arn",
                   "one account per stage", "*Mitigation:*"):
        assert reason in paragraph, reason


def test_a_dashboard_per_stage_shows_endpoint_drift_live_recall_pipeline_and_gate(dev, cfn_text):
    [dashboard] = resources(dev, "AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == "diagnosa-dev"
    widgets = json.loads(cfn_text(dashboard["Properties"]["DashboardBody"]))["widgets"]
    by_title = {w["properties"]["title"]: w["properties"] for w in widgets}
    assert set(by_title) == {"Endpoint: requests and errors", "Endpoint: model latency (microseconds)",
                             "Drift (daily monitoring job)", "Live recall from doctors' feedback",
                             "Pipeline executions", "Recall gate outcomes", "Alarms"}

    def metrics(title):  # [namespace, name, dim, value, ..., {options}] -> (namespace, name, {dim: value})
        out = []
        for m in by_title[title]["metrics"]:
            fields = [x for x in m if not isinstance(x, dict)]
            out.append((fields[0], fields[1], dict(zip(fields[2::2], fields[3::2]))))
        return out

    endpoint = {"EndpointName": "diagnosa-dev", "VariantName": "AllTraffic"}
    assert ("AWS/SageMaker", "Invocation5XXErrors", endpoint) in metrics("Endpoint: requests and errors")
    assert metrics("Drift (daily monitoring job)")[0] == ("Diagnosa/Monitoring", "DriftScore",
                                                          {"EndpointName": "diagnosa-dev"})
    live = metrics("Live recall from doctors' feedback")
    assert {m[2].get("Class") for m in live if m[1] == "LiveRecall"} == {  # as the monitoring job publishes them
        "NoEnfermo", "EnfermedadLeve", "EnfermedadAguda", "EnfermedadCronica", "EnfermedadTerminal"}
    assert ("Diagnosa/Monitoring", "LiveOrphanMacroRecall", {"EndpointName": "diagnosa-dev"}) in live
    assert ("Diagnosa/Monitoring", "LiveUnseenOrphanMacroRecall", {"EndpointName": "diagnosa-dev"}) in live
    gate = metrics("Recall gate outcomes")
    assert gate == [("AWS/Sagemaker/ModelBuildingPipeline", "StepSucceeded",
                     {"PipelineName": "diagnosa-dev", "StepName": "Register"}),
                    ("AWS/Sagemaker/ModelBuildingPipeline", "StepFailed",
                     {"PipelineName": "diagnosa-dev", "StepName": "RecallGateFailed"})]
    # The thresholds a reader compares against are the stage's own.
    annotations = {a["label"]: a["value"] for a in by_title["Live recall from doctors' feedback"]["annotations"][
        "horizontal"]}
    assert annotations == {"gate: per class": 0.8, "gate: orphan slice": 0.5, "gate: unseen orphan diseases": 0.4}
    assert len(by_title["Alarms"]["alarms"]) == 5  # 5xx, latency, drift, endpoint drift, dead letters


def test_each_function_imports_from_its_own_asset_as_lambda_loads_it(assembly, dev):
    """Lambda puts the asset's folder first on the path and imports the handler's module: every function's module
    and what it imports from its folder (the jobs' shared request builder) must be in that asset, not elsewhere."""
    import subprocess
    import sys

    _, cloud = assembly
    folder = Path(cloud.directory)  # the app's outdir holds the stages' assets
    checked = []
    for function in resources(dev, "AWS::Lambda::Function").values():
        name = function["Properties"].get("FunctionName", "")
        if not isinstance(name, str) or not name.startswith("diagnosa-dev-"):
            continue  # CDK's own handlers
        asset = folder / f"asset.{function['Properties']['Code']['S3Key'].removesuffix('.zip')}"
        module, _, attribute = function["Properties"]["Handler"].rpartition(".")
        probe = (f"import sys; sys.path.insert(0, {str(asset)!r}); import importlib; "
                 f"assert callable(getattr(importlib.import_module({module!r}), {attribute!r}))")
        # -B: no bytecode written into the asset (-I ignores PYTHONDONTWRITEBYTECODE): it stays as synthesized.
        subprocess.run([sys.executable, "-I", "-B", "-c", probe], check=True, timeout=60, capture_output=True)
        checked.append(name)
    assert {"diagnosa-dev-monitor", "diagnosa-dev-retrain", "diagnosa-dev-deploy"} <= set(checked)


def test_each_functions_asset_holds_its_folders_python_sources_only_readable_by_lambda(assembly, dev):
    """An asset is the function folder's ``.py`` files, each 0644: the folder's bytecode (a test imports the
    handlers), swap files or a .env changed the asset's hash per machine and shipped; a 0600 file is not readable by
    Lambda's user, and the first deploy's modes stay (the S3 key ignores them)."""
    from infra.stack import FUNCTIONS

    folder = Path(assembly[1].directory)
    seen = set()
    for function in resources(dev, "AWS::Lambda::Function").values():
        name = function["Properties"].get("FunctionName", "")
        if not isinstance(name, str) or not name.startswith("diagnosa-dev-"):
            continue  # CDK's own handlers
        asset = folder / f"asset.{function['Properties']['Code']['S3Key'].removesuffix('.zip')}"
        shipped = {p.relative_to(asset).as_posix(): (p.read_bytes(), p.stat().st_mode & 0o777)
                   for p in asset.rglob("*") if p.is_file()}
        sources = [f for f in FUNCTIONS.iterdir() if {p.name: (p.read_bytes(), 0o644) for p in f.glob("*.py")} == shipped]
        assert len(sources) == 1, (name, {k: mode for k, (_, mode) in shipped.items()})
        seen.add(sources[0].name)
    assert seen == {"deploy", "jobs"}  # promote: a stage promoting another's models only (test_promote.py)


def test_a_function_folder_is_laid_out_the_same_whatever_a_working_copy_gathered_there(tmp_path):
    """CDK's own fingerprint (the asset's hash, its S3 key) of a function folder laid out from a clean checkout and
    from one holding bytecode, swap files and a .env, written under a strict umask: the same, the same 0644 files."""
    import os
    import py_compile
    import shutil

    import aws_cdk as cdk

    from infra.stack import FUNCTIONS, lay_out_function_code

    clean, used = tmp_path / "clean" / "jobs", tmp_path / "used" / "jobs"
    for copy in (clean, used):
        shutil.copytree(FUNCTIONS / "jobs", copy, ignore=shutil.ignore_patterns("__pycache__"))
    py_compile.compile(str(used / "monitor.py"), doraise=True)  # __pycache__/monitor.cpython-311.pyc: path, mtime
    for name, content in {".env": b"AWS_SECRET_ACCESS_KEY=abc\n", ".monitor.py.swp": b"swap", "monitor.py~": b"old",
                          ".DS_Store": b"\0", ".ipynb_checkpoints/retrain-checkpoint.py": b"x = 1\n"}.items():
        (used / name).parent.mkdir(exist_ok=True)
        (used / name).write_bytes(content)
    first = lay_out_function_code(clean, tmp_path / "out" / "clean")
    umask = os.umask(0o077)
    try:
        second = lay_out_function_code(used, tmp_path / "out" / "used")
    finally:
        os.umask(umask)
    assert cdk.FileSystem.fingerprint(str(first)) == cdk.FileSystem.fingerprint(str(second))
    assert cdk.FileSystem.fingerprint(str(used)) != cdk.FileSystem.fingerprint(str(clean))  # the folder as it was
    listed = {p.relative_to(second).as_posix(): p.stat().st_mode & 0o777 for p in second.rglob("*")}
    assert listed == {p.name: 0o644 for p in clean.glob("*.py")} and second.stat().st_mode & 0o777 == 0o755


def test_the_drift_alarm_watches_the_metric_the_monitoring_job_publishes(dev):
    """drift_metric_name was a setting the job never heard of: any other value left the drift alarm blind. The
    alarm in the template watches the name and namespace the job's metric_data publishes, with the drift score."""
    from dataclasses import fields

    from infra.config import StageConfig
    from monitoring.cloudwatch import DEFAULT_NAMESPACE, metric_data

    report = {"window": {"end": "2027-01-15T08:00:00Z"}, "generated_at": "2027-01-15T08:00:00Z", "features": ["age"],
              "drifted_features": ["age"], "retrain": {"recommended": True}, "failing_classes": []}
    published = {d["MetricName"]: d["Value"] for d in metric_data(report, "diagnosa-dev")}
    watched = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"])
               for a in dev.find_resources("AWS::CloudWatch::Alarm").values()
               if a["Properties"].get("MetricName") in published and "drift" in a["Properties"]["AlarmDescription"].lower()}
    assert watched and all(namespace == DEFAULT_NAMESPACE for namespace, _ in watched)
    assert all(published[name] == 1.0 for _, name in watched)  # the drift score of a report whose one feature drifted
    assert "drift_metric_name" not in {f.name for f in fields(StageConfig)}


def test_termination_protection_follows_the_setting_and_the_delivery_pipelines_last_stage(tmp_path):
    """A production stage named `live` (the delivery pipeline's last) is protected, also when deployed by hand with
    -c stage=live (no pipeline in the app): the same CloudFormation stack either way."""
    from infra.app import build_app, new_app
    from infra.config import stage_config

    context = {"diagnosa:delivery": {"region": "eu-west-1", "repository": "diagnosa", "stages": ["dev", "live"]}}
    live = stage_config("live", {"region": "eu-west-1", "account": "123456789012", "baked_images": True})
    app = build_app(new_app(context=context, outdir=str(tmp_path)), [live])
    [stage] = [c for c in app.node.children if c.node.id == "live"]
    assert stage.stack.termination_protection and stage.images.termination_protection
