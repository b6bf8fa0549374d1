"""Stage 3: each post's image stored once in the object store, under a key by uuid."""

import dagster as dg
from pydantic import Field

from ..artifacts import ImageObjects, PostsTable, ShardInventory
from ..core.posts import image_bytes_column
from ..core.progress import Progress
from ..core.retry import with_retries
from ..core.shards import ShardError, iter_batches
from ..resources.object_store import ObjectStore
from ..resources.profiles import backend_kinds
from ..resources.storage import PostsDataset


class ImageObjectsConfig(dg.Config):
    upload_workers: int = Field(8, gt=0, description="Parallel uploads.")
    upload_batch: int = Field(64, gt=0, description="Objects per put_many call.")
    retries: int = Field(3, ge=0, description="Retries of a failed batch (puts are idempotent).")
    retry_delay_s: float = Field(1.0, ge=0, description="First wait before a retry; doubles.")


@dg.asset(group_name="storage", kinds=backend_kinds()[0])
def image_objects(
    context: dg.AssetExecutionContext,
    config: ImageObjectsConfig,
    raw_posts: ShardInventory,
    posts: PostsTable,
    dataset: PostsDataset,
    object_store: ObjectStore,
) -> dg.Output[ImageObjects]:
    """Uploads the images of posts not yet in the store; a re-run uploads nothing twice."""
    table = posts.read(["uuid", "key", "content_type", "shard", "row"])
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

    def upload(items: list) -> None:
        progress.advance(with_retries(
            lambda: object_store.put_many(items, config.upload_workers),
            config.retries, config.retry_delay_s, context.log.warning))

    not_uploaded: dict[str, str] = {}
    for shard, rows in wanted.items():
        first_row, pending, found = 0, [], 0
        try:
            for batch in iter_batches(filesystem, shard, dataset.batch_rows, columns=["image"]):
                for i, data in enumerate(image_bytes_column(batch)):
                    target = rows.get(first_row + i)
                    if target is not None:
                        pending.append((target[0], data, target[1]))
                        found += 1
                first_row += batch.num_rows
                if len(pending) >= config.upload_batch:
                    upload(pending)
                    pending = []
                if found == len(rows):  # a shard that breaks later was only read this far
                    break
        except ShardError as error:
            # The shard changed or broke since ``posts`` read it; its posts stay without an
            # object and image_embeddings reports each of them. A re-run retries them.
            context.log.error(f"{error}; {len(rows) - found} images of this shard not uploaded")
            not_uploaded[shard] = str(error)
        if pending:
            upload(pending)
    context.log.info(progress.summary())
    uploaded = progress.done
    value = ImageObjects(stored=table.num_rows - missing + uploaded, uploaded=uploaded,
                         already_there=table.num_rows - missing)
    return dg.Output(value, metadata={
        "objects": value.stored,
        "uploaded": uploaded,
        "already_there": value.already_there,
        "not_uploaded": missing - uploaded,
        "failed_shards": dg.MetadataValue.json(not_uploaded),
        "upload_rate_per_s": round(progress.rate, 1),
    })
