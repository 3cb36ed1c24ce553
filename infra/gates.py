"""The template gates after ``make synth``: cfn-lint and checkov on every template of the cloud assembly
(the stages' nested assemblies included). Any finding fails, except the ones accepted here (cfn-lint
warnings) or in ``infra/checkov-acknowledged.json`` (checkov checks, each on a pattern of the resource's
logical id — stable: CDK derives it from the construct path — each with its reason). The tests also fail
on an acknowledgement that no template needs any more, so the list stays honest.

checkov runs from a virtual environment of its own (``.venv-checkov``, ``requirements/checkov-lock.txt``):
its pins conflict with the project's boto3. ``python -m infra.gates cdk.out --checkov .venv-checkov/bin/checkov``
(``make gates``) prints every finding and exits non-zero on any that is not accepted.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ACKNOWLEDGED = Path(__file__).with_name("checkov-acknowledged.json")

# cfn-lint warnings that stay, each with its reason; any other finding fails.
CFN_LINT_ACCEPTED = {
    "W3005": "CDK adds DependsOn from a function to its role although Fn::GetAtt on the role already orders "
             "them (CDK's own constructs; redundant, harmless)",
    "E3703": "CDK Pipelines writes a cross-account stage's action role ARN as Fn::Join over the partition; cfn-lint "
             "prefers Fn::Sub (a style rule: both resolve to the same ARN)",
}


def templates(cloud_assembly: str | Path) -> list[Path]:
    """Every CloudFormation template of the assembly, nested stage assemblies included."""
    return sorted(Path(cloud_assembly).rglob("*.template.json"))


def cfn_lint(paths: list[Path], region: str = "eu-west-1") -> list[str]:
    """``<rule> <message> (<file>: <path>)`` for every cfn-lint finding not in :data:`CFN_LINT_ACCEPTED`."""
    from cfnlint.api import ManualArgs, lint_file

    found = []
    for path in paths:
        for match in lint_file(path, config=ManualArgs(regions=[region])):
            if match.rule.id not in CFN_LINT_ACCEPTED:
                found.append(f"{match.rule.id} {match.message} ({path.name}: {match.path_string})")
    return found


@dataclass(frozen=True)
class CheckovResult:
    passed: int
    failed: list[str]  # "<check> <logical id> (<file>)" not acknowledged
    acknowledged: list[str]
    stale: list[str]  # acknowledgements that matched no failure


def acknowledgements(path: Path = ACKNOWLEDGED) -> list[dict[str, str]]:
    entries = json.loads(path.read_text())
    bad = [e for e in entries if set(e) != {"check", "resource", "reason"} or not e["reason"].strip()]
    if bad:
        raise ValueError(f"{path.name}: every entry needs check, resource and a reason: {bad}")
    return entries


def checkov(binary: str | Path, paths: list[Path], acknowledged: list[dict[str, str]] | None = None) -> CheckovResult:
    """Run checkov's CloudFormation checks on ``paths`` and sort its failures into acknowledged or not."""
    acknowledged = acknowledgements() if acknowledged is None else acknowledged
    command = [str(binary), "--framework", "cloudformation", "--output", "json", "--quiet", "--compact",
               "--skip-download", *(arg for p in paths for arg in ("--file", str(p)))]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    if run.returncode not in (0, 1) or not run.stdout.strip():
        raise RuntimeError(f"checkov failed ({run.returncode}): {run.stderr.strip()[-2000:]}")
    reports = json.loads(run.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    passed, used = 0, set()
    failed: list[str] = []
    matched: list[str] = []
    for report in reports:
        passed += report.get("summary", {}).get("passed", 0)
        for check in report.get("results", {}).get("failed_checks", []):
            file = Path(check["file_path"]).name
            logical = check["resource"].split(".", 1)[1]
            finding = f"{check['check_id']} {logical} ({file})"
            hits = [i for i, a in enumerate(acknowledged)
                    if a["check"] == check["check_id"] and fnmatch.fnmatchcase(logical, a["resource"])]
            (matched if hits else failed).append(finding)
            used.update(hits)
    stale = [f"{a['check']} {a['resource']}" for i, a in enumerate(acknowledged) if i not in used]
    return CheckovResult(passed, sorted(failed), sorted(matched), stale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.gates", description=__doc__.split("\n\n")[0])
    parser.add_argument("assembly", help="the cloud assembly folder (cdk.out)")
    parser.add_argument("--checkov", required=True, help="the checkov executable (.venv-checkov/bin/checkov)")
    args = parser.parse_args(argv)
    paths = templates(args.assembly)
    if not paths:
        print(f"no templates under {args.assembly}: run make synth first", file=sys.stderr)
        return 2
    lint = cfn_lint(paths)
    print(f"cfn-lint: {len(paths)} templates, {len(lint)} finding(s) not accepted")
    for finding in lint:
        print(f"  {finding}")
    result = checkov(args.checkov, paths)
    print(f"checkov: {result.passed} passed, {len(result.acknowledged)} acknowledged ({ACKNOWLEDGED.name}), "
          f"{len(result.failed)} failed")
    for finding in result.failed:
        print(f"  {finding}")
    # Stale acknowledgements are reported, not fatal here: one synthesis may lack a stage that needs them
    # (tests/infra checks the file against dev and prod, VPC and not).
    for entry in result.stale:
        print(f"  acknowledgement matched nothing in this assembly: {entry}")
    return 1 if lint or result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
