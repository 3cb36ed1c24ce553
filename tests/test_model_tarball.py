"""A model.tar.gz and its oof.npz held to the same limits wherever they are unpacked or read.

Select read a candidate's tarball header by header (tests/test_select_hostile.py), but ``unpack_model`` -- Evaluate,
the vote's members, the local endpoints and registry, ``diagnosa serve`` -- unpacked the same kind of tarball whole
with no cap: a 5 MB gzip of zeros became 5 GiB on disk before anything looked at it. And ``read_oof`` (every model
load, the endpoint's too) let np.load allocate whatever shape a 300-byte oof.npz declared. Now both refuse from the
headers, naming the member and the limit, before writing or allocating past it.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_processing_failures import container, exit_message
from test_select_hostile import bomb, files_of, write_tar

import diagnosa.model as model_module
from diagnosa.model import METADATA_FILE, OOF_FILE, DiagnosaModel, ModelLoadError, read_oof, unpack_model

GIB = 1 << 30


def tar_folder(folder: Path, archive: Path) -> Path:
    """SageMaker's model.tar.gz of a model folder: its files and folders at the archive's root."""
    with tarfile.open(archive, "w:gz") as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def left_beside(target: Path) -> list[str]:
    """What an unpack left in the folder it unpacks into (its scratch folder is ``.<name>.*.unpacking``)."""
    return sorted(p.name for p in target.parent.iterdir())


@pytest.fixture
def written(monkeypatch) -> dict[str, int]:
    """The regular files tarfile writes while extracting (name: bytes on disk), whatever extracts them."""
    files: dict[str, int] = {}
    makefile = tarfile.TarFile.makefile

    def spy(self: tarfile.TarFile, tarinfo: tarfile.TarInfo, targetpath: str) -> None:
        try:
            makefile(self, tarinfo, targetpath)
        finally:
            files[tarinfo.name] = os.path.getsize(targetpath) if os.path.exists(targetpath) else 0

    monkeypatch.setattr(tarfile.TarFile, "makefile", spy)
    return files


@pytest.fixture(scope="module")
def model_files(trained_model_dir) -> dict[str, bytes]:
    """The files at the root of a real model folder (model.joblib, metadata.json, oof.npz)."""
    return files_of(trained_model_dir)


@pytest.fixture(scope="module")
def zero_bomb(tmp_path_factory, model_files) -> Path:
    """A real model's files and then weights.bin, 5 GiB of zeros, in a 5 MB model.tar.gz."""
    path = bomb(tmp_path_factory.mktemp("bomb") / "model.tar.gz", model_files, "weights.bin", 5 * GIB)
    assert path.stat().st_size < 8 << 20
    return path


# ------------------------------------------------------------------------------------------------ a real model

def test_a_model_trained_here_unpacks_and_loads_as_its_folder_does(trained_model_dir, curated_cohort, tmp_path):
    archive = tar_folder(trained_model_dir, tmp_path / "model.tar.gz")
    unpacked = unpack_model(archive, tmp_path / "unpacked")
    assert tree(unpacked) == tree(trained_model_dir)  # code/ and its folders too
    assert (unpacked / OOF_FILE).is_file()
    assert left_beside(unpacked) == ["model.tar.gz", "unpacked"]
    original, again = DiagnosaModel.load(trained_model_dir), DiagnosaModel.load(unpacked)
    assert again.labels == original.labels and again.metadata == original.metadata
    assert original.oof is not None and again.oof is not None
    assert original.oof.keys() == again.oof.keys()
    for key in original.oof:
        np.testing.assert_array_equal(again.oof[key], original.oof[key])
    frame = curated_cohort[0].sample(50, random_state=1)
    np.testing.assert_array_equal(again.predict_proba(frame), original.predict_proba(frame))


# ------------------------------------------------------------------------------------------------ decompression bombs

def test_unpack_model_refuses_a_5_gib_zero_bomb_from_its_header_and_writes_none_of_it(zero_bomb, model_files, tmp_path,
                                                                                      written):
    target = tmp_path / "model"
    with pytest.raises(ModelLoadError) as refused:
        unpack_model(zero_bomb, target)
    reason = str(refused.value)
    assert reason.startswith(str(zero_bomb)), reason
    assert "unpacks to more than 4.0 GiB (MAX_UNPACKED_BYTES" in reason and "'weights.bin' alone is 5.0 GiB" in reason
    assert "weights.bin" not in written  # the model's files before it were unpacked; not a byte of the bomb
    assert set(written) == set(model_files)
    assert not target.exists() and left_beside(target) == []  # the files unpacked before it are gone too


