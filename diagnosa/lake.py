"""Data lake: one zone layout over S3 or a local folder, behind one small storage interface.

Pipeline steps read and write the lake through keys such as ``raw/2024/visits.csv``; the
same code then runs against ``s3://bucket/prefix`` in SageMaker and a folder in tests.

The raw zone may live in a storage of its own (``raw_uri``): on AWS, a bucket whose object lock keeps
every raw object for a default retention period, which a bucket shared with zones that expire cannot
have. Keys do not change: ``raw/...`` keys go to the raw storage, every other zone to the lake's.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import stat
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from diagnosa.files import atomic_path, temp_writer, temp_writer_alive
from diagnosa.text import some_of

ZONES: tuple[str, ...] = ("raw", "curated", "features", "artifacts", "capture", "capture-errors", "feedback",
                          "quarantine")

_TMP_SUFFIX = ".lake-tmp"  # local temp files end with this; list() never reports them
# A temp file whose writer cannot be checked (another host's on a shared lake, an older temp name without its
# writer, a writer whose start time is unknown) is abandoned once unmodified this long: no write pauses a day.
TEMP_MAX_AGE_SECONDS = 24 * 3600.0

log = logging.getLogger(__name__)
_S3_MISSING = {"NoSuchKey", "404", "NotFound"}
_S3_FORBIDDEN = {"403", "AccessDenied", "Forbidden"}
_S3_CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}


def _content_tag(data: bytes) -> str:
    """A local object's tag for a conditional write: its content's digest."""
    return hashlib.sha256(data).hexdigest()


class LakeError(Exception):
    """Base error for the lake; messages name the key or URI involved."""


class ObjectNotFound(LakeError, FileNotFoundError):
    """The key does not exist."""


class ObjectExists(LakeError, FileExistsError):
    """A write-once key already holds different content."""


class InvalidKey(LakeError, ValueError):
    """The key is not a clean relative '/'-separated path (or names no zone)."""


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a failing lake raises: OSError (a local lake: disk full, unwritable), LakeError, and on S3 botocore's
    errors (unreachable, timing out, throttled, a 5xx, refusing), which the lake passes on as they are."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no AWS SDK: no S3 lake either
        return OSError, LakeError
    return OSError, LakeError, BotoCoreError, ClientError


def validate_key(key: str) -> str:
    """Reject keys that could escape the root or differ between S3 and a filesystem."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"invalid key {key!r}: must be a non-empty string")
    if key.startswith("/"):
        raise InvalidKey(f"invalid key {key!r}: must be relative (no leading '/')")
    if "\\" in key or "\x00" in key:
        raise InvalidKey(f"invalid key {key!r}: backslashes and NUL are not allowed")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"invalid key {key!r}: empty, '.' and '..' segments are not allowed")
    return key


