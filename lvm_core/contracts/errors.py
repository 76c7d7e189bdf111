"""The project's error hierarchy."""

from __future__ import annotations


class DataContractError(ValueError):
    """A file does not match its contract (missing columns, wrong dtype, misaligned rows)."""


class RegistryError(RuntimeError):
    """A tracking or registry operation could not be done as asked."""


class ModelNotFoundError(RegistryError, LookupError):
    """A registered model, version, alias or model folder does not exist."""
