"""Stage 3: each post's image stored once in the object store, under a key by uuid."""

import dagster as dg
import pyarrow.parquet as pq

from ..artifacts import ImageObjects, PostsTable, ShardInventory
from ..core.posts import image_bytes_column
from ..core.progress import Progress
from ..core.shards import iter_batches
from ..resources.object_store import ObjectStore
from ..resources.storage import PostsDataset


class ImageObjectsConfig(dg.Config):
    upload_workers: int = 8
    upload_batch: int = 64


@dg.asset(group_name="storage", kinds={"s3"})
def image_objects(
    context: dg.AssetExecutionContext,
    config: ImageObjectsConfig,
    raw_posts: ShardInventory,
    posts: PostsTable,
    dataset: PostsDataset,
    object_store: ObjectStore,
) -> dg.Output[ImageObjects]:
    """Uploads the images of posts not yet in the store; a re-run uploads nothing twice."""
    table = pq.read_table(posts.path, columns=["uuid", "key", "content_type", "shard", "row"])
    existing = set(object_store.iter_keys("images/"))
    wanted: dict[str, dict[int, tuple[str, str]]] = {}
    for key, content_type, shard, row in zip(
        *(table.column(c).to_pylist() for c in ("key", "content_type", "shard", "row")),
        strict=True,
    ):
        if key not in existing:
            wanted.setdefault(shard, {})[row] = (key, content_type)
    missing = sum(len(rows) for rows in wanted.values())
    context.log.info(f"{table.num_rows:,} posts, {table.num_rows - missing:,} already stored, "
                     f"{missing:,} to upload")

    progress = Progress("images uploaded", missing, context.log.info)
    filesystem = dataset.filesystem()
    for shard, rows in wanted.items():
        first_row, pending = 0, []
        for batch in iter_batches(filesystem, shard, dataset.batch_rows, columns=["image"]):
            for i, data in enumerate(image_bytes_column(batch)):
                target = rows.get(first_row + i)
                if target is not None:
                    pending.append((target[0], data, target[1]))
            first_row += batch.num_rows
            if len(pending) >= config.upload_batch:
                progress.advance(object_store.put_many(pending, config.upload_workers))
                pending = []
        if pending:
            progress.advance(object_store.put_many(pending, config.upload_workers))
    context.log.info(progress.summary())
    value = ImageObjects(stored=table.num_rows, uploaded=missing,
                         already_there=table.num_rows - missing)
    return dg.Output(value, metadata={
        "objects": table.num_rows,
        "uploaded": missing,
        "already_there": value.already_there,
        "upload_rate_per_s": round(progress.rate, 1),
    })
