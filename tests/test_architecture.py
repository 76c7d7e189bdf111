"""The house rules of `lvm_core/`, checked on its source: dependencies point down the layers, no Prefect
import, no module over 400 lines and no function over 60 (docs/architecture.md). Each check is a pure
function over source text, and each is shown failing on the code it exists to catch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lvm_core"

# Rank of each top-level package: a package may import only packages of a lower rank.
LAYERS = {
    "io": 0, "runtime": 0,
    "contracts": 1,
    "data": 2,
    "models": 3,
    "train": 4, "evaluation": 4,
    "tracking": 5,
    "rollout": 6, "drift": 6, "snapshots": 6,
    "serving": 7,
    "registry": 7,  # the import path recorded in model files logged before the package layout
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def package_of(module: str) -> str | None:
    """`lvm_core.data.build.load` -> `data`; the root package itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "lvm_core" else None


def imported_modules(source: str) -> list[str]:
    """Every `lvm_core...` module the source imports, at any depth (function-local and TYPE_CHECKING too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lvm_core":
                found += [f"lvm_core.{a.name}" for a in node.names]
            elif node.module.startswith("lvm_core."):
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("lvm_core.")]
    return found


def upward_imports(package: str, source: str) -> list[str]:
    """Imports of `source` (a module of `package`) that do not point down the layers."""
    bad = []
    for module in imported_modules(source):
        target = package_of(module)
        if target in (None, package, "__version__"):
            continue
        if target not in LAYERS:
            bad.append(f"{module} (package {target!r} has no layer)")
        elif LAYERS[target] >= LAYERS[package]:
            bad.append(f"{module} ({target} is not below {package})")
    return bad


def imports_prefect(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "prefect":
            return True
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "prefect" for a in node.names):
            return True
    return False


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions (nested ones counted inside their parent) longer than `limit` lines."""
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit]


def library_modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(LIB.rglob("*.py")):
        rel = path.relative_to(LIB.parent).with_suffix("")
        out.append((".".join(p for p in rel.parts if p != "__init__"), path))
    return out


def test_every_package_has_a_layer():
    packages = {p.name for p in LIB.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in LIB.glob("*.py") if p.stem != "__init__"}
    assert packages - set(LAYERS) == set(), "a new top-level package needs a place in LAYERS (docs/architecture.md)"


def test_dependencies_point_down():
    problems = []
    for module, path in library_modules():
        package = package_of(module)
        if package is not None:
            problems += [f"{module}: imports {bad}" for bad in upward_imports(package, path.read_text())]
    assert problems == []


def test_no_prefect_in_the_library():
    assert [m for m, p in library_modules() if imports_prefect(p.read_text())] == []


def test_modules_and_functions_stay_small():
    big_modules = [f"{m} ({n} lines)" for m, p in library_modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    big_functions = [f"{m}.{f}" for m, p in library_modules() for f in long_functions(p.read_text())]
    assert big_modules == [] and big_functions == []


@pytest.mark.parametrize(("package", "source"), [
    ("models", "from lvm_core.tracking import promote\n"),  # a model reaching up into the registry
    ("data", "def f():\n    from lvm_core.evaluation import evaluate_predictors\n"),  # hidden in a function
    ("train", "from lvm_core import evaluation\n"),  # sideways, same layer
    ("data", "from lvm_core.newthing import x\n"),  # a package nobody placed
])
def test_the_layer_check_catches_an_upward_import(package, source):
    assert upward_imports(package, source) != []


def test_the_layer_check_accepts_downward_imports():
    assert upward_imports("tracking", "from lvm_core.models.loader import load_model_dir\nfrom lvm_core import __version__\n") == []


def test_the_other_checks_catch_what_they_exist_for():
    assert imports_prefect("def f():\n    from prefect import flow\n")
    assert not imports_prefect("import prefect_dask_free_name\n")
    long = "def f():\n" + "    x = 1\n" * 61
    assert long_functions(long) == ["f (62 lines)"] and long_functions("def g():\n    pass\n") == []
