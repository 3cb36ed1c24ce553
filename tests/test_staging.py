"""Staged step code: deterministic bundle, content-hashed key, runnable entry points with the pins."""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile

from diagnosa.lake import DataLake
from diagnosa.serving_code import STEP_LOCK
from pipelines.staging import ENTRY_POINTS, ROOT, build_bundle, bundle_files, stage_code


def test_same_code_same_bytes_other_code_other_key(tmp_path):
    files = bundle_files()
    assert build_bundle(files) == build_bundle(dict(reversed(list(files.items()))))
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    first, again = stage_code(lake), stage_code(lake)
    assert first == again and lake.list("artifacts/code/") == [first.key]
    changed = dict(files, **{"processing/preprocess.py": files["processing/preprocess.py"] + b"\n# changed\n"})
    assert build_bundle(changed) != build_bundle(files)


def test_bundle_holds_packages_pins_and_entry_points():
    files = bundle_files()
    assert "processing/preprocess.py" in files and "training/models.py" in files and "inference/handler.py" in files
    assert "diagnosa/data/catalogue/common_diseases.json" in files
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    assert files["requirements.txt"] == (ROOT / STEP_LOCK).read_bytes()  # the step pins and all they need, hashed
    assert b"scikit-learn==1.9.1 \\\n    --hash=sha256:" in files["requirements.txt"]
    assert set(ENTRY_POINTS) <= set(files)


def test_entry_points_run_from_the_unpacked_bundle(tmp_path):
    with tarfile.open(fileobj=io.BytesIO(build_bundle(bundle_files()))) as archive:
        archive.extractall(tmp_path / "code", filter="data")
        assert all(m.mtime == 0 and m.uid == 0 for m in archive.getmembers())
    # The container's working directory is the unpacked bundle; --help proves the imports resolve there.
    for script in ("preprocess_job.py", "select_job.py", "evaluate_job.py", "retrain_job.py"):
        result = subprocess.run([sys.executable, script, "--help"], cwd=tmp_path / "code", capture_output=True,
                                text=True, env={"PYTHONPATH": "", "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        assert "--base-dir" in result.stdout
    (tmp_path / "code" / "where.py").write_text("import processing, diagnosa\nprint(processing.__file__, diagnosa.__file__)\n")
    where = subprocess.run([sys.executable, "where.py"], cwd=tmp_path / "code", capture_output=True, text=True).stdout
    assert where.count(str(tmp_path / "code")) == 2, "the bundle's own packages are the ones imported"


def test_no_root_script_shadows_a_standard_library_module():
    # The bundle root comes first on sys.path in the container: a root "select.py" once replaced the
    # stdlib `select`, so any job importing subprocess ran the selection job's argument parser instead.
    roots = {name.removesuffix(".py") for name in bundle_files() if "/" not in name and name.endswith(".py")}
    assert roots and not roots & set(sys.stdlib_module_names)
