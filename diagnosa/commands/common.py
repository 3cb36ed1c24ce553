"""What the command modules and ``diagnosa/cli.py`` share: bad input (``UsageError``, exit status 2), the
workspace and its lake as the global options name them, and argument types.

Every command module imports these; nothing here imports a command, so no module needs the CLI passed in.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from diagnosa.aws import resolve_region
from diagnosa.data.schema import DATASET_NAME, DATASET_NAME_RULE, RESOURCE_NAME, resource_name
from diagnosa.data.validate import clip, shown
from diagnosa.files import name_too_long, os_problem
from diagnosa.lake import DataLake
from diagnosa.net import MAX_TIMEOUT
from diagnosa.services import LocalWorkspace
from diagnosa.text import ITEM_CHARS, LISTED, some_of

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1  # the machine or a service said no (a path not writable, no AWS credentials)


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


class Unavailable(Exception):
    """What the command needs is not there now, the command being right (a local endpoint stopped or damaged, as a
    SageMaker endpoint that is down): printed as one line, exit status 1."""


WORKSPACE_FOLDER = ".diagnosa"
def errors_file_apart(errors_path: Path, read: str, what: str) -> None:
    """Refuse an errors file that is the file being read (``read``; "-" for standard input, when it is a file), under
    any name (a link, ``./x``): it is written while the input is read, and ``--errors-file x.json`` of ``x.json``
    replaced the patients (or a hospital's feedback export) with the list of their problems."""
    try:
        if read == "-":  # `< x.json`: standard input is the file itself (a pipe cannot be told from its source)
            known, given = os.fstat(0), os.stat(errors_path)
            same = (known.st_dev, known.st_ino) == (given.st_dev, given.st_ino)
        else:
            same = os.path.samefile(errors_path, read)
    except (OSError, ValueError):  # either one missing or unreadable: not the same file (the read says why)
        return
    if same:
        raise UsageError(f"--errors-file {shown(str(errors_path), 120)} is the {what} being read: it would be "
                         "overwritten with the list of problems; name another file")


def shell_json(example: object) -> str:
    """``example`` as JSON to paste between a POSIX shell's single quotes (a hint's curl or printf line): accents kept,
    each character that would not print as itself -- a category value's ESC, C1 control or bidi override, which the
    hint put on the terminal as it was -- written as its JSON escape, the same value to the endpoint."""
    text = json.dumps(example, ensure_ascii=False)
    return "".join(ch if ch.isprintable() else json.dumps(ch)[1:-1] for ch in text).replace("'", "'\\''")


def find_workspace(start: Path) -> Path | None:
    """The nearest ``.diagnosa`` folder in ``start`` or one of its parents, or None."""
    for folder in (start, *start.parents):
        if (folder / WORKSPACE_FOLDER).is_dir():
            return folder / WORKSPACE_FOLDER
    return None


def workspace(args: argparse.Namespace) -> Path:
    """--workspace, else $DIAGNOSA_HOME, else the nearest .diagnosa here or above (as git finds .git), else
    ./.diagnosa (where the first command that writes creates it)."""
    chosen = args.workspace if args.workspace is not None else os.environ.get("DIAGNOSA_HOME")
    if chosen is not None and not chosen.strip():
        raise UsageError("the workspace is empty or blank (--workspace or DIAGNOSA_HOME): name a folder")
    if chosen:
        try:
            folder = Path(chosen).expanduser().resolve()
        except RuntimeError as err:  # '~nosuchuser/ws'
            raise UsageError(f"workspace {chosen!r}: {err}") from None
        try:
            os.stat(folder)
        except FileNotFoundError:
            pass  # the first command that writes creates it
        except OSError as err:  # a name too long: "File name too long", exit status 1, the path quoted whole
            problem = name_too_long(folder) if err.errno == errno.ENAMETOOLONG else os_problem(err)
            raise UsageError(f"workspace {clip(str(folder), ITEM_CHARS)} (--workspace or DIAGNOSA_HOME): "
                             f"{problem}") from None
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"workspace {folder} is a file, not a folder (--workspace or DIAGNOSA_HOME)")
        return folder
    here = Path.cwd()
    return find_workspace(here) or here / WORKSPACE_FOLDER


