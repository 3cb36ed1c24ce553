"""`diagnosa registry list|approve|reject --region` against hostile answers of SageMaker's Model Registry, served over
HTTP in SageMaker's JSON protocol to the real botocore client (SageMakerControl): answers botocore parses and that are
still anyone's text. Each ends in bounded, escaped lines, or one line naming what cannot be used (exit status 1), never
a traceback, a forged line or a listing followed forever."""
from __future__ import annotations

import json

import pytest
from test_cli_hostile_surfaces import BOUND, HOSTILE, JAN_1_2026, SageMakerControl, one_line_error

import pipelines.registry
from diagnosa.cli import main

GROUP = "diagnosa-dev"
ARN = f"arn:aws:sagemaker:eu-west-1:123456789012:model-package/{GROUP}/1"
REGION = ["--region", "eu-west-1"]


class Answers(dict):
    """SageMakerControl's ``answers`` whose values may be functions, called for each request (a listing whose pages
    go on: each answer another NextToken)."""

    def get(self, key, default=None):
        value = super().get(key, default)
        return value() if callable(value) else value


@pytest.fixture(name="registry_aws")
def registry_aws_fixture(http_server, aws_endpoints, tmp_path, monkeypatch):
    """``serve(**answers) -> handler``: SageMaker of eu-west-1 answering each operation named (ListModelPackageGroups=
    ...) with status 200 and that body (a function: called per request; a (status, body) tuple: as it is); any other
    operation refused (400). The command runs in an empty workspace."""
    monkeypatch.setenv("DIAGNOSA_HOME", str(tmp_path / "ws"))

    def serve(**answers) -> type:
        given = Answers({name: body if isinstance(body, tuple) or callable(body) else (200, body)
                         for name, body in answers.items()})
        url, handler = http_server(SageMakerControl, answers=given)
        aws_endpoints(sagemaker=url)
        return handler

    return serve


def groups(*names):
    return {"ModelPackageGroupSummaryList": [{"ModelPackageGroupName": name} for name in names]}


def summary(**fields):
    return {"ModelPackageArn": ARN, "ModelPackageGroupName": GROUP, "ModelPackageVersion": 1,
            "CreationTime": JAN_1_2026, "ModelPackageStatus": "Completed", "ModelApprovalStatus": "Approved", **fields}


def refusal(message):
    return 400, {"__type": "ValidationException", "message": message}


BIG_REFUSAL = refusal("no\nFORGED: line \x1b[31m" + "x" * 1_000_000)


def pages(key, items, count):
    """A listing answered in ``count`` pages, each with ``items`` and another NextToken but the last."""
    served = iter(range(count))

    def page():
        number = next(served, count)
        return 200, {key: items, **({"NextToken": f"token-{number}"} if number < count - 1 else {})}

    return page


def printed_safely(text: str) -> None:
    assert "\x1b" not in text and "\u202e" not in text
    text.encode("utf-8")  # no lone surrogate left
    assert all(len(line) < BOUND for line in text.splitlines())


# ------------------------------------------------------------------------------------------------ list

