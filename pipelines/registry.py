"""The local model registry: SageMaker Model Registry semantics in a workspace folder.

It takes the request of ``CreateModelPackage`` exactly as a pipeline's RegisterModel step sends it,
checked against botocore's service model as SageMaker checks it: types and required members (botocore's
validator), and what that validator leaves to the service (enum values, maximum lengths, and each string's
``pattern``: a newline in a CustomerMetadataProperties value, a lone surrogate in a description), so what
registers locally would register on SageMaker. It answers like ``DescribeModelPackage`` /
``ListModelPackages``: model package groups, versions numbered from 1, approval status
``PendingManualApproval`` → ``Approved`` / ``Rejected``, model metrics and lineage kept with each version
(a version file that cannot be read is listed as ``Damaged``, naming it). Versions are allocated under a
file lock and each package is written atomically, so concurrent registrations never share a number or
half-write; a group's high-water mark (MARK_FILE) keeps a number from being given twice, as on SageMaker, once
a version's file is gone.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from diagnosa.data.schema import BUILTIN_RESOURCE, SchemaError
from diagnosa.data.validate import clip, shown
from diagnosa.files import read_json_record
from diagnosa.lake import LakeError, LocalStorage, validate_key
from pipelines.locks import file_lock
from pipelines.service_model import request_problems

APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")


def approve_command(version: int | str, group: str, endpoint_name: str | None = None) -> str:
    """The command that approves (and so deploys) ``version`` of ``group``, as the hints print it: ``--group`` only
    for a dataset's own group, ``--endpoint-name`` only for an endpoint not named after it."""
    return (f"diagnosa registry approve {version}" + (f" --group {group}" if group != BUILTIN_RESOURCE else "")
            + (f" --endpoint-name {endpoint_name}" if endpoint_name not in (None, group) else ""))

APPROVAL_DESCRIPTION_CHARS = 1_024  # SageMaker's limit on a version's ApprovalDescription (UpdateModelPackage)
DAMAGED = "Damaged"  # the status listed for a version whose file cannot be read
ARN_PREFIX = "arn:aws:sagemaker:local:000000000000:model-package"
MARK_FILE = ".last-version"  # a group's high-water mark: the highest version number it ever gave
GROUP_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's EntityName pattern
# A version's file name: ASCII digits only (str.isdigit() takes '²' and Arabic-Indic digits, which int() refuses or
# reads as another version's number), as _key writes it (six digits at least: '3.json' is no version's file).
VERSION_FILE = re.compile(r"[0-9]+\.json")
VERSION = re.compile(r"[0-9]+")
NAME_CHARS = 100  # the most of a file's own text a damaged version's message quotes (a 1 MB group name made a 1 MB line)


class RegistryError(ValueError):
    """A registry request that SageMaker would refuse too; the message names the problem."""


class DamagedPackage(RegistryError, SchemaError):
    """A version whose file cannot be read (truncated by a full disk, edited by hand), named with the file and the way
    out. A SchemaError too: the CLI says it in one line wherever it surfaces."""


class DamagedVersion(dict[str, Any]):
    """list_model_packages' stand-in for a version whose file is damaged: its group, version, ARN, DAMAGED status and
    the Problem; any other field asked of it is refused with that Problem (DamagedPackage), not a KeyError."""

    def __missing__(self, key: str) -> Any:
        raise DamagedPackage(dict.__getitem__(self, "Problem"))


def validate_request(operation: str, arguments: dict[str, Any], local_fields: tuple[str, ...] = ()) -> None:
    """Raise RegistryError if ``arguments`` do not fit the operation's request shape in botocore, patterns included;
    ``local_fields``: members holding a local value whose pattern SageMaker's would not meet (the local ARN's region
    is ``local``)."""
    problems = [line for line in (request_problems(operation, arguments, patterns=True) or "").splitlines()
                if not any(line.startswith(f"Invalid value for parameter {field},") for field in local_fields)]
    if problems:
        raise RegistryError(f"{operation} request is invalid: " + "\n".join(problems))


