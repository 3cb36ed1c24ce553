"""The template gates (infra/gates.py) on every synthesized template: cfn-lint (no error, only the warnings
accepted there with their reason) and checkov (every failure acknowledged in infra/checkov-acknowledged.json
with its reason, and every acknowledgement still needed). ``make gates`` (docs/deploy.md §1) runs the same gates
over the templates ``make synth`` writes."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import stack_artifact
from tools import CHECKOV, need

from infra.gates import ACKNOWLEDGED, acknowledgements, cfn_lint, checkov, templates

STACKS = ("Diagnosa-dev", "Diagnosa-prod", "Diagnosa-prod-images")


def test_every_stack_is_linted(assembly):
    names = {p.name for p in templates(assembly[1].directory)}
    assert {stack_artifact(assembly[1], s).template_file for s in STACKS} == names


@pytest.mark.parametrize("stack", STACKS)
def test_cfn_lint_finds_no_error_and_only_accepted_warnings(assembly, stack):
    template = Path(stack_artifact(assembly[1], stack).template_full_path)
    assert cfn_lint([template]) == []


def checkov_binary() -> Path:
    need("checkov")
    return CHECKOV


def test_checkov_failures_are_all_acknowledged_with_a_reason(assembly, delivery_assembly):
    """Dev (no VPC), prod (VPC, baked images) and the delivery pipeline with its cross-account stages: every
    checkov failure is acknowledged, and every acknowledgement is still needed by one of them."""
    binary = checkov_binary()
    paths = templates(assembly[1].directory) + templates(delivery_assembly[1].directory)
    result = checkov(binary, paths)
    assert result.failed == [], "\n".join(result.failed)
    assert result.passed > 500 and result.acknowledged
    used = {a.split(" ")[0] for a in result.acknowledged}
    assert {a["check"] for a in acknowledgements()} == used
    # stale: an acknowledgement no template needs any more
    assert result.stale == [], result.stale


def test_checkov_catches_an_unacknowledged_failure(assembly, tmp_path):
    """The gate is not a formality: the same templates without the acknowledgements fail."""
    binary = checkov_binary()
    result = checkov(binary, templates(assembly[1].directory), acknowledged=[])
    assert any(f.startswith("CKV_AWS_18 AccessLogs") for f in result.failed), result.failed


def test_acknowledgements_need_a_reason(tmp_path):
    bad = tmp_path / "acks.json"
    bad.write_text('[{"check": "CKV_AWS_18", "resource": "AccessLogs*", "reason": " "}]')
    with pytest.raises(ValueError, match="every entry needs check, resource and a reason"):
        acknowledgements(bad)
    assert all(a["reason"] for a in acknowledgements(ACKNOWLEDGED))
