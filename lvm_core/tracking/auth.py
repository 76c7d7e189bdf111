"""Registry accounts: who may write what in an authenticated MLflow, and where each process finds its secret.

Registered-model tags and aliases route production traffic (champion, rollout shares), so a production
registry (`mlflow server --app-name basic-auth`, deployments/stack.sh) has no anonymous access
(`default_permission = NO_PERMISSIONS`) and three roles, each granted on every experiment and registered model:

- pipeline (`lvm-pipeline`): writes runs, registers versions and their gate-outcome tags (EDIT);
- service  (`lvm-service`):  reads runs, models and artifacts (READ): it can never write a tag or an alias;
- operator (`lvm-operator`): promotes, rolls back and rolls out: aliases, tags and the rollout's lock model
  (MANAGE).

MLflow grants per resource, not per API call: EDIT on a registered model covers its versions, tags and aliases
alike, so the pipeline role can also move `challenger` (which registration sets) and `champion` (which the
pipeline's `promote=True` moves when every gate passes). Run the production pipeline with `promote=False` to
leave promotion to operators.

Secrets come from the environment or from a file named by `<NAME>_FILE` (a mounted secret); never from a
default. With `LVM_PRODUCTION=1` a process that talks to a remote registry refuses to start without an
account. Error messages name variables and files, never their contents.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from lvm_core.contracts.errors import UserError

USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
PRODUCTION_ENV = "LVM_PRODUCTION"
# Secrets a process may be given as `<NAME>_FILE`: its registry password and the service's bearer token.
SECRET_ENVS = (PASSWORD_ENV, "LVM_SERVE_TOKEN")
MIN_PASSWORD_CHARS = 12  # MLflow's basic-auth app refuses shorter passwords


class CredentialsError(UserError):
    """A secret is missing or unreadable where one is required."""


@dataclasses.dataclass(frozen=True)
class Role:
    """A registry role: its account and the (resource type, pattern, permission) grants MLflow enforces."""

    name: str
    username: str
    grants: tuple[tuple[str, str, str], ...]
    purpose: str


ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        Role("pipeline", "lvm-pipeline", (("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")),
             "write runs and model versions"),
        Role("service", "lvm-service", (("experiment", "*", "READ"), ("registered_model", "*", "READ")),
             "read models; never write tags or aliases"),
        Role("operator", "lvm-operator", (("experiment", "*", "EDIT"), ("registered_model", "*", "MANAGE")),
             "promote, roll back, roll out"),
    )
}


def is_production(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(PRODUCTION_ENV, "").strip().lower() in {"1", "true", "yes"}


def read_secret(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """`name` from the environment, else the content of the file `<name>_FILE` names (trailing newline dropped)."""
    env = os.environ if env is None else env
    if env.get(name):
        return env[name]
    path = env.get(f"{name}_FILE")
    if not path:
        return None
    try:
        value = Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise CredentialsError(f"{name}_FILE={path}: cannot read it ({exc.strerror})") from None
    if not value:
        raise CredentialsError(f"{name}_FILE={path} is empty")
    return value


def load_secret_files(env: MutableMapping[str, str] | None = None) -> None:
    """Put each `<NAME>_FILE` secret into `NAME`, where MLflow's client and the service look for it."""
    env = os.environ if env is None else env
    for name in SECRET_ENVS:
        if not env.get(name) and env.get(f"{name}_FILE"):
            value = read_secret(name, env)
            if value is not None:
                env[name] = value