class LocalModelRegistry:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.storage = LocalStorage(self.root)

    # -------------------------------------------------------------------------------- writes
    @contextmanager
    def group_lock(self, group: str) -> Iterator[None]:
        """The group's lock, held while a version is numbered or its status written (and by a deploy reading the
        status it will record as served: LocalEndpoints)."""
        path = self.root / group / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path):  # waits as long as it takes: holders only number a version or write a status
            yield

    def create_model_package(self, **arguments: Any) -> dict[str, str]:
        validate_request("CreateModelPackage", arguments)
        group = arguments.get("ModelPackageGroupName")
        if not group:
            raise RegistryError("only versioned packages are supported: give ModelPackageGroupName")
        if not GROUP_NAME.fullmatch(group):
            raise RegistryError(f"model package group name {group!r} must match {GROUP_NAME.pattern}")
        status = arguments.get("ModelApprovalStatus", "PendingManualApproval")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.group_lock(group):
            # After the highest ever given, never the count nor the highest file: with a version's file gone (moved
            # out, as a damaged file's message says), the count named an existing version and the highest file an
            # old one, and endpoints, monitor baselines and `registry list` took the new package for the one they
            # knew (they name versions by ARN). SageMaker never reuses a number in a group. The mark is written
            # before the package: a process killed in between skips a number, never reuses one.
            version = max(self._high_water_mark(group), *self._versions(group), 0) + 1
            self.storage.put_bytes(self._mark_key(group), f"{version}\n".encode())
            arn = f"{ARN_PREFIX}/{group}/{version}"
            package = {
                **arguments,
                "ModelPackageGroupName": group,
                "ModelPackageVersion": version,
                "ModelPackageArn": arn,
                "ModelApprovalStatus": status,
                "ModelPackageStatus": "Completed",
                "CreationTime": now,
                "LastModifiedTime": now,
            }
            self.storage.put_bytes(self._key(group, version), json.dumps(package, indent=2, sort_keys=True).encode())
        return {"ModelPackageArn": arn}

    def update_model_package(self, ModelPackageArn: str, ModelApprovalStatus: str,  # noqa: N803 (AWS names)
                             ApprovalDescription: str | None = None) -> dict[str, str]:
        if ModelApprovalStatus not in APPROVAL_STATUSES:
            raise RegistryError(f"approval status must be one of {', '.join(APPROVAL_STATUSES)}, "
                                f"got {ModelApprovalStatus!r}")
        if ApprovalDescription is not None:  # SageMaker's limits (1,024 characters): as the service would refuse
            validate_request("UpdateModelPackage", {"ModelPackageArn": ModelPackageArn,
                                                    "ModelApprovalStatus": ModelApprovalStatus,
                                                    "ApprovalDescription": ApprovalDescription},
                             local_fields=("ModelPackageArn",))
        group, version = self._parse(ModelPackageArn)
        self.describe_model_package(ModelPackageArn)  # a version that does not exist: refused before any folder is made
        with self.group_lock(group):
            package = self.describe_model_package(ModelPackageArn)
            package["ModelApprovalStatus"] = ModelApprovalStatus
            package["LastModifiedTime"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if ApprovalDescription is not None:
                package["ApprovalDescription"] = ApprovalDescription
            self.storage.put_bytes(self._key(group, version), json.dumps(package, indent=2, sort_keys=True).encode())
        return {"ModelPackageArn": ModelPackageArn}

    # -------------------------------------------------------------------------------- reads
    def describe_model_package(self, ModelPackageName: str) -> dict[str, Any]:  # noqa: N803
        """The version's package; RegistryError when there is none, DamagedPackage when its file cannot be read."""
        group, version = self._parse(ModelPackageName)
        if not os.path.lexists(self._path(group, version)):  # a folder or a dangling symlink there is damaged
            raise RegistryError(f"model package {ModelPackageName} does not exist")
        return self._read(group, version)

    def list_model_packages(self, ModelPackageGroupName: str,  # noqa: N803
                            ModelApprovalStatus: str | None = None) -> list[dict[str, Any]]:
        """The group's versions, oldest first; one whose file is damaged is a DamagedVersion (status DAMAGED, with
        its Problem), so one bad file never hides the others."""
        packages: list[dict[str, Any]] = []
        for version in self._versions(ModelPackageGroupName):
            try:
                packages.append(self._read(ModelPackageGroupName, version))
            except DamagedPackage as err:
                packages.append(DamagedVersion({
                    "ModelPackageGroupName": ModelPackageGroupName, "ModelPackageVersion": version,
                    "ModelPackageArn": f"{ARN_PREFIX}/{ModelPackageGroupName}/{version}",
                    "ModelApprovalStatus": DAMAGED, "CreationTime": "", "Problem": str(err)}))
        if ModelApprovalStatus:
            packages = [p for p in packages if p["ModelApprovalStatus"] == ModelApprovalStatus]
        return packages

    def groups(self) -> list[str]:
        found = {key.split("/", 1)[0] for key in self.storage.list() if key.endswith(".json")}
        # and a group whose versions are all damaged past being files (folders): listed, as its versions are
        for name in (folder[:-1] for folder in self.storage.list_folders("")):
            try:
                if name not in found and self._versions(name):
                    found.add(name)
            except LakeError:  # a folder no key can name (a backslash in it): no group, as before
                continue
        return sorted(found)

    def latest_approved(self, group: str) -> dict[str, Any] | None:
        approved = self.list_model_packages(group, "Approved")
        return approved[-1] if approved else None

    # -------------------------------------------------------------------------------- helpers
    def _read(self, group: str, version: int) -> dict[str, Any]:
        """A version's package as its file holds it; DamagedPackage, naming the file and the way out, when the file
        is not a package's JSON (truncated, edited by hand)."""
        key = self._key(group, version)
        # a folder, a symlink that loops or leads nowhere, a file gone since it was listed: this version only
        package, problem = read_json_record(self._path(group, version))
        problem = problem or _package_problem(package, group, version)
        if problem:
            raise DamagedPackage(
                f"model package {group}/{version}: its file {self.root / key} is damaged ({problem}): it cannot be "
                "read, approved, rejected or deployed. Restore the file from a backup, or move it out of the "
                "registry folder (the version is then gone from the registry)")
        return package

    def _versions(self, group: str) -> list[int]:
        """The versions whose files are in ``group``'s folder: each entry named as _key names one (ASCII digits,
        six at least), whatever it is (a file, a folder, a symlink leading nowhere: _read says it is damaged, rather
        than the lake's "no object" failing the whole listing or a folder hiding the version). Other names are not
        versions: '².json', '٣.json', '3.json', a version's name in a subfolder."""
        validate_key(group)  # InvalidKey (as the lake's listing said): '..' or a '/' names no group folder
        try:
            names = [entry.name for entry in os.scandir(self.storage.root / group)]
        except (FileNotFoundError, NotADirectoryError):  # no such group
            return []
        except OSError as err:
            raise LakeError(f"cannot list {self.storage.root / group}: {err.strerror or err}") from None
        found = []
        for name in names:
            if VERSION_FILE.fullmatch(name) and name == self._key(group, int(name[:-5])).rsplit("/", 1)[-1]:
                found.append(int(name[:-5]))
        return sorted(found)

    def _path(self, group: str, version: int) -> Path:
        """The version's file (the lake's key, checked as the lake checks it: never outside the registry)."""
        return self.storage.root / validate_key(self._key(group, version))

    def _high_water_mark(self, group: str) -> int:
        """The highest version number ever given in ``group`` (MARK_FILE, written under the group's lock before the
        version's file); 0 when there is none (a registry written before the mark was kept: its files say) or it
        cannot be read."""
        try:
            text = self.storage.get_bytes(self._mark_key(group)).decode("ascii").strip()
        except (LakeError, OSError, ValueError):  # no mark yet, unreadable, or not ASCII
            return 0
        return int(text) if text.isdigit() else 0

    @staticmethod
    def _mark_key(group: str) -> str:
        return f"{group}/{MARK_FILE}"

    @staticmethod
    def _key(group: str, version: int) -> str:
        return f"{group}/{version:06d}.json"

    @staticmethod
    def _parse(name: str) -> tuple[str, int]:
        return package_version(name)


def _package_problem(package: Any, group: str, version: int) -> str | None:
    """What makes a version file's JSON no package of ``group``/``version`` (the fields every reader relies on)."""
    if not isinstance(package, dict):
        return f"a JSON {type(package).__name__}, not an object"
    if package.get("ModelPackageVersion") != version or package.get("ModelPackageGroupName") != group:
        return (f"it names version {_quoted(package.get('ModelPackageGroupName'))}/"
                f"{_quoted(package.get('ModelPackageVersion'))}")
    if package.get("ModelApprovalStatus") not in APPROVAL_STATUSES:
        return (f"approval status {_quoted(package.get('ModelApprovalStatus'))} is none of "
                f"{', '.join(APPROVAL_STATUSES)}")
    if not isinstance(package.get("CustomerMetadataProperties", {}), dict):
        return "its CustomerMetadataProperties are not an object"
    return None


def _quoted(value: Any) -> str:
    """``repr(value)`` of a file's field, at most NAME_CHARS characters (its closing quote kept for text)."""
    return shown(value, NAME_CHARS)


def package_version(name: str) -> tuple[str, int]:
    """A model package ARN (local or SageMaker's) or ``group/version`` → (group, version); the version in ASCII digits
    only (str.isdigit() took '²', which int() refuses, and '٣', which it reads as 3)."""
    tail = name.rsplit(":model-package/", 1)[-1]
    group, _, version = tail.rpartition("/")
    if not group or "/" in group or not VERSION.fullmatch(version):
        raise RegistryError(f"not a model package ARN or group/version: {_quoted(name)}")
    return group, int(version)


# SageMaker's answers, read by SageMakerRegistry: botocore parses them, and they are still anyone's text (a compromised or
# broken endpoint's). Each is checked before it is used or sent back, and read bounded.
LISTED_GROUPS = 100  # model package groups `registry list --region` shows (each is a call and one per version)
LISTED_VERSIONS = 100  # versions of a group `registry list --region` describes and shows: the newest (one page)
PAGE_ITEMS = 100  # MaxResults asked of each page of a listing (SageMaker's own maximum)
MAX_PAGES = 100  # pages of a listing read at most: a NextToken that never ended was followed forever
MAX_GROUPS = MAX_PAGES * PAGE_ITEMS  # model package groups read at most (a page may hold more than it was asked for)
ERROR_CHARS = 1_000  # of SageMaker's refusal quoted (a 1 MB message made a 1 MB error, its newlines forged lines)
# A model package's ARN as SageMaker's service model has it, its group an EntityName and its version a number
MODEL_PACKAGE_ARN = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]{9,16}:[0-9]{12}:model-package/"
                               r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}/[0-9]{1,9}")


