"""Refusals that name what they refuse name ten at most, each bounded (diagnosa.text.some_of): a list of 100,000
unknown names — families, pipeline parameters, hyperparameters — was said whole, at the source, however the caller cut
it afterwards; and a model that cannot load is said in one line, not a traceback before the CLI's own line."""
from __future__ import annotations

import logging

import pytest

from pipelines.definition import families_problem
from pipelines.executor import ExecutionError, resolve_parameters
from training.models import resolve_hyperparameters

NAMES = [f"name{i:06d}" + "x" * 1_000 for i in range(100_000)]
BOUND = 4_000


def test_families_unknown_or_repeated_by_the_hundred_thousand_are_named_ten_at_most():
    unknown = families_problem(NAMES)
    assert unknown is not None and len(unknown) < BOUND and "name000000" in unknown and "99,990 more" in unknown
    repeated = families_problem(["mlp", "xgboost"] * 50_000)
    assert repeated == "families names 'mlp', 'xgboost' more than once (one training step each)"


def test_unknown_pipeline_parameters_by_the_hundred_thousand_are_named_ten_at_most():
    definition = {"Version": "2020-12-01", "Parameters": [{"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5}],
                  "Steps": []}
    with pytest.raises(ExecutionError) as refused:
        resolve_parameters(definition, {name: "1" for name in NAMES})
    said = str(refused.value)
    assert len(said) < BOUND and "name000000" in said and "99,990 more" in said and "declared: Threshold" in said


def test_unknown_hyperparameters_by_the_hundred_thousand_are_named_ten_at_most():
    with pytest.raises(ValueError) as refused:
        resolve_hyperparameters("logistic_regression", {name: 1 for name in NAMES})
    said = str(refused.value)
    assert len(said) < BOUND and "name000000" in said and "99,990 more" in said and "(allowed: " in said


def test_a_model_that_cannot_load_is_logged_in_one_line(tmp_path, caplog):
    from inference.server import EndpointServer

    ep = EndpointServer(str(tmp_path / "no-model"))
    with caplog.at_level(logging.ERROR):
        ep.start()
        try:
            with pytest.raises(RuntimeError, match="failed to load"):
                ep.wait_until_ready(30)
        finally:
            ep.stop()
    failed = [r for r in caplog.records if "failed to load" in r.getMessage()]
    assert failed and all(r.exc_info is None for r in failed)  # the reason, not a traceback of the loader
    assert str(tmp_path / "no-model") in failed[0].getMessage()
