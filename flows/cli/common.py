"""The `lvm` Typer app, its consoles, and how a command ends: user errors in one line, signals cleanly.

Errors a user can fix print one line and exit 1; SIGINT / SIGTERM end a command with 130 / 143 (flows/infra/signals.py).
"""

from __future__ import annotations

import pydantic
import typer
from rich.console import Console

import flows  # noqa: F401  (offline environment defaults)
from flows.infra import signals
from lvm_core.contracts.errors import LvmError


class _Lvm(typer.Typer):
    """The `lvm` app; called as a program (the `lvm` script, `python -m flows.cli`) it stops cleanly on signals."""

    def __call__(self, *args, **kwargs):
        signals.install()
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as exc:
            if signals.received() is not None and exc.code not in (0, None):
                _stopped(signals.received())
            raise
        except BaseException as exc:
            signum = signals.received() or signals.stop_signal_of(exc)
            if signum is None:
                raise
            _stopped(signum)
        finally:
            signals.mark_exiting()


def _stopped(signum: int) -> None:
    """One line and the conventional exit code (130 SIGINT, 143 SIGTERM); `atexit` stops the temporary API server."""
    code = signals.exit_code(signum)
    err.print(f"[bold red]interrupted:[/] {signals.signal_name(signum)}; the run was stopped and nothing half-written "
              f"was published (exit {code})", highlight=False, soft_wrap=True)
    signals.mark_exiting()
    signals.leave(code)


app = _Lvm(
    name="lvm",
    help="Train Language Vector Models on Wikipedia: build gated datasets, train, evaluate, promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err = Console(stderr=True)


def is_user_error(exc: BaseException) -> bool:
    """Bad input or a failed gate (one line, exit 1, no traceback): the project's errors say so themselves
    (`LvmError.user_facing`); of other exceptions, a bad value, a failed validation or a missing path."""
    if isinstance(exc, LvmError):
        return exc.user_facing
    return isinstance(exc, pydantic.ValidationError | ValueError | FileNotFoundError)


def call(fn, *args, **kwargs):
    """Call a flow or function; turn user errors into a one-line message and exit code 1."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, pydantic.ValidationError):
            msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def call_flow(fn, *args, **kwargs):
    """`call` for commands that run Prefect flows: the temporary API server (no PREFECT_API_URL set) is started
    in its own process group, so a terminal's Ctrl-C reaches only this process, which still needs the server to
    report the run Crashed and release its slots."""
    signals.isolate_temporary_server()
    return call(fn, *args, **kwargs)
