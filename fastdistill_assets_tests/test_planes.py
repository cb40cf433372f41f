"""The package's folders depend one way, each importing only from the folders before it.

The base: ``core`` (contract, hashing, formats, processes), ``config`` (the typed models, loading,
the run registry, paths), ``store`` (the artifact store and its layout) and ``sqlsafe`` (guarded
SQL). The planes: data (``datasets``) -> ``teacher`` -> ``gates`` -> ``training`` ->
``evaluation``. Above them ``runtime`` (locks, run-worker liveness, launcher, preflight, the
Dagster instance), ``defs`` (assets, checks, jobs, resources, sensors; ``definitions.py`` is the
code location) and ``cli``. A module's layer is its top folder; the test reads every module's
imports, including those inside functions, with ``ast``.
"""

import ast
import sys
from pathlib import Path

import pytest

import fastdistill_assets

PACKAGE = Path(fastdistill_assets.__file__).parent
LAYERS = ["core", "config", "store", "sqlsafe", "datasets", "teacher", "gates", "training", "evaluation", "runtime",
          "defs", "cli"]
TOP_LEVEL = {"": "core", "definitions": "defs"}  # the package's own modules: __init__ and the code location


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """The layer of a ``fastdistill_assets.*`` module: its top folder."""
    head = module.split(".")[1] if "." in module else ""
    return TOP_LEVEL.get(head, head)


def rank(module: str) -> int:
    return LAYERS.index(layer(module))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a package module in ``path``, relative ones resolved;
    ``from package import name`` counts as importing ``package.name``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("fastdistill_assets")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if not base.startswith("fastdistill_assets"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    PACKAGE.parent / Path(*candidate.split("."))).is_dir()
                found.append((node.lineno, candidate if is_module else base))
    return found


def upward_imports(paths: list[Path]) -> list[str]:
    violations = []
    for path in paths:
        importer = module_name(path)
        for line, imported in imported_modules(path):
            if rank(imported) > rank(importer):
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} {layer(importer)} "
                                  f"imports {imported} ({layer(imported)})")
    return violations


def test_no_module_imports_up_the_plane_order():
    assert upward_imports(sorted(PACKAGE.rglob("*.py"))) == []


@pytest.mark.parametrize("source, importer, expected", [
    ("from fastdistill_assets.gates import judge\n", "teacher/embedded.py", "fastdistill_assets.gates.judge"),
    ("def f():\n    from fastdistill_assets.training.serving import x\n", "teacher/gateway.py",
     "fastdistill_assets.training.serving"),
    ("from ..evaluation import report\n", "gates/x.py", "fastdistill_assets.evaluation.report"),
    ("import fastdistill_assets.defs.assets.data\n", "config/models.py", "fastdistill_assets.defs.assets.data"),
    ("from fastdistill_assets.store import storage\n", "core/hashing.py", "fastdistill_assets.store.storage"),
])
def test_an_upward_import_is_reported(tmp_path, monkeypatch, source, importer, expected):
    """The checker itself: a planted upward import (top level, in a function, relative, plain
    ``import``) is found and named."""
    fake = tmp_path / "fastdistill_assets"
    for name in [*LAYERS, "defs/assets"]:
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text("")
    for module in ("gates/judge.py", "training/serving.py", "evaluation/report.py", "defs/assets/data.py",
                   "store/storage.py"):
        (fake / module).write_text("")
    (fake / "__init__.py").write_text("")
    (fake / importer).write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    (violation,) = upward_imports([fake / importer])
    assert expected in violation


@pytest.mark.parametrize("module, expected", [
    ("fastdistill_assets.core.contract", "core"), ("fastdistill_assets.config.models", "config"),
    ("fastdistill_assets.store.storage", "store"), ("fastdistill_assets.datasets.load", "datasets"),
    ("fastdistill_assets.gates.judge", "gates"), ("fastdistill_assets.defs.assets.gates", "defs"),
    ("fastdistill_assets.definitions", "defs"), ("fastdistill_assets", "core"), ("fastdistill_assets.cli", "cli"),
])
def test_a_module_s_layer_is_its_top_folder(module, expected):
    assert layer(module) == expected


def test_every_folder_of_the_package_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert folders == set(LAYERS) and modules == set(TOP_LEVEL) - {""}
