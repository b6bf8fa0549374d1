"""Reading Hugging Face-layout parquet shards in bounded batches."""

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class ShardError(ValueError):
    """A shard that cannot be read as a posts table; the message names the file."""


@dataclass(frozen=True)
class Shard:
    path: str
    rows: int
    size_bytes: int
    row_groups: int
    fingerprint: str  # size and mtime: a changed file gets a new fingerprint


# Tries per S3 request, the first included: boto3 and pyarrow alike.
S3_MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3: an S3-compatible server (MinIO, moto) at ``endpoint``, else AWS."""

    endpoint: str | None = None
    region: str = "us-east-1"
    max_attempts: int = S3_MAX_ATTEMPTS


# Where a process's S3 settings come from. core reads no environment: the resources set
# this (``resources.environment`` reads the variables at each call) when they are loaded.
_s3_settings: Callable[[], S3Settings] = S3Settings


def configure_s3(settings: Callable[[], S3Settings]) -> None:
    global _s3_settings
    _s3_settings = settings


def s3_filesystem(settings: S3Settings) -> pafs.S3FileSystem:
    """An S3 filesystem on a custom endpoint such as ``http://127.0.0.1:9000``.

    Credentials come from the usual AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY);
    addressing is path-style, which MinIO and moto need.
    """
    endpoint = settings.endpoint or ""
    parsed = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"S3 endpoint must look like http(s)://host:port, got {endpoint!r}")
    return _s3_filesystem(parsed.netloc, parsed.scheme, settings.region, settings.max_attempts)


@functools.lru_cache(maxsize=16)
def _s3_filesystem(netloc: str, scheme: str, region: str, attempts: int) -> pafs.S3FileSystem:
    # One per endpoint and settings: every table read and write asks for one (pyarrow's
    # filesystems are thread-safe), and the same retry budget as the boto3 client.
    return pafs.S3FileSystem(
        endpoint_override=netloc,
        scheme=scheme,
        region=region,
        force_virtual_addressing=False,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
    )


def open_location(location: str, s3: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """A filesystem and path for a local folder or an ``s3://`` / ``file://`` URI.

    ``s3://bucket/prefix`` goes to the S3 settings' endpoint (``s3``, else the process's:
    ``configure_s3``) when one is set, else to AWS; options written in the URI itself
    (``?endpoint_override=...``) are left to pyarrow.
    """
    if location.startswith("s3://") and "?" not in location:
        settings = s3 or _s3_settings()
        if settings.endpoint:
            path = location[len("s3://"):].strip("/")
            if not path:
                raise ValueError(f"dataset location names no bucket: {location!r}")
            return s3_filesystem(settings), path
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location


def list_shard_files(location: str) -> tuple[pafs.FileSystem, list[pafs.FileInfo]]:
    """The ``.parquet`` files at a location (a file, or a folder searched recursively), by
    path: one directory listing (one LIST on S3), no file opened."""
    filesystem, root = open_location(location)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"dataset location does not exist: {location}")
    if info.type == pafs.FileType.File:
        return filesystem, [info]
    entries = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    files = [f for f in entries if f.type == pafs.FileType.File and f.path.endswith(".parquet")]
    return filesystem, sorted(files, key=lambda f: f.path)


def fingerprint(info: pafs.FileInfo) -> str:
    """``size-mtime_ns``: a file rewritten in place gets a new fingerprint."""
    return f"{info.size}-{info.mtime_ns or 0}"


def find_shard_paths(location: str) -> tuple[pafs.FileSystem, list[str]]:
    filesystem, files = list_shard_files(location)
    return filesystem, [f.path for f in files]


def validate_schema(path: str, schema: pa.Schema) -> None:
    """Raise ShardError unless the shard has an ``image`` struct with binary ``bytes``."""
    if "image" not in schema.names:
        raise ShardError(f"{path}: missing column 'image' (columns: {', '.join(schema.names)})")
    image_type = schema.field("image").type
    if not pa.types.is_struct(image_type) or image_type.get_field_index("bytes") < 0:
        raise ShardError(f"{path}: column 'image' must be a struct with 'bytes', is {image_type}")
    bytes_type = image_type.field("bytes").type
    if not (pa.types.is_binary(bytes_type) or pa.types.is_large_binary(bytes_type)):
        raise ShardError(f"{path}: image.bytes must be binary, is {bytes_type}")


def describe_shard(filesystem: pafs.FileSystem, path: str) -> Shard:
    try:
        info = filesystem.get_file_info(path)
        with filesystem.open_input_file(path) as handle:
            metadata = pq.ParquetFile(handle).metadata
            schema = metadata.schema.to_arrow_schema()
    except Exception as exc:
        raise ShardError(f"{path}: not a readable parquet file ({exc})") from exc
    validate_schema(path, schema)
    return Shard(path, metadata.num_rows, info.size, metadata.num_row_groups, fingerprint(info))


def iter_batches(
    filesystem: pafs.FileSystem, path: str, batch_size: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a shard batch by batch: memory is bounded by ``batch_size`` rows."""
    try:
        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            wanted = None
            if columns is not None:
                wanted = [c for c in columns if c in parquet.schema_arrow.names]
            yield from parquet.iter_batches(batch_size=batch_size, columns=wanted)
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(f"{path}: read failed ({exc})") from exc