class UnusableAnswer(RegistryError):
    """An answer of SageMaker's that botocore reads but that cannot be used: a listing without its list or with
    something else than objects in it, a name or ARN that is none, pages that never end. The CLI says it in one line,
    exit status 1 (the service failed, not the command)."""


class SageMakerRegistry:
    """The same reads and approval decisions against SageMaker's Model Registry (boto3), for the CLI. What SageMaker
    answers is checked before it is used (UnusableAnswer), its refusals quoted on one line, bounded (RegistryError)."""

    def __init__(self, client: Any):
        self.client = client
        self.root = f"SageMaker Model Registry ({client.meta.region_name})"

    def _call(self, operation: str, **arguments: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        from diagnosa.aws import UnreadableAnswer
        from inference.limits import printable_line

        try:
            return getattr(self.client, operation)(**arguments)
        except UnreadableAnswer:  # no refusal: an answer botocore cannot read, said as of every other AWS call
            raise
        except (ClientError, BotoCoreError) as err:
            said = clip(printable_line(str(err)[:ERROR_CHARS + 1]), ERROR_CHARS)
            raise RegistryError(f"SageMaker refused {operation}: {said}") from None

    def _pages(self, operation: str, key: str, **arguments: Any) -> Iterator[list[dict[str, Any]]]:
        """Each page's ``key`` list of a listing, at most MAX_PAGES pages (botocore's paginator followed a NextToken
        that never ended forever). AWS's refusals are botocore's errors, as the paginator raised them."""
        token = None
        for _ in range(MAX_PAGES):
            page = getattr(self.client, operation)(**arguments, **({"NextToken": token} if token else {}))
            yield _items(page, key, _operation(operation))
            token = page.get("NextToken")
            if not token:
                return
        raise UnusableAnswer(f"SageMaker answered {_operation(operation)} with a next page still after {MAX_PAGES:,} "
                             "pages: the listing is not read to its end")

    def groups(self) -> list[str]:
        names: list[str] = []
        for summaries in self._pages("list_model_package_groups", "ModelPackageGroupSummaryList",
                                     MaxResults=PAGE_ITEMS):
            for summary in summaries:
                name = summary.get("ModelPackageGroupName")
                if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
                    raise UnusableAnswer(f"SageMaker answered ListModelPackageGroups with {_quoted(name)} as a group's "
                                         "name: no model package group's name")
                names.append(name)
            if len(names) > MAX_GROUPS:
                raise UnusableAnswer(f"SageMaker answered ListModelPackageGroups with more than {MAX_GROUPS:,} "
                                     "model package groups: the listing is not read to its end")
        return sorted(names)

    def newest_packages(self, group: str) -> tuple[list[dict[str, Any]], bool]:
        """The group's newest LISTED_VERSIONS versions, oldest first, each described (a field its description lacks
        is its summary's), and whether the group has more: one ListModelPackages page, not every version of the group
        described (100,000 versions were 100,000 DescribeModelPackage calls). The local registry's
        ``list_model_packages`` lists every version; this one has no such method, so nothing takes a part for all."""
        answer = self._call("list_model_packages", ModelPackageGroupName=group, SortBy="CreationTime",
                            SortOrder="Descending", MaxResults=LISTED_VERSIONS)
        summaries = _items(answer, "ModelPackageSummaryList", "ListModelPackages")
        newest = [{**summary, **self.describe_model_package(_package_arn(summary, group))}
                  for summary in summaries[:LISTED_VERSIONS]]
        return newest[::-1], len(summaries) > LISTED_VERSIONS or bool(answer.get("NextToken"))

    def describe_model_package(self, ModelPackageName: str) -> dict[str, Any]:  # noqa: N803
        package = self._call("describe_model_package", ModelPackageName=ModelPackageName)
        package.pop("ResponseMetadata", None)
        if "CreationTime" in package:  # (an answer without it: newest_packages shows the summary's)
            package["CreationTime"] = str(package["CreationTime"])
        return package

    def update_model_package(self, ModelPackageArn: str, ModelApprovalStatus: str,  # noqa: N803
                             ApprovalDescription: str | None = None) -> dict[str, str]:
        if ModelApprovalStatus not in APPROVAL_STATUSES:
            raise RegistryError(f"approval status must be one of {', '.join(APPROVAL_STATUSES)}, "
                                f"got {ModelApprovalStatus!r}")
        kwargs = {"ModelPackageArn": ModelPackageArn, "ModelApprovalStatus": ModelApprovalStatus}
        if ApprovalDescription is not None:
            kwargs["ApprovalDescription"] = ApprovalDescription
        self._call("update_model_package", **kwargs)  # done once it answers: its ARN (KeyError when missing) is ours
        return {"ModelPackageArn": ModelPackageArn}

    def package_arn(self, group: str, version: int) -> str:
        """Version ``version``'s ARN, from ListModelPackages' summaries, which carry each version's number and ARN
        (describing every version to find one made a DescribeModelPackage call per version of the group). An ARN
        that names another package is refused (UnusableAnswer): it would be approved in the version's place."""
        for summaries in self._pages("list_model_packages", "ModelPackageSummaryList", ModelPackageGroupName=group,
                                     MaxResults=PAGE_ITEMS):
            for summary in summaries:
                if summary.get("ModelPackageVersion") == version:
                    return _package_arn(summary, group, version)
        raise RegistryError(f"model package {group}/{version} does not exist in {self.root}")


def _operation(method: str) -> str:
    """A boto3 client's method name as AWS names the operation: list_model_packages → ListModelPackages."""
    return "".join(word.title() for word in method.split("_"))


def _items(answer: dict[str, Any], key: str, operation: str) -> list[dict[str, Any]]:
    """``answer[key]``, a list of objects, as SageMaker's answer to ``operation`` holds it; UnusableAnswer when it does
    not (a missing list or a None in it was a KeyError or TypeError)."""
    items = answer.get(key)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise UnusableAnswer(f"SageMaker answered {operation} without a list of {key.removesuffix('List')} objects: "
                             f"got {_quoted(items)}")
    return items


def _package_arn(summary: dict[str, Any], group: str, version: int | None = None) -> str:
    """The model package ARN of a ListModelPackages summary, checked: a model package's ARN (SageMaker's pattern) of
    ``group`` (SageMaker writes it in lower case in an ARN) and ``version`` when given; UnusableAnswer otherwise (a
    missing ARN was a KeyError, a 10 MB or forged one was sent back to SageMaker)."""
    arn = summary.get("ModelPackageArn")
    if isinstance(arn, str) and MODEL_PACKAGE_ARN.fullmatch(arn):
        named_group, named_version = package_version(arn)
        if named_group.lower() == group.lower() and version in (None, named_version):
            return arn
    which = f"{group}/{version}" if version is not None else f"a version of {group}"
    raise UnusableAnswer(f"SageMaker answered ListModelPackages with {_quoted(arn)} as the ARN of {which}: not its "
                         "model package's ARN")
