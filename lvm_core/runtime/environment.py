"""The process environment of the platform: the defaults every lvm process applies before prefect is
imported, and the variables its Prefect side reads (flow-run heartbeats, the alert receiver).

Names and values only (`os`, no Prefect import): `tasks/__init__.py` applies the defaults, so they hold in
the CLI, a deployment's flow run and a Dask worker that only unpickles a task; the flows and
`deployments/setup.py` read the variable names from here.
"""

from __future__ import annotations

import os

# Flow runs send a heartbeat this often (Prefect's minimum; its default is 180 s), so a server's zombie
# automation (deployments/setup.py) ends the runs of a dead process Crashed, and never those of a live one.
# prefect.yaml, deployments/start_local.sh and docker/compose.yaml set the same value for their workers.
FLOW_RUN_HEARTBEAT_S = 30
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
# Where failure, drift and rollback alerts go (a PagerDuty Events API v2 compatible receiver) and its key.
ALERT_URL_ENV = "LVM_ALERT_WEBHOOK_URL"
ROUTING_KEY_ENV = "LVM_ALERT_ROUTING_KEY"

# Offline by default: no telemetry, no model hub look-ups, no progress bars in logs.
ENVIRONMENT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    HEARTBEAT_ENV: str(FLOW_RUN_HEARTBEAT_S),
}


def apply_environment_defaults() -> None:
    """Set each default the environment does not set already (an explicit value always wins)."""
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
