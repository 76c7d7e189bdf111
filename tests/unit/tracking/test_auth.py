"""Registry accounts: secrets from the environment or files, production refuses to start without them, and no
message ever carries a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lvm_core.tracking.auth import (
    ROLES,
    CredentialsError,
    load_secret_files,
    provision,
    read_secret,
    require_registry_account,
    require_secret,
)

SECRET = "s3cret-value-never-shown"


def test_secret_from_environment_wins_over_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    assert read_secret("X", {"X": "from-env", "X_FILE": str(f)}) == "from-env"
    assert read_secret("X", {"X_FILE": str(f)}) == "from-file"  # trailing newline of `echo` dropped
    assert read_secret("X", {}) is None


def test_unreadable_or_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="X_FILE=.*cannot read"):
        read_secret("X", {"X_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CredentialsError, match="is empty"):
        read_secret("X", {"X_FILE": str(tmp_path / "empty")})


def test_secret_files_land_where_mlflow_and_the_service_read_them(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET)
    (tmp_path / "tok").write_text("token-1")
    env = {"MLFLOW_TRACKING_PASSWORD_FILE": str(tmp_path / "pw"), "LVM_SERVE_TOKEN_FILE": str(tmp_path / "tok")}
    load_secret_files(env)
    assert env["MLFLOW_TRACKING_PASSWORD"] == SECRET and env["LVM_SERVE_TOKEN"] == "token-1"


def test_production_refuses_a_remote_registry_without_an_account() -> None:
    uri = "http://127.0.0.1:5000"
    with pytest.raises(CredentialsError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"):
        require_registry_account(uri, {"LVM_PRODUCTION": "1"})
    with pytest.raises(CredentialsError, match="MLFLOW_TRACKING_PASSWORD"):
        require_registry_account(uri, {"LVM_PRODUCTION": "1", "MLFLOW_TRACKING_USERNAME": "lvm-service"})
    require_registry_account(uri, {"LVM_PRODUCTION": "1", "MLFLOW_TRACKING_USERNAME": "u",
                                   "MLFLOW_TRACKING_PASSWORD": SECRET})
    # Outside production, or on a local store, nothing is required (the embedded default stays open).
    require_registry_account(uri, {})
    require_registry_account("sqlite:///x/mlflow.db", {"LVM_PRODUCTION": "1"})


def test_missing_secret_names_the_variable_not_a_value() -> None:
    with pytest.raises(CredentialsError) as exc:
        require_secret("LVM_SERVE_TOKEN", "the service", {"OTHER": SECRET})
    assert "LVM_SERVE_TOKEN (or LVM_SERVE_TOKEN_FILE)" in str(exc.value) and SECRET not in str(exc.value)


def test_roles_separate_the_service_from_every_write() -> None:
    service = dict(((t, p), perm) for t, p, perm in ROLES["service"].grants)
    assert set(service.values()) == {"READ"}
    assert dict(((t, p), perm) for t, p, perm in ROLES["operator"].grants)[("registered_model", "*")] == "MANAGE"
    assert len({r.username for r in ROLES.values()}) == len(ROLES)


def test_provision_refuses_short_or_missing_passwords() -> None:
    with pytest.raises(CredentialsError, match="exactly the roles"):
        provision("http://127.0.0.1:1", ("admin", "x" * 12), {"pipeline": "p" * 12})
    with pytest.raises(CredentialsError, match="shorter than 12"):
        provision("http://127.0.0.1:1", ("admin", "x" * 12), {r: "short" for r in ROLES})


def test_serve_in_production_refuses_to_start_without_a_token(tmp_path: Path, monkeypatch) -> None:
    from flows.cli import app

    monkeypatch.setenv("LVM_PRODUCTION", "1")
    monkeypatch.delenv("LVM_SERVE_TOKEN", raising=False)
    monkeypatch.delenv("LVM_SERVE_TOKEN_FILE", raising=False)
    res = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "LVM_SERVE_TOKEN" in res.output
