"""Exclusive concurrency slots that a dead holder cannot keep.

A slot is a Prefect global concurrency limit of size 1, taken with a Prefect lease that a background
thread renews. On a Prefect server whose lease storage survives restarts, the server's repossessor frees
the slot of a holder that stopped renewing. The temporary local API that `lvm` starts without a server
dies with the process that held the slot, lease and all, so each holder also leaves a record beside the
slot (a Prefect variable: flow run, host, pid, heartbeat). A waiter reclaims the slot when that holder is
provably gone — its flow run ended, its pid is dead on this host, or its heartbeat is stale — and says
every 30 s whom it waits for; it gives up with `SlotTimeoutError` after the configured timeout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError

from lvm_core.contracts.errors import LvmError
from lvm_core.runtime.liveness import Owner
from tasks.common import artifact_key

SLOT_TIMEOUT_ENV = "LVM_SLOT_TIMEOUT"  # seconds a build waits for its slot before it gives up
DEFAULT_TIMEOUT_S = 6 * 3600.0
HEARTBEAT_S = 15.0  # renew the lease and the holder record this often
LEASE_S = 60.0  # Prefect's shortest lease; the repossessor frees the slot this long after the last renewal
STALE_AFTER_S = 120.0  # a holder on another host with no heartbeat for this long is gone
WAIT_LOG_S = 30.0
RECORD_SETTLE_S = 1.0  # a waiter writes its holder record this soon after taking a slot
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})  # a flow run in one has no live process


class SlotTimeoutError(LvmError, TimeoutError):
    """The slot stayed held by a live holder for longer than the timeout."""


def slot_timeout_s() -> float:
    value = os.environ.get(SLOT_TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{SLOT_TIMEOUT_ENV}={value!r}: expected seconds") from None


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (lines show in the Prefect UI), else Prefect's `prefect.lvm.slots`."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("lvm.slots")


def _record_name(slot: str) -> str:
    return f"lvm-slot-holder-{slot}"[:255]


def _this_flow_run() -> tuple[str | None, str]:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None, f"process {os.getpid()}"
    return str(ctx.flow_run.id), f"flow run {ctx.flow_run.name!r}"


class _Holder:
    """This process's hold on a slot: the lease, the record and the thread that keeps both fresh."""

    def __init__(self, slot: str, lease_id: UUID, owner: Owner, flow_run_id: str | None):
        self.slot, self.lease_id, self.owner, self.flow_run_id = slot, lease_id, owner, flow_run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"slot-{slot}", daemon=True)

    def record(self) -> dict[str, Any]:
        return {**self.owner.to_dict(), "lease_id": str(self.lease_id), "flow_run_id": self.flow_run_id}

    def start(self) -> None:
        self._thread.start()

    def _renew(self) -> None:
        with get_client(sync_client=True) as client:
            while not self._stop.wait(HEARTBEAT_S):
                self.owner = self.owner.beat()
                try:
                    client.renew_concurrency_lease(self.lease_id, LEASE_S)
                    _write_record(client, self.slot, self.record())
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried; the waiter allows for it
                    _logger().warning("slot %s: heartbeat failed: %s", self.slot, exc)

    def release(self, client: SyncPrefectClient) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            client.release_concurrency_slots_with_lease(self.lease_id)
        with contextlib.suppress(Exception):
            client.delete_variable_by_name(_record_name(self.slot))


def _write_record(client: SyncPrefectClient, slot: str, record: dict[str, Any]) -> None:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    name = _record_name(slot)
    try:
        client.update_variable(VariableUpdate(name=name, value=record))
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
        try:
            client.create_variable(VariableCreate(name=name, value=record))
        except ObjectAlreadyExists:  # created by a racing writer between our two calls
            client.update_variable(VariableUpdate(name=name, value=record))


def _ensure_limit(client: SyncPrefectClient, name: str) -> None:
    """A one-slot concurrency limit named `name`, created if missing.

    Prefect's upsert reads then creates (not atomically), so two waiters starting together can both see
    no limit and one of them gets ObjectAlreadyExists: the limit exists, which is all that was asked.
    """
    try:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    except ObjectAlreadyExists:
        pass


def _read_record(client: SyncPrefectClient, slot: str) -> dict[str, Any] | None:
    variable = client.read_variable_by_name(_record_name(slot))
    return variable.value if variable is not None and isinstance(variable.value, dict) else None


def _try_take(client: SyncPrefectClient, slot: str) -> UUID | None:
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder

    flow_run_id, _ = _this_flow_run()
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(flow_run_id)) if flow_run_id else None
    try:
        response = client.increment_concurrency_slots_with_lease(
            names=[slot], slots=1, mode="concurrency", lease_duration=LEASE_S, holder=holder
        )
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code == 423:  # locked: every slot taken
            return None
        raise
    return UUID(response.json()["lease_id"])


def holder_gone(client: SyncPrefectClient, record: dict[str, Any]) -> str | None:
    """Why the recorded holder is provably gone, or None while it may still be working."""
    flow_run_id = record.get("flow_run_id")
    if flow_run_id:
        try:
            state = client.read_flow_run(UUID(flow_run_id)).state
        except ObjectNotFound:
            state = None
        if state is not None and state.type.value in TERMINAL_STATES:
            return f"its flow run {flow_run_id} is {state.name}"
    return Owner.from_dict(record).gone(STALE_AFTER_S)


