"""`lvm serve` refuses a model the registry does not hold, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_cli_serve_refuses_an_unknown_model_in_one_line(session_data_dir: Path):
    from typer.testing import CliRunner

    from flows.cli import app

    res = CliRunner().invoke(app, ["serve", "--model", "models:/no-such-model@champion",
                                   "--data-dir", str(session_data_dir)])
    assert res.exit_code == 1
    assert "no registered model named 'no-such-model'" in res.output
