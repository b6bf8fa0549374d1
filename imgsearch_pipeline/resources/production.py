"""The production backends: S3 (or MinIO) for images, Elasticsearch for the index.

Secrets (the Elasticsearch password or API key) are passed as ``dg.EnvVar`` so that Dagster
reads them from the process environment when a run starts and shows only their names in the
UI; they are never logged or written to metadata. See docs/production.md for the variables.
"""

import dagster as dg

from ..settings import ConfigurationError, Settings, variable_of
from .elasticsearch_index import ElasticsearchIndex
from .s3_store import S3ObjectStore

REQUIRED = ("es_url", "s3_bucket")


def _secret(settings: Settings, field: str) -> dg.EnvVar | None:
    """A deferred secret when the variable is set; None when it is not (optional secrets)."""
    return dg.EnvVar(variable_of(Settings, field)) if getattr(settings, field) else None


def production_backends(settings: Settings) -> dict[str, object]:
    """{"object_store": S3ObjectStore, "vector_index": ElasticsearchIndex} from the settings."""
    missing = [variable_of(Settings, f) for f in REQUIRED if not getattr(settings, f)]
    if missing:
        raise ConfigurationError(
            f"IMGSEARCH_PROFILE=production needs {', '.join(missing)} "
            "(see .env.example and docs/production.md)")
    if settings.es_password and settings.es_api_key:
        raise ConfigurationError(
            "IMGSEARCH_ES_PASSWORD and IMGSEARCH_ES_API_KEY are both set: Elasticsearch takes "
            "one way to sign in, unset one of them")
    try:
        vector_index = ElasticsearchIndex(
            url=settings.es_url,
            username=settings.es_username,
            password=_secret(settings, "es_password"),
            api_key=_secret(settings, "es_api_key"),
            ca_certs=settings.es_ca_certs,
            index_name=settings.es_index,
            index_type=settings.es_index_type,
            replicas=settings.es_replicas,
            ready_timeout_s=settings.es_ready_timeout_s,
        )
        object_store = S3ObjectStore(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            public_endpoint_url=settings.s3_public_endpoint,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigurationError(f"production settings: {exc}") from exc
    return {"object_store": object_store, "vector_index": vector_index}
