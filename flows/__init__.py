"""Prefect flows composing the lvm tasks; `flows.cli` is the `lvm` command, `flows.infra` their plumbing."""

import tasks  # noqa: F401 - its __init__ applies the environment defaults before prefect is imported
