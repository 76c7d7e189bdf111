"""`lvm`: build datasets, train, evaluate, promote and run the whole pipeline from a terminal.

Every command runs the same Prefect flow a deployment runs, so runs show up in the Prefect UI.
Errors a user can fix print one line and exit 1; nothing half-written is published.
SIGINT (Ctrl-C) and SIGTERM stop a command cleanly: the flow run ends Crashed, its slots are released,
the temporary Prefect API server stops, one line is printed and the exit code is 130 / 143
(flows/infra/signals.py); a second signal forces the exit.

The app and its error handling live in `common`, shared options in `options`, printed tables in `tables`;
each other module holds one group of commands. They are registered here, in the order `lvm --help` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows.cli import build, datasets, drift, evaluate, gc, pipeline, registry, rollout, serve, train, watch
from flows.cli.common import app

COMMANDS: list[tuple[str, Callable[..., Any]]] = [
    ("build", build.build),
    ("sequences", build.sequences),
    ("train", train.train),
    ("compare", train.compare),
    ("evaluate", evaluate.evaluate),
    ("promote", registry.promote),
    ("rollback", registry.rollback),
    ("models", registry.models),
    ("run", pipeline.run),
    ("drift", drift.drift),
    ("monitor-drift", drift.monitor_drift_command),
    ("watch", watch.watch),
    ("check", datasets.check),
    ("datasets", datasets.datasets),
    ("gc", gc.gc),
    ("serve", serve.serve),
]
for _name, _command in COMMANDS:
    app.command(_name)(_command)
app.add_typer(rollout.rollout_app, name="rollout")


def main() -> None:  # pragma: no cover - console entry
    app()


__all__ = ["COMMANDS", "app", "main"]
