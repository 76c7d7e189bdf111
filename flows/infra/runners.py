"""Where the shard tasks of a build run, chosen at run time.

- default: in the flow's own process, one shard after another (no extra services, as before);
- `workers=N` (`--workers`, `LVM_WORKERS`): a temporary local Dask cluster of N single-threaded worker
  processes, gone when the flow ends;
- `address="tcp://HOST:8786"` (`--dask-address`, `LVM_DASK_ADDRESS`): an existing Dask cluster
  (compose's `dask-scheduler` + `dask-worker` services). Its workers must see the data folder at the
  same path and have PREFECT_API_URL set to the flow's Prefect API (task runs carry the URL with them,
  but the thread that ships a worker's logs reads the environment).

Shard task runs report to the flow's Prefect API wherever they run: without a configured
PREFECT_API_URL the flow's temporary API is handed to the workers, so a worker never starts one of its own
(its runs would be invisible and the flow could not follow them).
"""

from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Self

from prefect import tags
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from tasks.common import HEAVY_CPU_TAG

ADDRESS_ENV = "LVM_DASK_ADDRESS"
WORKERS_ENV = "LVM_WORKERS"
_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc)://[^\s/:]+(:\d{1,5})?$")


class SharedApiDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's runner, with the flow's temporary Prefect API URL passed to the workers."""

    def __enter__(self) -> Self:
        super().__enter__()
        from prefect.settings import PREFECT_API_URL, temporary_settings

        url = PREFECT_API_URL.value()
        if not url:
            # The flow already talks to Prefect's temporary server (a per-process singleton); naming it in
            # the settings makes the serialized task context carry its URL to every worker.
            from prefect.server.api.server import SubprocessASGIServer

            server = SubprocessASGIServer()
            server.start()
            url = server.api_url
            self._exit_stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        if not self.address:
            # A task's logs are sent by a thread of the worker that sees only the process environment, so a
            # local cluster's workers (and those its nannies restart) get the URL there too.
            env = dict(self.cluster_kwargs.get("env") or {})
            env.setdefault("PREFECT_API_URL", str(url))
            self.cluster_kwargs = {**self.cluster_kwargs, "env": env}
        return self


def shard_task_runner(workers: int | None = None, address: str | None = None) -> TaskRunner[Any]:
    """The task runner for a build's shards; arguments left None fall back to LVM_WORKERS / LVM_DASK_ADDRESS.

    Raises ValueError (one line) for a bad worker count or address, or when both are given.
    """
    if address is None:
        address = os.environ.get(ADDRESS_ENV) or None
    if workers is None and os.environ.get(WORKERS_ENV):
        raw = os.environ[WORKERS_ENV]
        try:
            workers = int(raw)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV}={raw!r}: expected a number of workers") from None
    if address and workers:
        raise ValueError(f"--workers {workers} and --dask-address {address}: give one (a local cluster or an existing one)")
    if address:
        if not _ADDRESS.match(address.strip()):
            raise ValueError(f"dask address {address!r}: expected tcp://HOST:PORT, e.g. tcp://dask-scheduler:8786")
        return SharedApiDaskTaskRunner(address=address.strip())
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: must be >= 1")
    if not workers:
        return in_process_runner()
    return SharedApiDaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"},
    )


class InProcessTaskRunner(ThreadPoolTaskRunner):
    """Prefect's thread-pool runner with one worker that does not wait for a running shard when the flow stops
    on an exception (a stop signal, a failed step): the shard in the worker thread may take hours, and the
    stopping flow would otherwise hang in the runner's exit until it is done."""

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        executor = getattr(self, "_executor", None)
        if exc_type is not None and executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


def in_process_runner() -> TaskRunner[Any]:
    """Shards one after another in the flow's process: CPU-bound steps gain nothing from threads."""
    return InProcessTaskRunner(max_workers=1)


def describe(runner: TaskRunner[Any]) -> str:
    """One line for the log: where the shards run."""
    if isinstance(runner, DaskTaskRunner):
        if runner.address:
            return f"Dask cluster at {runner.address}"
        return f"temporary local Dask cluster of {runner.cluster_kwargs.get('n_workers')} worker process(es)"
    return "this process, one shard at a time"


def default_runner() -> TaskRunner[Any]:
    """LVM_WORKERS / LVM_DASK_ADDRESS for deployments; a bad value is reported when the flow starts."""
    try:
        return shard_task_runner()
    except ValueError:
        return in_process_runner()


def current_runner() -> TaskRunner[Any] | None:
    """The task runner of the flow run in progress, if any."""
    ctx = FlowRunContext.get()
    return ctx.task_runner if ctx is not None else None


def heavy_cpu_tag() -> AbstractContextManager[Any]:
    """Encoding in this process shares the CPU with training: tag it for the server's concurrency limit.
    On Dask the cluster's size bounds it, and a limit of one would undo the parallelism."""
    return nullcontext() if isinstance(current_runner(), DaskTaskRunner) else tags(HEAVY_CPU_TAG)
