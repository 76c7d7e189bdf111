"""The house rules, checked on the source (docs/architecture.md).

- Top-level areas import downwards only: flows -> tasks -> expectations -> lvm_core, deployments -> lvm_core;
  nothing imports flows but flows (tests and bench may import anything).
- Inside `lvm_core/`, packages point down the layers (`LAYERS`), and inside `lvm_core/data/` so do its
  sub-packages and modules (`DATA_LAYERS`); function-local imports count.
- One import path per name: package `__init__` files hold only a docstring, every lvm_core name is imported
  from the module that defines it, an import keeps its name (or takes `<enclosing>_<name>` where it would
  collide), and `__all__` lists only what the module defines.
- No Prefect import in `lvm_core/`, no module outside `tests/` and `bench/` over 400 lines, no `lvm_core`
  function over 60.

Each check is a pure function over source text, and each is shown failing on the code it exists to catch.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
LIB = ROOT / "lvm_core"

# What each top-level area may import besides itself. Flows reach deployments as entrypoint strings
# (prefect.yaml), never as imports; tests/ and bench/ may import every area.
AREA_IMPORTS: dict[str, frozenset[str]] = {
    "lvm_core": frozenset(),
    "expectations": frozenset({"lvm_core"}),
    "tasks": frozenset({"lvm_core", "expectations"}),
    "flows": frozenset({"lvm_core", "expectations", "tasks"}),
    "deployments": frozenset({"lvm_core"}),
}
FREE_AREAS = ("tests", "bench")
PROJECT_AREAS = (*AREA_IMPORTS, *FREE_AREAS)
# Files kept as older versions wrote them (a model logged before the package layout, the script that made it).
FROZEN = ("tests/data/legacy",)

# Rank of each top-level package of lvm_core: a package may import only packages of a lower rank.
LAYERS = {
    "io": 0, "runtime": 0,
    "contracts": 1,
    "data": 2,
    "models": 3,
    "train": 4,
    "evaluation": 5,  # the grouped cross-validation trains (crossval uses train.trainer)
    "tracking": 6,
    "rollout": 7, "drift": 7, "snapshots": 7,
    "serving": 8,
    "registry": 8,  # the import path recorded in model files logged before the package layout
}
# Rank of each unit of lvm_core/data/ (a sub-package or a module; a module belongs to the longest unit
# that holds it, so `ingest.shards` is a unit of its own, above `chunking`, which reads `ingest` articles).
DATA_LAYERS = {
    "ingest": 0, "splits": 0, "chunk_layout": 0, "hash_codes": 0,
    "chunking": 1, "windows": 1, "coherence": 1, "npz_compat": 1, "split_registry": 1,
    "ingest.shards": 2, "embedding": 2,
    "vector_files": 3,
    "retrieval": 4,
    "leakage": 5,
    "build": 6,
}
# Names a module may list in `__all__` without defining them, and why.
SANCTIONED_REEXPORTS = {
    # Models logged before the package layout carry a pyfunc copy that runs
    # `from lvm_core.registry import load_model_dir` (tests/data/legacy/mlflow_model).
    "lvm_core.registry": frozenset({"load_model_dir"}),
    # The console script `lvm = flows.cli:app`: the app once the package has registered every command.
    "flows.cli": frozenset({"app"}),
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


# --- reading source ---------------------------------------------------------------------------------------

@functools.cache
def parse(source: str) -> ast.Module:
    """The syntax tree of a source (parsed once: every check reads the same files)."""
    return ast.parse(source)


@functools.cache
def read(path: Path) -> str:
    return path.read_text()


def listing(problems: list[str]) -> str:
    """The offenders, one a line, for an assertion message."""
    return "".join(f"\n  {p}" for p in problems)


def imported_modules(source: str) -> list[str]:
    """Every absolute import of the source, at any depth (function-local and TYPE_CHECKING ones too).

    `import a.b` gives `a.b`; `from a.b import c` gives `a.b.c` (`c` may be a module or a name);
    `__import__("a.b")` and `importlib.import_module("a.b")` with a literal give `a.b`."""
    found = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                found.append(node.args[0].value)
    return found


def defined_names(source: str) -> set[str]:
    """Names the module binds itself at top level (def, class, assignment; also inside a top-level
    if/try/with/for), not the names it imports."""
    names: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, ast.AnnAssign | ast.AugAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
                visit(getattr(node, "body", []) + getattr(node, "orelse", []) + getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(parse(source).body)
    return names


def module_name(path: Path) -> str:
    """`lvm_core/data/build/load.py` -> `lvm_core.data.build.load`; a package's `__init__.py` -> the package."""
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def python_files(*areas: str) -> Iterator[Path]:
    for area in areas:
        for path in sorted((ROOT / area).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel and not rel.startswith(FROZEN):
                yield path


def library_modules() -> list[tuple[str, Path]]:
    return [(module_name(path), path) for path in python_files("lvm_core")]


# --- the checks -------------------------------------------------------------------------------------------

def forbidden_area_imports(area: str, source: str) -> list[str]:
    """Imports of `source` (a module of top-level `area`) that reach an area it may not import."""
    allowed = AREA_IMPORTS[area] | {area}
    return [m for m in imported_modules(source) if m.split(".")[0] in PROJECT_AREAS and m.split(".")[0] not in allowed]


def package_of(module: str) -> str | None:
    """`lvm_core.data.build.load` -> `data`; the root package itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "lvm_core" else None


def upward_imports(package: str, source: str) -> list[str]:
    """Imports of `source` (a module of lvm_core `package`) that do not point down the layers."""
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


def data_unit(module: str) -> str | None:
    """The unit of lvm_core/data/ a module (or a name in it) belongs to: `lvm_core.data.ingest.shards.plan`
    -> `ingest.shards`, `lvm_core.data.windows.SequenceSet` -> `windows`; outside data/ -> None."""
    parts = module.split(".")
    if parts[:2] != ["lvm_core", "data"] or len(parts) < 3:
        return None
    for end in range(len(parts), 2, -1):
        if (unit := ".".join(parts[2:end])) in DATA_LAYERS:
            return unit
    return parts[2]


def upward_data_imports(unit: str, source: str) -> list[str]:
    """Imports of `source` (a module of data unit `unit`) that do not point down `DATA_LAYERS`."""
    bad = []
    for module in imported_modules(source):
        target = data_unit(module)
        if target in (None, unit):
            continue
        if target not in DATA_LAYERS:
            bad.append(f"{module} ({target!r} has no rank in data/)")
        elif DATA_LAYERS[target] >= DATA_LAYERS[unit]:
            bad.append(f"{module} ({target} is not below {unit})")
    return bad


def imports_prefect(source: str) -> bool:
    return any(m.split(".")[0] == "prefect" for m in imported_modules(source))


def module_lines(source: str) -> int:
    """Lines of a module, docstrings and comments included (a 400-line module is one to split)."""
    return len(source.splitlines())


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions (nested ones counted inside their parent) longer than `limit` lines."""
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit]