def workspace_hint(args: argparse.Namespace) -> str:
    """For a message saying nothing was found: which workspace was read, and how to point at another."""
    if args.workspace or os.environ.get("DIAGNOSA_HOME"):
        return f"workspace {workspace(args)} (from {'--workspace' if args.workspace else 'DIAGNOSA_HOME'})"
    if find_workspace(Path.cwd()) is None:
        return (f"no workspace ({WORKSPACE_FOLDER}) in {Path.cwd()} or above it: run from the folder where you ran "
                "`diagnosa data generate` or `make run`, or give --workspace DIR (or set DIAGNOSA_HOME)")
    return f"workspace {workspace(args)}; another one: --workspace DIR (or DIAGNOSA_HOME)"


def open_lake(args: argparse.Namespace) -> DataLake:
    """The lake; opening it creates nothing (a local lake's folders appear with the first object written), so a
    command that only reads leaves no empty workspace behind to shadow the real one."""
    uri = _given(args.lake, "DIAGNOSA_LAKE", "--lake") or str(workspace(args) / "lake")
    raw_uri = _given(getattr(args, "raw_lake", None), "DIAGNOSA_RAW_LAKE", "--raw-lake")
    for given in (uri, raw_uri):
        if given and "://" not in given and Path(given).expanduser().exists() and not Path(given).expanduser().is_dir():
            raise UsageError(f"lake {given} is a file, not a folder (--lake, --raw-lake, DIAGNOSA_LAKE or "
                             "DIAGNOSA_RAW_LAKE): name a folder or s3://bucket/prefix")
    return DataLake.from_uri(uri, raw_uri=raw_uri)


def given_text(flag: str, meaning: str) -> Callable[[str], str]:
    """An argparse type for a flag whose empty value (an unset shell variable, --endpoint-url "$URL") would
    otherwise mean its default, ``meaning``: such a value is refused, not read as the flag left out."""
    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"{flag} is empty or blank (an unset shell variable?): give a value, or "
                                             f"leave {flag} out for {meaning}")
        return text
    return parse


def _given(flag: str | None, variable: str, name: str) -> str | None:
    """A location from its flag, else its environment variable; None when neither is set. An empty or blank one (an
    unset shell variable, --lake "$LAKE") is refused: it used to mean the default, and a run trained on it."""
    value = flag if flag is not None else os.environ.get(variable)
    if value is not None and not value.strip():
        raise UsageError(f"the lake is empty or blank ({name} or {variable}): name a folder or s3://bucket/prefix")
    return value


def local_workspace(args: argparse.Namespace, lake: DataLake | None = None) -> LocalWorkspace:
    """The workspace and its lake (``lake``, else opened from the options) for the local executor and endpoints;
    ServiceError for an s3:// lake."""
    return LocalWorkspace(workspace(args), lake or open_lake(args), lake_uri=args.lake or os.environ.get("DIAGNOSA_LAKE"))


def resolve_endpoint_name(args: argparse.Namespace, named_by: str | None = None) -> None:
    """--endpoint-name as --endpoint-url serves it: left out, the name that server answers on GET /ping (a dataset's
    endpoint is not diagnosa), else the built-in's; given, the server must serve that endpoint. A name beside another
    endpoint's URL was ignored: predictions were labelled, and feedback stored, under the endpoint the URL serves.
    ``named_by``: the option the name came from, when not --endpoint-name (the app's --model names its dataset's)."""
    from diagnosa.data.schema import BUILTIN_RESOURCE
    from inference.client import AnswerTimeout, served_endpoint_name

    # Within --timeout in all (a server trickling its answer a byte at a time held the command for days), and 10 s at
    # most: a ping runs no model, so it needs none of a prediction's wait past SageMaker's 60 s model limit.
    try:
        served = (served_endpoint_name(args.endpoint_url, min(getattr(args, "timeout", 10.0), 10.0)) if args.endpoint_url
                  else None)  # None too when the server does not say (unreachable: the request itself says so)
    except AnswerTimeout as err:
        raise UsageError(f"--endpoint-url: {err} (--timeout): is it a Diagnosa endpoint?") from None
    if args.endpoint_name is None:
        args.endpoint_name = served or BUILTIN_RESOURCE
    elif served is not None and served != args.endpoint_name:
        given = named_by or "--endpoint-name"
        raise UsageError(f"{given} {args.endpoint_name}" + (" (its endpoint)" if named_by else "")
                         + f", but {args.endpoint_url} serves endpoint {served}: leave out {given.split()[0]}, or give "
                         f"the URL of {args.endpoint_name} (`diagnosa endpoint list` shows the local ones)")


