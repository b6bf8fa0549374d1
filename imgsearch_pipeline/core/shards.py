"""Reading Hugging Face-layout parquet shards in bounded batches."""

from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .filesystems import open_location


class ShardError(ValueError):
    """A shard that cannot be read as a posts table; the message names the file."""


@dataclass(frozen=True)
class Shard:
    path: str
    rows: int
    size_bytes: int
    fingerprint: str  # size and mtime: a changed file gets a new fingerprint


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
    return Shard(path, metadata.num_rows, info.size, fingerprint(info))


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
