"""Values of resource fields that Dagster resolves from the environment when a run starts."""

from typing import Any

import dagster as dg


def resolved(value: Any) -> Any:
    """The value of a resource field that may still be a ``dg.EnvVar``: Dagster resolves
    those when a run starts, but the API uses resources as constructed."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value
