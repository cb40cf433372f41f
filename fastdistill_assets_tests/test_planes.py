"""The package's planes depend one way: data -> teacher -> gates -> training -> evaluation.

Below them all is the shared base (contract, config, storage, prompt and judge formats, schema
text, SQL helpers): it imports no plane. Above them all the orchestration modules (assets,
checks, sensors, jobs, resources, CLI) wire the planes together. The test reads every module's
imports, including those inside functions, with ``ast``.
"""

import ast
import sys
from pathlib import Path

import pytest

import fastdistill_assets

PACKAGE = Path(fastdistill_assets.__file__).parent
PLANES = {"datasets": 1, "teacher": 2, "gates": 3, "training": 4, "evaluation": 5}
ORCHESTRATION_RANK = 6
ORCHESTRATION = {"assets", "checks", "sensors", "alerts", "definitions", "jobs", "resources", "run_summary",
                 "preflight", "cli", "run_launcher", "run_worker", "run_lock"}
RANK_NAMES = {0: "base", **{rank: name for name, rank in PLANES.items()}, ORCHESTRATION_RANK: "orchestration"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    """The layer of a ``fastdistill_assets.*`` module (the package itself is base)."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else ""
    if head in PLANES:
        return PLANES[head]
    return ORCHESTRATION_RANK if head in ORCHESTRATION else 0


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
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} {RANK_NAMES[rank(importer)]} "
                                  f"imports {imported} ({RANK_NAMES[rank(imported)]})")
    return violations


def test_no_module_imports_up_the_plane_order():
    assert upward_imports(sorted(PACKAGE.rglob("*.py"))) == []


@pytest.mark.parametrize("source, importer, expected", [
    ("from fastdistill_assets.gates import judge\n", "teacher/embedded.py", "fastdistill_assets.gates.judge"),
    ("def f():\n    from fastdistill_assets.training.serving import x\n", "teacher/gateway.py",
     "fastdistill_assets.training.serving"),
    ("from ..evaluation import report\n", "gates/x.py", "fastdistill_assets.evaluation.report"),
    ("import fastdistill_assets.assets.data\n", "config.py", "fastdistill_assets.assets.data"),
])
def test_an_upward_import_is_reported(tmp_path, monkeypatch, source, importer, expected):
    """The checker itself: a planted upward import (top level, in a function, relative, plain
    ``import``) is found and named."""
    fake = tmp_path / "fastdistill_assets"
    for name in [*PLANES, "assets"]:
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text("")
    for module in ("gates/judge.py", "training/serving.py", "evaluation/report.py", "assets/data.py"):
        (fake / module).write_text("")
    (fake / "__init__.py").write_text("")
    (fake / importer).write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    (violation,) = upward_imports([fake / importer])
    assert expected in violation


@pytest.mark.parametrize("module, expected", [
    ("fastdistill_assets.contract", 0), ("fastdistill_assets.prompt_format", 0), ("fastdistill_assets.storage", 0),
    ("fastdistill_assets.datasets.load", 1), ("fastdistill_assets.teacher.gateway", 2),
    ("fastdistill_assets.gates.judge", 3), ("fastdistill_assets.training.serving", 4),
    ("fastdistill_assets.evaluation.report", 5), ("fastdistill_assets.assets.gates", 6),
    ("fastdistill_assets.definitions", 6),
])
def test_rank(module, expected):
    assert rank(module) == expected