def _reclaim_exclusively(client: SyncPrefectClient, slot: str, seen: dict[str, Any] | None, why: str) -> None:
    """Reclaim under a per-slot mutex, re-reading the holder inside it.

    Two waiters that find the same dead holder must not both free its slot: the second would free the one
    the first has just taken, and both would run. The mutex is itself a leased slot (it dies with a killed
    waiter); a waiter that does not get it, or that finds another holder recorded by then, only looks again.
    """
    mutex = f"{slot}-reclaim"
    _ensure_limit(client, mutex)
    lease = _try_take(client, mutex)
    if lease is None:
        return
    try:
        if _read_record(client, slot) == seen:
            _reclaim(client, slot, seen, why)
    finally:
        with contextlib.suppress(PrefectHTTPStatusError):
            client.release_concurrency_slots_with_lease(lease)


def _reclaim(client: SyncPrefectClient, slot: str, record: dict[str, Any] | None, why: str) -> None:
    """Free the slot of a holder that is gone: its lease if the server still knows it, else the count.

    Only a lease the server still knows is released, so the count is never lowered on top of a release
    (a waiter polling meanwhile may already have taken the freed slot). The count alone is lowered only
    for a lease that died with a temporary API server, after the holder record has stayed the same for a
    moment: a waiter that took a slot the server's repossessor freed writes its record within that moment.
    """
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    lease_id = UUID(record["lease_id"]) if record and record.get("lease_id") else None
    if lease_id is not None and _lease_known(client, lease_id):
        client.release_concurrency_slots_with_lease(lease_id)
    else:
        time.sleep(RECORD_SETTLE_S)
        if _read_record(client, slot) != record:
            return  # a live holder recorded itself meanwhile: the slot is its
        active = client.read_global_concurrency_limit_by_name(slot).active_slots
        if active > 0:
            client.update_global_concurrency_limit(slot, GlobalConcurrencyLimitUpdate(active_slots=active - 1))
    with contextlib.suppress(ObjectNotFound):
        client.delete_variable_by_name(_record_name(slot))
    if record and record.get("flow_run_id"):
        _mark_crashed(client, record["flow_run_id"], why)
    _logger().warning("slot %s: reclaimed from %s: %s", slot, _describe(record), why)


def _lease_known(client: SyncPrefectClient, lease_id: UUID) -> bool:
    """Whether the server still holds this lease (renewing is the API's only read of a lease; 410 = gone)."""
    try:
        client.renew_concurrency_lease(lease_id, LEASE_S)
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code in (404, 410):
            return False
        raise
    return True


def _mark_crashed(client: SyncPrefectClient, flow_run_id: str, why: str) -> None:
    """A flow run whose process died stays RUNNING in a local database: end it Crashed, visibly."""
    from prefect.states import Crashed

    with contextlib.suppress(Exception):
        run = client.read_flow_run(UUID(flow_run_id))
        if run.state is not None and run.state.type.value not in TERMINAL_STATES:
            client.set_flow_run_state(UUID(flow_run_id), Crashed(message=f"process gone: {why}"), force=True)


def _describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "an unrecorded holder"
    return Owner.from_dict(record).describe()


@contextlib.contextmanager
def exclusive(name: str, timeout_seconds: float | None = None, poll_seconds: float = 1.0) -> Iterator[None]:
    """Hold the global slot `name` (size 1) for the block; wait for it, reclaiming it from a dead holder.

    `timeout_seconds` defaults to $LVM_SLOT_TIMEOUT or 6 hours; then `SlotTimeoutError` names the holder.
    """
    slot = artifact_key(name)
    timeout = slot_timeout_s() if timeout_seconds is None else timeout_seconds
    flow_run_id, label = _this_flow_run()
    log = _logger()
    with get_client(sync_client=True) as client:
        _ensure_limit(client, slot)
        start = last_log = time.monotonic()
        unrecorded_since: float | None = None
        while (lease_id := _try_take(client, slot)) is None:
            record = _read_record(client, slot)
            if record is not None:
                unrecorded_since = None
                why = holder_gone(client, record)
            else:  # taken before this record existed, or its holder died between the two writes
                unrecorded_since = unrecorded_since or time.monotonic()
                waited = time.monotonic() - unrecorded_since
                why = f"no holder record for {waited:.0f} s" if waited > STALE_AFTER_S else None
            if why:
                _reclaim_exclusively(client, slot, record, why)
                continue
            waited = time.monotonic() - start
            if waited >= timeout:
                raise SlotTimeoutError(
                    f"slot {slot!r} still held by {_describe(record)} after {waited:.0f} s; "
                    f"raise {SLOT_TIMEOUT_ENV} to wait longer, or stop that run"
                )
            if time.monotonic() - last_log >= WAIT_LOG_S:
                log.info("waiting %.0f s for slot %s, held by %s", waited, slot, _describe(record))
                last_log = time.monotonic()
            time.sleep(poll_seconds)
        holder = _Holder(slot, lease_id, Owner.this_process(label), flow_run_id)
        _write_record(client, slot, holder.record())
        holder.start()
        try:
            yield
        finally:
            holder.release(client)
