"""Settings read from the environment: the error for a bad one, and deferred secrets."""

from collections.abc import Mapping
from typing import Any

import dagster as dg


class ConfigurationError(ValueError):
    """A setting that cannot work; raised when the definitions load, before any run."""


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """An integer setting; a bad value is one line naming the variable, its value and what
    is allowed."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigurationError(f"{name}={raw!r} is not allowed: expected an integer >= {minimum}")
    return value


def settings_error(error: Exception, variables: Mapping[str, str], env: Mapping[str, str]) -> str:
    """One line per invalid field of a pydantic ``ValidationError``, named by its variable."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        name = variables.get(field, field)
        allowed = item["msg"].removeprefix("Value error, ")
        lines.append(f"{name}={env.get(name, '')!r} is not allowed: {allowed}")
    return "; ".join(lines)


def resolved(value: Any) -> Any:
    """The value of a resource field that may still be a ``dg.EnvVar``: Dagster resolves
    those when a run starts, but the API uses resources as constructed."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value
