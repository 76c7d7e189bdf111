"""Clean stops of the `lvm` CLI on SIGINT (Ctrl-C) and SIGTERM (`kill`, a scheduler, `docker stop`).

Without this, SIGTERM kills Python with the default action: no `atexit`, so the temporary Prefect API
server (a uvicorn child Prefect starts when no PREFECT_API_URL is set and stops from an `atexit` hook)
is left behind, and the process ends by a signal rather than with an exit code and a message.

How a stop goes:

* SIGTERM during a flow run lands on the handler Prefect's flow engine installs for the run
  (`prefect.utilities.engine.capture_sigterm`): it raises `prefect.exceptions.TerminationSignal` in the
  main thread, context managers unwind (the build's concurrency slot is released, staging folders are
  removed), the task and flow runs are reported **Crashed** ("Execution was aborted by a termination
  signal."), and the engine re-sends the signal to the handler it replaced. That handler is ours: it
  recognises the re-sent signal and lets the `TerminationSignal` carry on up to the CLI.
* SIGTERM outside a flow run (start-up, printing results) raises `TerminationSignal` from our handler.
* SIGINT raises `KeyboardInterrupt` (as Python's default handler does); the engine reports the runs
  **Crashed** ("Execution was aborted by an interrupt signal.").
* The CLI then exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM) through
  `sys.exit`, so `atexit` hooks run and the temporary API server is stopped.
* A second signal while the first one is being handled forces the exit: the temporary API server is
  terminated and the process leaves at once (`os._exit`), still with 130 / 143.

`isolate_temporary_server()` starts Prefect's temporary API server in its own process group, so a
terminal's Ctrl-C (sent to the whole foreground process group) reaches only the CLI, which still needs
the server to report its runs Crashed and release its slots; on Linux the server is also told to stop
when the CLI dies, even by SIGKILL.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
from types import FrameType
from typing import Any, NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The shell convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.received: int | None = None  # the first stop signal
        self.exiting = False  # the command has returned; the interpreter is shutting down
        self.resent: BaseException | None = None  # the engine's TerminationSignal whose re-send we saw


_state = _State()


def received() -> int | None:
    """The first stop signal this process got, if any."""
    return _state.received


def install() -> None:
    """Install the SIGINT/SIGTERM handlers for the rest of the process's life (main thread only; idempotent).

    They stay installed after the command returns, so a signal while `atexit` stops the temporary API
    server cannot kill the process half-way through.
    """
    if _state.installed or threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)
    _state.installed = True


def mark_exiting() -> None:
    """The command has returned: a first signal from now on no longer interrupts the shutdown."""
    _state.exiting = True


class Terminated(BaseException):
    """SIGTERM before Prefect is imported (Prefect's `TerminationSignal` is raised once it is)."""

    def __init__(self, signal: int) -> None:
        super().__init__(signal)
        self.signal = signal


def _termination_signal() -> Any:
    # Imported only when already loaded: importing from a signal handler could deadlock on the import lock.
    exceptions = sys.modules.get("prefect.exceptions")
    return getattr(exceptions, "TerminationSignal", Terminated)


def stop_signal_of(exc: BaseException) -> int | None:
    """The signal an exception stands for: SIGINT for KeyboardInterrupt, the signal of a termination."""
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    if isinstance(exc, (Terminated, _termination_signal())):
        return getattr(exc, "signal", signal.SIGTERM)
    return None


def _handler(signum: int, frame: FrameType | None) -> None:
    TerminationSignal = _termination_signal()
    handling = sys.exc_info()[1]
    if (
        isinstance(handling, TerminationSignal)
        and handling.signal == signum
        and handling is not _state.resent
        and not getattr(handling, "_lvm_raised", False)
    ):
        # Prefect's flow engine turned this signal into `TerminationSignal`, reported the run Crashed
        # and re-sent it to the handler it had replaced. Not a new signal: let the exception carry on.
        _state.resent = handling
        if _state.received is None:
            _state.received = signum
        return
    if _state.received is not None:
        _force_exit(signum)
    _state.received = signum
    if _state.exiting:
        return  # the work is done and the temporary server is being stopped: let the exit finish
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    exc = TerminationSignal(signal=signum)
    exc._lvm_raised = True
    raise exc


def leave(code: int) -> NoReturn:
    """Leave after a stop signal: run the `atexit` hooks (they stop the temporary API server and flush the
    logs), then exit at once with `code`.

    A normal exit would first wait for every worker thread, and a shard task still encoding in the
    in-process task runner's thread would hold the process for as long as its shard lasts. Its work is
    either in the embedding cache already (committed blocks) or lost with the run, as after a kill.
    """
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _force_exit(signum: int) -> None:
    """Second signal: stop the temporary API server and leave now, without waiting for the clean-up."""
    code = exit_code(_state.received or signum)
    try:
        os.write(2, f"\n{signal_name(signum)} again: forced exit ({code}); the flow run may be left Running\n".encode())
    except OSError:
        pass
    try:
        _terminate_temporary_servers()
    finally:
        os._exit(code)


def _terminate_temporary_servers() -> None:
    server_mod = sys.modules.get("prefect.server.api.server")
    if server_mod is None:
        return
    for server in list(getattr(server_mod.SubprocessASGIServer, "_instances", {}).values()):
        proc = getattr(server, "server_process", None)
        if proc is not None and proc.poll() is None:
            try:
                proc.terminate()
            except OSError:
                pass


# --- the temporary Prefect API server in its own process group -------------------------------------------

# Run as `python -c _GUARD <parent pid> <argv...>`: on Linux ask for SIGTERM when the parent dies, then
# become argv (the uvicorn command Prefect builds), keeping the pid Prefect waits on.
_GUARD = """\
import os, signal, sys
parent = int(sys.argv[1])
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != parent:
    sys.exit(0)
os.execv(sys.argv[2], sys.argv[2:])
"""


def _isolating_popen(real_popen: Any) -> Any:
    def popen(args: Any, *rest: Any, **kwargs: Any) -> Any:
        if kwargs.get("start_new_session") or "process_group" in kwargs:
            return real_popen(args, *rest, **kwargs)
        kwargs["process_group"] = 0
        # The parent-death signal fires when the *thread* that started the child ends: only ask for it
        # when the server is started from the main thread, which lives as long as the CLI.
        if (
            sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
            and isinstance(args, (list, tuple))
            and args
            and os.path.isabs(str(args[0]))
        ):
            args = [sys.executable, "-c", _GUARD, str(os.getpid()), *map(str, args)]
        return real_popen(args, *rest, **kwargs)

    return popen


class _SubprocessWithIsolatingPopen:
    """`subprocess` as seen by Prefect's server module while it starts uvicorn: only `Popen` differs."""

    def __init__(self, popen: Any) -> None:
        self.Popen = popen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


_isolated_class: type[Any] | None = None


def _isolated_server_class() -> type[Any]:
    global _isolated_class
    if _isolated_class is None:
        from prefect.server.api import server as server_mod

        class IsolatedServer(server_mod.SubprocessASGIServer):
            """Prefect's temporary API server, started in its own process group."""

            def _run_uvicorn_command(self):
                real = server_mod.subprocess
                server_mod.subprocess = _SubprocessWithIsolatingPopen(_isolating_popen(real.Popen))
                try:
                    return super()._run_uvicorn_command()
                finally:
                    server_mod.subprocess = real

        _isolated_class = IsolatedServer
    return _isolated_class


def isolate_temporary_server() -> bool:
    """Make Prefect's temporary API server (used when no PREFECT_API_URL is set) start in its own
    process group, stopped on the CLI's death on Linux. Returns whether it applies.

    A terminal's Ctrl-C goes to the whole foreground process group: the server would shut down at the
    same moment as the CLI, which then cannot report its runs Crashed or release its slots (the run
    stays Running). Apart from where it runs, the server is Prefect's own: same command, same `atexit`
    stop. Call before the first Prefect client is made; does nothing once a server exists.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return False
    try:
        cls = _isolated_server_class()
    except (ImportError, AttributeError):
        return False
    current = cls._instances.get(None)
    if current is None:
        cls()  # registered as the port-less instance that Prefect's `get_client` picks up
        return True
    return isinstance(current, cls)