def endpoint_url(args: argparse.Namespace) -> str | None:
    """Where --endpoint-name is served: --endpoint-url; else, without --region (which names SageMaker's), the URL of
    the workspace's local endpoint of that name; None for neither (SageMaker's endpoint of that name). Unavailable
    when that local endpoint is recorded but not running or damaged."""
    if args.endpoint_url or args.region:
        return args.endpoint_url
    lake = open_lake(args)
    local = None if lake.uri.startswith("s3://") else local_workspace(args, lake)
    record = local.endpoints().describe(args.endpoint_name) if local else None
    if record is None:
        hint = local.endpoints().unknown_name(args.endpoint_name) if local else ""
        if hint and not resolve_region(None):  # no AWS region either: a name mistyped, or the dataset's forgotten
            raise UsageError(f"no local endpoint {args.endpoint_name} ({workspace_hint(args)}): {hint}; give "
                             "--endpoint-name, --endpoint-url, or --region for SageMaker")
        return None
    from pipelines.local_endpoints import DAMAGED

    if record.get("EndpointStatus") == DAMAGED:  # `endpoint start` refuses it: say what the record says to do
        raise Unavailable(f"the local endpoint {args.endpoint_name} ({workspace_hint(args)}) cannot be used: "
                         f"{record.get('Problem')}")
    if record.get("EndpointStatus") != "InService" or not record.get("Url"):
        raise Unavailable(f"the local endpoint {args.endpoint_name} ({workspace_hint(args)}) is not running "
                         f"({record.get('EndpointStatus')}): `diagnosa endpoint start {args.endpoint_name}` starts "
                         "it again; `diagnosa endpoint list` shows the local ones; give --endpoint-url for another "
                         "server, or --region for a SageMaker endpoint")
    return str(record["Url"])


def int_in(low: int, high: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            digits = text.strip().lstrip("+-").replace("_", "")
            if len(digits) > 20 and digits.isdigit():  # Python's limit (4,300 digits): "must be an integer", of one
                raise argparse.ArgumentTypeError(f"{what} must be between {low:,} and {high:,}, got a number of "
                                                 f"{len(digits):,} digits") from None
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {shown(text, 80)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} must be between {low:,} and {high:,}, got {value:,}")
        return value
    return parse


def read_token_file(path: str) -> str:
    """A shared secret from a file (first line, stripped); a UsageError names the file, never the content.

    The file must be a regular file of at most MAX_TOKEN_CHARS bytes (of which at most that many are read): /dev/zero
    was read whole (a MemoryError), a FIFO without a writer waited forever. The token must be one an HTTP header
    carries (:func:`inference.limits.token_problem`): with a "€" in it, feedback failed as it was sent."""
    from diagnosa.files import not_a_file
    from inference.limits import MAX_TOKEN_CHARS, token_problem

    named = clip(str(path), ITEM_CHARS)
    problem = not_a_file(Path(path)) if os.path.lexists(path) else None  # missing: said as open() says it
    if problem:
        raise UsageError(f"cannot read the token file {named}: {problem} (give the path of a file holding the token)")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_TOKEN_CHARS + 1)
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        raise UsageError(f"cannot read the token file {named}: {getattr(err, 'strerror', None) or err}") from None
    if len(data) > MAX_TOKEN_CHARS:
        raise UsageError(f"the token file {named} is over {MAX_TOKEN_CHARS:,} bytes, the most read: it holds the "
                         "token on its first line")
    try:
        # utf-8-sig: a byte-order mark (Windows' Notepad) is no part of the token
        token = data.decode("utf-8-sig").strip().splitlines()
    except UnicodeDecodeError as err:
        raise UsageError(f"cannot read the token file {named}: it is not UTF-8 text ({err.reason} at byte "
                         f"{err.start})") from None
    if not token or not token[0].strip():
        raise UsageError(f"the token file {named} is empty")
    problem = token_problem(token[0].strip())
    if problem:
        raise UsageError(f"the token in the token file {named} {problem}")
    return token[0].strip()


