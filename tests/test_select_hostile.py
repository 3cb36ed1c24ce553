"""Select against hostile model artifacts: what a training job's model.tar.gz may hold instead of a model.

A broken candidate fails the job, never becomes the champion and is never skipped in silence: the reason leads with
the candidate and the file (the service keeps the first 1 KB, /opt/ml/output/message), and nothing is unpacked, let
alone outside the job's folder. Before: a tarball with members leading out of its folder (``../x``, ``/x``, links
to ``/etc/passwd``) or a 10 GB member was chosen and shipped to Evaluate; a recall of 1.5 was ranked first; a lone
surrogate in metadata.json left a champion without its selection.json.
"""
from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from test_processing_failures import container, exit_message
from test_select import saved_model

import diagnosa.model as model_module
from diagnosa.model import METADATA_FILE, MODEL_FILE, OOF_FILE
from processing import select

GIB = 1 << 30


def files_of(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def write_tar(path: Path, files: dict[str, bytes], *extra: tuple[tuple[Any, ...], dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            add(tar, name, data)
        for args, fields in extra:
            add(tar, *args, **fields)
    return path


def bomb(path: Path, files: dict[str, bytes], name: str, size: int, chunk: int = 1 << 20) -> Path:
    """A model.tar.gz holding ``files`` and then ``name``, ``size`` zero bytes: gzip members (one stream to gzip)
    of a MiB of zeros each, so 10 MB of file hold 10 GB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head = b""
    for member, data in files.items():
        info = tarfile.TarInfo(member)
        info.size = len(data)
        head += info.tobuf(tarfile.GNU_FORMAT) + data + b"\0" * (-len(data) % 512)
    info = tarfile.TarInfo(name)
    info.size = size
    head += info.tobuf(tarfile.GNU_FORMAT)
    zeros = gzip.compress(b"\0" * chunk, compresslevel=9)
    whole, rest = divmod(size, chunk)
    with path.open("wb") as out:
        out.write(gzip.compress(head))
        for _ in range(whole):
            out.write(zeros)
        out.write(gzip.compress(b"\0" * (rest + -size % 512 + 1024)))  # the member's padding, the end of the archive
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The files of two real models: "good" (macro recall 0.7) and "better" (0.9), the one a hostile tarball wraps."""
    root = tmp_path_factory.mktemp("models")
    return {"good": files_of(saved_model(root / "good", 0.7, 0.5)),
            "better": files_of(saved_model(root / "better", 0.9, 0.6))}


def job(tmp_path: Path, models: dict[str, dict[str, bytes]]) -> Path:
    """A container whose candidates are "good" and "bad" (not yet written)."""
    base = container(tmp_path)
    write_tar(base / "input" / "candidates" / "good" / "model.tar.gz", models["good"])
    return base


def bad_tarball(base: Path) -> Path:
    return base / "input" / "candidates" / "bad" / "model.tar.gz"


def refused(base: Path, *fragments: str) -> str:
    """Select fails, its reason leads with the bad candidate and holds ``fragments``, and it chose nothing."""
    assert select.main(["--base-dir", str(base)]) == 1
    reason = exit_message(base)
    assert reason.startswith("candidate 'bad': "), reason
    for fragment in fragments:
        assert fragment in reason, reason
    assert not (base / "output" / "champion" / "model.tar.gz").exists()
    assert not (base / "output" / "selection" / "selection.json").exists()
    return reason


def with_metadata(models: dict[str, dict[str, bytes]], change: Any) -> dict[str, bytes]:
    meta = json.loads(models["better"][METADATA_FILE])
    change(meta)
    return {**models["better"], METADATA_FILE: json.dumps(meta).encode()}  # ensure_ascii: "\ud800" is valid JSON


# ------------------------------------------------------------------------------------------------ not a gzip tar

@pytest.mark.parametrize("damage", ["plain tar", "truncated", "garbage"])
def test_a_tarball_that_is_no_whole_gzip_tar_is_refused_naming_the_candidate(tmp_path, models, damage):
    base = job(tmp_path, models)
    path = write_tar(bad_tarball(base), models["better"])
    if damage == "plain tar":
        with tarfile.open(path, "w") as tar:
            for name, data in models["better"].items():
                add(tar, name, data)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 6 // 10])
    else:
        path.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 4000)  # a gzip header and no deflate stream
    refused(base, "model.tar.gz is not a readable gzip tar")


# ------------------------------------------------------------------------------------------------ escaping members

@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "relative symlink", "device"])
def test_a_member_that_would_land_outside_the_folder_is_refused_and_nothing_is_unpacked(tmp_path, models, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "planted"
    base = job(tmp_path, models)
    member = {"dotdot": ((f"code/../../../../../../../../../..{target}", b"x"), {}),
              "absolute": ((str(target), b"x"), {}),
              "symlink": (("code/link",), {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
              "hardlink": (("code/hard",), {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"}),
              "relative symlink": (("code/up",), {"type": tarfile.SYMTYPE, "linkname": "../../../../etc"}),
              "device": (("code/dev",), {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})}[kind]
    write_tar(bad_tarball(base), models["better"], member)
    reason = refused(base, "model.tar.gz: refused", "inside its own folder only")
    assert member[0][0] in reason, reason
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in base.iterdir()) == ["input", "output"]  # no scratch folder either


def test_a_member_named_twice_is_refused(tmp_path, models):
    base = job(tmp_path, models)
    write_tar(bad_tarball(base), models["better"], ((METADATA_FILE, b'{"validation": {"macro_recall": 1.0}}'), {}))
    refused(base, f"member '{METADATA_FILE}' appears twice")


# ------------------------------------------------------------------------------------------------ decompression bombs

def test_a_10_gb_member_in_a_10_mb_gzip_is_refused_before_it_is_decompressed(tmp_path, models):
    base = job(tmp_path, models)
    path = bomb(bad_tarball(base), models["better"], "weights.bin", 10 * GIB)
    assert path.stat().st_size < 12 << 20
    started = time.monotonic()
    refused(base, "unpacks to more than 4.0 GiB (MAX_UNPACKED_BYTES", "'weights.bin' alone is 10.0 GiB",
            "decompression bomb")
    assert time.monotonic() - started < 30  # decompressing it took minutes (Select read every member's data)


def test_a_metadata_json_over_its_limit_is_not_read_into_memory(tmp_path, models):
    base = job(tmp_path, models)
    bomb(bad_tarball(base), {MODEL_FILE: models["better"][MODEL_FILE]}, METADATA_FILE, 200 << 20)
    refused(base, "metadata.json is 200.0 MiB, over the 16.0 MiB Select reads of it")


def test_an_oof_npz_over_its_limit_is_not_read_into_memory(tmp_path, models, monkeypatch):
    monkeypatch.setattr(model_module, "MAX_OOF_BYTES", 1 << 20)  # the limit is 1 GiB: 5 MiB here
    base = job(tmp_path, models)
    bomb(bad_tarball(base), models["better"], OOF_FILE, 5 << 20)
    refused(base, "oof.npz is 5.0 MiB, over the 1.0 MiB Select reads of it")


# ------------------------------------------------------------------------------------------------ missing or bad files

@pytest.mark.parametrize("missing", [MODEL_FILE, METADATA_FILE])
def test_a_tarball_without_a_model_file_is_refused_naming_the_candidate(tmp_path, models, missing):
    base = job(tmp_path, models)
    write_tar(bad_tarball(base), {k: v for k, v in models["better"].items() if k != missing})
    refused(base, f"has no {missing} at its root")


def test_a_metadata_json_that_is_not_json_is_refused_naming_the_candidate(tmp_path, models):
    base = job(tmp_path, models)
    write_tar(bad_tarball(base), {**models["better"], METADATA_FILE: b'{"validation": {"macro_recall": 0.99'})
    refused(base, "metadata.json is not valid JSON")


@pytest.mark.parametrize("where", ["family", "label"])
def test_a_lone_surrogate_in_metadata_json_is_refused_and_no_champion_is_left(tmp_path, models, where):
    # json.loads reads "\ud800" (valid JSON); selection.json's UTF-8 write failed after the champion was written.
    def change(meta: dict[str, Any]) -> None:
        if where == "family":
            meta["family"] = "xgb\ud800"
        else:
            meta["validation"]["worst_class_recall"]["label"] = "\ud800"

    base = job(tmp_path, models)
    write_tar(bad_tarball(base), with_metadata(models, change))
    refused(base, "holds text that is not UTF-8 (a lone surrogate")


@pytest.mark.parametrize("path, value", [("macro_recall", 1.5), ("macro_recall", -0.1),
                                         ("worst_class_recall", -3.0), ("worst_class_recall", 1.000001)])
def test_a_recall_outside_0_1_is_refused_not_ranked(tmp_path, models, path, value):
    def change(meta: dict[str, Any]) -> None:
        if path == "macro_recall":
            meta["validation"]["macro_recall"] = value
        else:
            meta["validation"]["worst_class_recall"]["recall"] = value

    base = job(tmp_path, models)
    write_tar(bad_tarball(base), with_metadata(models, change))
    refused(base, f"validation {path}", f"must be a recall in [0, 1], got {value!r}")


# ------------------------------------------------------------------------------------------------ the outputs

def test_a_champion_is_not_left_without_its_selection_json(tmp_path, models, monkeypatch):
    base = job(tmp_path, models)
    write_tar(bad_tarball(base), models["better"])

    def full(path: Path, data: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(select, "_write_json_atomic", full)
    assert select.main(["--base-dir", str(base)]) == 1
    assert "No space left on device" in exit_message(base)
    assert not (base / "output" / "champion" / "model.tar.gz").exists()  # it looked like a finished selection's
