"""Turning raw shard rows into posts: validate the image, derive the uuid, assign the split."""

from concurrent.futures import Executor
from dataclasses import dataclass

import pyarrow as pa

from .ids import image_key, image_uuid, split_of
from .images import ImageRejected, inspect_image


@dataclass
class BatchResult:
    posts: list[dict]
    rejects: list[dict]


def _inspect(data: bytes | None, max_pixels: int):
    try:
        return inspect_image(data, max_pixels), None
    except ImageRejected as rejected:
        return None, rejected.reason


def image_bytes_column(batch: pa.RecordBatch) -> list[bytes | None]:
    """The ``image.bytes`` values of a batch; a null struct gives None."""
    return [(row or {}).get("bytes") for row in batch.column("image").to_pylist()]


def scan_batch(
    batch: pa.RecordBatch,
    shard: str,
    first_row: int,
    test_fraction: float,
    seed: int,
    max_pixels: int,
    pool: Executor,
) -> BatchResult:
    """Validate every row of a batch; good rows become posts, bad rows rejects with a reason."""
    images = image_bytes_column(batch)
    inspected = list(pool.map(lambda data: _inspect(data, max_pixels), images))
    extra_names = [n for n in batch.schema.names if n != "image"]
    extras = {name: batch.column(name).to_pylist() for name in extra_names}
    paths = [(row or {}).get("path") for row in batch.column("image").to_pylist()]
    result = BatchResult([], [])
    for i, (info, reason) in enumerate(inspected):
        row = {"shard": shard, "row": first_row + i}
        if info is None:
            result.rejects.append({**row, "reason": reason,
                                   "source_path": paths[i]})
            continue
        post_uuid = image_uuid(images[i])
        result.posts.append({
            "uuid": post_uuid,
            "split": split_of(post_uuid, test_fraction, seed),
            "key": image_key(post_uuid, info.extension),
            "content_type": info.content_type,
            "width": info.width,
            "height": info.height,
            "source_path": paths[i],
            **row,
            **{name: values[i] for name, values in extras.items()},
        })
    return result

