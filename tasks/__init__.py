"""Thin Prefect task wrappers around lvm_core steps: retries, timeouts, tags, UI artifacts."""

from lvm_core.runtime.environment import apply_environment_defaults

apply_environment_defaults()  # before any task module imports prefect
