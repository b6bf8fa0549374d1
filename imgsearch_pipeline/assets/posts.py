"""Stage 1-2: the raw parquet shards, posts with content uuids and a stable split, and the
quarantine of rows that could not become posts."""

import os
import warnings
from collections.abc import Iterator

import dagster as dg

from ..artifacts import PostsTable, ShardInventory
from ..core.post_cache import list_entries, plan_cache, refresh_posts
from ..core.posts import ScanParams, reason_counts
from ..core.progress import Progress
from ..core.shards import ShardError, iter_batches
from ..core.tables import read_table
from ..resources.storage import PipelineHome, PostsDataset
from ..run_config import SplitConfig, check_in_first_step

PREVIEW_ROWS = 100  # rows of the quarantine shown in the UI; the table holds all of them


def _shard_check(check_name: str, asset: str, failed: dict[str, str], what: str):
    """Passes when no shard failed; a failure is a warning: the run goes on without it."""
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset,
        passed=not failed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failed_shards": dg.MetadataValue.json(failed), "count": len(failed)},
        description=(f"{len(failed)} shard(s) {what}: " + "; ".join(failed.values()))[:2000]
        if failed else f"every shard {what.replace('could not be read', 'was read')}",
    )


@dg.asset(
    group_name="ingest", kinds={"parquet"},
    check_specs=[dg.AssetCheckSpec("all_shards_readable", asset="raw_posts",
                                   description="Every parquet shard opens and has an image column.")],
)
def raw_posts(context: dg.AssetExecutionContext, dataset: PostsDataset) -> Iterator:
    """The Hugging Face-layout parquet shards at the dataset location, checked one by one."""
    check_in_first_step(context, upstream=None)  # reject bad run config before any work
    try:
        filesystem, paths = dataset.filesystem_and_paths()
    except (OSError, ValueError) as error:  # missing folder, bad URI, unreachable bucket
        raise dg.Failure(f"cannot list the dataset at {dataset.location!r}: {error}") from None
    shards, failed = [], {}
    for path in paths:
        try:
            shard = dataset.describe(filesystem, path)
            shards.append({"path": shard.path, "rows": shard.rows,
                           "size_bytes": shard.size_bytes, "fingerprint": shard.fingerprint})
        except ShardError as error:
            context.log.error(f"skipping shard: {error}")
            failed[path] = str(error)
    if not shards:
        raise dg.Failure(f"no readable parquet shard at {dataset.location}"
                         + (f" ({len(failed)} unreadable)" if failed else ""),
                         metadata={"failed_shards": dg.MetadataValue.json(failed)})
    if failed:
        context.log.warning(f"{len(failed)} of {len(paths)} shards are skipped, the run goes on "
                            f"without them: {', '.join(sorted(failed))}")
    inventory = ShardInventory(dataset.location, shards, failed)
    yield dg.Output(inventory, metadata={
        "location": dataset.location,
        "shards": len(shards),
        "rows": inventory.rows,
        "size_mb": round(sum(s["size_bytes"] for s in shards) / 1e6, 1),
        "failed_shards": dg.MetadataValue.json(failed),
    })
    yield _shard_check("all_shards_readable", "raw_posts", failed, "could not be read")


@dg.asset(
    group_name="ingest", kinds={"parquet"},
    check_specs=[dg.AssetCheckSpec("all_rows_read", asset="posts",
                                   description="No shard failed part way through reading.")],
)
def posts(
    context: dg.AssetExecutionContext,
    config: SplitConfig,
    raw_posts: ShardInventory,
    dataset: PostsDataset,
    home: PipelineHome,
) -> Iterator:
    """One row per distinct image: uuid from its bytes, train/test split, object key.

    Unusable rows go to the ``rejected_posts`` table with their shard, row and reason. Only
    shards that are new or changed since the last run are read; the others' results are
    reused from ``<home>/tables/shard_scans`` (the tables equal a full read's).
    """
    layout = home.layout
    filesystem = dataset.filesystem()
    params = ScanParams(config.test_fraction, config.seed, config.max_pixels, config.min_side)
    plan = plan_cache(raw_posts.shards, params, list_entries(layout.shard_scans),
                      keep_paths=raw_posts.failed)
    progress = Progress("rows checked", plan.rows_to_scan, context.log.info)
    refresh = refresh_posts(plan, layout.shard_scans,
                            lambda path: iter_batches(filesystem, path, dataset.batch_rows),
                            layout.posts, layout.rejects, workers=os.cpu_count() or 2,
                            on_rows=progress.advance, on_error=context.log.error)
    if refresh.rows_scanned:
        context.log.info(progress.summary())
    context.log.info(refresh.summary())
    figures, reasons = refresh.figures, refresh.reasons
    if figures["rejected"]:  # one line, not one per row: the table holds every row with why
        summary = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
        context.log.warning(f"{figures['rejected']:,} rows rejected ({summary}); "
                            f"see the rejected_posts asset or {layout.rejects}")
    value = PostsTable(layout.posts, layout.rejects, figures["posts"], figures["train"],
                       figures["test"], figures["duplicates_collapsed"], figures["rejected"])
    metadata = {
        **figures,
        **refresh.metadata(),
        "rejected_by_reason": dg.MetadataValue.json(reasons),
        "failed_shards": dg.MetadataValue.json({**raw_posts.failed, **refresh.read_failures}),
        "path": dg.MetadataValue.path(layout.posts),
        "rejects_path": dg.MetadataValue.path(layout.rejects),
        "dagster/row_count": figures["posts"],
    }
    with warnings.catch_warnings():  # data_version is "beta", and the way to say "unchanged"
        warnings.simplefilter("ignore", dg.BetaWarning)
        output = dg.Output(value, data_version=dg.DataVersion(refresh.data_version),
                           metadata=metadata)
    yield output
    yield _shard_check("all_rows_read", "posts", refresh.read_failures,
                       "could not be read to the end")


REJECT_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("shard", "string", description="Parquet file the row came from."),
    dg.TableColumn("row", "int", description="Row number within the shard, from 0."),
    dg.TableColumn("reason", "string", description="Why the row is not a post."),
    dg.TableColumn("source_path", "string", description="The image's own path, if any."),
])


@dg.asset(group_name="ingest", kinds={"parquet"})
def rejected_posts(context: dg.AssetExecutionContext, posts: PostsTable) -> dg.MaterializeResult:
    """The quarantine: every row of the dataset that did not become a post, with its shard,
    row number and reason. Rows are never dropped silently; fix or remove them at the source."""
    table = read_table(posts.rejects_path)
    records = table.slice(0, PREVIEW_ROWS).to_pylist()
    reasons = reason_counts(table.select(["reason"]).to_pylist())
    context.log.info(f"{table.num_rows:,} rejected rows in {posts.rejects_path}")
    return dg.MaterializeResult(metadata={
        "rejected": table.num_rows,
        "by_reason": dg.MetadataValue.json(reasons),
        "preview": dg.MetadataValue.table(
            [dg.TableRecord({k: ("" if v is None else v) for k, v in r.items()}) for r in records],
            schema=REJECT_SCHEMA),
        "path": dg.MetadataValue.path(posts.rejects_path),
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": REJECT_SCHEMA,
    })
