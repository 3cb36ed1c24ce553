"""A full disk mid-command: the command says which file it could not write and what to do, and what it leaves is
either whole or repaired by running it again. The disk fills at the moment a real one did in a probe on a small
tmpfs: the write of a chosen file stops half-way with ENOSPC (the write itself is Python's own, cut short)."""
from __future__ import annotations

import errno
import pathlib
import shutil
from pathlib import Path

import pytest

from diagnosa.cli import main
from diagnosa.data.ingest import raw_keys

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


def _copy_then_fill(marker: str):
    """shutil.copyfile that, for a destination whose name holds ``marker``, writes half the file and fails as a full
    disk does (naming the source, as copyfile's error does)."""
    real = shutil.copyfile

    def copyfile(src, dst, *args, **kwargs):
        if marker in str(dst):
            data = Path(src).read_bytes()
            Path(dst).write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(src))
        return real(src, dst, *args, **kwargs)

    return copyfile


def test_a_batch_cut_short_by_a_full_disk_is_completed_by_generating_it_again(tmp_path, monkeypatch, capsys):
    ws = ["--workspace", str(tmp_path / "ws")]
    generate = [*ws, "data", "generate", "--patients", "1000", "--seed", "5", "--quiet"]
    monkeypatch.setattr("diagnosa.lake.shutil.copyfile", _copy_then_fill("lab_results"))
    assert main(generate) == 1
    err = capsys.readouterr().err
    lake = tmp_path / "ws" / "lake"
    records_key, labs_key = raw_keys("cohort-n1000-s5")
    # Said of the lake's file that could not be written (it named the temp file the records were generated in).
    assert f"No space left on device: {lake / labs_key}; free space there and run the command again" in err, err
    assert (lake / records_key).is_file() and not (lake / labs_key).exists()
    assert not [p for p in lake.rglob("*") if p.is_file() and "tmp" in p.name]  # no half file left
    monkeypatch.undo()  # space freed
    assert main(generate) == 0  # it said "nothing to do", and ingest found no batch
    out = capsys.readouterr().out
    assert "generated batch cohort-n1000-s5" in out
    assert main([*ws, "data", "ingest", "--batch", "cohort-n1000-s5", "--quiet"]) == 0
    assert main(generate) == 0 and "nothing to do" in capsys.readouterr().out  # whole now


def test_a_card_cut_short_by_a_full_disk_is_written_by_generating_again(tmp_path, monkeypatch, capsys):
    # The message says "run the command again"; the run again said "nothing to do" (it looked for the card's .json
    # only), and the batch's data card was never written.
    from diagnosa.lake import LocalStorage

    ws = ["--workspace", str(tmp_path / "ws")]
    generate = [*ws, "data", "generate", "--patients", "1000", "--seed", "5", "--quiet"]
    real = LocalStorage.put_bytes

    def put_bytes(self, key, data):
        if key == "raw/cohort_cards/cohort-n1000-s5.md":
            raise OSError(*NO_SPACE.args, key)
        return real(self, key, data)

    monkeypatch.setattr(LocalStorage, "put_bytes", put_bytes)
    assert main(generate) == 1
    assert "No space left on device" in capsys.readouterr().err
    card = tmp_path / "ws" / "lake" / "raw" / "cohort_cards" / "cohort-n1000-s5.md"
    assert not card.exists()
    monkeypatch.undo()  # space freed
    assert main(generate) == 0 and "generated batch cohort-n1000-s5" in capsys.readouterr().out
    assert card.read_text(encoding="utf-8").startswith("#")
    assert main(generate) == 0 and "nothing to do" in capsys.readouterr().out  # whole now


def test_a_run_that_cannot_write_its_definition_leaves_no_execution_behind(tmp_path, monkeypatch, capsys):
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "data", "generate", "--patients", "1000", "--seed", "5", "--quiet"]) == 0
    assert main([*ws, "data", "ingest", "--quiet"]) == 0
    capsys.readouterr()
    real = pathlib.Path.write_text

    def write_text(self, data, *args, **kwargs):
        if "definition.json" in self.name:  # half of it reaches the disk, then it is full
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(*NO_SPACE.args)
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    assert main([*ws, "run", "--local", "--quiet"]) == 1
    err = capsys.readouterr().err
    executions = tmp_path / "ws" / "executions"
    # A truncated definition.json in a folder no command lists or removes was left (40,960 of 50,978 bytes).
    assert not [p for p in executions.glob("*") if p.is_dir()] if executions.exists() else True
    assert "No space left on device: " in err and "definition.json; free space there" in err, err


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["disk", "quota"])
def test_an_atomic_write_that_fills_the_disk_names_its_target(tmp_path, code):
    from diagnosa.files import atomic_path

    target = tmp_path / "report.json"
    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        tmp.write_text("{")
        raise OSError(code, "No space left on device")  # what a write says: no file named
    assert caught.value.errno == code and caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_serving_code_that_cannot_be_copied_is_said_in_one_reason(tmp_path, monkeypatch):
    # A Train step on a full disk failed with the repr of copytree's list of every file it could not copy (4,000
    # characters, said three times by the run), "No space left on device" somewhere inside.
    from diagnosa.serving_code import write_serving_code

    def full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(shutil, "copyfile", full)  # what copytree's copy2 calls for each file
    with pytest.raises(OSError) as caught:
        write_serving_code(tmp_path / "model" / "code")
    said = str(caught.value)
    assert not isinstance(caught.value, shutil.Error)
    assert said.startswith(f"could not copy the serving code into {tmp_path / 'model' / 'code'}/")
    assert "No space left on device" in said and "more files failed)" in said and len(said) < 1000, said
