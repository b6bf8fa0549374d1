"""Embedding buckets: a post's partition is a stable hash of its uuid alone.

New shards never move an existing post to another bucket, so a bucket's embeddings stay
valid across runs and a failed bucket can be re-run by itself.
"""

from pathlib import Path

BUCKETS = 16  # part of the storage layout: changing it re-embeds nothing but re-deals new posts
BUCKET_KEYS: tuple[str, ...] = tuple(f"{i:02d}" for i in range(BUCKETS))


def bucket_of(post_uuid: str, buckets: int = BUCKETS) -> str:
    """``'00'``..``'15'``: the first 32 bits of the uuid (uuid5: hash-derived, uniform)."""
    return f"{int(post_uuid[:8], 16) % buckets:02d}"


def bucket_folder(model_folder: str | Path, key: str) -> Path:
    if key not in BUCKET_KEYS:
        raise ValueError(f"unknown embedding bucket {key!r}: expected one of 00..{BUCKETS - 1:02d}")
    return Path(model_folder) / f"bucket={key}"


def all_buckets_tags() -> dict[str, str]:
    """Run tags that make one run cover every bucket (a single-run partition range)."""
    return {"dagster/asset_partition_range_start": BUCKET_KEYS[0],
            "dagster/asset_partition_range_end": BUCKET_KEYS[-1]}
