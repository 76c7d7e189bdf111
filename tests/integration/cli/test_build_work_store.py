"""`lvm build --work-url` with a URL the build cannot use: one line, exit 1, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner


@pytest.mark.parametrize("url", ["nosuchprotocol://bucket/lvm", "file:///proc/lvm-store"])
def test_a_bad_work_url_stops_the_build_before_any_work(tmp_path: Path, prefect_harness, url: str):
    from flows.cli import app

    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["build", "--source", "sample", "--data-dir", str(data), "--work-url", url])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]  # the CLI's own line
    assert len(errors) == 1 and f"work store {url!r}" in errors[0], result.output
    assert not (data / "work").exists() and not (data / "datasets").exists()
