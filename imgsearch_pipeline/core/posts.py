"""Turning raw shard rows into posts: validate the image, derive the uuid, assign the split."""

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from .ids import image_key, image_uuid, split_of
from .images import DEFAULT_MIN_SIDE, ImageRejected, inspect_image
from .shards import ShardError

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


@dataclass
class PostsScan:
    """Every shard read: the distinct posts (an image seen again collapses into its first
    post), the rejected rows, and the shards that failed part way (path -> message)."""

    posts: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    duplicates: int = 0
    rows_read: int = 0
    read_failures: dict[str, str] = field(default_factory=dict)

    @property
    def test(self) -> int:
        return sum(1 for post in self.posts if post["split"] == "test")

    @property
    def train(self) -> int:
        return len(self.posts) - self.test

    def figures(self) -> dict[str, int]:
        test = self.test
        return {"posts": len(self.posts), "train": len(self.posts) - test, "test": test,
                "duplicates_collapsed": self.duplicates, "rejected": len(self.rejects),
                "rows_read": self.rows_read}


def scan_shards(
    shards: Sequence[dict],
    batches: Callable[[str], Iterable[pa.RecordBatch]],
    test_fraction: float,
    seed: int,
    max_pixels: int,
    min_side: int,
    workers: int,
    on_rows: Callable[[int], None] = lambda n: None,
    on_error: Callable[[str], None] = lambda message: None,
) -> PostsScan:
    """``scan_batch`` over every batch of every shard (``{"path", "rows"}``, read through
    ``batches(path)``), images checked on ``workers`` threads. A shard that breaks part way
    keeps the posts read before; the rest of its rows are skipped and named in
    ``read_failures`` (and ``on_error``). ``on_rows(n)`` after each batch of n rows."""
    scan = PostsScan()
    seen: set[str] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for shard in shards:
            first_row = 0
            try:
                for batch in batches(shard["path"]):
                    result = scan_batch(batch, shard["path"], first_row, test_fraction, seed,
                                        max_pixels, pool, min_side)
                    first_row += batch.num_rows
                    scan.rejects += result.rejects
                    for post in result.posts:
                        if post["uuid"] in seen:
                            scan.duplicates += 1
                        else:
                            seen.add(post["uuid"])
                            scan.posts.append(post)
                    scan.rows_read += batch.num_rows
                    on_rows(batch.num_rows)
            except ShardError as error:
                message = f"{error}; rows {first_row} to {shard['rows'] - 1} are skipped"
                on_error(message)
                scan.read_failures[shard["path"]] = message
    return scan


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
