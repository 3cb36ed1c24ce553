"""The linter gates: ruff (settings in ruff.toml) finds nothing in the repository, the type checker (mypy,
settings in mypy.ini) finds nothing in the packages, and the import contracts (.importlinter, checked by
import-linter) hold: the layers of docs/architecture.md point one way."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def mypy(*targets: str) -> subprocess.CompletedProcess:
    """mypy with the repository's configuration, from its root (its cache, .mypy_cache/, too); with no target,
    the packages mypy.ini names."""
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "mypy.ini"), *targets], cwd=ROOT,
                          capture_output=True, text=True)


def test_mypy_finds_nothing():
    result = mypy()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success: no issues found"), result.stdout


def test_a_type_error_fails_the_type_checker(tmp_path):
    copy = tmp_path / "sparse_copy.py"
    copy.write_text((ROOT / "processing" / "sparse.py").read_text(encoding="utf-8"), encoding="utf-8")
    assert mypy(str(copy)).returncode == 0  # the copy as it is passes
    # A None that would reach len(): what the checker exists to catch before a job does.
    with open(copy, "a", encoding="utf-8") as module:
        module.write("\n\ndef columns_of(names: list[str] | None) -> int:\n    return len(names)\n")
    result = mypy(str(copy))
    assert result.returncode == 1, result.stdout + result.stderr
    line = len(copy.read_text(encoding="utf-8").splitlines())
    assert f"sparse_copy.py:{line}: error:" in result.stdout and "[arg-type]" in result.stdout, result.stdout
    assert "Found 1 error in 1 file" in result.stdout


def lint_imports(folder: Path) -> subprocess.CompletedProcess:
    # The folder goes first on sys.path (import-linter adds the working directory), so it is the code checked.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=folder, capture_output=True, text=True)


def test_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: (\d+) kept, 0 broken", result.stdout)


def contracts() -> dict:
    from importlinter.api import read_configuration

    return read_configuration(str(ROOT / ".importlinter"))


def test_an_import_against_the_layers_breaks_the_contracts(tmp_path):
    for package in contracts()["session_options"]["root_packages"]:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    assert lint_imports(tmp_path).returncode == 0  # the copy as it is keeps them
    bad = {  # module → an import it must not make
        "processing/features.py": "import pipelines.executor",  # step code asking the executor (upward)
        "diagnosa/commands/local.py": "import diagnosa.cli",  # a command module reaching for the CLI
        "processing/select.py": "import processing.preprocess",  # one job's entry point importing another's
        "inference/handler.py": "import sagemaker",  # the SDK, which the step containers do not install
    }
    for path, line in bad.items():
        with open(tmp_path / path, "a", encoding="utf-8") as module:
            module.write(f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    assert "Contracts: 0 kept, 3 broken" in result.stdout
    for importer, imported in (("processing.features", "pipelines.executor"), ("diagnosa.commands.local", "diagnosa.cli"),
                               ("processing.select", "processing.preprocess"), ("inference.handler", "sagemaker")):
        assert f"{importer} -> {imported}" in result.stdout, result.stdout


def test_every_module_of_the_diagnosa_package_has_a_layer():
    """The core and the interfaces share the diagnosa package: a module added there must be given its layer."""
    from importlinter.contracts.layers import LayerField

    [layers] = [c["layers"] for c in contracts()["contracts_options"] if c["id"] == "layers"]
    declared = {tail.name for layer in layers for tail in LayerField().parse(layer).module_tails}
    found = {f"diagnosa.{path.stem}" for path in (ROOT / "diagnosa").glob("*.py") if path.stem != "__init__"}
    found |= {f"diagnosa.{path.parent.name}" for path in (ROOT / "diagnosa").glob("*/__init__.py")}
    assert found - declared == set(), "give each a layer in .importlinter (docs/architecture.md)"


def test_shipped_step_code_imports_only_shipped_modules():
    # Each step's code bundle and each model's code/ leave out the diagnosa package's interface layer (the CLI, its
    # commands, the service layer: NOT_SHIPPED), whose edits changed every step's cache key. A shipped module that
    # imported one (at the top or inside a function) would fail in the container only.
    import grimp

    from diagnosa.serving_code import PACKAGES, shipped_files

    shipped = {name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
               for name in shipped_files(ROOT) if name.endswith(".py")}
    assert "diagnosa.cli" not in shipped and "diagnosa.services" not in shipped and "diagnosa.model" in shipped
    graph = grimp.build_graph(*PACKAGES, "pipelines", "app", "infra", include_external_packages=False)
    reached = {(module, imported) for module in shipped for imported in graph.find_modules_directly_imported_by(module)}
    assert reached, "the import graph was not read"
    assert sorted((m, i) for m, i in reached if i not in shipped) == []
