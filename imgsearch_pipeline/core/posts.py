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


@dataclass(frozen=True)
class ScanParams:
    """The settings a shard's scan result depends on: a cached result is only valid for the
    same values (``core/post_cache.py`` keys its entries by them)."""

    test_fraction: float
    seed: int
    max_pixels: int
    min_side: int = DEFAULT_MIN_SIDE


@dataclass
class ShardScan:
    """One shard read: its posts (an image seen again in the same shard collapses into its
    first post), its rejects, and ``failure`` when it broke part way (the rest is skipped)."""

    path: str
    posts: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    duplicates: int = 0
    rows_read: int = 0
    failure: str | None = None


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


def scan_shard(
    shard: dict,
    batches: Callable[[str], Iterable[pa.RecordBatch]],
    params: ScanParams,
    pool: Executor,
    on_rows: Callable[[int], None] = lambda n: None,
    on_error: Callable[[str], None] = lambda message: None,
) -> ShardScan:
    """``scan_batch`` over every batch of one shard (``{"path", "rows"}``). A shard that
    breaks part way keeps the rows read before and says which rows are skipped."""
    scan = ShardScan(shard["path"])
    seen: set[str] = set()
    try:
        for batch in batches(shard["path"]):
            result = scan_batch(batch, shard["path"], scan.rows_read, params.test_fraction,
                                params.seed, params.max_pixels, pool, params.min_side)
            scan.rejects += result.rejects
            scan.duplicates += keep_first(result.posts, seen, scan.posts)
            scan.rows_read += batch.num_rows
            on_rows(batch.num_rows)
    except ShardError as error:
        scan.failure = f"{error}; rows {scan.rows_read} to {shard['rows'] - 1} are skipped"
        on_error(scan.failure)
    return scan


def keep_first(posts: Iterable[dict], seen: set[str], kept: list[dict]) -> int:
    """Append to ``kept`` the posts whose uuid is not in ``seen`` yet (adding it); return
    how many were duplicates: an image's first occurrence wins, within a shard and across."""
    duplicates = 0
    for post in posts:
        if post["uuid"] in seen:
            duplicates += 1
        else:
            seen.add(post["uuid"])
            kept.append(post)
    return duplicates


def merge_scans(scans: Iterable[ShardScan]) -> PostsScan:
    """The shards' results in the order given, an image in several shards kept in the first
    (de-duplicating each shard first keeps the same winners: its first post is its earliest)."""
    merged = PostsScan()
    seen: set[str] = set()
    for scan in scans:
        merged.rejects += scan.rejects
        merged.duplicates += scan.duplicates
        merged.rows_read += scan.rows_read
        merged.duplicates += keep_first(scan.posts, seen, merged.posts)
        if scan.failure is not None:
            merged.read_failures[scan.path] = scan.failure
    return merged


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
    """The full read: ``scan_shard`` over every shard (``{"path", "rows"}``, read through
    ``batches(path)``), images checked on ``workers`` threads, merged by ``merge_scans``.
    A shard that breaks part way keeps the posts read before; the rest of its rows are
    skipped and named in ``read_failures`` (and ``on_error``). ``on_rows(n)`` after each
    batch of n rows."""
    params = ScanParams(test_fraction, seed, max_pixels, min_side)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return merge_scans(scan_shard(shard, batches, params, pool, on_rows, on_error)
                           for shard in shards)


def _column(values: list) -> pa.Array:
    """An arrow column of the values; mixed types across shards (a caption that is text in
    one shard and a number in another) fall back to text rather than failing the table."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def rows_table(rows: list[dict]) -> pa.Table:
    """The posts' columns as they come: the fixed columns first, then every source column
    any row had (``to_pylist`` gives the rows back; ``posts_table`` is built from them)."""
    if not rows:
        return pa.table({name: pa.array([], pa.int64() if name in ("width", "height", "row")
                                         else pa.string()) for name in POST_COLUMNS})
    names = dict.fromkeys(POST_COLUMNS)
    for post in rows:
        names.update(dict.fromkeys(post))
    return pa.table({name: _column([post.get(name) for post in rows]) for name in names})


def posts_table(rows: list[dict]) -> pa.Table:
    """The posts table: the fixed columns first, then every source column any row had; a
    caption is text."""
    table = rows_table(rows)
    columns = dict(zip(table.column_names, table.columns, strict=True))
    if rows and "caption" in columns and not pa.types.is_string(columns["caption"].type):
        columns["caption"] = _column([None if v is None else str(v)
                                      for v in columns["caption"].to_pylist()])
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
