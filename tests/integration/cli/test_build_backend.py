"""`lvm build --encoder MODEL@BACKEND` as README and docs/scale.md write it: the int8 path end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lvm_core.contracts.layout import DatasetPaths
from lvm_core.data.embedding.pinned import pin_encoder
from tests.fixtures.builds import SMALL_BUILD_ARTICLES, SMALL_BUILD_THRESHOLDS

pytestmark = pytest.mark.slow


def test_cli_builds_the_sample_with_the_int8_backend(tmp_path: Path, prefect_harness):
    from flows.cli import app

    thresholds = [arg for k, v in SMALL_BUILD_THRESHOLDS.items() for arg in ("--threshold", f"{k}={v}")]
    args = ["build", "--source", "sample", "--data-dir", str(tmp_path / "data"), "--limit-articles", str(SMALL_BUILD_ARTICLES),
            "--encoder", "all-MiniLM-L6-v2@onnx-int8", *thresholds]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = next(p for p in (tmp_path / "data" / "datasets").iterdir() if p.name.endswith(f"-first{SMALL_BUILD_ARTICLES}"))
    manifest = json.loads(DatasetPaths(folder).manifest.read_text())
    int8 = pin_encoder("@onnx-int8").fingerprint
    assert (manifest["encoder"]["fingerprint"], manifest["encoder"]["dim"]) == (int8.id, 384)
    agreement = manifest["embedding"]["agreement"]
    assert agreement["candidate"] == int8.id and agreement["mean_cosine"] >= 0.99
    assert manifest["gates_passed"] is True
