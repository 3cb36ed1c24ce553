"""cdk-nag: the AwsSolutions and HIPAA.Security packs on the whole app; synth fails on any finding.

cdk-nag 3 packs are CDK policy-validation plugins (``Validations.of(app).add_plugins``). CDK runs
them during ``app.synth()`` and raises ``ValidationFailed`` when a pack reports an unacknowledged
error; warnings would not stop it, so :func:`synth` also reads the report CDK writes into the
cloud assembly and fails on any violation at all. A finding is acknowledged where it arises with
``Validations.of(construct).acknowledge(...)`` (see ``infra.stack.acknowledge``), its full id and
a reason, which docs/deploy.md lists.

The same report carries CDK's own template validation (plugin "CloudFormation Validate": a value CloudFormation
would refuse, such as a namespace starting with ':'): those are not findings to acknowledge but a setting to fix,
and the failure says so, with each violation's description. Synth also fails when a stack needs a context lookup
(the cloud assembly's ``missing``): the app is built to need none, so the CLI's lookup (credentials at synth) or
its placeholder values (offline) never decide a template.
"""
from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks

PACKS = ("AwsSolutions", "HIPAA.Security")


class NagFindings(RuntimeError):
    """Synth produced cdk-nag findings that no acknowledgment covers, or template validation errors.
    ``findings``: ``<rule> <construct path>``; ``violations``: each with its plugin and description."""

    def __init__(self, findings: list[str], violations: list[dict[str, str]] | None = None):
        violations = violations if violations is not None else [
            {"plugin": "", "rule": f.split(" ", 1)[0], "path": f.split(" ", 1)[-1], "description": ""} for f in findings]
        nag = [v for v in violations if v["plugin"] in PACKS or not v["plugin"]]
        other = [v for v in violations if v not in nag]
        parts = []
        if other:
            parts.append(f"{len(other)} template validation error(s) (a value CloudFormation would refuse: fix the "
                         f"setting behind it, this is no finding to acknowledge):\n  " + _grouped(other))
        if nag:
            parts.append(f"{len(nag)} unacknowledged cdk-nag finding(s) (fix the resource, or acknowledge the "
                         f"finding in infra/stack.py with its reason):\n  " + _grouped(nag))
        super().__init__("\n".join(parts))
        self.findings = findings
        self.violations = violations


def _grouped(violations: list[dict[str, str]]) -> str:
    """One entry per rule and description (plugin named), its constructs below it."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for v in violations:
        groups.setdefault((v["plugin"], v["rule"], v["description"]), []).append(v["path"])
    return "\n  ".join(f"{rule}" + (f" ({plugin})" if plugin else "") + (f": {description}" if description else "")
                       + "".join(f"\n    {path}" for path in sorted(paths))
                       for (plugin, rule, description), paths in sorted(groups.items(), key=lambda g: g[0][1]))


class MissingContext(RuntimeError):
    """A stack of the app needs a context lookup (the cloud assembly lists it as missing)."""


def apply_packs(app: cdk.App) -> None:
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app), HIPAASecurityChecks(app))


def violations(outdir: str | Path) -> list[dict[str, str]]:
    """Every violation in the cloud assembly's validation report: plugin, rule, construct path, description."""
    report = Path(outdir) / "validation-report.json"
    if not report.exists():
        return []
    data = json.loads(report.read_text())
    return sorted(({"plugin": plugin.get("pluginName", ""), "rule": v["ruleName"], "path": c["constructPath"],
                    "description": " ".join(str(v.get("description", "")).split())}
                   for plugin in data.get("pluginReports", []) for v in plugin.get("violations", [])
                   for c in v.get("violatingConstructs", [])), key=lambda v: (v["rule"], v["path"]))


def findings(outdir: str | Path) -> list[str]:
    """``<rule> <construct path>`` for every violation in the cloud assembly's validation report."""
    return sorted(f"{v['rule']} {v['path']}" for v in violations(outdir))


def _failure(outdir: str | Path, fallback: str | None = None) -> NagFindings:
    found = violations(outdir)
    if not found and fallback is not None:
        return NagFindings([fallback])
    return NagFindings(sorted(f"{v['rule']} {v['path']}" for v in found), found)


def missing_context(outdir: str | Path) -> list[str]:
    """One line per context lookup a stack of the assembly (or of a stage's nested assembly) still needs."""
    wanted: dict[tuple[str, str], dict] = {}  # (where, key): the app's manifest repeats its stages' entries
    for manifest in sorted(Path(outdir).rglob("manifest.json")):
        try:
            missing = json.loads(manifest.read_text()).get("missing") or []
        except (OSError, ValueError):
            continue
        folder = manifest.parent.name
        where = f"stage {folder.removeprefix('assembly-')}" if folder.startswith("assembly-") else ""
        for entry in missing:
            wanted[(where, str(entry.get("key", "?")))] = entry
    staged = {key for where, key in wanted if where}
    problems = []
    for (where, key), entry in sorted(wanted.items()):
        if where or key not in staged:
            props = entry.get("props") or {}
            target = ", ".join(f"{k} {props[k]}" for k in ("account", "region") if props.get(k))
            problems.append(f"{where or 'the app'} needs the context lookup {entry.get('provider', '?')} "
                            f"({target or key})")
    return problems


def synth(app: cdk.App) -> cdk.cx_api.CloudAssembly:
    """``app.synth()`` that raises :class:`NagFindings` on any unacknowledged finding (errors and warnings) or
    template validation error, and :class:`MissingContext` when a stack needs a context lookup."""
    try:
        assembly = app.synth()
    except RuntimeError as err:
        if "ValidationFailed" not in str(err) and "Validation failed" not in str(err):
            raise
        raise _failure(app.outdir, str(err)) from None
    if violations(assembly.directory):
        raise _failure(assembly.directory)
    missing = missing_context(assembly.directory)
    if missing:
        raise MissingContext("; ".join(missing) + ": the app is built to need none (a VPC's zones are "
                             "Fn::GetAZs), so the CLI would look it up with credentials or write placeholders offline; "
                             "find what asks for it (infra/stack.py)")
    return assembly
