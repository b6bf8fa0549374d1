"""Settings read from the environment: the error for a bad one, and deferred secrets."""

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from ..core.shards import S3_MAX_ATTEMPTS, S3Settings, configure_s3

# Where an S3-compatible server (MinIO, moto) is, when not AWS itself; first one set wins.
S3_ENDPOINT_VARIABLES = ("IMGSEARCH_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


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


def s3_settings(environ: Mapping[str, str] | None = None) -> S3Settings:
    """S3's endpoint (IMGSEARCH_S3_ENDPOINT, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; none:
    AWS), region (AWS_REGION / AWS_DEFAULT_REGION) and tries per request
    (IMGSEARCH_S3_MAX_ATTEMPTS), for the boto3 client and the tables' pyarrow filesystem alike."""
    env = os.environ if environ is None else environ
    return S3Settings(
        endpoint=next((env[name] for name in S3_ENDPOINT_VARIABLES if env.get(name)), None),
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        max_attempts=env_int(env, "IMGSEARCH_S3_MAX_ATTEMPTS", S3_MAX_ATTEMPTS, minimum=1))


# Tables at s3:// locations (core.tables) reach S3 as this process's environment says, read
# at each use: every process that loads the resources (code server, run workers, the API).
configure_s3(s3_settings)
