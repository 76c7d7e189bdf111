"""The shard task runner: a bad choice of workers or scheduler address is one line."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_bad_runner_choice_is_one_line(monkeypatch):
    from flows.infra.runners import shard_task_runner

    with pytest.raises(ValueError, match="give one"):
        shard_task_runner(workers=2, address="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="expected tcp://HOST:PORT"):
        shard_task_runner(address="127.0.0.1 8786")
    monkeypatch.setenv("LVM_WORKERS", "two")
    with pytest.raises(ValueError, match="LVM_WORKERS"):
        shard_task_runner()
