"""Atomic file writes: a reader sees the old file or the new one, never a partial one, and a crash
mid-write leaves at most a temp file beside the target, named after its writer
(``.<target>.<host>.<pid>.<start>.<random><suffix>``, temp_name) so that a sweep can tell an abandoned one from
one a live process still writes (temp_writer_alive). And the bounded read of a file a user names, which may be
no file at all."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
NAME_MAX = 255  # bytes in one file name, where the filesystem does not say (os.pathconf)


@dataclass(frozen=True)
class TempWriter:
    """Who wrote a temp file, from its name: ``host`` (host_token), ``pid`` and ``start`` (the process's start
    time in clock ticks since boot, 0 where unknown)."""

    host: str
    pid: int
    start: int


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def host_token() -> str:
    """This host as a temp name shows it: the host name (letters, digits and '-' only, so a name parses from the
    right) and a digest of the host name, the boot and the PID namespace. A pid means one process only within one
    boot and one namespace: two containers sharing a host name (--network host) and a lake, or this host before a
    reboot, are other hosts, whose temp files only age decides."""
    name = socket.gethostname()
    label = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:32] or "host"
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # no /proc (macOS): no PID namespaces either
        namespace = ""
    seed = "\0".join((name, _read("/proc/sys/kernel/random/boot_id") or "", namespace))
    return f"{label}-{hashlib.sha256(seed.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (/proc/<pid>/stat, field 22); None when it cannot
    be read (no such process, no /proc, hidepid). Tells a pid's process from a later one given the same pid."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, first); the name is in parentheses
    and may hold spaces and ')' itself, so the split is at the last ')'."""
    text = _read(f"/proc/{pid}/stat")
    return text.rpartition(")")[2].split() if text and ")" in text else None


_HOST: str | None = None
_SELF: tuple[int, int] = (0, 0)  # (pid, start) of this process, read once per process (a fork reads its own)


def _writer() -> tuple[str, int, int]:
    global _HOST, _SELF
    if _HOST is None:
        _HOST = host_token()
    pid = os.getpid()
    if _SELF[0] != pid:
        _SELF = (pid, process_start(pid) or 0)
    return _HOST, pid, _SELF[1]


