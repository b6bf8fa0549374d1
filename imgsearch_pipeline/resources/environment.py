"""Settings read from the environment: the error for a bad one, and deferred secrets."""

from typing import Any

import dagster as dg


class ConfigurationError(ValueError):
    """A setting that cannot work; raised when the definitions load, before any run."""


def resolved(value: Any) -> Any:
    """The value of a resource field that may still be a ``dg.EnvVar``: Dagster resolves
    those when a run starts, but the API uses resources as constructed."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value