def model_folder(path: Path, ws: Path) -> Path:
    """A model folder, or a SageMaker model.tar.gz unpacked once into the workspace."""
    from diagnosa.files import not_a_file, not_a_folder
    from diagnosa.model import ModelLoadError, unpack_model

    named = clip(str(path), ITEM_CHARS)  # a path of 128 KiB was quoted whole ("File name too long", exit status 1)
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"model not found: {named} (a model folder or a model.tar.gz)") from None
    except (OSError, ValueError) as err:  # a name too long, a NUL in the path, a folder it may not search
        raise UsageError(f"--model {named}: {getattr(err, 'strerror', None) or err}") from None
    if not_a_folder(path) is None:
        return path
    problem = not_a_file(path)  # a symlink that loops, a device (/dev/zero was read whole to be hashed), a FIFO
    if problem:
        raise UsageError(f"--model {named}: {problem} (a model folder or a model.tar.gz)")
    try:
        with open(path, "rb") as archive:  # hashed as it is read, not read whole into memory first
            digest = hashlib.file_digest(archive, "sha256").hexdigest()[:16]
    except OSError as err:
        raise UsageError(f"cannot read the model {named}: {os_problem(err)}") from None
    target = ws / "models" / digest
    if not (target / "metadata.json").is_file():
        try:
            unpack_model(path, target)
        except ModelLoadError as err:
            raise UsageError(str(err)) from None
    return target


def dataset_name(text: str) -> str:
    """--dataset: a dataset's name, never a path (it names lake keys and local folders)."""
    if not DATASET_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{shown(text, 80)} is not a dataset name (a name, not a path): "
                                         f"{DATASET_NAME_RULE}")
    return text


def sagemaker_name(text: str) -> str:
    """--endpoint-name, --group: a SageMaker name, checked before anything is written under it (a '../' in it used
    to file an endpoint outside the workspace)."""
    if not RESOURCE_NAME.fullmatch(text):
        # A dataset's name where its endpoint's or group's is meant ('aids_2' serves as 'aids-2'): say which.
        named = resource_name(text) if DATASET_NAME.fullmatch(text) else text
        hint = f"; dataset {text}'s endpoint and model package group are {named!r}" \
            if named != text and RESOURCE_NAME.fullmatch(named) else ""
        raise argparse.ArgumentTypeError(f"{shown(text, 80)} is not a SageMaker name (ASCII letters, digits and inner '-', at "
                                         f"most 63){hint}")
    return text


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    if seconds > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text!r} seconds is more than a day ({MAX_TIMEOUT:,.0f} s), the longest "
                                         "wait taken")
    return seconds


def split_params(pairs: list[str]) -> dict[str, str]:
    """``--param NAME=VALUE`` flags as text; names and types are checked against a definition later."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param takes NAME=VALUE, got {shown(pair, 80)}")
        if name in values:
            raise UsageError(f"--param {clip(name, 80)} given twice ({shown(values[name], 80)} and {shown(text, 80)}): "
                             "give it once")
        values[name] = text
    return values


def split_families(text: str | None) -> tuple[str, ...] | None:
    """``--families a,b`` as a tuple; None when not given (the definition's default candidates). Given, it names at
    least one family, each once: an empty --families (an unset shell variable) used to train every default one."""
    if text is None:
        return None
    families = tuple(f.strip() for f in text.split(","))
    if not any(families) or not all(families):
        raise UsageError(f"--families takes a comma-separated list of families, got {shown(text, 80)}")
    counts = Counter(families)  # families.count of each was quadratic: 100,000 names took minutes
    repeated = sorted(f for f, n in counts.items() if n > 1)
    if repeated:
        raise UsageError(f"--families names {some_of(repeated)} more than once" if len(repeated) <= LISTED else
                         f"--families names {len(repeated):,} families more than once: {some_of(repeated)}")
    return families
