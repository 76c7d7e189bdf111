"""Fixtures of the system tests: a real Prefect server (shared by the session), the same server with the
project's deployments and a worker, and the sample as a multistream dump for the sharded builds. The
session-wide ones (isolation, the temporary API, the small dataset, the webhook receiver) come from
tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.prefect_server import deployed_server, prefect_server  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    """The sample as a multistream dump of 40-page streams: many source shards for the sharded builds."""
    from bench.make_scaled_dump import make_scaled_dump

    out, _ = make_scaled_dump(tmp_path_factory.mktemp("dump"), 1, pages_per_stream=40)
    return out
