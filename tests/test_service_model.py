"""pipelines/service_model.py: the service's Java patterns as Python's, matched as SageMaker matches them."""
from __future__ import annotations

import pytest

from pipelines.service_model import request_problems, service_pattern

JAVA_LINE_TERMINATORS = ("\n", "\r", "\r\n", "\x85", "\u2028", "\u2029")


@pytest.mark.parametrize("terminator", JAVA_LINE_TERMINATORS)
def test_a_dot_matches_no_line_terminator_as_in_java(terminator):
    """Java's "." (no DOTALL) takes no line terminator; Python's took all but "\\n", so a description with "\\r" or
    "\\u2028" passed the check and SageMaker refused the request."""
    for pattern in (".*", ".{0,1024}", r"\S(.*\S)?", "arn:.*"):
        assert not service_pattern(pattern).fullmatch(f"arn:a{terminator}b"), (pattern, terminator)
    problems = request_problems("StartPipelineExecution", {
        "PipelineName": "diagnosa-dev", "ClientRequestToken": "0" * 32,
        "PipelineExecutionDescription": f"new batch{terminator}from the HIS"}, patterns=True)
    assert problems and "PipelineExecutionDescription pattern .*" in problems


def test_a_dot_still_matches_every_other_character_and_escaped_or_classed_dots_stay_literal():
    anything = service_pattern(".*")
    assert anything.fullmatch("tab\there, \x1c, é, 中文, \U0001F600 and spaces")
    assert service_pattern(r"a\.b").fullmatch("a.b") and not service_pattern(r"a\.b").fullmatch("axb")
    assert service_pattern("a[.]b").fullmatch("a.b") and not service_pattern("a[.]b").fullmatch("axb")
    assert service_pattern(r"ml.[a-z0-9\-.]+").fullmatch("ml.m5.xlarge")  # the class's dot: a dot
    assert not service_pattern(r"ml.[a-z0-9\-.]+").fullmatch("ml\nm5")
    assert request_problems("StartPipelineExecution", {
        "PipelineName": "diagnosa-dev", "ClientRequestToken": "0" * 32,
        "PipelineExecutionDescription": "new batch\tfrom the HIS"}, patterns=True) is None
