"""cdk-nag: the AwsSolutions and HIPAA.Security packs on the whole app; synth fails on any finding.

cdk-nag 3 packs are CDK policy-validation plugins (``Validations.of(app).add_plugins``). CDK runs
them during ``app.synth()`` and raises ``ValidationFailed`` when a pack reports an unacknowledged
error; warnings would not stop it, so :func:`synth` also reads the report CDK writes into the
cloud assembly and fails on any violation at all. A finding is acknowledged where it arises with
``Validations.of(construct).acknowledge(...)`` (see ``infra.stack.acknowledge``), its full id and
a reason, which docs/deploy.md lists.
"""
from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks

PACKS = ("AwsSolutions", "HIPAA.Security")


class NagFindings(RuntimeError):
    """Synth produced cdk-nag findings that no acknowledgment covers."""

    def __init__(self, findings: list[str]):
        super().__init__(f"{len(findings)} unacknowledged cdk-nag finding(s):\n  " + "\n  ".join(findings))
        self.findings = findings


def apply_packs(app: cdk.App) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app))


def findings(outdir: str | Path) -> list[str]:
    """``<rule> <construct path>`` for every violation in the cloud assembly's validation report."""
    report = Path(outdir) / "validation-report.json"
    if not report.exists():
        return []
    data = json.loads(report.read_text())
    return sorted(f"{v['ruleName']} {c['constructPath']}" for plugin in data.get("pluginReports", [])
                  for v in plugin.get("violations", []) for c in v.get("violatingConstructs", []))


def synth(app: cdk.App) -> cdk.cx_api.CloudAssembly:
    """``app.synth()`` that raises :class:`NagFindings` on any unacknowledged finding (errors and warnings)."""
    try:
        assembly = app.synth()
    except RuntimeError as err:
        if "ValidationFailed" not in str(err) and "Validation failed" not in str(err):
            raise
        raise NagFindings(findings(app.outdir) or [str(err)]) from None
    found = findings(assembly.directory)
    if found:
        raise NagFindings(found)
    return assembly
