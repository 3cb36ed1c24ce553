"""A trained model carries its serving code: model dir + code/ (SageMaker's model.tar.gz layout)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diagnosa.serving_code import SERVING_PROGRAM, STEP_LOCK, ServingCodeError, write_serving_code

ROOT = Path(__file__).resolve().parents[1]


def test_the_trained_model_holds_code_the_serving_toolkit_can_load(trained_model_dir, tmp_path):
    code = trained_model_dir / "code"
    assert (code / "requirements.txt").read_bytes() == (ROOT / STEP_LOCK).read_bytes()  # the full tree, hashed
    assert (code / SERVING_PROGRAM).is_file() and not list(code.rglob("__pycache__"))
    # The inference toolkit imports SAGEMAKER_PROGRAM with the code folder first on sys.path; nothing else.
    # (How the toolkit then calls it is tested with the toolkit itself: tests/containers/test_serving_toolkit.py.)
    probe = ("import sys, serve_endpoint, inference; "
             "assert inference.__file__.startswith(sys.argv[1]), inference.__file__; "
             "service = serve_endpoint.model_fn(sys.argv[2]); "
             "body, kind = serve_endpoint.transform_fn(service, b'{\"age\": 67, \"symptoms\": [\"HP:0001945\"]}', "
             "'application/json', 'application/json'); "
             "print(kind, body.decode()[:40])")
    result = subprocess.run([sys.executable, "-c", probe, str(code), str(trained_model_dir)], cwd=code,
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE",
                                                          "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("application/json {\"predictions\"")


def test_serving_code_is_never_mixed_with_an_older_copy(tmp_path):
    write_serving_code(tmp_path / "code")
    with pytest.raises(ServingCodeError, match="already exists"):
        write_serving_code(tmp_path / "code")


def test_a_step_package_without_init_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    # A folder without __init__.py imports as a namespace package (``__file__`` None, maybe spread over several
    # folders): refused by name before anything is written (it was a TypeError from Path(None)).
    (tmp_path / "site" / "stepcode_without_init").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr("diagnosa.serving_code.PACKAGES", ("diagnosa", "stepcode_without_init"))
    with pytest.raises(ServingCodeError, match="stepcode_without_init has no __init__.py"):
        write_serving_code(tmp_path / "code")
    assert not (tmp_path / "code").exists()