def test_no_more_than_the_limit_is_ever_written_to_disk(tmp_path, model_files, monkeypatch, written):
    # The limit is 4 GiB; 3 MiB here: the model's files, then 2 MiB that fit, then 8 MiB of zeros that do not.
    limit = sum(len(data) for data in model_files.values()) + (3 << 20)
    monkeypatch.setattr(model_module, "MAX_UNPACKED_BYTES", limit, raising=False)
    archive = bomb(tmp_path / "in" / "model.tar.gz", {**model_files, "fits.bin": bytes(2 << 20)}, "zeros.bin", 8 << 20)
    target = tmp_path / "out" / "model"
    with pytest.raises(ModelLoadError, match=r"MAX_UNPACKED_BYTES; member 'zeros.bin' alone is 8\.0 MiB"):
        unpack_model(archive, target)
    assert written["fits.bin"] == 2 << 20 and "zeros.bin" not in written
    assert sum(written.values()) <= limit
    assert not target.exists() and left_beside(target) == []


def test_evaluate_on_a_zero_bomb_fails_naming_the_limit(tmp_path, zero_bomb, curated_cohort, written):
    from processing.evaluate import main

    base = container(tmp_path)
    (base / "input" / "model").mkdir(parents=True)
    shutil.copyfile(zero_bomb, base / "input" / "model" / "model.tar.gz")
    (base / "input" / "test").mkdir(parents=True)
    curated_cohort[0].sample(200, random_state=0).to_parquet(base / "input" / "test" / "part-00000.parquet")
    assert main(["--base-dir", str(base)]) == 1
    reason = exit_message(base)
    assert "model.tar.gz unpacks to more than 4.0 GiB (MAX_UNPACKED_BYTES" in reason, reason
    assert "'weights.bin' alone is 5.0 GiB" in reason and "decompression bomb" in reason, reason
    assert "weights.bin" not in written
    assert not (base / "output" / "evaluation" / "evaluation.json").exists()


@pytest.mark.parametrize("limit", ["members", "metadata", "oof"])
def test_unpack_model_holds_a_tarball_to_selects_other_limits(tmp_path, model_files, monkeypatch, written, limit):
    constant, fragment = {"members": ("MAX_MEMBERS", "holds more than 3 members (MAX_MEMBERS)"),
                          "metadata": ("MAX_METADATA_BYTES", f"{METADATA_FILE} is "),
                          "oof": ("MAX_OOF_BYTES", f"{OOF_FILE} is ")}[limit]
    monkeypatch.setattr(model_module, constant, 3 if limit == "members" else 100, raising=False)
    archive = write_tar(tmp_path / "model.tar.gz", {**model_files, "extra.txt": b"x"})
    with pytest.raises(ModelLoadError, match=constant) as refused:
        unpack_model(archive, tmp_path / "model")
    assert fragment in str(refused.value)
    assert not (tmp_path / "model").exists() and left_beside(tmp_path / "model") == ["model.tar.gz"]


def extended_header_bomb(path: Path, files: dict[str, bytes], kind: bytes, size: int) -> Path:
    """A model.tar.gz holding ``files``, then an extended header (pax, GNU long name) of ``size`` zero bytes."""
    head = b""
    for name, data in files.items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        head += info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)
    info = tarfile.TarInfo("././@LongLink" if kind == tarfile.GNUTYPE_LONGNAME else "././@PaxHeader")
    info.type, info.size = kind, size
    head += info.tobuf(tarfile.USTAR_FORMAT)
    zeros = gzip.compress(bytes(1 << 20), compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(gzip.compress(head))
        for _ in range(size >> 20):
            out.write(zeros)
        out.write(gzip.compress(bytes(-size % 512 + 2048)))
    return path


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME], ids=["pax", "gnu long name"])
def test_an_extended_header_of_64_mib_is_refused_before_tarfile_reads_it_into_memory(tmp_path, model_files, kind):
    # tarfile reads a pax or long-name header's data whole, before the member it describes: no member check saw it.
    from processing.select import load_candidates

    archive = extended_header_bomb(tmp_path / "candidates" / "bad" / "model.tar.gz", model_files, kind, 64 << 20)
    peaks, reasons = [], []
    for read in (lambda: unpack_model(archive, tmp_path / "model"), lambda: load_candidates(tmp_path / "candidates")):
        tracemalloc.start()
        try:
            with pytest.raises((ModelLoadError, ValueError)) as refused:  # unpack_model's, Select's
                read()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        reasons.append(str(refused.value))
    assert max(peaks) < 16 << 20, f"{peaks} bytes allocated"
    for reason in reasons:
        assert "extended header (pax or GNU long name) of 64.0 MiB, over the 1.0 MiB" in reason, reason
        assert "MAX_HEADER_BYTES" in reason, reason
    assert reasons[0].startswith(str(archive)) and reasons[1].startswith("candidate 'bad': model.tar.gz"), reasons
    assert not (tmp_path / "model").exists() and left_beside(tmp_path / "model") == ["candidates"]


