"""Storing each post's image once: which objects are missing, and reading them from their
shards in upload batches."""

from collections.abc import Callable, Iterable, Sequence

import pyarrow as pa

from .posts import image_bytes_column
from .shards import ShardError

# shard -> {row in the shard: (object key, content type)}
Wanted = dict[str, dict[int, tuple[str, str]]]
Upload = Callable[[list[tuple[str, bytes, str]]], None]  # (key, data, content type) objects


def missing_objects(keys: Sequence[str], content_types: Sequence[str], shards: Sequence[str],
                    rows: Sequence[int], existing: set[str]) -> Wanted:
    """The posts (one per position of the columns) whose key is not in ``existing``, by
    shard and row: where to read each image."""
    wanted: Wanted = {}
    for key, content_type, shard, row in zip(keys, content_types, shards, rows, strict=True):
        if key not in existing:
            wanted.setdefault(shard, {})[row] = (key, content_type)
    return wanted


def upload_shard(batches: Iterable[pa.RecordBatch], rows: dict[int, tuple[str, str]],
                 upload_batch: int, upload: Upload) -> tuple[int, str | None]:
    """Read one shard's images at ``rows`` and ``upload`` them ``upload_batch`` (or more) at
    a time; stop reading once every row is found. Returns the rows found and, if the shard
    broke part way, why (what was read before is still uploaded)."""
    first_row, pending, found = 0, [], 0
    failure = None
    try:
        for batch in batches:
            for i, data in enumerate(image_bytes_column(batch)):
                target = rows.get(first_row + i)
                if target is not None:
                    pending.append((target[0], data, target[1]))
                    found += 1
            first_row += batch.num_rows
            if len(pending) >= upload_batch:
                upload(pending)
                pending = []
            if found == len(rows):  # a shard that breaks later was only read this far
                break
    except ShardError as error:
        failure = str(error)
    if pending:
        upload(pending)
    return found, failure


def upload_missing(wanted: Wanted, batches: Callable[[str], Iterable[pa.RecordBatch]],
                   upload_batch: int, upload: Upload,
                   on_error: Callable[[str], None] = lambda message: None) -> dict[str, str]:
    """``upload_shard`` for every shard of ``wanted``; returns the shards that broke since
    their posts were read (path -> why). Their other posts stay without an object, and a
    re-run tries them again; ``on_error`` hears each with the count left out."""
    failed: dict[str, str] = {}
    for shard, rows in wanted.items():
        found, failure = upload_shard(batches(shard), rows, upload_batch, upload)
        if failure is not None:
            on_error(f"{failure}; {len(rows) - found} images of this shard not uploaded")
            failed[shard] = failure
    return failed
