"""The error hierarchy (lvm_core/contracts/errors.py): every project error derives from `LvmError` and says
whether it is permanent (never retried) and user-facing (one line at the CLI); the retry condition and the CLI
read those attributes. Each check is shown failing on what it exists to catch."""

from __future__ import annotations

import ast
import builtins
import importlib
from typing import Any

import pydantic
import pytest
import typer

from flows.cli.common import call
from lvm_core.contracts.errors import DataContractError, LvmError, ModelNotFoundError, UserError
from lvm_core.data.build.load import DatasetNotReadyError
from lvm_core.data.ingest.base import IngestError
from lvm_core.data.ingest.download import SnapshotSourceError
from lvm_core.data.ingest.shards.plan import ShardError
from lvm_core.serving.text import TextUnavailable
from tasks.common import is_transient
from tests.fixtures.paths import REPO

AREAS = ("lvm_core", "tasks", "flows", "expectations")
ROOT_ERROR = "LvmError"
BUILTIN_EXCEPTIONS = {name: cls for name, cls in vars(builtins).items()
                      if isinstance(cls, type) and issubclass(cls, BaseException)}
# What the retry condition and the CLI decide for an exception from outside the project.
PERMANENT_BUILTINS = (ValueError, LookupError, TypeError, FileNotFoundError)
USER_FACING_BUILTINS = (ValueError, FileNotFoundError)


# --- every project error derives from LvmError --------------------------------------------------------


def class_bases(source: str) -> dict[str, list[str]]:
    """Every class the source defines (nested ones too) -> its bases as written, last dotted part only."""
    out: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            out[node.name] = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases]
    return out


def project_classes() -> dict[str, dict[str, list[str]]]:
    """module -> {class -> bases} over every Python file of the project's areas."""
    out = {}
    for area in AREAS:
        for path in sorted((REPO / area).rglob("*.py")):
            module = ".".join(p for p in path.relative_to(REPO).with_suffix("").parts if p != "__init__")
            out[module] = class_bases(path.read_text())
    return out


