"""Shared fixtures: an isolated Prefect/MLflow environment and one small real dataset per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Isolate every run before prefect/mlflow are imported anywhere.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="lvm-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["LVM_NO_PROGRESS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

# Small builds: parity statistics on 1-2 held-out articles are meaningless, so only that gate is relaxed.
SMALL_BUILD_THRESHOLDS = {"max_split_ks": 1.0, "max_split_mean_diff": 1.0}
SMALL_BUILD_ARTICLES = 14


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for the in-process flow runs of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def session_data_dir() -> Path:
    d = _SESSION_HOME / "data"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def small_dataset(prefect_harness, session_data_dir) -> Path:
    """A real dataset built by the build flow from the first articles of the embedded sample."""
    from flows.build_dataset import build_dataset
    from lvm_core.config import BuildOptions

    path = build_dataset(
        source="sample",
        data_dir=str(session_data_dir),
        limit_articles=SMALL_BUILD_ARTICLES,
        options=BuildOptions(thresholds=SMALL_BUILD_THRESHOLDS),
    )
    return Path(path)
