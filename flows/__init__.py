"""Prefect flows composing the lvm tasks; `flows.cli` is the `lvm` command."""

import os as _os

# Offline by default: no telemetry, no model hub look-ups.
_os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
_os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
_os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
_os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# Flow runs send a heartbeat every 30 s, so a server's zombie automation (deployments/setup.py) ends the
# runs of a dead process Crashed, and never those of a live one that talks to it.
_os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
