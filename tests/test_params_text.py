"""--param text as users give it: read as written, or refused saying why."""
from __future__ import annotations

import re

import pytest

from pipelines.executor import ExecutionError, coerce_parameter, resolve_parameters

DECLARED = {"Parameters": [{"Name": "T", "Type": "Float", "DefaultValue": 0.5},
                           {"Name": "N", "Type": "Integer", "DefaultValue": 1},
                           {"Name": "B", "Type": "Boolean", "DefaultValue": False}]}


@pytest.mark.parametrize("name, text, why", [
    ("T", "\xa00.5\u2003", ""), ("T", " 0.5\n", ""), ("N", "3\x1f", ""), ("B", " false\n", ""),
    ("T", "1e-400", ": too close to 0 for a float (it would be read as 0)"),
    ("N", "1" * 4301, ": outside 64 bits (4301 digits)")])
def test_param_text_is_read_as_written_or_refused_saying_why(name, text, why):
    with pytest.raises(ExecutionError, match=rf"^parameter {name} is an? \w+ \(.*\), got .*{re.escape(why)}$"):
        resolve_parameters(DECLARED, {name: text})


def test_leading_zeros_and_negative_zero_read_alike_as_integer_and_float():
    assert resolve_parameters(DECLARED, {"T": "0" * 5000 + "1", "N": "0" * 5000 + "1", "B": " true "}) == {
        "T": 1.0, "N": 1, "B": True}
    assert str(coerce_parameter("T", "Float", "-0")) == "0.0" and str(coerce_parameter("T", "Float", -0.0)) == "0.0"
