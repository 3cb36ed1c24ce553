"""cfn-lint, AWS's CloudFormation linter, on every synthesized template: no error, and only the warnings
listed here with the reason they stay."""
from __future__ import annotations

from pathlib import Path

import pytest

# Warnings that stay, each with its reason; any other finding fails.
ACCEPTED = {
    "W3005": "CDK adds DependsOn from a function to its role although Fn::GetAtt on the role already orders "
             "them (CDK's own constructs; redundant, harmless)",
    "W3010": "offline synthesis has no availability-zone lookup, so the VPC's subnets name CDK's placeholder "
             "zones (dummy1a/b); `cdk synth` with credentials writes the region's real zones",
}


def _templates(assembly) -> list[Path]:
    _, cloud = assembly
    return sorted(Path(cloud.directory).glob("*.template.json"))


def test_every_stack_is_linted(assembly):
    names = {p.name for p in _templates(assembly)}
    assert {"Diagnosa-dev.template.json", "Diagnosa-prod.template.json", "Diagnosa-prod-images.template.json"} <= names


@pytest.mark.parametrize("stack", ["Diagnosa-dev", "Diagnosa-prod", "Diagnosa-prod-images"])
def test_cfn_lint_finds_no_error_and_only_accepted_warnings(assembly, stack):
    from cfnlint.api import ManualArgs, lint_file

    template = Path(assembly[1].directory) / f"{stack}.template.json"
    found = lint_file(template, config=ManualArgs(regions=["eu-west-1"]))
    unexpected = [f"{m.rule.id} {m.message} ({m.path_string})" for m in found if m.rule.id not in ACCEPTED]
    assert unexpected == [], "\n".join(unexpected)
    assert not [m for m in found if m.rule.severity == "error"]
