"""Scanning shards into posts, without Dagster: distinct images become posts once, bad rows
become rejects, and a shard that breaks part way keeps what was read before."""

import io

import pyarrow as pa
from PIL import Image

from imgsearch_pipeline.core.posts import scan_shards
from imgsearch_pipeline.core.shards import ShardError


def png(color: tuple[int, int, int], side: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buffer, format="PNG")
    return buffer.getvalue()


def batch(images: list[bytes | None], captions: list[str]) -> pa.RecordBatch:
    structs = [None if data is None else {"bytes": data, "path": f"{i}.png"}
               for i, data in enumerate(images)]
    return pa.RecordBatch.from_pydict({"image": structs, "caption": captions})


RED, GREEN, BLUE = png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))


def test_posts_are_distinct_images_and_rejects_keep_their_row():
    shards = {
        "a.parquet": [batch([RED, b"not an image"], ["red", "junk"]),
                      batch([GREEN, RED], ["green", "red again"])],
        "b.parquet": [batch([BLUE, png((1, 2, 3), side=4), None], ["blue", "tiny", "none"])],
    }
    rows_seen: list[int] = []
    scan = scan_shards([{"path": p, "rows": 0} for p in shards], lambda p: iter(shards[p]),
                       test_fraction=0.5, seed=1, max_pixels=10_000, min_side=8, workers=2,
                       on_rows=rows_seen.append)
    assert [p["caption"] for p in scan.posts] == ["red", "green", "blue"]
    assert scan.duplicates == 1  # the second red is the first red's post
    assert [(r["shard"], r["row"]) for r in scan.rejects] == [
        ("a.parquet", 1), ("b.parquet", 1), ("b.parquet", 2)]
    assert rows_seen == [2, 2, 3] and scan.rows_read == 7
    assert [p["row"] for p in scan.posts] == [0, 2, 0]  # rows count across a shard's batches
    assert scan.train + scan.test == 3 and not scan.read_failures
    assert scan.figures() == {"posts": 3, "train": scan.train, "test": scan.test,
                              "duplicates_collapsed": 1, "rejected": 3, "rows_read": 7}
    assert scan.test == sum(p["split"] == "test" for p in scan.posts)


def test_a_shard_breaking_part_way_keeps_the_rows_before_it():
    def batches(path: str):
        yield batch([RED, GREEN], ["red", "green"])
        raise ShardError(f"{path}: read failed (truncated)")

    errors: list[str] = []
    scan = scan_shards([{"path": "a.parquet", "rows": 10}], batches, 0.5, 1, 10_000, 8, 1,
                       on_error=errors.append)
    assert [p["caption"] for p in scan.posts] == ["red", "green"]
    message = "a.parquet: read failed (truncated); rows 2 to 9 are skipped"
    assert scan.read_failures == {"a.parquet": message} and errors == [message]
