"""The production backends: S3 (or MinIO) for images, Elasticsearch for the index.

Settings come from environment variables (see .env.example and docs/production.md).
Secrets (the Elasticsearch password or API key, the AWS keys) are passed as ``dg.EnvVar``
so that Dagster reads them from the process environment when a run starts and shows only
their names in the UI; they are never logged or written to metadata.

IMGSEARCH_ES_URL            Elasticsearch URL (required), e.g. http://127.0.0.1:9200
IMGSEARCH_ES_USERNAME       basic-auth user (default elastic, when a password is set)
IMGSEARCH_ES_PASSWORD       basic-auth password (secret)
IMGSEARCH_ES_API_KEY        encoded API key instead of user/password (secret)
IMGSEARCH_ES_CA_CERTS       CA bundle for an https URL
IMGSEARCH_ES_INDEX          alias name and prefix of index versions (default imgsearch)
IMGSEARCH_ES_INDEX_TYPE     hnsw (default) | int8_hnsw | bbq_hnsw
IMGSEARCH_ES_REPLICAS       replicas per index version (default 0: a single node)
IMGSEARCH_ES_READY_TIMEOUT_S  how long the first request waits for a yellow cluster (default 120)
IMGSEARCH_S3_BUCKET         bucket of the image objects (required)
IMGSEARCH_S3_PREFIX         folder inside the bucket (default imgsearch)
IMGSEARCH_S3_ENDPOINT       S3-compatible endpoint, e.g. http://127.0.0.1:9000 (MinIO); unset for AWS
IMGSEARCH_S3_PUBLIC_ENDPOINT  endpoint in presigned URLs, if browsers reach it by another name
IMGSEARCH_S3_MAX_ATTEMPTS   tries per S3 request, the first included (default 8)
IMGSEARCH_S3_RETRY_MODE     standard (default) | adaptive
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN   credentials (secrets)
AWS_REGION                  region (default us-east-1)
"""

import os
from collections.abc import Mapping

import dagster as dg
from dagster_aws.s3 import S3Resource

from .elasticsearch_index import ElasticsearchIndex
from .environment import ConfigurationError, env_int, s3_settings
from .s3_store import S3ObjectStore

REQUIRED = ("IMGSEARCH_ES_URL", "IMGSEARCH_S3_BUCKET")


def _secret(env: Mapping[str, str], name: str) -> dg.EnvVar | None:
    """A deferred secret when the variable is set; None when it is not (optional secrets)."""
    return dg.EnvVar(name) if env.get(name) else None


def production_backends(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """{"object_store": S3ObjectStore, "vector_index": ElasticsearchIndex} from the environment."""
    env = os.environ if environ is None else environ
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise ConfigurationError(
            f"IMGSEARCH_PROFILE=production needs {', '.join(missing)} "
            "(see .env.example and docs/production.md)")
    if env.get("IMGSEARCH_ES_PASSWORD") and env.get("IMGSEARCH_ES_API_KEY"):
        raise ConfigurationError(
            "IMGSEARCH_ES_PASSWORD and IMGSEARCH_ES_API_KEY are both set: Elasticsearch takes "
            "one way to sign in, unset one of them")
    try:
        vector_index = ElasticsearchIndex(
            url=env["IMGSEARCH_ES_URL"],
            username=env.get("IMGSEARCH_ES_USERNAME") or None,
            password=_secret(env, "IMGSEARCH_ES_PASSWORD"),
            api_key=_secret(env, "IMGSEARCH_ES_API_KEY"),
            ca_certs=env.get("IMGSEARCH_ES_CA_CERTS") or None,
            index_name=env.get("IMGSEARCH_ES_INDEX", "imgsearch"),
            index_type=env.get("IMGSEARCH_ES_INDEX_TYPE", "hnsw"),
            replicas=env_int(env, "IMGSEARCH_ES_REPLICAS", 0),
            ready_timeout_s=env_int(env, "IMGSEARCH_ES_READY_TIMEOUT_S", 120, minimum=1),
        )
        s3 = s3_settings(env)
        object_store = S3ObjectStore(
            s3=S3Resource(
                endpoint_url=s3.endpoint,
                region_name=s3.region,
                aws_access_key_id=_secret(env, "AWS_ACCESS_KEY_ID"),
                aws_secret_access_key=_secret(env, "AWS_SECRET_ACCESS_KEY"),
                aws_session_token=_secret(env, "AWS_SESSION_TOKEN"),
                max_attempts=s3.max_attempts,
            ),
            bucket=env["IMGSEARCH_S3_BUCKET"],
            # MinIO behind a plain host name needs path-style; AWS prefers virtual hosts.
            addressing_style="path" if s3.endpoint else "auto",
            prefix=env.get("IMGSEARCH_S3_PREFIX", "imgsearch"),
            public_endpoint_url=env.get("IMGSEARCH_S3_PUBLIC_ENDPOINT") or None,
            retry_mode=env.get("IMGSEARCH_S3_RETRY_MODE", "standard"),
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigurationError(f"production settings: {exc}") from exc
    return {"object_store": object_store, "vector_index": vector_index}