def _validate_prefix(prefix: str) -> str:
    """A list prefix is '' or a key, optionally with one trailing '/'."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def _validate_folder(prefix: str) -> str:
    """A folder prefix is '' or a key ending with '/'."""
    if prefix and not prefix.endswith("/"):
        raise InvalidKey(f"invalid folder {prefix!r}: must end with '/'")
    return _validate_prefix(prefix)


class Storage(typing.Protocol):
    """Minimal object store; keys are relative to ``uri``."""

    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def read_tagged(self, key: str) -> tuple[bytes, str]: ...
    def put_bytes_if(self, key: str, data: bytes, tag: str | None) -> bool: ...
    def put_file(self, local_path: str | os.PathLike, key: str) -> None: ...
    def get_file(self, key: str, local_path: str | os.PathLike) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list_folders(self, prefix: str) -> list[str]: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def url(self, key: str) -> str: ...


@dataclass
class TempSweep:
    """What a sweep of abandoned temp files removed (path and bytes of each), and how many it could not."""

    removed: list[tuple[Path, int]] = field(default_factory=list)
    errors: int = 0

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.removed)

    def __iadd__(self, other: TempSweep) -> TempSweep:
        self.removed += other.removed
        self.errors += other.errors
        return self


class LocalStorage:
    """Keys are files under ``root``; writes go to a sibling temp file and are renamed into place."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        validate_key(key)
        if key.endswith(_TMP_SUFFIX):
            raise InvalidKey(f"invalid key {key!r}: suffix {_TMP_SUFFIX!r} is reserved for temp files")
        return self.root / key

    def _atomic_write(self, key: str, write: Callable[[Path], object]) -> None:
        """Readers see the old object or the new one, never a partial file."""
        with atomic_path(self._path(key), suffix=_TMP_SUFFIX) as tmp:
            write(tmp)

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.uri}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())

        self._atomic_write(key, write)

    def get_bytes(self, key: str) -> bytes:
        return self._existing(key).read_bytes()

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and a tag of this state of it, for :meth:`put_bytes_if` (ObjectNotFound: none)."""
        data = self.get_bytes(key)
        return data, _content_tag(data)

    def put_bytes_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Write ``data`` only if the object is still as :meth:`read_tagged` gave it (``tag``), or, with ``tag`` None,
        only if there is none: False, writing nothing, when another writer changed it meanwhile. Writers of one
        folder take turns (an exclusive flock of the folder itself: no lock file among the objects, released however
        the process ends), and the comparison is by content, so a rewrite of the same bytes is no change."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            try:
                now = _content_tag(path.read_bytes())
            except FileNotFoundError:
                now = None
            if now != tag:
                return False
            self.put_bytes(key, data)
            return True
        finally:
            os.close(folder)  # releases the flock

    def put_file(self, local_path: str | os.PathLike, key: str) -> None:
        self._atomic_write(key, lambda tmp: shutil.copyfile(local_path, tmp))

    def get_file(self, key: str, local_path: str | os.PathLike) -> None:
        src = self._existing(key)
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, local_path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_folders(self, prefix: str) -> list[str]:
        """The folders directly under ``prefix`` (a '' or '/'-ended prefix), as ``prefix + name + '/'``, sorted: one
        level of the tree, without walking it (S3's delimiter listing)."""
        _validate_folder(prefix)
        try:
            names = [entry.name for entry in os.scandir(self.root / prefix) if entry.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as err:
            raise LakeError(f"cannot list {err.filename or self.root / prefix}: {err.strerror or err}") from None
        return sorted(f"{prefix}{name}/" for name in names)

    def list(self, prefix: str = "") -> list[str]:
        _validate_prefix(prefix)
        start = self.root / prefix.rpartition("/")[0]  # only walk the directory the prefix lives in
        keys = []

        def unreadable(err: OSError) -> None:
            # os.walk skipped a folder it could not read without a word: a monitor reported "0 feedback records"
            # and verdict OK over a feedback folder it was not allowed to list. A folder absent (or a file) lists nothing.
            if not isinstance(err, (FileNotFoundError, NotADirectoryError)):
                raise LakeError(f"cannot list {err.filename or start}: {err.strerror or err}") from None

        for dirpath, _dirs, files in os.walk(start, onerror=unreadable):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not name.endswith(_TMP_SUFFIX) and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Deleting a missing key is a no-op, as on S3."""
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def sweep_temp(self, older_than: float = TEMP_MAX_AGE_SECONDS) -> TempSweep:
        """Remove the temp files that killed writes left (SIGKILL, the OOM killer: nothing ran to remove them),
        anywhere under the root: one whose writer, named in it (diagnosa.files.temp_name), is gone from this host;
        one whose writer cannot be checked, once unmodified ``older_than`` seconds. A live writer's temp file stays.
        Never raises: a file that cannot be removed is logged and counted; symlinks are not followed."""
        if older_than < 0:
            raise ValueError(f"older_than must be at least 0 seconds, not {older_than}")
        swept = TempSweep()
        now = time.time()

        def unreadable(err: OSError) -> None:
            if not isinstance(err, FileNotFoundError):  # the root not made yet, or a folder removed meanwhile
                log.warning("temp sweep: cannot list %s: %s", err.filename, err.strerror or err)
                swept.errors += 1

        # fwalk: each folder is opened once (no symlink followed, os.walk's default too) and its files are looked
        # at and removed through that folder's descriptor, so a folder swapped for a symlink meanwhile leads nowhere.
        try:
            for folder, _dirs, files, dir_fd in os.fwalk(self.root, onerror=unreadable):
                for name in files:
                    if name.endswith(_TMP_SUFFIX):
                        self._sweep_one(Path(folder) / name, dir_fd, now, older_than, swept)
        except OSError as err:  # fwalk's own open of the root
            unreadable(err)
        if swept.removed or swept.errors:
            log.info("temp sweep of %s: removed %d abandoned temp file(s), %d bytes%s", self.root,
                     len(swept.removed), swept.bytes, f"; {swept.errors} could not be removed" if swept.errors else "")
        return swept

    @staticmethod
    def _sweep_one(path: Path, dir_fd: int, now: float, older_than: float, swept: TempSweep) -> None:
        try:
            info = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):  # our temp files are regular files; a symlink is not ours to remove
                return
            writer = temp_writer(path.name, _TMP_SUFFIX)
            alive = temp_writer_alive(writer) if writer is not None else None
            # False: its writer is gone from this host; None: nobody can tell, so only a long silence says so.
            if alive is True or (alive is None and now - info.st_mtime < older_than):
                return
            os.unlink(path.name, dir_fd=dir_fd)
        except FileNotFoundError:  # renamed into place or removed meanwhile: nothing left to sweep
            return
        except OSError as err:
            log.warning("temp sweep: cannot remove %s: %s", path, err.strerror or err)
            swept.errors += 1
            return
        swept.removed.append((path, info.st_size))


BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)


def bucket_name_problem(name: str) -> str | None:
    """What S3 refuses in a bucket name (its general purpose buckets' rules), else None: checked before a request
    names it, where boto3 answered 'Parameter validation failed' with its regular expression, or -- for 'b' or
    'b..c', which that expression allows -- nothing until the bucket was used."""
    if not BUCKET_NAME.fullmatch(name):
        return (f"bucket name {name[:80]!r} must be 3 to 63 lowercase letters, digits, '.' and '-', starting and ending "
                "with a letter or a digit")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return f"bucket name {name!r} is an IP address, which S3 refuses"
    if ".." in name or name.startswith("xn--") or name.endswith(("-s3alias", "--ol-s3")):
        return f"bucket name {name!r} has '..', or a prefix (xn--) or suffix (-s3alias, --ol-s3) S3 keeps for itself"
    return None


class S3Storage:
    """Keys live under ``s3://bucket/prefix/``; S3 writes are already atomic per object."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if not bucket:
            raise LakeError("S3Storage needs a bucket name")
        problem = bucket_name_problem(bucket)
        if problem:
            raise LakeError(problem)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        if client is None:
            from diagnosa.aws import client as aws_client

            client = aws_client("s3")
        self.client = client
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _missing(self, err: Exception, full: str) -> bool:
        """Whether a GetObject or HeadObject of key ``full`` failed because there is no such object. S3 answers 404
        only to a caller allowed s3:ListBucket for that request; the stack's roles may list only their prefixes (an
        s3:prefix condition, which a GetObject does not carry), so for a missing key they get 403: a listing of the
        key itself, within their grant, tells a missing key from a refused one."""
        from botocore.exceptions import ClientError

        code = getattr(err, "response", {}).get("Error", {}).get("Code")
        if code in _S3_MISSING:
            return True
        if code not in _S3_FORBIDDEN:
            return False
        try:
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full, MaxKeys=1).get("Contents", [])
        except ClientError:
            return False  # not allowed to list it either: the refusal stands
        return not any(o.get("Key") == full for o in listed)

    def put_bytes(self, key: str, data: bytes) -> None:
        # A bucket with a default object-lock retention (the AWS stack's raw zone) refuses a PutObject without an
        # integrity header; botocore sends a checksum of its own by default only from 1.36, and a managed container
        # may carry an older one: Content-MD5 is accepted by every S3 and every botocore.
        digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
        self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, ContentMD5=digest)

    def get_bytes(self, key: str) -> bytes:
        return self.read_tagged(key)[0]

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and its ETag, for :meth:`put_bytes_if` (ObjectNotFound: none)."""
        from botocore.exceptions import ClientError

        full = self._full(key)
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=full)
            return got["Body"].read(), got["ETag"]
        except ClientError as err:
            if self._missing(err, full):
                raise ObjectNotFound(f"no object {key!r} in {self.uri}") from err
            raise

    def put_bytes_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """S3's conditional write: PutObject with If-Match the ETag :meth:`read_tagged` gave (``tag``), or, with
        ``tag`` None, If-None-Match ``*``. False, writing nothing, when another writer changed, created or removed
        the object meanwhile (412 PreconditionFailed; 409 ConditionalRequestConflict when two conditional writes
        cross; 404 for an If-Match on an object removed since)."""
        from botocore.exceptions import ClientError

        digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, ContentMD5=digest, **condition)
        except ClientError as err:
            if getattr(err, "response", {}).get("Error", {}).get("Code") in _S3_CONDITION_FAILED:
                return False
            raise
        return True

    def put_file(self, local_path: str | os.PathLike, key: str) -> None:
        self.client.upload_file(os.fspath(local_path), self.bucket, self._full(key))

    def get_file(self, key: str, local_path: str | os.PathLike) -> None:
        from botocore.exceptions import ClientError

        full = self._full(key)
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, full, os.fspath(local_path))
        except ClientError as err:
            if self._missing(err, full):
                raise ObjectNotFound(f"no object {key!r} in {self.uri}") from err
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        full = self._full(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as err:
            if self._missing(err, full):
                return False
            raise
        return True

    def list_folders(self, prefix: str) -> list[str]:
        """The folders directly under ``prefix`` (a '' or '/'-ended prefix), as ``prefix + name + '/'``, sorted: a
        delimiter listing (CommonPrefixes), one request per 1000 folders however many keys they hold."""
        _validate_folder(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        folders: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root + prefix,
                                                                          Delimiter="/"):
            folders.extend(common["Prefix"][len(root):] for common in page.get("CommonPrefixes", []))
        return sorted(folders)

    def list(self, prefix: str = "") -> list[str]:
        _validate_prefix(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root + prefix):
            keys.extend(obj["Key"][len(root):] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"


RAW = "raw/"


def storage_from_uri(uri: str, *, s3_client: Any = None, what: str = "lake") -> Storage:
    """The storage a URI names: ``s3://bucket[/prefix]``, ``file:///path`` or a plain path."""
    if not isinstance(uri, str) or not uri.strip():
        raise LakeError(f"empty {what} URI {uri!r}")
    if "://" not in uri:
        return LocalStorage(uri)
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise LakeError(f"{what} URI {uri!r} has no bucket (expected s3://bucket[/prefix])")
        return S3Storage(parsed.netloc, parsed.path.strip("/"), client=s3_client)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path:
            raise LakeError(f"{what} URI {uri!r} must be file:///absolute/path")
        return LocalStorage(unquote(parsed.path))
    raise LakeError(f"unsupported {what} URI {uri!r}: use s3://bucket[/prefix], file:///path or a plain path")


def check_lake_uri(uri: str, what: str = "lake") -> None:
    """LakeError when ``uri`` names no lake storage_from_uri would open, checked by its own rules; no client is made
    (an S3 client costs ~0.2 s: a page that checks its configuration at each rerun must not make one)."""
    storage_from_uri(uri, s3_client=_NO_CLIENT, what=what)


_NO_CLIENT = object()  # stands for the S3 client of a lake only checked, never read or written


def json_bytes(obj: Any) -> bytes:
    """The lake's JSON: deterministic, so identical content gives identical bytes (and hashes). A lone surrogate
    (which a JSON text read back may hold as an escape, "\\ud800") has no UTF-8: such an object is written with every
    non-ASCII character escaped, not refused."""
    try:
        return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("ascii")


class DataLake:
    """Zone-aware front for a Storage: every key starts with one of ZONES. With ``raw_storage``, the raw
    zone's keys live there instead (same keys)."""

    def __init__(self, storage: Storage, raw_storage: Storage | None = None) -> None:
        self.storage = storage
        self.raw_storage = raw_storage
        self.uri = storage.uri

    def __repr__(self) -> str:
        raw = f", raw={self.raw_storage.uri!r}" if self.raw_storage is not None else ""
        return f"DataLake({self.uri!r}{raw})"

    @classmethod
    def from_uri(cls, uri: str, *, raw_uri: str | None = None, s3_client: Any = None) -> DataLake:
        """Pick the storage from the URI so configs can name a lake with one string (and the raw zone's
        storage with a second, when it has one of its own)."""
        raw = storage_from_uri(raw_uri, s3_client=s3_client, what="raw zone") if raw_uri is not None else None
        return cls(storage_from_uri(uri, s3_client=s3_client), raw)

    def _storage(self, key: str) -> Storage:
        return self.raw_storage if self.raw_storage is not None and key.startswith(RAW) else self.storage

    def key(self, zone: str, *parts: str) -> str:
        """Build ``zone/part1/part2`` and validate it."""
        self._check_zone(zone)
        return validate_key("/".join((zone, *parts)))

    def _check_zone(self, zone: str) -> None:
        if zone not in ZONES:
            raise InvalidKey(f"unknown zone {zone!r}; zones are {', '.join(ZONES)}")

    def _k(self, key: str) -> str:
        validate_key(key)
        zone = key.split("/", 1)[0]
        if zone not in ZONES:
            raise InvalidKey(f"key {key!r} is not in a zone; zones are {', '.join(ZONES)}")
        return key

    def put_bytes(self, key: str, data: bytes) -> None:
        self._storage(key).put_bytes(self._k(key), data)

    def get_bytes(self, key: str) -> bytes:
        return self._storage(key).get_bytes(self._k(key))

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and a tag of this state of it, for a conditional write (ObjectNotFound: none)."""
        return self._storage(key).read_tagged(self._k(key))

    def put_bytes_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Write only if the object is still as ``read_tagged`` gave it ``tag`` (None: only if there is none); False,
        nothing written, when another writer, another process or host included, changed it meanwhile: the caller
        reads it again and redoes its change (a read-modify-write that loses no other writer's change)."""
        return self._storage(key).put_bytes_if(self._k(key), data, tag)

    def put_file(self, local_path: str | os.PathLike, key: str) -> None:
        self._storage(key).put_file(local_path, self._k(key))

    def get_file(self, key: str, local_path: str | os.PathLike) -> None:
        self._storage(key).get_file(self._k(key), local_path)

    def exists(self, key: str) -> bool:
        return self._storage(key).exists(self._k(key))

    def list_folders(self, prefix: str) -> list[str]:
        """The folders directly under ``prefix``, a folder of a zone (``capture/<endpoint>/``), as full prefixes
        ending with '/', sorted: one level of a dated layout, instead of listing every key under it."""
        if not prefix.endswith("/"):
            raise InvalidKey(f"invalid folder {prefix!r}: must end with '/'")
        self._k(prefix[:-1])
        return self._storage(prefix).list_folders(prefix)

    def list(self, prefix: str = "") -> list[str]:
        if self.raw_storage is None or not (prefix.startswith(RAW) or RAW.startswith(prefix)):
            return self.storage.list(prefix)
        # Raw keys come from the raw storage only (a shared root's raw/ is not the raw zone any more).
        keys = [k for k in self.storage.list(prefix) if not k.startswith(RAW)]
        return sorted(keys + [k for k in self.raw_storage.list(prefix) if k.startswith(RAW)])

    def delete(self, key: str) -> None:
        self._storage(key).delete(self._k(key))

    def url(self, key: str) -> str:
        return self._storage(key).url(self._k(key))

    def put_bytes_once(self, key: str, data: bytes) -> bool:
        """Write-once (raw files are never modified): True if written, False if already identical.

        Check-then-write is not atomic; write-once keys assume a single writer per key.
        """
        if self.exists(key):
            if self.get_bytes(key) == data:
                return False
            raise ObjectExists(f"{key!r} already exists in {self.uri} with different content")
        self.put_bytes(key, data)
        return True

    def put_file_once(self, local_path: str | os.PathLike, key: str) -> bool:
        """Same as put_bytes_once for a local file, compared by sha256."""
        if self.exists(key):
            if self.sha256(key) == _file_sha256(local_path):
                return False
            raise ObjectExists(f"{key!r} already exists in {self.uri} with different content")
        self.put_file(local_path, key)
        return True

    def put_json(self, key: str, obj: Any) -> None:
        """Deterministic JSON so identical content gives identical bytes (and hashes)."""
        self.put_bytes(key, json_bytes(obj))

    def put_json_if(self, key: str, obj: Any, tag: str | None) -> bool:
        """:meth:`put_json` as a conditional write (:meth:`put_bytes_if`)."""
        return self.put_bytes_if(key, json_bytes(obj), tag)

    def get_json(self, key: str) -> Any:
        """The object at ``key`` as JSON; LakeError naming the object when it is not (a damaged or foreign object:
        a truncated manifest, a hand-edited LATEST.json)."""
        try:
            return json.loads(self.get_bytes(key).decode("utf-8"))
        except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise LakeError(f"{self.uri.rstrip('/')}/{key} is not valid JSON ({err}): repair or remove it (it is not "
                            "what Diagnosa wrote)") from None

    def sha256(self, key: str) -> str:
        return hashlib.sha256(self.get_bytes(key)).hexdigest()

    def local_roots(self) -> tuple[Path, ...]:
        """The folders of the lake's local storage (none for S3): the lake's, and the raw zone's when it has its own."""
        roots = [s.root for s in (self.storage, self.raw_storage) if isinstance(s, LocalStorage)]
        return tuple(dict.fromkeys(roots))

    def holds(self, path: str | os.PathLike) -> Path | None:
        """The local lake folder that ``path`` is (or is inside), None when it is outside the lake: files put there
        would be listed and read as the lake's objects."""
        resolved = Path(path).expanduser().resolve()
        return next((root for root in self.local_roots() if root == resolved or root in resolved.parents), None)

    def sweep_temp(self, older_than: float = TEMP_MAX_AGE_SECONDS) -> TempSweep:
        """LocalStorage.sweep_temp over the lake's local folders (the raw zone's too); nothing on S3, whose writes
        leave no temp files."""
        swept = TempSweep()
        storages = {s.root: s for s in (self.storage, self.raw_storage) if isinstance(s, LocalStorage)}
        for storage in storages.values():
            swept += storage.sweep_temp(older_than)
        return swept

    def init_zones(self) -> None:
        """Create the zone folders locally; S3 prefixes are implicit, so nothing to do there. A local folder that
        holds other things and no zone is not a lake: LakeError, before a mistyped --lake gets eight folders."""
        for root in self.local_roots():
            others = _not_a_lake(root)
            if others:
                raise LakeError(f"{root} is not a data lake: it holds {others} and no lake zone "
                                f"({', '.join(ZONES)}); name a new or empty folder, or an existing lake")
        for zone in ZONES:
            storage = self._storage(zone + "/")
            if isinstance(storage, LocalStorage):
                (storage.root / zone).mkdir(parents=True, exist_ok=True)


def _not_a_lake(root: Path) -> str | None:
    """What a folder holds when it is neither missing, empty (hidden files aside) nor a lake (a zone folder in it),
    e.g. "notes.txt, src/ and 3 more"; None otherwise."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError, PermissionError):  # nothing there, or its writes will say why
        return None
    if not names or any((root / zone).is_dir() for zone in ZONES):
        return None
    return some_of(names, 2)


def _file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
