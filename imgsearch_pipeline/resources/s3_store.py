"""Image objects in S3 or an S3-compatible store (MinIO), through dagster-aws's S3Resource.

The connection settings (endpoint, region, credentials, ``max_attempts``) are an
``S3Resource``; the client is built here from them rather than by ``S3Resource.get_client()``
because that one fixes what this store needs to choose: the retry mode (standard or
adaptive), SigV4 presigned URLs, path-style addressing (MinIO behind a plain host name
such as ``minio:9000`` has no per-bucket DNS), and a connection pool as large as the
upload pool. One client is built per resource and shared by all upload threads
(botocore clients are thread-safe; sessions are not, so the session stays local).
"""

import threading
from collections.abc import Iterator
from typing import Any

from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr, field_validator

from .environment import resolved
from .object_store import ObjectStore, check_key

_MISSING = {"404", "NoSuchKey", "NotFound"}



def error_code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def client_config(retry_mode: str, max_attempts: int, pool: int, addressing_style: str,
                  connect_timeout_s: float, read_timeout_s: float):
    from botocore.config import Config

    # Standard/adaptive modes retry throttling (429, SlowDown), 500/502/503/504 and
    # connection errors with jittered exponential backoff. total_max_attempts counts the
    # first try, as S3Resource.max_attempts is documented to (botocore's "max_attempts"
    # key would not).
    return Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        signature_version="s3v4",
        s3={"addressing_style": addressing_style},
        max_pool_connections=pool,
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
    )


class S3ObjectStore(ObjectStore):
    """Objects under ``s3://<bucket>/<prefix>``; keys are validated like the local store's."""

    s3: S3Resource = Field(description="Endpoint, region and credentials (use dg.EnvVar for keys)")
    bucket: str
    prefix: str = Field(default="", description="Folder inside the bucket, e.g. 'imgsearch'")
    public_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint browsers reach, for presigned URLs, when it differs from the "
                    "pipeline's (e.g. http://127.0.0.1:9000 vs http://minio:9000 in compose)")
    url_expiry_s: int = 3600
    retry_mode: str = Field(default="standard", description="standard | adaptive")
    max_pool_connections: int = Field(default=16, description="At least the upload workers")
    addressing_style: str = Field(default="path", description="path (MinIO) | virtual | auto")
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    list_page_size: int = Field(default=1000, description="MaxKeys of each list request")

    _clients: dict[str | None, Any] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @field_validator("retry_mode")
    @classmethod
    def _valid_mode(cls, value: str) -> str:
        if value not in ("standard", "adaptive"):
            raise ValueError(f"retry_mode must be standard or adaptive, got {value!r}")
        return value

    @field_validator("addressing_style")
    @classmethod
    def _valid_style(cls, value: str) -> str:
        if value not in ("path", "virtual", "auto"):
            raise ValueError(f"addressing_style must be path, virtual or auto, got {value!r}")
        return value

    def client(self, endpoint_url: str | None = None):
        """The shared client (or one for ``endpoint_url``, used only to presign)."""
        endpoint = endpoint_url or resolved(self.s3.endpoint_url)
        with self._lock:
            client = self._clients.get(endpoint)
            if client is None:
                import boto3

                s3 = self.s3
                session = boto3.session.Session(profile_name=resolved(s3.profile_name))
                client = session.client(
                    "s3",
                    region_name=resolved(s3.region_name) or "us-east-1",
                    endpoint_url=endpoint,
                    use_ssl=s3.use_ssl,
                    verify=s3.verify,
                    aws_access_key_id=resolved(s3.aws_access_key_id),
                    aws_secret_access_key=resolved(s3.aws_secret_access_key),
                    aws_session_token=resolved(s3.aws_session_token),
                    config=client_config(self.retry_mode, s3.max_attempts, self.max_pool_connections,
                                         self.addressing_style, self.connect_timeout_s,
                                         self.read_timeout_s),
                )
                self._clients[endpoint] = client
            return client

    def _full(self, key: str) -> str:
        check_key(key)
        prefix = self.prefix.strip("/")
        return f"{prefix}/{key}" if prefix else key

    def _errors(self, exc: Exception, key: str) -> Exception:
        code = error_code(exc)
        if code == "NoSuchBucket":
            return FileNotFoundError(f"bucket {self.bucket!r} does not exist at "
                                     f"{resolved(self.s3.endpoint_url) or 'AWS'}: create it first "
                                     "(docker compose's minio-init does)")
        if code in _MISSING:
            return FileNotFoundError(f"no object {key!r} in s3://{self.bucket}/{self.prefix}")
        return exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        full = self._full(key)
        try:
            self.client().put_object(Bucket=self.bucket, Key=full, Body=data,
                                     ContentType=content_type)
        except Exception as exc:
            raise self._errors(exc, key) from exc

    def get(self, key: str) -> bytes:
        full = self._full(key)
        try:
            return self.client().get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except Exception as exc:
            raise self._errors(exc, key) from exc

    def exists(self, key: str) -> bool:
        full = self._full(key)
        try:
            self.client().head_object(Bucket=self.bucket, Key=full)
            return True
        except Exception as exc:
            # A HEAD answer has no body: a missing key and a missing bucket are both "404".
            if error_code(exc) in _MISSING:
                return False
            raise self._errors(exc, key) from exc

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        root = self.prefix.strip("/")
        root = f"{root}/" if root else ""
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=root + prefix,
                                   PaginationConfig={"PageSize": self.list_page_size})
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"][len(root):]
        except Exception as exc:
            raise self._errors(exc, prefix) from exc

    def url(self, key: str) -> str | None:
        client = self.client(resolved(self.public_endpoint_url))
        return client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)},
            ExpiresIn=self.url_expiry_s)

    @property
    def uri(self) -> str:
        """``s3://<bucket>/<prefix>``: where the production profile's home defaults to."""
        prefix = self.prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def ensure_bucket(self) -> bool:
        """Create the bucket unless it exists; True when it was created."""
        client = self.client()
        try:
            client.head_bucket(Bucket=self.bucket)
            return False
        except Exception as exc:
            if error_code(exc) not in _MISSING | {"NoSuchBucket"}:
                raise
        client.create_bucket(Bucket=self.bucket)
        return True


def main(argv: list[str] | None = None) -> None:
    """``python -m imgsearch_pipeline.resources.s3_store ensure-bucket``: creates the
    production profile's bucket from the environment (compose's ``minio-init``)."""
    import os
    import sys

    from .production import production_backends

    args = sys.argv[1:] if argv is None else argv
    if args != ["ensure-bucket"]:
        raise SystemExit("usage: python -m imgsearch_pipeline.resources.s3_store ensure-bucket")
    store = production_backends(os.environ)["object_store"]
    created = store.ensure_bucket()
    print(f"bucket {store.bucket} {'created' if created else 'already there'}")


if __name__ == "__main__":
    main()
