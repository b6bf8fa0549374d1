"""The one way the pipeline reaches files: a local folder, or S3 through pyarrow's
S3FileSystem for image objects, tables and the values handed between assets alike.

S3 is configured by the AWS SDK's standard environment, which pyarrow reads itself (core
reads none): AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) for an S3-compatible server such as
MinIO, AWS_REGION (or AWS_DEFAULT_REGION), and the usual credential chain. With an endpoint
set, requests are path-style (MinIO and moto have no per-bucket host names); on AWS they
are virtual-hosted. Every request gets the one retry policy below.
"""

import pyarrow.fs as pafs

# Tries per S3 request, the first included: throttling (SlowDown), 5xx and connection errors
# are retried with the AWS SDK's jittered exponential backoff (up to 20 s a wait).
S3_MAX_ATTEMPTS = 8


def s3_filesystem(*, allow_bucket_creation: bool = False) -> pafs.S3FileSystem:
    """An S3 filesystem as the AWS SDK's environment describes it, with the retry policy.

    Only ``allow_bucket_creation`` lets ``create_dir(bucket)`` make a bucket (the store's
    ``ensure_bucket``): a write to a misspelt bucket fails rather than creating one.
    """
    # pyarrow reads the SDK's endpoint variables when it parses a URI, not in its
    # constructor; the options it parsed are rebuilt with what a URI cannot say.
    options = pafs.FileSystem.from_uri("s3://")[0].__reduce__()[1][0]
    return pafs.S3FileSystem(**{
        **options,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
        "force_virtual_addressing": False,  # path-style when an endpoint is set
        # Small writes become one PUT at close (an object appears whole or not at all),
        # not a multipart upload opened before the first byte.
        "allow_delayed_open": True,
        "allow_bucket_creation": allow_bucket_creation,
    })


def open_location(location: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and path for a local folder or an ``s3://`` / ``file://`` URI.

    ``s3://bucket/prefix`` goes through ``s3_filesystem``; options written in the URI itself
    (``?endpoint_override=...``) are left to pyarrow.
    """
    if location.startswith("s3://") and "?" not in location:
        path = location[len("s3://"):].strip("/")
        if not path:
            raise ValueError(f"location names no bucket: {location!r}")
        return s3_filesystem(), path
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location