def test_list_escapes_and_bounds_every_field(registry_aws, capsys):
    # Escaped, but whole: a 10 MB ApprovalDescription was a 10 MB line (13.8 MB of output).
    big = HOSTILE * 200_000
    registry_aws(ListModelPackageGroups=groups(GROUP), ListModelPackages={"ModelPackageSummaryList": [summary()]},
                 DescribeModelPackage=summary(ModelApprovalStatus=big, ApprovalDescription=big,
                                              ModelPackageDescription=big, CustomerMetadataProperties={
                                                  "diagnosa:execution": big, "diagnosa:input-data": HOSTILE,
                                                  "diagnosa:code-sha256": HOSTILE}))
    assert main(["registry", "list", *REGION]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 4 and lines[0] == f"{GROUP}: 1 version(s)" and lines[1].startswith("  v1    \\x1b[2J")
    assert lines[2].startswith("        reason: \\x1b[2J") and lines[3].startswith("        execution \\x1b[2J")
    assert not any(line.lstrip().startswith("FORGED") for line in lines)
    printed_safely(out)
    assert len(out) < 3 * BOUND


@pytest.mark.parametrize("described, shows", [
    ({}, "  v1    Approved"),  # no field but what the summary has: the summary's
    ({"ModelPackageArn": ARN, "ModelApprovalStatus": None}, "  v1    Approved"),  # botocore drops a null
    ({"ModelPackageArn": ARN, "ModelApprovalStatus": "Damaged"}, "  v1    Damaged"),  # the local registry's word
    ({"ModelPackageArn": ARN, "ModelApprovalStatus": ["Approved"]}, "  v1    ['Approved']"),  # a list: format() failed
    ({"ModelPackageArn": ARN, "CustomerMetadataProperties": {"other": "x"}}, "        execution ? · data ? · code ?"),
])
def test_list_of_a_description_without_its_fields_says_what_it_has(registry_aws, capsys, described, shows):
    # KeyError: 'ModelApprovalStatus' (or 'ModelPackageVersion', 'Problem'), TypeError: a traceback.
    registry_aws(ListModelPackageGroups=groups(GROUP), ListModelPackages={"ModelPackageSummaryList": [summary()]},
                 DescribeModelPackage=described)
    assert main(["registry", "list", *REGION, "--group", GROUP]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{GROUP}: 1 version(s)\n") and shows in out


def test_list_of_a_summary_and_description_without_fields(registry_aws, capsys):
    registry_aws(ListModelPackageGroups=groups(GROUP), ListModelPackages={"ModelPackageSummaryList": [
        {"ModelPackageArn": ARN}]}, DescribeModelPackage={})
    assert main(["registry", "list", *REGION]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"  v?    {'?':<22} ?  test metrics not available locally"


@pytest.mark.parametrize("listing, packages, says", [
    ({}, {}, "SageMaker answered ListModelPackageGroups without a list of ModelPackageGroupSummary objects: got None"),
    ({"ModelPackageGroupSummaryList": [None]}, {}, "ListModelPackageGroups without a list of ModelPackageGroupSummary"),
    ({"ModelPackageGroupSummaryList": [{}]}, {}, "ListModelPackageGroups with None as a group's name"),
    (groups("a\x1b[2J\nFORGED" * 100_000), {}, r"ListModelPackageGroups with 'a\x1b[2J\nFORGED"),
    (groups(GROUP), {}, "ListModelPackages without a list of ModelPackageSummary objects: got None"),
    (groups(GROUP), {"ModelPackageSummaryList": [None]}, "ListModelPackages without a list of ModelPackageSummary"),
    (groups(GROUP), {"ModelPackageSummaryList": [{"ModelPackageVersion": 1}]},
     f"ListModelPackages with None as the ARN of a version of {GROUP}"),
    (groups(GROUP), {"ModelPackageSummaryList": [summary(ModelPackageArn="arn\n" * 1_000_000)]},
     r"ListModelPackages with 'arn\narn\n"),
])
def test_list_of_a_listing_that_cannot_be_used_is_one_line(registry_aws, capsys, listing, packages, says):
    # KeyError, TypeError: a traceback; a 1.6 MB group name was a 1.6 MB line and sent back to SageMaker.
    served = registry_aws(ListModelPackageGroups=listing, ListModelPackages=packages, DescribeModelPackage=summary())
    assert main(["registry", "list", *REGION]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and says in err
    printed_safely(err)
    assert "SageMaker.DescribeModelPackage" not in served.received


def test_list_of_a_refused_description_is_one_line(registry_aws, capsys):
    # A RegistryError (a ValueError no handler of the CLI's takes): a traceback.
    registry_aws(ListModelPackageGroups=groups(GROUP), ListModelPackages={"ModelPackageSummaryList": [summary()]},
                 DescribeModelPackage=BIG_REFUSAL)
    assert main(["registry", "list", *REGION]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "SageMaker refused describe_model_package: An error occurred" in err
    assert "no\\nFORGED" in err
    printed_safely(err)


def test_list_describes_the_newest_versions_only(registry_aws, capsys):
    # 100,000 versions were 100,000 DescribeModelPackage calls (75 minutes here) and 100,000 lines.
    newest = [summary(ModelPackageVersion=version, ModelPackageArn=ARN.replace("/1", f"/{version}"))
              for version in range(100_000, 99_900, -1)]
    served = registry_aws(ListModelPackageGroups=groups(GROUP), DescribeModelPackage={},
                          ListModelPackages={"ModelPackageSummaryList": newest + [{}] * 99_900})
    assert main(["registry", "list", *REGION]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = pipelines.registry.LISTED_VERSIONS
    assert lines[0].startswith(f"{GROUP}: more than {listed} versions (the newest {listed} shown; every one: aws ")
    assert len(lines) == listed + 1 and lines[1].startswith("  v99901 ") and lines[-1].startswith("  v100000 ")
    assert served.received.count("SageMaker.DescribeModelPackage") == listed
    assert served.received.count("SageMaker.ListModelPackages") == 1


def test_list_shows_a_bounded_number_of_groups(registry_aws, capsys):
    # Each group is a ListModelPackages call (and one call per version): 150 groups were 150 calls.
    served = registry_aws(ListModelPackageGroups=groups(*(f"g{number:03d}" for number in range(150))),
                          ListModelPackages={"ModelPackageSummaryList": []})
    assert main(["registry", "list", *REGION]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(the first 100 of 150 model package groups shown: give --group)"
    assert lines[1:] == [f"g{number:03d}: 0 version(s)" for number in range(100)]
    assert served.received.count("SageMaker.ListModelPackages") == 100


def test_list_of_more_groups_than_are_read_is_one_line(registry_aws, capsys):
    # 100,000 groups were 100,000 ListModelPackages calls (here the first one refused: "AWS: ... ValidationException").
    registry_aws(ListModelPackageGroups=groups(*(f"g{number}" for number in range(100_000))),
                 ListModelPackages=refusal("not asked"))
    assert main(["registry", "list", *REGION]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "ListModelPackageGroups with more than 10,000 model package groups" in err


def test_a_missing_group_names_the_groups_bounded(registry_aws, capsys):
    # Every one of 100,000 names quoted (cut at 8,000 characters), each name's newline a line.
    registry_aws(ListModelPackageGroups=groups(*(f"g{number}" for number in range(9_000))))
    assert main(["registry", "list", *REGION, "--group", "nope"]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and err.endswith(": its groups are g0, g1, g10, g100, g1000, g1001, g1002, g1003, "
                                                "g1004, g1005 and 8,990 more\n")


def test_a_listing_whose_pages_never_end_is_read_bounded(registry_aws, capsys, monkeypatch):
    # botocore's paginator followed a NextToken that never ends forever (3,000 pages took 133 s here).
    monkeypatch.setattr(pipelines.registry, "MAX_PAGES", 5, raising=False)
    served = registry_aws(ListModelPackageGroups=pages("ModelPackageGroupSummaryList", [], 20))
    assert main(["registry", "list", *REGION]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "ListModelPackageGroups with a next page still after 5 pages" in err
    assert served.received.count("SageMaker.ListModelPackageGroups") == 5


# ------------------------------------------------------------------------------------------------ approve / reject

def decide(verb: str, version: int = 1) -> list[str]:
    return ["registry", verb, str(version), "--group", GROUP, *REGION]


@pytest.mark.parametrize("updated, described", [
    ({"ModelPackageArn": ARN}, refusal("the test gives no DescribeModelPackage")),
    ({"ModelPackageArn": ARN}, BIG_REFUSAL),
    ({}, {}),  # (with its ARN, an answer describing nothing was no problem: nothing of it is read)
    ({}, BIG_REFUSAL),
])
def test_a_decision_written_is_said_whatever_comes_after(registry_aws, capsys, described, updated):
    # The approval was written, then a refused DescribeModelPackage (whose answer is not used on AWS) said
    # "error" with exit status 2; an UpdateModelPackage answer without its ARN was a KeyError.
    served = registry_aws(ListModelPackages={"ModelPackageSummaryList": [summary()]}, UpdateModelPackage=updated,
                          DescribeModelPackage=described, ListModelPackageGroups=groups(GROUP))
    assert main(decide("approve")) == 0
    assert capsys.readouterr().out.startswith(f"{GROUP} v1: Approved\n")
    assert served.received.count("SageMaker.UpdateModelPackage") == 1


def test_a_refused_decision_is_one_line(registry_aws, capsys):
    # 8,000 characters of the refusal on two lines, its escape codes raw.
    registry_aws(ListModelPackages={"ModelPackageSummaryList": [summary()]}, UpdateModelPackage=BIG_REFUSAL,
                 ListModelPackageGroups=groups(GROUP))
    assert main(decide("reject")) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and "SageMaker refused update_model_package: An error occurred (Validation" in err
    printed_safely(err)


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_a_decision_whose_answer_cannot_be_read_is_the_services_failure(registry_aws, capsys, verb):
    # "SageMaker refused update_model_package: the answer to UpdateModelPackage cannot be read", exit status 2 (bad
    # input): SageMaker refused nothing, and the command was right.
    registry_aws(ListModelPackages={"ModelPackageSummaryList": [summary()]}, UpdateModelPackage=(200, b"null"),
                 ListModelPackageGroups=groups(GROUP))
    assert main(decide(verb)) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and err.startswith("diagnosa: error: AWS: the answer to UpdateModelPackage cannot be "
                                                  "read (")


@pytest.mark.parametrize("arn", [
    ARN.replace(f"/{GROUP}/1", "/diagnosa-prod/1"),  # another group's version
    ARN.replace("/1", "/7"),  # another version
    ARN + "\n" + HOSTILE * 1000,
    None,
])
def test_a_decision_on_an_arn_that_names_another_package_is_refused(registry_aws, capsys, arn):
    # The summary of version 1 naming another package's ARN: that one was approved (exit status 0), a 50 KB one sent.
    served = registry_aws(ListModelPackages={"ModelPackageSummaryList": [summary(ModelPackageArn=arn)]},
                          UpdateModelPackage={"ModelPackageArn": ARN}, ListModelPackageGroups=groups(GROUP))
    assert main(decide("approve")) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and f"as the ARN of {GROUP}/1: not its model package's ARN" in err
    printed_safely(err)
    assert "SageMaker.UpdateModelPackage" not in served.received


@pytest.mark.parametrize("listing", [{"ModelPackageSummaryList": [None, summary()]}, {}])
def test_a_decision_on_a_listing_that_cannot_be_used_is_one_line(registry_aws, capsys, listing):
    # AttributeError / KeyError: a traceback.
    registry_aws(ListModelPackages=listing, UpdateModelPackage={"ModelPackageArn": ARN})
    assert main(decide("reject")) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "SageMaker answered ListModelPackages without a list of ModelPackageSummary" in err


def test_a_decision_on_a_listing_whose_pages_never_end_is_bounded(registry_aws, capsys, monkeypatch):
    monkeypatch.setattr(pipelines.registry, "MAX_PAGES", 5, raising=False)
    served = registry_aws(ListModelPackages=pages("ModelPackageSummaryList", [summary()], 20))
    assert main(decide("approve", 3)) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "ListModelPackages with a next page still after 5 pages" in err
    assert served.received.count("SageMaker.ListModelPackages") == 5


@pytest.mark.parametrize("listing", [groups(HOSTILE * 1_000), BIG_REFUSAL])
def test_a_missing_version_with_a_groups_listing_that_cannot_be_used_is_one_line(registry_aws, capsys, listing):
    # The groups named after "does not exist" were AWS's whole answer: 8,000 characters on 273 lines, escape codes raw
    # (a refusal of that listing: "AWS: ..." in place of what did not exist).
    registry_aws(ListModelPackages={"ModelPackageSummaryList": [summary()]}, ListModelPackageGroups=listing)
    assert main(decide("reject", 2)) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and err == (f"diagnosa: error: model package {GROUP}/2 does not exist in SageMaker Model "
                                           "Registry (eu-west-1)\n")


@pytest.mark.parametrize("verb", ["list", "approve"])
def test_a_region_that_is_no_region_is_bad_input(capsys, verb):
    # botocore's refusal: exit status 1, as if AWS had said no.
    argv = ["registry", "list"] if verb == "list" else ["registry", "approve", "1"]
    assert main([*argv, "--region", "eu west\n1"]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and r"AWS region 'eu west\n1' (--region) is not a region's name" in err


# ------------------------------------------------------------------------------------------------ the local registry

def test_local_list_of_a_version_whose_metrics_are_no_object(tmp_path, capsys):
    # _test_summary read ModelMetrics outside its try: a list there was an AttributeError (a traceback).
    from pipelines.registry import LocalModelRegistry

    registry = LocalModelRegistry(tmp_path / "ws" / "registry")
    registry.create_model_package(ModelPackageGroupName="diagnosa", ModelApprovalStatus="Approved")
    path = tmp_path / "ws" / "registry" / "diagnosa" / "000001.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "ModelMetrics": ["x"]}))
    assert main(["--workspace", str(tmp_path / "ws"), "registry", "list"]) == 0
    assert "v1    Approved" in capsys.readouterr().out
