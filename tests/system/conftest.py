"""Fixtures of the system tests: a real Prefect server (shared by the session), and the same server with the
project's deployments and a worker. The session-wide ones (isolation, the temporary API, the small dataset,
the webhook receiver) come from tests/conftest.py."""

from __future__ import annotations

from tests.fixtures.prefect_server import deployed_server, prefect_server  # noqa: F401 (fixtures)
