"""Exclusive slots in one process: a stuck slot is reclaimed, a raising block releases its slot, a limit created
by a racing waiter is no error, a bad timeout setting is refused."""

from __future__ import annotations

import pytest

from tests.fixtures.slots import active_slots


def test_stuck_slot_without_a_holder_record_is_reclaimed_after_the_stale_limit(prefect_harness, monkeypatch):
    """A slot left held by an older version (no holder record) does not block forever."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.infra import slots

    monkeypatch.setattr(slots, "STALE_AFTER_S", 1.0)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name("slot-legacy", 1)
        client.update_global_concurrency_limit("slot-legacy", GlobalConcurrencyLimitUpdate(active_slots=1))
    with slots.exclusive("slot-legacy", timeout_seconds=30, poll_seconds=0.2):
        assert active_slots("slot-legacy") == 1
    assert active_slots("slot-legacy") == 0


def test_slot_is_released_when_the_block_raises(prefect_harness):
    from flows.infra.slots import exclusive

    with pytest.raises(RuntimeError), exclusive("slot-raises", timeout_seconds=10):
        raise RuntimeError("boom")
    assert active_slots("slot-raises") == 0


def test_bad_timeout_setting_is_a_clear_error(monkeypatch):
    from flows.infra import slots

    monkeypatch.setenv(slots.SLOT_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="LVM_SLOT_TIMEOUT"):
        slots.slot_timeout_s()


def test_a_limit_created_by_a_racing_waiter_is_not_an_error(prefect_harness, monkeypatch):
    """Prefect's upsert reads, then creates: a waiter that read 'no limit' just before another waiter created
    it gets ObjectAlreadyExists from the create. Here the read is made to miss once, as in that race."""
    from prefect.client.orchestration import SyncPrefectClient, get_client
    from prefect.exceptions import ObjectNotFound

    from flows.infra.slots import exclusive

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name("slot-upsert-race", 1)
    real_read = SyncPrefectClient.read_global_concurrency_limit_by_name
    missed: list[str] = []

    def read_missing_once(self, name):
        if name == "slot-upsert-race" and not missed:
            missed.append(name)
            raise ObjectNotFound(http_exc=Exception("raced"))
        return real_read(self, name)

    monkeypatch.setattr(SyncPrefectClient, "read_global_concurrency_limit_by_name", read_missing_once)
    entered = []
    with exclusive("slot-upsert-race", timeout_seconds=30, poll_seconds=0.05):
        entered.append(True)
    assert missed and entered
    assert active_slots("slot-upsert-race") == 0