def _clip_name(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` bytes as the filesystem stores it, at a character boundary."""
    kept, used = [], 0
    for char in name:
        used += len(os.fsencode(char))
        if used > limit:
            break
        kept.append(char)
    return "".join(kept)


def temp_name(target: Path, suffix: str = TMP_SUFFIX) -> str:
    """The name of a temp file for ``target`` written by this process: ``.<target>.<host>.<pid>.<start>.<uuid>
    <suffix>``. The target's name is cut to keep the whole within the filesystem's name limit (a target name near
    255 bytes could not be written at all when its temp name was longer); the uuid keeps it unique."""
    host, pid, start = _writer()
    tail = f".{host}.{pid}.{start}.{uuid.uuid4().hex}{suffix}"
    try:
        limit = os.pathconf(target.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = NAME_MAX
    return "." + _clip_name(target.name, max(0, limit - len(os.fsencode(tail)) - 1)) + tail


def temp_writer(name: str, suffix: str = TMP_SUFFIX) -> TempWriter | None:
    """The writer a temp file's name records (temp_name), None for a name of another form (an older temp name,
    ``.<target>.<uuid><suffix>``, records none)."""
    found = re.fullmatch(r"\..*\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]{1,10})\.(?P<start>[0-9]{1,20})\.[0-9a-f]{32}"
                         + re.escape(suffix), name, re.DOTALL)
    if not found:
        return None
    return TempWriter(found["host"], int(found["pid"]), int(found["start"]))


def temp_writer_alive(writer: TempWriter) -> bool | None:
    """Whether the process that wrote a temp file still runs: True (the same process: pid and start time match),
    False (no process has its pid, or a zombie, or a later process given the same pid), None when this host cannot
    tell (another host, or no start time to tell a reused pid by): then only the file's age can say."""
    if writer.host != _writer()[0] or writer.pid <= 0:
        return None
    try:
        os.kill(writer.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    except (OSError, OverflowError):  # a pid out of range
        return None
    # The kernel says the pid is taken; /proc says by whom. Unreadable there (hidepid, no /proc): cannot tell.
    fields = _proc_stat(writer.pid)
    if not fields:
        return None
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent: writes nothing any more
        return False
    try:
        start = int(fields[19])
    except (IndexError, ValueError):
        return None
    if not writer.start:
        return None
    return start == writer.start


FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # the disk or the quota is full, the file too big for it


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = TMP_SUFFIX) -> Iterator[Path]:
    """A temp path in the target's folder to write (temp_name: it names this process); on success it replaces
    ``target`` in one rename, on any exception it is removed and the target is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(temp_name(target, suffix))
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in FULL_DISK:  # said of the file being written: a write names none, a copy its source
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FolderNotEmpty(FileExistsError):
    """An output folder that holds something already: an earlier run's output, which is never overwritten."""

    def __str__(self) -> str:
        return str(self.strerror)


def refuse_earlier_output(target: str | os.PathLike, what: str) -> None:
    """Refuse ``target`` as an output folder when it holds anything (FolderNotEmpty: ``what`` it would overwrite,
    e.g. "an earlier report") or is no folder (NotADirectoryError); nothing there, or an empty folder, is fine."""
    target = Path(target)
    problem = not_a_folder(target)  # a file, a FIFO, a symlink that loops: each said as what it is
    if problem:
        raise NotADirectoryError(errno.ENOTDIR, problem, str(target))
    if target.is_dir() and any(target.iterdir()):
        raise FolderNotEmpty(errno.ENOTEMPTY, f"output folder {target} is not empty: refusing to overwrite {what}",
                             str(target))


def _sweep_folders(target: Path) -> None:
    """Temp folders beside ``target`` left by writers that are gone (killed mid-write): a dead process's, this
    host's, whatever folder each was for. Only ``target``'s own were removed before: each monitor run writes a folder
    of a new name, so a killed run's temp folder stayed for good."""
    try:
        entries = [entry for entry in os.scandir(target.parent) if entry.name.startswith(".")]
    except OSError:
        return
    for entry in entries:
        writer = temp_writer(entry.name)
        if writer is not None and entry.is_dir(follow_symlinks=False) and temp_writer_alive(writer) is False:
            shutil.rmtree(entry.path, ignore_errors=True)


@contextmanager
def atomic_folder(target: str | os.PathLike, what: str = "an earlier output", *, in_place: bool = False
                  ) -> Iterator[Path]:
    """A folder of files written whole or not at all: a temp folder beside ``target`` (temp_name: it names this
    process) to write into, which on success takes ``target``'s place in one rename; on any exception it is removed
    and ``target`` is untouched, so a retry finds it as it was. ``target`` must be nothing or an empty folder, before
    and at the rename (refuse_earlier_output, ``what`` naming what it holds): a report folder cut short by a full disk
    was then refused by the retry as an earlier run's report. A full disk is said of the file in ``target`` being
    written. ``in_place``: written in ``target`` itself (a processing job's output folder, whose stop handler and
    upload know it by its path), and on any exception what was written there is removed: whole or nothing after a
    failure, though a reader meanwhile, or a kill, sees it in part."""
    target = Path(target)
    if target.is_symlink() and target.is_dir():  # a link to an empty folder: that folder is the one replaced
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    refuse_earlier_output(target, what)
    existed = target.is_dir()
    in_place = in_place or (existed and os.path.ismount(target))  # an empty mount point: no rename replaces it
    if in_place:
        target.mkdir(exist_ok=True)
        tmp = target
    else:
        _sweep_folders(target)
        tmp = target.with_name(temp_name(target))
        tmp.mkdir()
    try:
        if existed and not in_place:  # the empty folder replaced keeps its mode (a shared group folder's), owner, group
            _take_on(tmp, target)
        yield tmp
        if not in_place:
            try:
                os.rename(tmp, target)  # replaces an empty folder, never one that holds something
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                    refuse_earlier_output(target, what)  # filled (or made a file) meanwhile: said as such
                raise
    except OSError as err:
        _discard(tmp, keep=in_place and existed)
        if err.errno in FULL_DISK and not isinstance(err, FolderNotEmpty):
            name = str(err.filename or "")
            shown = str(target) + name[len(str(tmp)):] if name.startswith(str(tmp)) else name or str(target)
            raise OSError(err.errno, err.strerror, shown) from err
        raise
    except BaseException:
        _discard(tmp, keep=in_place and existed)
        raise


def _take_on(folder: Path, like: Path) -> None:
    """``folder`` given ``like``'s permission bits (setgid too), then its owner and group where this process may
    (root; or a group it is in): a report written into an empty folder made for it keeps who may read it."""
    held = like.stat()
    try:
        os.chown(folder, held.st_uid, held.st_gid)
    except PermissionError:
        with suppress(PermissionError):
            os.chown(folder, -1, held.st_gid)
    shutil.copymode(like, folder)  # after the chown, which clears setuid/setgid bits on some systems


def _discard(folder: Path, *, keep: bool) -> None:
    """``folder`` removed, or emptied when ``keep`` (a folder that was there, empty, before it was written)."""
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: str | os.PathLike, data: Any, **dumps: Any) -> None:
    """``data`` as UTF-8 JSON (``json.dumps`` keyword arguments pass through), written atomically."""
    write_text_atomic(target, json.dumps(data, **{"ensure_ascii": False, **dumps}))


# What a processing container writes for DescribeProcessingJob's ExitMessage: AWS docs, "Save and Access Metadata
# Information About Your Processing Job" (docs.aws.amazon.com/sagemaker/latest/dg/byoc-metadata.html): UTF-8 text in
# /opt/ml/output/message, of which the service keeps the first 1 KB after the job ends ("Completed", "Stopped" or
# "Failed"); text that is not UTF-8 fails the job with a ClientError. The processing root is /opt/ml/processing,
# so the file is <base dir>/../output/message. No ProcessingOutput uploads /opt/ml/processing/output/failure.
EXIT_MESSAGE = ("output", "message")  # under the container root (/opt/ml), the processing base dir's parent
EXIT_MESSAGE_LIMIT = 1024  # bytes of the message the service keeps


def exit_message_path(base_dir: str | os.PathLike) -> Path:
    """Where a processing job whose base dir is ``base_dir`` (/opt/ml/processing) leaves its exit message."""
    return Path(base_dir).parent.joinpath(*EXIT_MESSAGE)


def clip_utf8(text: str, limit: int = EXIT_MESSAGE_LIMIT) -> str:
    """``text`` as UTF-8 within ``limit`` bytes, cut at a character boundary (what cannot be encoded escaped)."""
    data = text.encode("utf-8", errors="backslashreplace")
    return data[:limit].decode("utf-8", errors="ignore")


REASON_CHARS = 4_000  # characters of a job's failure reason at most, as it writes and logs it


def job_reason(message: str, limit: int = REASON_CHARS) -> str:
    """A job's failure reason as it writes and logs it: each lone surrogate (a path or an argument that is not UTF-8)
    written as its escape, the whole cut to ``limit`` characters. A reason quotes what it refuses: a 10 MB
    hyperparameter or argument made a 10 MB failure file and log line, a non-UTF-8 path a crash writing it."""
    text = message.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def write_job_failure(base_dir: str | os.PathLike, message: str) -> None:
    """A processing job's reason for failing (:func:`job_reason`): ``/opt/ml/output/message`` (the service's
    ExitMessage, the first 1 KB, UTF-8; the local executor shows the same file) and ``<base dir>/output/failure``
    (the whole reason, for a root run by hand). Best effort, since the job is already failing and its log has it."""
    text = job_reason(message)
    for path, body in ((exit_message_path(base_dir), clip_utf8(text)), (Path(base_dir) / "output" / "failure",
                                                                            text + "\n")):
        try:
            write_text_atomic(path, body)
        except OSError:
            pass


class FileProblem(ValueError):
    """A file a user named cannot be read whole: what it is instead, or how big."""


class FileTooLarge(FileProblem):
    """A file over the most a command reads whole."""


def not_a_regular_file(mode: int) -> str:
    """What a path of stat ``mode`` is, said for a message, when it is no regular file."""
    return ("a directory" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "not a regular file")


def read_file_bounded(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of a file a user names (``what`` says which, for the message), when it is a regular file of at
    most ``limit`` bytes: /dev/zero is endless (read whole, it exhausted the machine's memory), a FIFO may never
    end (the command hung), a folder is named as one."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileProblem(f"{what} not found: {path}") from None
    except OSError as err:
        raise FileProblem(f"{what} {path} cannot be read: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        raise FileProblem(f"{what} {path} is {not_a_regular_file(mode)}: give the path of a file")
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as err:
        raise FileProblem(f"{what} {path} cannot be read: {err.strerror or err}") from None
    if len(data) > limit:
        raise FileTooLarge(f"{what} {path} is over {limit:,} bytes, the most read")
    return data


def not_a_file(path: Path) -> str | None:
    """Why the record ``path``, which is there (os.path.lexists), is no regular file one can read a record from: a
    folder, a symlink that loops or leads nowhere, a FIFO (reading it would block); None when it is a file. The
    registry's, executions' and endpoints' readers list such a record as damaged rather than drop it."""
    return _not_a(path, stat.S_ISREG, "a file")


def not_a_folder(path: Path) -> str | None:
    """Why ``path``, a folder a job reads or writes, cannot be one: a file, a FIFO, a symlink that loops or leads
    nowhere, a path the system refuses; None when it is a folder or nothing is there (each caller says what then). A
    training channel that was a FIFO or a looping symlink failed later as "no training data", a model folder that
    was a file only after the whole training."""
    return _not_a(path, stat.S_ISDIR, "a folder") if os.path.lexists(path) else None


def _not_a(path: Path, wanted: Callable[[int], bool], what: str) -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if path.is_symlink() and err.errno == errno.ELOOP:
            return "it is a symbolic link that loops"
        if path.is_symlink() and err.errno in (errno.ENOENT, errno.ENOTDIR):
            try:
                target = os.readlink(path)
            except OSError:
                return "it is a symbolic link to a file that does not exist"
            shown = ascii(target[:100]) + ("…" if len(target) > 100 else "")
            return f"it is a symbolic link to {shown}, which does not exist"
        return f"it cannot be read ({err.strerror or err})"
    except ValueError as err:  # a NUL in the path
        return f"it cannot be read ({err})"
    if wanted(mode):
        return None
    return f"it is {'a file' if stat.S_ISREG(mode) else not_a_regular_file(mode)}, not {what}"


def read_json_record(path: Path) -> tuple[Any, str | None]:
    """A record file's JSON, or None and why it cannot be read: no regular file there (:func:`not_a_file`), not
    JSON (or not UTF-8), nested deeper than Python's recursion limit, or unreadable (removed since it was listed,
    permissions, an I/O error). One reading for the registry's, executions' and endpoints' records."""
    problem = not_a_file(path)
    if problem:
        return None, problem
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        return None, f"not JSON: {err}"
    except RecursionError:  # valid nesting deeper than Python's recursion limit ([[[[...]]]])
        return None, "not JSON: nested too deeply"
    except OSError as err:
        return None, f"it cannot be read ({err.strerror or err})"


PATH_MAX = 4096  # bytes in a whole path on Linux (a name in it: NAME_MAX)


def name_too_long(path: str | bytes | os.PathLike[str] | None) -> str:
    """Why the file system refused ``path`` with ENAMETOOLONG, in words (without the path, which the caller names,
    cut and escaped): a name in it over NAME_MAX bytes, else the whole over PATH_MAX. The machine's own text alone,
    "File name too long" with exit status 1, read as a failure of the machine; it is the path given that is wrong."""
    said = "File name too long for the file system"
    if path is None:
        return f"{said} (at most {NAME_MAX} bytes a name): give a shorter path"
    whole = os.fsencode(path)
    parts = [part for part in whole.split(b"/") if part]
    longest = max(map(len, parts), default=0)
    if longest > NAME_MAX:
        which = "a name in it" if len(parts) > 1 else "the name"
        return f"{said}: {which} is {longest:,} bytes, at most {NAME_MAX} are held: give a shorter name"
    return f"{said}: the path is {len(whole):,} bytes, at most {PATH_MAX:,} are held: give a shorter path"


def os_problem(err: OSError) -> str:
    """The machine's reason for refusing a path, in words, for a message that names the path itself: its strerror,
    or for a name too long which limit it passes (name_too_long: "File name too long" alone read as the machine's
    failure)."""
    if err.errno == errno.ENAMETOOLONG:
        return name_too_long(err.filename if isinstance(err.filename, (str, bytes, os.PathLike)) else None)
    return err.strerror or str(err)
