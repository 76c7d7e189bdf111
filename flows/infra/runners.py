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
(its runs would be invisible and the flow could not follow them). That temporary API listens on this
machine's loopback only, so a cluster on another machine with no reachable API is refused at once
(`ClusterSetupError`) instead of its workers failing on a URL that is not theirs.

Embed shards can be held to the workers that declare Dask resources (`resources={"GPU": 1}`,
`--embed-resources`, `LVM_EMBED_RESOURCES="GPU=1"`; workers started with `dask worker --resources GPU=1`):
`embed_placement()` annotates the embed map; a cluster none of whose workers declares them is refused.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Self
from urllib.parse import urlparse

from prefect import tags
from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from lvm_core.contracts.errors import UserError
from tasks.common import HEAVY_CPU_TAG

ADDRESS_ENV = "LVM_DASK_ADDRESS"
WORKERS_ENV = "LVM_WORKERS"
RESOURCES_ENV = "LVM_EMBED_RESOURCES"
_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc)://[^\s/:]+(:\d{1,5})?$")


class ClusterSetupError(UserError, RuntimeError):
    """The Dask cluster cannot run the build as configured (no reachable Prefect API, no worker with the resources)."""


class SharedApiDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's runner, with the flow's temporary Prefect API URL passed to the workers, and the Dask
    resources the embed shards ask for (`embed_resources`)."""

    def __init__(self, *args: Any, embed_resources: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.embed_resources = embed_resources

    def duplicate(self) -> SharedApiDaskTaskRunner:
        """The flow run works on a copy of its runner: keep the resources on it."""
        copy = super().duplicate()
        copy.embed_resources = self.embed_resources
        return copy

    def __enter__(self) -> Self:
        if self.address:
            check_prefect_api_reachable(self.address)
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


def shard_task_runner(
    workers: int | None = None, address: str | None = None, resources: dict[str, float] | str | None = None
) -> TaskRunner[Any]:
    """The task runner for a build's shards; arguments left None fall back to LVM_WORKERS / LVM_DASK_ADDRESS /
    LVM_EMBED_RESOURCES.

    Raises ValueError (one line) for a bad worker count, address or resources, when both a count and an address
    are given, or resources without a Dask cluster; `ClusterSetupError` for a cluster on another machine with no
    Prefect API its workers can reach.
    """
    if address is None:
        address = os.environ.get(ADDRESS_ENV) or None
    embed_resources = parse_resources(os.environ.get(RESOURCES_ENV) if resources is None else resources)
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
        check_prefect_api_reachable(address.strip())
        return SharedApiDaskTaskRunner(address=address.strip(), embed_resources=embed_resources)
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: must be >= 1")
    if embed_resources:  # every worker of this machine shares its devices: there is nothing to route
        raise ValueError(f"embed resources {_show(embed_resources)}: need an existing Dask cluster (--dask-address)")
    if not workers:
        return in_process_runner()
    return SharedApiDaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"},
    )


def parse_resources(value: dict[str, float] | str | None) -> dict[str, float] | None:
    """Dask worker resources from "GPU=1,MEM=4e9" (or a dict); None when none are asked for."""
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()} or None
    if not value or not value.strip():
        return None
    out: dict[str, float] = {}
    for item in value.split(","):
        name, _, amount = (part.strip() for part in item.partition("="))
        try:
            out[name] = float(amount)
        except ValueError:
            out[name] = 0.0
        if not name or not out[name] > 0:
            raise ValueError(f"embed resources {value!r}: expected NAME=AMOUNT[,NAME=AMOUNT], e.g. GPU=1")
    return out


def _show(resources: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in resources.items())


def _is_this_machine(host: str) -> bool:
    """Whether a host name or address is this machine (loopback, its own name, one of its addresses)."""
    if host in ("", "localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        ip = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return False  # not even resolvable here: not this machine
    if ip.is_loopback:
        return True
    import psutil

    return any(a.address == str(ip) for addrs in psutil.net_if_addrs().values() for a in addrs)


def check_prefect_api_reachable(address: str) -> None:
    """Refuse a Dask cluster on another machine when the only Prefect API is one on this machine's loopback."""
    from prefect.settings import PREFECT_API_URL

    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if _is_this_machine(host):
        return
    url = PREFECT_API_URL.value()
    api_host = urlparse(str(url)).hostname if url else None
    if api_host and not _loopback(api_host):
        return
    what = (f"PREFECT_API_URL={url}, on this machine's loopback" if url
            else "no PREFECT_API_URL (only a temporary API on this machine's loopback)")
    raise ClusterSetupError(
        f"dask cluster {address} is on another machine, but there is {what}, which its workers cannot reach: "
        "run a Prefect server they can reach (prefect server start --host 0.0.0.0) and set PREFECT_API_URL to it, "
        "e.g. http://prefect-server:4200/api, here and on the workers"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def embed_placement() -> AbstractContextManager[Any]:
    """Around the embed map: on a Dask runner with embed resources, the shards go to the workers declaring them
    (a cluster where none does is refused at once: the shards would wait forever)."""
    runner = current_runner()
    resources = getattr(runner, "embed_resources", None)
    if not isinstance(runner, DaskTaskRunner) or not resources:
        return nullcontext()
    import dask

    workers = runner.client.scheduler_info(n_workers=-1).get("workers", {})
    if not any(all(w.get("resources", {}).get(k, 0) >= v for k, v in resources.items()) for w in workers.values()):
        raise ClusterSetupError(
            f"no worker of the Dask cluster ({len(workers)} worker(s)) declares the embed resources {_show(resources)}: "
            f"start GPU workers with `dask worker --resources {_show(resources)}`, or unset {RESOURCES_ENV}"
        )
    return dask.annotate(resources=resources)


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


def flow_runner() -> TaskRunner[Any]:
    """Where this flow's shards run: its Dask runner, or the one LVM_WORKERS / LVM_DASK_ADDRESS /
    LVM_EMBED_RESOURCES ask for (read again here, so a bad value stops the flow in one line)."""
    active = current_runner()
    return active if isinstance(active, DaskTaskRunner) else shard_task_runner()


def current_runner() -> TaskRunner[Any] | None:
    """The task runner of the flow run in progress, if any."""
    ctx = FlowRunContext.get()
    return ctx.task_runner if ctx is not None else None


def heavy_cpu_tag() -> AbstractContextManager[Any]:
    """Encoding in this process shares the CPU with training: tag it for the server's concurrency limit.
    On Dask the cluster's size bounds it, and a limit of one would undo the parallelism."""
    return nullcontext() if isinstance(current_runner(), DaskTaskRunner) else tags(HEAVY_CPU_TAG)
