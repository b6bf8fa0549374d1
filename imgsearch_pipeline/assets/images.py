"""Stage 3: each post's image stored once in the object store, under a key by uuid."""

import dagster as dg

from ..artifacts import ImageObjects, PostsTable, ShardInventory
from ..core.progress import Progress
from ..core.shards import iter_batches
from ..core.uploads import missing_objects, upload_missing
from ..resources.object_store import ObjectStore
from ..resources.storage import PostsDataset
from ..run_config import ImageObjectsConfig


@dg.asset(group_name="storage")  # its kind (s3 or filesystem) is added by the definitions
def image_objects(
    context: dg.AssetExecutionContext,
    config: ImageObjectsConfig,
    raw_posts: ShardInventory,
    posts: PostsTable,
    dataset: PostsDataset,
    object_store: ObjectStore,
) -> dg.Output[ImageObjects]:
    """Uploads the images of posts not yet in the store; a re-run uploads nothing twice.
    Retrying a failed put is the store client's policy (botocore's, for S3), not this step's."""
    table = posts.read(["key", "content_type", "shard", "row"]).to_pydict()
    wanted = missing_objects(table["key"], table["content_type"], table["shard"], table["row"],
                             existing=set(object_store.iter_keys("images/")))
    posts_count, missing = len(table["key"]), sum(len(rows) for rows in wanted.values())
    context.log.info(f"{posts_count:,} posts, {posts_count - missing:,} already stored, "
                     f"{missing:,} to upload")
    progress = Progress("images uploaded", missing, context.log.info)
    filesystem = dataset.filesystem()
    # A shard that changed or broke since ``posts`` read it leaves its posts without an
    # object; image_embeddings reports each of them, and a re-run retries them.
    failed = upload_missing(
        wanted,
        lambda shard: iter_batches(filesystem, shard, dataset.batch_rows, columns=["image"]),
        config.upload_batch,
        lambda items: progress.advance(object_store.put_many(items, config.upload_workers)),
        on_error=context.log.error)
    context.log.info(progress.summary())
    uploaded, already_there = progress.done, posts_count - missing
    value = ImageObjects(stored=already_there + uploaded, uploaded=uploaded,
                         already_there=already_there)
    return dg.Output(value, metadata={
        "objects": value.stored,
        "uploaded": uploaded,
        "already_there": already_there,
        "not_uploaded": missing - uploaded,
        "failed_shards": dg.MetadataValue.json(failed),
        "upload_rate_per_s": round(progress.rate, 1),
    })
