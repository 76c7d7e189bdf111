"""The project's error hierarchy: every error says whether retrying can help and whether the CLI shows it as one line.

`permanent`: the same call fails the same way next time, so a task never retries it (`tasks.common.is_transient`).
`user_facing`: bad input, a missing or unfinished artifact, a failed gate, something the user fixes; `lvm` prints
its message as one line and exits 1 (`flows.cli.common.call`), any other error keeps its traceback.

Each error class lives beside the code that raises it and derives from `LvmError` (or `UserError`), keeping the
stdlib base its callers catch (`ValueError`, `LookupError`, `RuntimeError`...). An instance may override the class's
answer (`SnapshotSourceError` sets `permanent` from whether the remote source may answer later).
"""

from __future__ import annotations


class LvmError(Exception):
    """Root of the project's errors; by default an unexpected failure: retried, shown with its traceback."""

    permanent: bool = False
    user_facing: bool = False


class UserError(LvmError):
    """Something the user must fix (bad input, a missing or unfinished artifact, a failed gate): never retried,
    one line at the CLI."""

    permanent = True
    user_facing = True


class DataContractError(UserError, ValueError):
    """A file does not match its contract (missing columns, wrong dtype, misaligned rows)."""


class RegistryError(UserError, RuntimeError):
    """A tracking or registry operation could not be done as asked."""


class ModelNotFoundError(RegistryError, LookupError):
    """A registered model, version, alias or model folder does not exist."""
