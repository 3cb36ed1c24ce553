"""The jobs and the app's feedback write, run on moto with IAM enforcement on and only their stack role's credentials
(the synthesized dev template's policies): every S3 call they make is one the role allows.

moto (5.2.5) evaluates Action and Resource of each S3 request against the role's identity policies (assumed-role
credentials included), not the Condition of a statement, and answers 404 for a missing key whatever the grant. What
real S3 does there is injected before the request reaches moto, from the role's own ListBucket statements: a listing
whose s3:prefix no StringLike of theirs matches is AccessDenied; a GetObject/HeadObject of a missing key, by a role
without an unconditional s3:ListBucket, is 403. (Bucket policies are not put on the buckets: moto cannot evaluate
their TLS conditions and would deny everything; non-S3 calls are not judged here: moto authorizes them on resource
"*" and calls CloudWatch's actions monitoring:*.)"""
from __future__ import annotations

import fnmatch
import json

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto.core import enable_iam_authentication
from test_retrain_job import LAKE, RAW, cohort, confirmed_cohort, job, result_of, s3  # noqa: F401  (fixtures)

ACCOUNT, REGION = "123456789012", "eu-west-1"
EP = "diagnosa-dev"


def _resolve(node, resources, names):
    """A template expression with the lake's and raw bucket's ARNs (and every other GetAtt Arn) made concrete."""
    if isinstance(node, list):
        return [_resolve(n, resources, names) for n in node]
    if not isinstance(node, dict):
        return node
    if "Fn::Join" in node:
        sep, parts = node["Fn::Join"]
        return sep.join(_resolve(p, resources, names) for p in parts)
    if "Fn::GetAtt" in node:
        logical, _ = node["Fn::GetAtt"]
        if logical in names:
            return f"arn:aws:s3:::{names[logical]}"
        return f"arn:aws:cfn:::{logical}"  # a key, a log group: not S3's, not judged here
    if "Ref" in node:
        return {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}.get(node["Ref"], node["Ref"])
    return {k: _resolve(v, resources, names) for k, v in node.items()}


def role_policies(template, role_name: str) -> list[dict]:
    resources = template.to_json()["Resources"]
    names = {}
    for logical, r in resources.items():
        if r["Type"] == "AWS::S3::Bucket":
            logical_name = logical.lower()
            names[logical] = LAKE if logical_name.startswith("lake") else RAW if logical_name.startswith("raw") else "logs"
    [role] = [k for k, r in resources.items() if r["Type"] == "AWS::IAM::Role"
              and r["Properties"].get("RoleName") == role_name]
    return [_resolve(r["Properties"]["PolicyDocument"], resources, names) for r in resources.values()
            if r["Type"] == "AWS::IAM::ManagedPolicy" and {"Ref": role} in r["Properties"].get("Roles", [])]


def _statements(policies):
    for doc in policies:
        for st in doc["Statement"]:
            yield st


def _list(v):
    return v if isinstance(v, list) else [v]


