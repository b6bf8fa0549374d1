"""Stage 1-2: the raw parquet shards, and posts with content uuids and a stable split."""

import os
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from ..artifacts import PostsTable, ShardInventory
from ..core.images import DEFAULT_MAX_PIXELS
from ..core.posts import scan_batch
from ..core.progress import Progress
from ..core.shards import ShardError, iter_batches
from ..core.tables import write_table_atomic
from ..resources.storage import PostsDataset, TableStore


@dg.asset(group_name="ingest", kinds={"parquet"})
def raw_posts(context: dg.AssetExecutionContext, dataset: PostsDataset) -> dg.Output:
    """The Hugging Face-layout parquet shards at the dataset location, checked one by one."""
    filesystem, paths = dataset.filesystem_and_paths()
    shards, failed = [], {}
    for path in paths:
        try:
            shard = dataset.describe(filesystem, path)
            shards.append({"path": shard.path, "rows": shard.rows,
                           "size_bytes": shard.size_bytes, "fingerprint": shard.fingerprint})
        except ShardError as error:
            context.log.error(str(error))
            failed[path] = str(error)
    if not shards:
        raise dg.Failure(f"no readable parquet shard at {dataset.location}",
                         metadata={"failed_shards": dg.MetadataValue.json(failed)})
    inventory = ShardInventory(dataset.location, shards, failed)
    return dg.Output(inventory, metadata={
        "location": dataset.location,
        "shards": len(shards),
        "rows": inventory.rows,
        "size_mb": round(sum(s["size_bytes"] for s in shards) / 1e6, 1),
        "failed_shards": dg.MetadataValue.json(failed),
    })


class SplitConfig(dg.Config):
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of posts held out.")
    seed: int = Field(42, description="Seed of the split's hash: changing it re-deals.")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Larger images are rejected.")


@dg.asset(group_name="ingest", kinds={"parquet"})
def posts(
    context: dg.AssetExecutionContext,
    config: SplitConfig,
    raw_posts: ShardInventory,
    dataset: PostsDataset,
    tables: TableStore,
) -> dg.Output[PostsTable]:
    """One row per distinct image: uuid from its bytes, train/test split, object key.

    Unusable rows go to the ``rejected_posts`` table with their shard, row and reason.
    """
    filesystem = dataset.filesystem()
    progress = Progress("rows checked", raw_posts.rows, context.log.info)
    seen: set[str] = set()
    rows, rejects, duplicates = [], [], 0
    failed_shards = dict(raw_posts.failed)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for shard in raw_posts.shards:
            first_row = 0
            try:
                for batch in iter_batches(filesystem, shard["path"], dataset.batch_rows):
                    result = scan_batch(batch, shard["path"], first_row, config.test_fraction,
                                        config.seed, config.max_pixels, pool)
                    first_row += batch.num_rows
                    rejects += result.rejects
                    for post in result.posts:
                        if post["uuid"] in seen:
                            duplicates += 1
                        else:
                            seen.add(post["uuid"])
                            rows.append(post)
                    progress.advance(batch.num_rows)
            except ShardError as error:
                context.log.error(f"{error}; rows of this shard after {first_row} are skipped")
                failed_shards[shard["path"]] = str(error)
    context.log.info(progress.summary())
    for reject in rejects:
        context.log.warning(f"rejected {reject['shard']} row {reject['row']}: {reject['reason']}")

    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    path = write_table_atomic(table, tables.path("posts.parquet"))
    reject_frame = pd.DataFrame(rejects, columns=["shard", "row", "reason", "source_path"])
    rejects_path = write_table_atomic(
        pa.Table.from_pandas(reject_frame, preserve_index=False),
        tables.path("rejected_posts.parquet"),
    )
    test = sum(1 for r in rows if r["split"] == "test")
    value = PostsTable(str(path), str(rejects_path), len(rows), len(rows) - test, test,
                       duplicates, len(rejects))
    reasons = reject_frame["reason"].value_counts().to_dict() if rejects else {}
    return dg.Output(value, metadata={
        "posts": len(rows),
        "train": value.train,
        "test": test,
        "duplicates_collapsed": duplicates,
        "rejected": len(rejects),
        "rejected_by_reason": dg.MetadataValue.json(reasons),
        "failed_shards": dg.MetadataValue.json(failed_shards),
        "path": dg.MetadataValue.path(str(path)),
        "rejects_path": dg.MetadataValue.path(str(rejects_path)),
        "dagster/row_count": len(rows),
    })
