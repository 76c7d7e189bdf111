"""`lvm serve`: the inference service (FastAPI + uvicorn) for a registered model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import call, err
from flows.cli.options import DataDirOpt, data_dir_of


def serve(
    model: Annotated[str, typer.Option(help="Model to serve: models:/<name>@<alias> (followed), models:/<name>/<version> or a folder")] = "models:/lvm-amn@champion",
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    refresh: Annotated[float, typer.Option(help="Seconds between re-reads of the alias (a moved alias is loaded and swapped in)")] = 10.0,
    max_batch: Annotated[int, typer.Option(help="Most contexts per request")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MB")] = 8.0,
    record_contexts: Annotated[Path | None, typer.Option("--record-contexts", envvar="LVM_SERVED_CONTEXTS", help="Keep the last received contexts and their client sessions in this .npy (rewritten every 30 s; a path without .npy is a folder shared by replicas, one file each) for `lvm monitor-drift` and the drift-monitor deployment [default: none kept]")] = None,
    contexts_window: Annotated[int, typer.Option(min=1, help="Contexts kept in the --record-contexts window")] = 5000,
    shutdown_drain: Annotated[float, typer.Option(min=1, help="Seconds requests in flight get to finish after SIGTERM/SIGINT before they are cut")] = 20.0,
    torch_threads: Annotated[int, typer.Option(min=0, help="Torch threads per prediction (0: torch's default, one per core)")] = 1,
    access_log: Annotated[bool, typer.Option(help="One JSON line per request on stdout (request id, status, latency, version)")] = True,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve predictions over HTTP (FastAPI + uvicorn); set LVM_SERVE_TOKEN to require a bearer token on /v1/*.
    API docs at /docs (schema at /openapi.json)."""
    import os

    from lvm_core.contracts.layout import default_tracking_uri
    from lvm_core.serving.app import create_app
    from lvm_core.serving.holder import ModelHolder
    from lvm_core.serving.server import run
    from lvm_core.serving.settings import TOKEN_ENV, ServeSettings
    from lvm_core.tracking.auth import is_production, load_secret_files, require_registry_account, require_secret

    # Secrets from the environment or <NAME>_FILE; in production no token or no registry account is no start.
    call(load_secret_files)
    if is_production():
        call(lambda: require_secret(TOKEN_ENV, "the service"))
        call(lambda: require_registry_account(default_tracking_uri(Path(data_dir_of(data_dir)))))
    holder = ModelHolder(model, Path(data_dir_of(data_dir)), refresh_s=refresh)
    served = call(holder.load)
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(TOKEN_ENV):
        err.print(f"[bold yellow]warning:[/] listening on {host} without {TOKEN_ENV}: anyone who reaches it can use it",
                  highlight=False, soft_wrap=True)
    settings = ServeSettings(max_batch=max_batch, max_body_bytes=int(max_body_mb * 1024 * 1024),
                             contexts_path=record_contexts, contexts_window=contexts_window,
                             shutdown_drain_s=shutdown_drain, access_log=access_log,
                             torch_threads=torch_threads)
    app_ = create_app(model, holder=holder, settings=settings, refresh_s=refresh)
    err.print(f"serving {served.model.describe()} on http://{host}:{port}", highlight=False, soft_wrap=True)
    run(app_, host=host, port=port)
