"""Turning raw shard rows into posts: validate the image, derive the uuid, assign the split."""

from collections import Counter
from concurrent.futures import Executor
from dataclasses import dataclass

import pyarrow as pa

from .ids import image_key, image_uuid, split_of
from .images import DEFAULT_MIN_SIDE, ImageRejected, inspect_image

# Columns the posts table defines itself; a source column of the same name is kept as
# ``source_<name>`` so that a dataset can never overwrite a uuid, key, split or row.
POST_COLUMNS = ("uuid", "split", "key", "content_type", "width", "height", "source_path",
                "shard", "row")


@dataclass
class BatchResult:
    posts: list[dict]
    rejects: list[dict]


def _inspect(data: bytes | None, max_pixels: int, min_side: int):
    try:
        return inspect_image(data, max_pixels, min_side), None
    except ImageRejected as rejected:
        return None, rejected.reason
    except Exception as exc:  # a Pillow bug on hostile bytes must not stop the run
        return None, f"image check failed: {type(exc).__name__}: {exc}"[:200]


def image_bytes_column(batch: pa.RecordBatch) -> list[bytes | None]:
    """The ``image.bytes`` values of a batch; a null struct gives None."""
    return [(row or {}).get("bytes") for row in batch.column("image").to_pylist()]


def extra_column_name(name: str) -> str:
    return f"source_{name}" if name in POST_COLUMNS else name


def scan_batch(
    batch: pa.RecordBatch,
    shard: str,
    first_row: int,
    test_fraction: float,
    seed: int,
    max_pixels: int,
    pool: Executor,
    min_side: int = DEFAULT_MIN_SIDE,
) -> BatchResult:
    """Validate every row of a batch; good rows become posts, bad rows rejects with a reason."""
    structs = batch.column("image").to_pylist()
    images = [(row or {}).get("bytes") for row in structs]
    paths = [(row or {}).get("path") for row in structs]
    inspected = list(pool.map(lambda data: _inspect(data, max_pixels, min_side), images))
    extras = {extra_column_name(name): batch.column(name).to_pylist()
              for name in batch.schema.names if name != "image"}
    result = BatchResult([], [])
    for i, (info, reason) in enumerate(inspected):
        row = {"shard": shard, "row": first_row + i}
        source_path = paths[i] if isinstance(paths[i], str) else None
        if info is None:
            result.rejects.append({**row, "reason": reason, "source_path": source_path})
            continue
        post_uuid = image_uuid(images[i])
        result.posts.append({
            **{name: values[i] for name, values in extras.items()},
            "uuid": post_uuid,
            "split": split_of(post_uuid, test_fraction, seed),
            "key": image_key(post_uuid, info.extension),
            "content_type": info.content_type,
            "width": info.width,
            "height": info.height,
            "source_path": source_path,
            **row,
        })
    return result


def _column(values: list) -> pa.Array:
    """An arrow column of the values; mixed types across shards (a caption that is text in
    one shard and a number in another) fall back to text rather than failing the table."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def posts_table(rows: list[dict]) -> pa.Table:
    """The posts table: the fixed columns first, then every source column any row had."""
    names = list(POST_COLUMNS)
    for post in rows:
        names += [n for n in post if n not in names]
    columns = {name: _column([post.get(name) for post in rows]) for name in names}
    if "caption" in columns and not pa.types.is_string(columns["caption"].type):
        columns["caption"] = _column([None if v is None else str(v)
                                      for v in columns["caption"].to_pylist()])
    if not rows:
        columns = {name: pa.array([], pa.int64() if name in ("width", "height", "row")
                                  else pa.string()) for name in POST_COLUMNS}
    return pa.table(columns)


def rejects_table(rejects: list[dict]) -> pa.Table:
    return pa.table({
        "shard": pa.array([r["shard"] for r in rejects], pa.string()),
        "row": pa.array([r["row"] for r in rejects], pa.int64()),
        "reason": pa.array([r["reason"] for r in rejects], pa.string()),
        "source_path": pa.array([r.get("source_path") for r in rejects], pa.string()),
    })


def reason_counts(rejects: list[dict]) -> dict[str, int]:
    """Rejects by reason, most frequent first; reasons that quote sizes are grouped by their
    leading words so that a thousand different sizes make one line."""
    counts = Counter(r["reason"].split(":")[0] for r in rejects)
    return dict(counts.most_common())
