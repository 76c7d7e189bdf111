"""Create the registry's roles and accounts (lvm_core/tracking/auth.py) on the stack's MLflow: setup's first step.

Passwords come from files (the stack's secrets), never from the command line, and are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lvm_core.contracts.errors import UserError
from lvm_core.tracking.auth import ROLES, provision


def _read(path: Path) -> str:
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.stack.registry", description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--admin-user", required=True)
    parser.add_argument("--admin-password-file", type=Path, required=True)
    for role in ROLES:
        parser.add_argument(f"--{role}-password-file", type=Path, required=True)
    args = parser.parse_args(argv)
    if not args.tracking_uri:
        parser.error("no --tracking-uri and no MLFLOW_TRACKING_URI")
    try:
        passwords = {role: _read(getattr(args, f"{role}_password_file")) for role in ROLES}
        for line in provision(args.tracking_uri, (args.admin_user, _read(args.admin_password_file)), passwords):
            print(line)
    except UserError as exc:
        print(f"registry accounts: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