def package_init_extras(source: str, allowed: frozenset[str] = frozenset()) -> list[str]:
    """What a package `__init__` holds beside its docstring (a constant assigned to an `allowed` name aside)."""
    body = parse(source).body
    docstring = bool(body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
        and isinstance(body[0].value.value, str)
    extras = [] if docstring else ["no docstring"]
    for node in body[1:] if docstring else body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id in allowed \
                and isinstance(node.value, ast.Constant):
            continue
        extras.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return extras


def misrouted_imports(source: str, provides: Callable[[str], set[str] | None]) -> list[str]:
    """`from lvm_core.X import n` where `n` is neither defined in `X` nor a submodule of `X`: a name taken
    through a module that only imported it. `provides(X)` is what `X` defines plus its submodules, or None."""
    bad = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "lvm_core":
            names = provides(node.module)
            bad += [f"line {node.lineno}: {a.name} from {node.module}" for a in node.names
                    if names is None or a.name not in names]
    return bad


def renamed_imports(source: str) -> list[str]:
    """lvm_core modules, packages or names imported under another name. The one form allowed is
    `<enclosing>_<name>`, `<enclosing>` a package or module the name comes from (`rollout_plan`,
    `build_source`, `feedback_router`): it keeps the name and says which one, where a bare one would collide."""
    bad = []
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imports = [(node.module.split("."), a.name, a.asname) for a in node.names]
        elif isinstance(node, ast.Import):
            imports = [(a.name.split(".")[:-1], a.name.split(".")[-1], a.asname) for a in node.names]
        else:
            continue
        for enclosing, name, alias in imports:
            if (enclosing or [name])[0] != "lvm_core" or alias in (None, name):
                continue
            if alias not in {f"{part}_{name}" for part in enclosing}:
                bad.append(f"line {node.lineno}: {name} as {alias}")
    return bad


def foreign_exports(source: str) -> list[str]:
    """Names the module's `__all__` lists but does not define itself."""
    listed: list[str] = []
    for node in parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and getattr(node, "value", None):
            listed += [c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    defined = defined_names(source)
    return [name for name in listed if name not in defined]


def imports_a_test_module(source: str) -> list[str]:
    """Imports of another test file (`test_*`), absolute or relative; shared helpers belong in fixtures."""
    modules = imported_modules(source) + [
        f"{node.module or ''}.{a.name}" for node in ast.walk(parse(source))
        if isinstance(node, ast.ImportFrom) and node.level > 0 for a in node.names]
    return [m for m in modules if any(part.startswith("test_") for part in m.split("."))]


# --- the rules on the tree --------------------------------------------------------------------------------

def test_every_top_level_area_has_its_imports_declared():
    areas = {d.name for d in ROOT.iterdir() if d.is_dir() and not d.name.startswith(".") and any(d.rglob("*.py"))}
    assert areas <= set(PROJECT_AREAS), f"a new top-level area needs a place in AREA_IMPORTS: {areas - set(PROJECT_AREAS)}"


def test_areas_import_only_the_areas_below_them():
    problems = [f"{p.relative_to(ROOT)}: imports {m}" for area in AREA_IMPORTS for p in python_files(area)
                for m in forbidden_area_imports(area, read(p))]
    assert not problems, listing(problems)


def test_every_package_has_a_layer():
    packages = {p.name for p in LIB.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in LIB.glob("*.py") if p.stem != "__init__"}
    assert packages - set(LAYERS) == set(), "a new top-level package needs a place in LAYERS (docs/architecture.md)"


def test_dependencies_point_down():
    problems = [f"{module}: imports {bad}" for module, path in library_modules() if (package := package_of(module))
                for bad in upward_imports(package, read(path))]
    assert not problems, listing(problems)


def test_every_data_module_has_a_rank():
    unranked = [f"{module} ({unit})" for module, _ in library_modules()
                if (unit := data_unit(module)) is not None and unit not in DATA_LAYERS]
    assert not unranked, "a new unit of data/ needs a rank in DATA_LAYERS (docs/architecture.md):" + listing(unranked)


def test_data_dependencies_point_down():
    problems = [f"{module}: imports {bad}" for module, path in library_modules() if (unit := data_unit(module))
                for bad in upward_data_imports(unit, read(path))]
    assert not problems, listing(problems)


def test_no_prefect_in_the_library():
    assert [m for m, p in library_modules() if imports_prefect(read(p))] == []


def test_modules_stay_small():
    big = [f"{p.relative_to(ROOT)} ({n} lines)" for p in python_files(*AREA_IMPORTS)
           if (n := module_lines(read(p))) > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines outside tests/ and bench/ (split them):" + listing(big)


def test_library_functions_stay_small():
    long = [f"{m}.{f}" for m, p in library_modules() for f in long_functions(read(p))]
    assert not long, f"lvm_core functions over {MAX_FUNCTION_LINES} lines:" + listing(long)


def test_package_inits_hold_only_a_docstring():
    problems = [f"{path.relative_to(ROOT)} {extra}" for path in python_files("lvm_core") if path.name == "__init__.py"
                for extra in package_init_extras(read(path), frozenset({"__version__"}) if path.parent == LIB else frozenset())]
    assert not problems, listing(problems)


def test_every_lvm_core_name_is_imported_from_where_it_is_defined():
    modules = dict(library_modules())
    children: dict[str, set[str]] = {}
    for module in modules:
        parent, _, child = module.rpartition(".")
        children.setdefault(parent, set()).add(child)
    provided = {m: defined_names(read(p)) | children.get(m, set()) for m, p in modules.items()}
    problems = [f"{p.relative_to(ROOT)} {bad}" for p in python_files(*PROJECT_AREAS)
                for bad in misrouted_imports(read(p), provided.get)]
    assert not problems, listing(problems)


@pytest.mark.parametrize("areas", [(*AREA_IMPORTS, "bench"), ("tests",)], ids=["code", "tests"])
def test_imports_keep_their_names(areas):
    problems = [f"{p.relative_to(ROOT)} {bad}" for p in python_files(*areas) for bad in renamed_imports(read(p))]
    assert not problems, "import under the name itself, or <enclosing>_<name> where it would collide:" + listing(problems)


def test_all_lists_only_what_the_module_defines():
    problems = [f"{path.relative_to(ROOT)}: {name}" for path in python_files(*AREA_IMPORTS)
                for name in foreign_exports(read(path)) if name not in SANCTIONED_REEXPORTS.get(module_name(path), ())]
    assert not problems, listing(problems)


def test_no_test_imports_another_test_file():
    problems = [f"{p.relative_to(ROOT)}: {m}" for p in python_files("tests") for m in imports_a_test_module(read(p))]
    assert not problems, "shared helpers belong in a conftest.py or tests/fixtures/:" + listing(problems)


# --- each check fails on what it exists to catch ----------------------------------------------------------

@pytest.mark.parametrize(("area", "source"), [
    ("lvm_core", "from tasks.common import is_transient\n"),  # the library reaching up into orchestration
    ("tasks", "def f():\n    from flows.infra.slots import exclusive\n"),  # a task using a flow's plumbing
    ("expectations", "import tasks.dataset\n"),
    ("deployments", "from flows.pipeline import pipeline\n"),  # a deployment importing the flow it names
    ("lvm_core", "import importlib\ncli = importlib.import_module('flows.cli')\n"),  # hidden in a string
    ("flows", "from tests.fixtures.paths import SAMPLE\n"),  # production code leaning on the tests
])
def test_the_area_check_catches_a_forbidden_import(area, source):
    assert forbidden_area_imports(area, source) != []


def test_the_area_check_accepts_allowed_imports():
    source = ("from tasks import train\nfrom expectations.check import check_dataset\nfrom lvm_core.io import storage\n"
              "from flows.infra import slots\nimport prefect\n")
    assert forbidden_area_imports("flows", source) == []


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


@pytest.mark.parametrize(("unit", "source"), [
    ("chunking", "from lvm_core.data.build.load import load_dataset\n"),  # a building block using the orchestrator
    ("ingest", "def f():\n    from lvm_core.data.ingest.shards.files import chunk_article_file\n"),  # a package into its upper part
    ("windows", "from lvm_core.data import coherence\n"),  # sideways, same rank
    ("splits", "from lvm_core.data.newthing import x\n"),  # a unit nobody ranked
])
def test_the_data_rank_check_catches_an_upward_import(unit, source):
    assert upward_data_imports(unit, source) != []


def test_the_data_rank_check_accepts_downward_imports():
    source = ("from lvm_core.data.windows import SequenceSet\nfrom lvm_core.data.ingest.shards.plan import ShardError\n"
              "from lvm_core.data import splits\nfrom lvm_core.models.loader import load_model_dir\n")
    assert upward_data_imports("build", source) == []
    assert data_unit("lvm_core.data.ingest.shards.read") == "ingest.shards" and data_unit("lvm_core.models") is None


def test_the_import_path_checks_catch_a_second_path():
    assert package_init_extras('"""Doc."""\nfrom lvm_core.models.loader import load_model_dir\n') != []
    assert package_init_extras('"""Doc."""\n__all__ = ["x"]\n') != []
    assert package_init_extras('"""Doc."""\n__version__ = "1"\n', frozenset({"__version__"})) == []
    assert package_init_extras("x = 1\n") == ["no docstring", "line 1: x = 1"]
    provides = {"lvm_core.tracking": {"references"}, "lvm_core.tracking.references": {"load_model"}}.get
    assert misrouted_imports("from lvm_core.tracking import load_model\n", provides) != []  # through the package
    assert misrouted_imports("def f():\n    from lvm_core.tracking.references import nothing\n", provides) != []
    assert misrouted_imports("from lvm_core.tracking.references import load_model\n"
                             "from lvm_core.tracking import references\n", provides) == []


def test_the_alias_check_catches_a_renamed_import():
    assert renamed_imports("from lvm_core import tracking as registry\n") != []  # a package under another name
    assert renamed_imports("from lvm_core.data import windows as sequences\n") != []
    assert renamed_imports("import lvm_core.snapshots.scanner as mod\n") != []
    assert renamed_imports("from lvm_core.io.plain import to_plain as _plain\n") != []
    assert renamed_imports("from lvm_core.rollout import plan as rollout_plan\n"
                           "from lvm_core.serving.routes.feedback import router as feedback_router\n"
                           "import numpy as np\nfrom lvm_core.data import windows\n") == []


def test_the_export_and_test_import_checks_catch_a_second_path():
    assert foreign_exports("from lvm_core.models.loader import load_model_dir\n__all__ = ['load_model_dir']\n") \
        == ["load_model_dir"]
    assert foreign_exports("def f():\n    pass\n\nX = 1\n__all__ = ['X', 'f']\n") == []
    assert imports_a_test_module("from tests.system.test_serving import versions\n") != []
    assert imports_a_test_module("from .test_serving import versions\n") != []
    assert imports_a_test_module("from tests.fixtures.paths import SAMPLE\n") == []


def test_the_other_checks_catch_what_they_exist_for():
    assert imports_prefect("def f():\n    from prefect import flow\n")
    assert not imports_prefect("import prefect_dask_free_name\n")
    long = "def f():\n" + "    x = 1\n" * 61
    assert long_functions(long) == ["f (62 lines)"] and long_functions("def g():\n    pass\n") == []
    assert module_lines('"""Doc."""\n' + "x = 1\n" * MAX_MODULE_LINES) > MAX_MODULE_LINES