# ------------------------------------------------------------------------------------------------ escaping members

@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "relative symlink", "device", "twice"])
def test_unpack_model_refuses_what_would_land_outside_and_writes_nothing_there(tmp_path, model_files, kind):
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = outside / "planted"
    member: tuple[tuple[Any, ...], dict[str, Any]] = {
        "dotdot": ((f"code/../../../../../../../../../..{planted}", b"x"), {}),
        "absolute": ((str(planted), b"x"), {}),
        "symlink": (("code/link",), {"type": tarfile.SYMTYPE, "linkname": str(planted)}),
        "hardlink": (("code/hard",), {"type": tarfile.LNKTYPE, "linkname": str(planted)}),
        "relative symlink": (("code/up",), {"type": tarfile.SYMTYPE, "linkname": "../../outside/planted"}),
        "device": (("code/dev",), {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
        "twice": ((METADATA_FILE, b'{"labels": ["planted"]}'), {})}[kind]
    archive = write_tar(tmp_path / "in" / "model.tar.gz", model_files, member)
    target = tmp_path / "unpacked" / "model"
    with pytest.raises(ModelLoadError) as refused:
        unpack_model(archive, target)
    reason = str(refused.value)
    assert reason.startswith(str(archive)) and repr(member[0][0]) in reason, reason
    if kind == "twice":
        assert "appears twice" in reason
    else:
        assert "refused" in reason and "inside its own folder only" in reason, reason
    assert list(outside.iterdir()) == []
    assert not target.exists() and left_beside(target) == []


def test_a_folder_listed_twice_still_unpacks(tmp_path, model_files):
    # Hosts' model folders packed together list a folder more than once: that is no model's fault.
    folder = ((("code",), {"type": tarfile.DIRTYPE, "mode": 0o755}))
    archive = write_tar(tmp_path / "model.tar.gz", model_files, folder, folder,
                        (("code/serve.py", b"print()\n"), {}))
    unpacked = unpack_model(archive, tmp_path / "model")
    assert tree(unpacked) == {**model_files, "code/serve.py": b"print()\n"}


# ------------------------------------------------------------------------------------------------ oof.npz

def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """A .npy file's magic and 1.0 header declaring ``shape`` of ``descr``, and no data."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def saved_npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_an_oof_npz_declaring_8_tb_is_refused_from_its_header(tmp_path):
    # 10^12 float64 in a 300-byte file: np.load allocated from the header (MemoryError, or worse, a lazily
    # committed 8 TB mapping filled page by page).
    path = npz(tmp_path / OOF_FILE, {"proba.npy": npy_header((10**6, 10**6)) + bytes(64),
                                     "y.npy": saved_npy(np.zeros(3, dtype=np.int64))})
    assert path.stat().st_size < 1024
    for source in (path, io.BytesIO(path.read_bytes())):  # a model folder's; Select's, read from the tarball
        with pytest.raises(ModelLoadError) as refused:
            read_oof(source)
        reason = str(refused.value)
        assert "'proba' declares float64 (1000000, 1000000), 7.3 TiB" in reason, reason
        assert "MAX_OOF_BYTES" in reason and (str(path) if isinstance(source, Path) else OOF_FILE) in reason


def test_a_model_folder_whose_oof_npz_declares_too_much_is_refused_at_load(tmp_path, trained_model_dir):
    # DiagnosaModel.load reads oof.npz: Evaluate, and an endpoint at its start-up.
    folder = tmp_path / "model"
    shutil.copytree(trained_model_dir, folder)
    npz(folder / OOF_FILE, {"proba.npy": npy_header((2**40, 5), "<f4"), "y.npy": npy_header((2**40,), "<i8")})
    with pytest.raises(ModelLoadError, match=r"oof\.npz: array 'proba' declares float32 \(1099511627776, 5\)"):
        DiagnosaModel.load(folder)


@pytest.mark.parametrize("metadata, said", [
    (b"{not json", r"metadata\.json is not valid JSON"),
    (b"[1, 2]", r"metadata\.json must hold a JSON object"),
    (b" " * ((16 << 20) + 1), r"is over 16,777,216 bytes \(MAX_METADATA_BYTES\)"),
])
def test_a_model_folders_metadata_is_read_bounded_and_named_at_load(tmp_path, trained_model_dir, metadata, said):
    # DiagnosaModel.load read metadata.json whole and unchecked: a JSONDecodeError traceback, or a list's TypeError,
    # where every other reader of a model folder (read_metadata) names it; the same limit as in a tarball now.
    folder = tmp_path / "model"
    shutil.copytree(trained_model_dir, folder)
    (folder / METADATA_FILE).write_bytes(metadata)
    with pytest.raises(ModelLoadError, match=said):
        DiagnosaModel.load(folder)


def test_an_oof_npz_member_that_is_no_array_is_refused_unread(tmp_path):
    # A member without the .npy magic was read whole into memory as bytes (64 MiB of zeros from a 64 KB file here).
    path = npz(tmp_path / OOF_FILE, {"proba": bytes(64 << 20), "y.npy": saved_npy(np.zeros(3, dtype=np.int64))})
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadError, match=r"member 'proba' is not a \.npy array"):
            read_oof(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes allocated"


@pytest.mark.parametrize("array", [np.array([{"a": 1}, None], dtype=object), np.array(["x", "y"]),
                                   np.zeros(2, dtype=[("a", "<f8"), ("b", "<i4")])],
                         ids=["objects", "strings", "records"])
def test_an_oof_npz_of_anything_but_numbers_is_refused_from_its_header(tmp_path, array):
    out = io.BytesIO()
    np.save(out, array, allow_pickle=True)
    path = npz(tmp_path / OOF_FILE, {"proba.npy": out.getvalue(), "y.npy": saved_npy(np.zeros(2, dtype=np.int64))})
    with pytest.raises(ModelLoadError, match=r"array 'proba' declares dtype .*booleans, integers and floats only"):
        read_oof(path)


def test_an_oof_npz_as_a_model_saves_it_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"proba": rng.dirichlet(np.ones(3), size=20).astype(np.float32), "y": np.arange(20, dtype=np.int64) % 3,
              "w": np.ones(20), "groups": np.arange(20) % 2 == 0}  # DiagnosaModel.save's dtypes
    np.savez_compressed(tmp_path / OOF_FILE, **arrays)
    back = read_oof(tmp_path / OOF_FILE)
    assert back.keys() == arrays.keys()
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)


def test_a_disk_that_refuses_the_unpacking_is_not_blamed_on_the_model(trained_model_dir, tmp_path):
    # A full workspace disk said "<archive> is not a readable model.tar.gz" (exit 2, bad input): an operator could reject
    # a good version over it. Here the kernel refuses every byte written (RLIMIT_FSIZE 0: EFBIG, as ENOSPC).
    import subprocess
    import sys

    archive = tar_folder(trained_model_dir, tmp_path / "model.tar.gz")
    script = ("import resource, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
              "from diagnosa.model import ModelLoadError, unpack_model\n"
              "try:\n    unpack_model(sys.argv[1], sys.argv[2])\n"
              "except ModelLoadError as err:\n    print('blamed the model:', err)\n"
              "except OSError as err:\n    print('the disk:', err.errno, err.strerror)\n")
    done = subprocess.run([sys.executable, "-B", "-c", script, str(archive), str(tmp_path / "out" / "model")],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("the disk: 27 File too large: cannot unpack "), done.stdout + done.stderr[-2000:]
    assert "(the model file is not at fault)" in done.stdout
    assert not (tmp_path / "out" / "model").exists() and left_beside(tmp_path / "out" / "model") == []
    unpack_model(archive, tmp_path / "again" / "model")  # the same archive, on a disk that takes it
    assert tree(tmp_path / "again" / "model") == tree(trained_model_dir)
