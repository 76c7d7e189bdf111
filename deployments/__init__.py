"""Prefect server setup for the LVM platform: work pool, alert block, limits, automations."""