class RoleOnS3:
    """Who calls S3 from here on (boto3's default session, so the clients the code makes itself) is the role; its
    ListBucket conditions and S3's 403 for a missing key are applied before moto; denied calls are kept."""

    def __init__(self, monkeypatch, template, role_name):
        self.policies = role_policies(template, role_name)
        self.denied: list[str] = []
        iam, sts = boto3.client("iam", region_name=REGION), boto3.client("sts", region_name=REGION)
        iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}))
        for i, doc in enumerate(self.policies):
            arn = iam.create_policy(PolicyName=f"{role_name}-{i}", PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
            iam.attach_role_policy(RoleName=role_name, PolicyArn=arn)
        c = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role_name}", RoleSessionName="test")["Credentials"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", c["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", c["SecretAccessKey"])
        monkeypatch.setenv("AWS_SESSION_TOKEN", c["SessionToken"])
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        boto3.setup_default_session()
        events = boto3.DEFAULT_SESSION.events
        events.register("before-parameter-build.s3", lambda params, context, **_: context.update(api=dict(params)))
        events.register("before-call.s3.ListObjectsV2", self._listing)
        events.register("before-call.s3.GetObject", self._object)
        events.register("before-call.s3.HeadObject", self._object)
        events.register("after-call.s3", self._after)

    def _list_patterns(self, bucket) -> list[str | None]:
        """The s3:prefix patterns the role may list ``bucket`` with (None: any request, no condition)."""
        out = []
        for st in _statements(self.policies):
            if st["Effect"] == "Allow" and "s3:ListBucket" in _list(st["Action"]) \
                    and f"arn:aws:s3:::{bucket}" in _list(st["Resource"]):
                cond = st.get("Condition")
                out += [None] if not cond else _list(cond.get("StringLike", {}).get("s3:prefix", []))
        return out

    @staticmethod
    def _refused(code):
        return AWSResponse("https://s3", 403, {}, None), {"Error": {"Code": code, "Message": "Access Denied"},
                                                          "ResponseMetadata": {"HTTPStatusCode": 403}}

    def _listing(self, context, **_):
        api = context["api"]
        prefix = api.get("Prefix")
        patterns = self._list_patterns(api["Bucket"])
        if None in patterns or (prefix is not None and any(fnmatch.fnmatchcase(prefix, p) for p in patterns)):
            return None
        self.denied.append(f"ListObjectsV2 s3://{api['Bucket']} prefix={prefix!r}")
        context["injected"] = True
        return self._refused("AccessDenied")

    def _object(self, context, model, **_):
        from moto.s3.models import s3_backends

        api = context["api"]
        if None in self._list_patterns(api["Bucket"]):
            return None  # S3 says 404 to this role: moto does too
        try:
            present = s3_backends[ACCOUNT]["aws"].get_object(api["Bucket"], api["Key"]) is not None
        except Exception:  # noqa: BLE001  (moto's MissingKey)
            present = False
        if present:
            return None
        context["injected"] = True  # S3's answer for a missing key, not a denial
        return self._refused("AccessDenied" if model.name == "GetObject" else "403")

    def _after(self, http_response, parsed, model, context, **_):
        code = parsed.get("Error", {}).get("Code")
        if not context.get("injected") and http_response.status_code == 403 and code in ("AccessDenied", "403"):
            api = context.get("api", {})
            self.denied.append(f"{model.name} s3://{api.get('Bucket')}/{api.get('Key', '')} (moto's IAM)")


@pytest.fixture
def lake_and_events(s3, cohort, tmp_path):  # noqa: F811
    from test_retrain_job import s3_lake

    lake = s3_lake(s3)
    return lake, confirmed_cohort(lake, cohort, EP, 4, tmp_path / "spool")


def test_the_folding_job_needs_nothing_its_role_does_not_grant(dev, monkeypatch, tmp_path, lake_and_events):
    lake, _ = lake_and_events
    role = RoleOnS3(monkeypatch, dev, "diagnosa-dev-fold-feedback")
    with enable_iam_authentication():
        assert job(tmp_path / "first", EP, "--dataset", "patients") == 0, role.denied
    for key in lake.list("capture/"):  # the capture expires (the lifecycle rule): the kept records are read
        lake.delete(key)
    with enable_iam_authentication():
        assert job(tmp_path / "second", EP, "--dataset", "patients") == 0, role.denied
    assert result_of(tmp_path / "second")["feedback_rows"] == 4 and role.denied == []


def test_the_app_stores_feedback_within_its_role(dev, monkeypatch, lake_and_events):
    from diagnosa.lake import DataLake
    from inference.capture import new_event_id
    from inference.feedback import Feedback, store_feedback

    _, events = lake_and_events
    role = RoleOnS3(monkeypatch, dev, "diagnosa-dev-app")
    with enable_iam_authentication():
        app_lake = DataLake.from_uri(f"s3://{LAKE}")
        assert store_feedback(app_lake, EP, Feedback(event_id=events[0], diagnosis="NO ENFERMO")).replaced
        assert store_feedback(app_lake, EP, Feedback(event_id=new_event_id(), diagnosis="NO ENFERMO")).replaced is None
    assert role.denied == []


def test_the_monitoring_job_reads_the_lake_within_its_role(dev, monkeypatch, tmp_path, lake_and_events):
    from diagnosa.data.ingest import load_curated
    from diagnosa.data.schema import Schema
    from monitoring.job import main
    from processing.baseline import write_data_baseline

    lake, _ = lake_and_events
    frame, manifest = load_curated(lake, "patients")
    folder = tmp_path / "input" / "baseline"
    folder.mkdir(parents=True)
    write_data_baseline(frame, Schema.from_dict(manifest["schema"]), folder)
    role = RoleOnS3(monkeypatch, dev, "diagnosa-dev-monitoring")
    with enable_iam_authentication():  # no --metrics-namespace: moto judges CloudWatch's calls as monitoring:*
        code = main(["--base-dir", str(tmp_path), "--endpoint-name", EP, "--lake", f"s3://{LAKE}", "--last", "24h",
                     "--feedback-lag", "7d"])
    assert (code, role.denied) == (0, [])
