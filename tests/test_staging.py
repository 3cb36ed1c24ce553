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


def _working_copy(tmp_path):
    """A copy of the step packages and their pins, as a checkout holds them."""
    import shutil

    from diagnosa.serving_code import PACKAGES

    root = tmp_path / "checkout"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / STEP_LOCK).parent.mkdir(parents=True)
    (root / STEP_LOCK).write_bytes((ROOT / STEP_LOCK).read_bytes())
    return root


def _gather(root):
    """What a working copy gathers beside the code: bytecode (the machine's path and the file's time in it), editor
    swap and backup files, a .env, a notebook's checkpoints, a stray export, a lake a command made in the folder."""
    import py_compile

    py_compile.compile(str(root / "monitoring" / "drift.py"), doraise=True)  # monitoring/__pycache__/drift.*.pyc
    junk = {"monitoring/.env": b"AWS_SECRET_ACCESS_KEY=abc\n", "processing/preprocess.py~": b"old",
            "training/.models.py.swp": b"swap", "inference/.DS_Store": b"\0", "diagnosa/export.csv": b"id,age\nP1,40\n",
            "monitoring/.ipynb_checkpoints/drift-checkpoint.py": b"x = 1\n",
            "monitoring/.diagnosa/lake/raw/patients/batch=1/patients.jsonl": b'{"patient_id": "P-1"}\n',
            "diagnosa/data/catalogue/notes.txt": b"not package data"}
    for name, content in junk.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    assert list((root / "monitoring" / "__pycache__").glob("drift.*.pyc"))
    return junk


def test_the_bundle_ships_sources_and_declared_data_only_whatever_the_working_copy_gathers(tmp_path):
    # The bundle took every file of the packages but bytecode: swap files, a .env, a stray CSV, and the raw patient
    # files of a lake made inside a package folder went to S3 and into every job; and each changed the code's hash,
    # so the pipeline's definition, per machine.
    root = _working_copy(tmp_path)
    clean = bundle_files(root)
    junk = _gather(root)
    gathered = bundle_files(root)
    assert gathered == clean and not set(junk) & set(gathered)
    assert build_bundle(gathered) == build_bundle(clean) == build_bundle(bundle_files())


def test_the_serving_code_a_model_carries_is_the_same_selection(tmp_path):
    # write_serving_code copied the packages with only bytecode left out: in a model artifact, the same junk.
    root = _working_copy(tmp_path)
    junk = _gather(root)
    target = tmp_path / "model" / "code"
    result = subprocess.run([sys.executable, "-c", "import sys; from diagnosa.serving_code import write_serving_code; "
                             "write_serving_code(sys.argv[1])", str(target)], cwd=root, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    written = {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()}
    shipped = set(bundle_files(root)) - {"requirements.txt", *ENTRY_POINTS}
    assert written == shipped | {"requirements.txt", "serve_endpoint.py"} and not set(junk) & written


def test_the_declared_package_data_is_setup_pys():
    # Two homes of one list: a data file setup.py installs but the bundle leaves out would be missing in every job.
    import ast

    from diagnosa.serving_code import PACKAGE_DATA

    call = next(node for node in ast.walk(ast.parse((ROOT / "setup.py").read_text())) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setup")
    declared = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))
    as_folders = {f"{package.replace('.', '/')}/{pattern.rpartition('/')[0]}": pattern.rpartition("*")[2]
                  for package, patterns in declared.items() for pattern in patterns}
    assert as_folders == PACKAGE_DATA
