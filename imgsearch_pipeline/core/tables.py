"""The pipeline's files, in a local folder or under an ``s3://`` URI (the production
profile's shared home), read and written through pyarrow filesystems: one code path for both.

Writes are atomic: a crash never leaves a half-written file that a run trusts. The file is
written whole to a local temporary first; locally it is then renamed over the target, on an
object store it is uploaded beside the target under a hidden name and then moved there by one
server-side copy (an object appears whole or not at all).
"""

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .filesystems import open_location
from .layout import is_uri

Location = str | os.PathLike


def _fs(location: Location) -> tuple[pafs.FileSystem, str]:
    return open_location(os.fspath(location))


def join(folder: Location, name: str) -> str:
    """``folder/name`` for a local folder or a URI (the layout's own way of joining)."""
    return f"{os.fspath(folder).rstrip('/')}/{name}"


def base_name(location: Location) -> str:
    return os.fspath(location).rstrip("/").rsplit("/", 1)[-1]


def _upload(source: Path, location: str) -> None:
    """Put a local file at ``location`` on an object store, whole or not at all.

    A pyarrow output stream completes whatever it holds once it is closed or collected, an
    interrupted upload included, so the upload goes to a hidden key beside the target and
    only a finished one is moved over it. (``pafs.copy_files`` would be one call, but it
    drops the error of an upload's last request: the file would silently not be there.)
    """
    filesystem, path = _fs(location)
    folder, _, name = path.rpartition("/")
    staging = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    uploaded = False
    try:
        with open(source, "rb") as data, filesystem.open_output_stream(staging) as stream:
            shutil.copyfileobj(data, stream, 16 << 20)
        uploaded = True
        filesystem.move(staging, path)
    except BaseException as error:
        # An upload the store refused left nothing (and a store that is down would only
        # refuse the delete too); an interrupted one or a failed move may leave the hidden
        # key, which nothing reads.
        if uploaded or not isinstance(error, OSError):
            with contextlib.suppress(OSError):
                filesystem.delete_file(staging)
        raise


@contextmanager
def atomic_path(location: Location) -> Iterator[Path]:
    """Yield a local temporary path; once the block succeeds it replaces ``location`` whole
    (a rename beside a local target, an upload and a move on an object store)."""
    location = os.fspath(location)
    if is_uri(location):
        folder = tempfile.mkdtemp(prefix="imgsearch-")
        temporary = Path(folder, base_name(location))
        try:
            yield temporary
            _upload(temporary, location)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_table_atomic(table: pa.Table, location: Location) -> Location:
    with atomic_path(location) as temporary:
        pq.write_table(table, temporary)
    return location


def write_text_atomic(text: str, location: Location) -> Location:
    with atomic_path(location) as temporary:
        temporary.write_text(text)
    return location


def write_bytes_atomic(data: bytes, location: Location) -> Location:
    with atomic_path(location) as temporary:
        temporary.write_bytes(data)
    return location


def read_table(location: Location, columns: list[str] | None = None) -> pa.Table:
    filesystem, path = _fs(location)
    return pq.read_table(path, columns=columns, filesystem=filesystem)


def read_schema(location: Location) -> pa.Schema:
    filesystem, path = _fs(location)
    with filesystem.open_input_file(path) as handle:
        return pq.read_schema(handle)


def parquet_metadata(location: Location) -> pq.FileMetaData:
    """A parquet file's footer: row count and key-value metadata, without reading rows."""
    filesystem, path = _fs(location)
    with filesystem.open_input_file(path) as handle:
        return pq.ParquetFile(handle).metadata


def read_text(location: Location) -> str:
    """FileNotFoundError when there is no such file."""
    filesystem, path = _fs(location)
    with filesystem.open_input_stream(path) as handle:
        return handle.read().decode()


@contextmanager
def open_input(location: Location) -> Iterator:
    filesystem, path = _fs(location)
    with filesystem.open_input_stream(path) as handle:
        yield handle


def file_size(location: Location) -> int | None:
    """The size in bytes of a file; None when there is no file there."""
    filesystem, path = _fs(location)
    info = filesystem.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else None


def is_file(location: Location) -> bool:
    return file_size(location) is not None


def remove(location: Location) -> None:
    """Delete a file; nothing happens when there is none."""
    filesystem, path = _fs(location)
    with contextlib.suppress(FileNotFoundError):
        filesystem.delete_file(path)


def move(source: Location, target: Location) -> None:
    """Rename a file (copy and delete on an object store)."""
    filesystem, path = _fs(source)
    filesystem.move(path, _fs(target)[1])


def part_files(folder: Location) -> list[str]:
    """The ``part-*.parquet`` files of a folder (one listing), in name order, as locations
    of the same kind as ``folder``."""
    filesystem, path = _fs(folder)
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        return []
    names = sorted(info.base_name for info in filesystem.get_file_info(pafs.FileSelector(path))
                   if info.type == pafs.FileType.File and info.base_name.startswith("part-")
                   and info.base_name.endswith(".parquet"))
    return [join(folder, name) for name in names]