def _is_remote(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in {"http", "https"}


def require_registry_account(tracking_uri: str, env: Mapping[str, str] | None = None) -> None:
    """In production, refuse a remote registry without an account (MLflow would go on anonymously)."""
    env = os.environ if env is None else env
    if not is_production(env) or not _is_remote(tracking_uri):
        return
    missing = [name for name in (USERNAME_ENV, PASSWORD_ENV) if not read_secret(name, env)]
    if missing:
        raise CredentialsError(
            f"{PRODUCTION_ENV} is set and the registry {tracking_uri} needs an account: set "
            + " and ".join(f"{m} (or {m}_FILE)" if m == PASSWORD_ENV else m for m in missing)
        )


def require_secret(name: str, purpose: str, env: Mapping[str, str] | None = None) -> str:
    """A secret production cannot run without (no default): its value, or a CredentialsError naming it."""
    value = read_secret(name, env)
    if not value:
        raise CredentialsError(f"{PRODUCTION_ENV} is set: {purpose} needs {name} (or {name}_FILE)")
    return value


# MLflow 3.17's account REST API (mlflow.server.auth.routes): called with httpx, because importing MLflow's own
# client pulls in the whole server package (~10 s).
_USERS, _ROLES = "/api/2.0/mlflow/users", "/api/3.0/mlflow/roles"


def provision(tracking_uri: str, admin: tuple[str, str], passwords: Mapping[str, str]) -> list[str]:
    """Create (or bring up to date) the roles of ROLES and one account per role; returns what was done.

    `admin` is the server's bootstrap admin account; `passwords` maps role name to its account's password.
    Idempotent: existing roles keep their id, missing grants are added, existing accounts get the given
    password, so rotating a password is running this again.
    """
    import httpx

    unknown = set(passwords) - set(ROLES)
    if unknown or set(ROLES) - set(passwords):
        raise CredentialsError(f"passwords needed for exactly the roles {sorted(ROLES)}, got {sorted(passwords)}")
    short = [role for role, pw in passwords.items() if len(pw) < MIN_PASSWORD_CHARS]
    if short:
        raise CredentialsError(f"the passwords of {short} are shorter than {MIN_PASSWORD_CHARS} characters")
    done: list[str] = []
    with httpx.Client(base_url=tracking_uri.rstrip("/"), auth=admin, timeout=60) as http:

        def call(method: str, path: str, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
            resp = http.request(method, path, **kwargs)
            if resp.status_code not in ok:
                # The body is MLflow's error message; requests never echo a password back.
                raise CredentialsError(f"{method} {path}: HTTP {resp.status_code} {resp.text[:200]}")
            return resp.json() if resp.content and resp.status_code == 200 else None

        roles = {r["name"]: r for r in call("GET", f"{_ROLES}/list", params={"workspace": "default"})["roles"]}
        for spec in ROLES.values():
            role = roles.get(spec.username) or call(
                "POST", f"{_ROLES}/create", json={"workspace": "default", "name": spec.username,
                                                  "description": spec.purpose})["role"]
            have = {(p["resource_type"], p["resource_pattern"]): p for p in call(
                "GET", f"{_ROLES}/permissions/list", params={"role_id": str(role["id"])})["role_permissions"]}
            for rtype, pattern, permission in spec.grants:
                grant = have.get((rtype, pattern))
                if grant is None:
                    call("POST", f"{_ROLES}/permissions/add", json={
                        "role_id": role["id"], "resource_type": rtype, "resource_pattern": pattern,
                        "permission": permission})
                elif grant["permission"] != permission:
                    call("PATCH", f"{_ROLES}/permissions/update",
                         json={"role_permission_id": grant["id"], "permission": permission})
            password = passwords[spec.name]
            if call("GET", f"{_USERS}/get", ok=(200, 404), params={"username": spec.username}) is None:
                call("POST", f"{_USERS}/create", json={"username": spec.username, "password": password})
                done.append(f"account {spec.username}: created")
            else:
                call("PATCH", f"{_USERS}/update-password", json={"username": spec.username, "password": password})
                done.append(f"account {spec.username}: password set")
            mine = call("GET", "/api/3.0/mlflow/users/roles/list", params={"username": spec.username})["roles"]
            if spec.username not in {r["name"] for r in mine}:
                call("POST", f"{_ROLES}/assign", json={"username": spec.username, "role_id": role["id"]})
            done.append(f"role {spec.username}: {', '.join('/'.join(g) for g in spec.grants)}")
    return done