def _ancestors(name: str, bases_of: dict[str, list[str]], seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    for base in bases_of.get(name, []):
        if base not in seen:
            seen.add(base)
            _ancestors(base, bases_of, seen)
    return seen


def _is_error(ancestors: set[str], bases_of: dict[str, list[str]]) -> bool:
    """An Exception subclass: a builtin one among its ancestors, or a library's `...Error` / `...Exception`.
    A `BaseException`-only class (a signal, like KeyboardInterrupt) is not an error."""
    for name in ancestors:
        if name in BUILTIN_EXCEPTIONS and issubclass(BUILTIN_EXCEPTIONS[name], Exception):
            return True
        if name not in bases_of and name.endswith(("Error", "Exception")) and name not in BUILTIN_EXCEPTIONS:
            return True
    return False


def error_classes(classes: dict[str, dict[str, list[str]]]) -> list[tuple[str, str, set[str]]]:
    """(module, class, ancestor names) of every error class, bases resolved by name across all modules."""
    bases_of = {name: bases for module in classes.values() for name, bases in module.items()}
    found = []
    for module, defined in classes.items():
        for name in defined:
            ancestors = _ancestors(name, bases_of)
            if name == ROOT_ERROR or _is_error(ancestors, bases_of):
                found.append((module, name, ancestors))
    return found


def outside_hierarchy(classes: dict[str, dict[str, list[str]]]) -> list[str]:
    """`module.Class` of every error class that does not derive from `LvmError`."""
    return [f"{module}.{name}" for module, name, ancestors in error_classes(classes)
            if name != ROOT_ERROR and ROOT_ERROR not in ancestors]


def test_every_project_error_derives_from_lvm_error():
    assert outside_hierarchy(project_classes()) == []


def test_the_hierarchy_check_reports_an_error_class_without_the_base():
    errors_module = {"lvm_core.contracts.errors": class_bases((REPO / "lvm_core/contracts/errors.py").read_text())}
    source = (
        "class FooError(ValueError):\n    pass\n"              # a bare stdlib base
        "class BarError(FooError):\n    pass\n"              # inherits the omission
        "class Wrapped(httpx.HTTPError):\n    pass\n"       # a library's error as the base
        "class Stop(BaseException):\n    pass\n"            # a signal, not an error: fine
        "class Good(UserError, KeyError):\n    pass\n"      # in the hierarchy: fine
        "class Plain:\n    pass\n"                          # not an exception: fine
    )
    found = outside_hierarchy({**errors_module, "m": class_bases(source)})
    assert found == ["m.FooError", "m.BarError", "m.Wrapped"]


# --- the attributes agree with the rule for foreign exceptions ------------------------------------------


def disagreements(classes: list[type[BaseException]]) -> list[str]:
    """Project errors whose class attributes contradict what their stdlib base means elsewhere: a ValueError,
    LookupError, TypeError or FileNotFoundError is never retried, a ValueError or FileNotFoundError is shown as
    one line. (An instance may still differ, as a transient `SnapshotSourceError` does.)"""
    out = []
    for cls in classes:
        if issubclass(cls, PERMANENT_BUILTINS) and not getattr(cls, "permanent", False):
            out.append(f"{cls.__name__}: retried, although its stdlib base never is")
        if issubclass(cls, USER_FACING_BUILTINS) and not getattr(cls, "user_facing", False):
            out.append(f"{cls.__name__}: a traceback at the CLI, although its stdlib base is one line")
    return out


def defined_error_classes() -> list[type[BaseException]]:
    """The project's error classes themselves (only the modules that define one are imported)."""
    return [getattr(importlib.import_module(module), name) for module, name, _ in error_classes(project_classes())]


def test_project_errors_agree_with_the_rule_for_foreign_exceptions():
    classes = defined_error_classes()
    assert {DataContractError, ShardError, SnapshotSourceError, TextUnavailable} <= set(classes)
    assert disagreements(classes) == []


def test_the_agreement_check_reports_a_value_error_that_would_be_retried():
    class LooseValueError(LvmError, ValueError):
        pass

    class LooseKeyError(LvmError, KeyError):
        user_facing = True

    assert disagreements([LooseValueError, LooseKeyError, UserError, TextUnavailable]) == [
        "LooseValueError: retried, although its stdlib base never is",
        "LooseValueError: a traceback at the CLI, although its stdlib base is one line",
        "LooseKeyError: retried, although its stdlib base never is",
    ]


# --- the retry condition reads `permanent` ---------------------------------------------------------------


class FailedState:
    """The part of a Prefect state the retry condition reads: its result raises the task's exception."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self, raise_on_failure: bool = False) -> Any:
        raise self.exc


class CompletedState:
    def result(self, raise_on_failure: bool = False) -> Any:
        return 1


class Hiccup(LvmError):
    """A project error with the root's defaults: transient, not user-facing."""


@pytest.mark.parametrize(("exc", "transient"), [
    (DataContractError("chunks.parquet: no column text"), False),  # a ValueError
    (DatasetNotReadyError("/data/x: no manifest.json"), False),  # a RuntimeError that is permanent
    (ShardError("shard 2/5: truncated bz2 stream"), False),  # a permanent error's subclass
    (ModelNotFoundError("no model lvm-amn"), False),
    (Hiccup("the worker went away"), True),
    (TextUnavailable("no encoder yet"), True),
    (SnapshotSourceError("https://dumps: no such file", transient=True), True),  # a remote that did not answer
    (SnapshotSourceError("/dumps: no such folder", transient=False), False),  # a local path that is not there
    (ValueError("bad input"), False),
    (KeyError("x"), False),
    (FileNotFoundError("/nonexistent.npy"), False),
    (ConnectionResetError("the service went away"), True),
    (RuntimeError("CUDA out of memory"), True),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_is_transient(exc: BaseException, transient: bool):
    assert is_transient(None, None, FailedState(exc)) is transient


def test_is_transient_retries_a_state_that_did_not_fail():
    assert is_transient(None, None, CompletedState()) is True


# --- the CLI reads `user_facing` -------------------------------------------------------------------------


def _raise(exc: BaseException) -> None:
    raise exc


def test_call_turns_a_user_facing_error_into_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]):
    # IngestError is neither a ValueError nor a FileNotFoundError: only its attribute makes it one line
    with pytest.raises(typer.Exit) as exited:
        call(_raise, IngestError("articles.jsonl: line 3: not JSON\n(details on a second line)"))
    assert exited.value.exit_code == 1
    assert capsys.readouterr().err == "error: articles.jsonl: line 3: not JSON\n"


@pytest.mark.parametrize("exc", [ValueError("--workers must be >= 1"), FileNotFoundError("/nonexistent.npy")],
                         ids=lambda e: type(e).__name__)
def test_call_keeps_foreign_bad_input_one_line(exc: BaseException, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(typer.Exit) as exited:
        call(_raise, exc)
    assert exited.value.exit_code == 1 and capsys.readouterr().err == f"error: {exc}\n"


def test_call_names_the_field_of_a_validation_error(capsys: pytest.CaptureFixture[str]):
    class Options(pydantic.BaseModel):
        workers: int

    with pytest.raises(typer.Exit):
        call(Options, workers="many")
    assert capsys.readouterr().err.startswith("error: workers: Input should be a valid integer")


@pytest.mark.parametrize("exc", [Hiccup("the worker went away"), TextUnavailable("no encoder"), RuntimeError("bug")],
                         ids=lambda e: type(e).__name__)
def test_call_lets_other_errors_propagate_with_their_traceback(exc: BaseException, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(type(exc)) as raised:
        call(_raise, exc)
    assert raised.value is exc and capsys.readouterr().err == ""
