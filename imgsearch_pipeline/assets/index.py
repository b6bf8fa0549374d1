"""Stage 5: the search index, built as a new version, then published once it passes.

A re-index costs what changed: the new version is the live one plus the new train vectors,
minus the removed ones, or nothing at all when neither changed (``core/index_plan.py``
decides; the version's record beside it says what it holds). Without a new version the
asset yields no output, so the evaluation and the publish step do not run.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from ..artifacts import EmbeddingSet, IndexBuild, PostsTable
from ..core.index_plan import VersionRecord, plan_index, read_version_record, write_version_record
from ..core.integrity import IntegrityError
from ..core.layout import Layout
from ..core.progress import Progress
from ..core.tables import remove
from ..core.vectors import embedded_uuids, embedding_parts, iter_vectors
from ..resources.storage import PipelineHome
from ..resources.vector_index import IndexBatch, VectorIndex
from ..run_config import SearchIndexConfig


def new_version(run_id: str) -> str:
    """Sortable, unique per run: ``20261124t101500-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dt%H%M%S}-{run_id[:8]}"


def _live(vector_index: VectorIndex) -> str | None:
    try:
        return vector_index.live_version()
    except IntegrityError:  # a damaged pointer: build in full, publishing replaces it
        return None


def _prune(vector_index: VectorIndex, layout: Layout) -> list[str]:
    """Old versions beyond the index's ``keep_versions`` go, with their records."""
    pruned = vector_index.prune()
    for version in pruned:
        remove(layout.index_record(version))
    return pruned


@dg.asset(group_name="index", output_required=False)  # kinds added by the definitions
def search_index(
    context: dg.AssetExecutionContext,
    config: SearchIndexConfig,
    image_embeddings: EmbeddingSet,
    posts: PostsTable,
    vector_index: VectorIndex,
    home: PipelineHome,
) -> Iterator:
    """A new index version holding the train embeddings; not live until ``live_index``.
    No new version (and no evaluation) when the live one already holds exactly them."""
    layout = home.layout
    train = posts.uuids("train")
    parts = embedding_parts(image_embeddings.folder)[0]  # verified once, read twice below
    wanted = train & embedded_uuids(image_embeddings.folder, parts)
    build_key = {"model_id": image_embeddings.model_id, "dim": image_embeddings.dim,
                 **vector_index.params()}
    live = _live(vector_index)
    found = read_version_record(layout.index_record(live)) if live else None
    plan = plan_index(wanted, build_key, live, *(found or (None, None)), config.full_rebuild)
    context.log.info(f"search index: {plan.action}: {plan.reason}")
    if plan.action == "unchanged":
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata={
            "action": "unchanged", "reason": plan.reason, "live_version": str(live),
            "documents": len(wanted)}))
        return
    # Versions that failed the recall gate are never published; prune before building so
    # that nightly runs do not pile them up (the live version is never pruned).
    if pruned := _prune(vector_index, layout):
        context.log.info(f"pruned old index versions before building: {pruned}")
    todo = plan.added if plan.action == "incremental" else wanted
    fields = posts.display_fields(only=set(todo))
    version = new_version(context.run_id)
    # Reading and indexing are reported apart: a graph built from vectors spilled to disk
    # first (faiss with coded vectors) reads them all at once (20 s at 1M, measured), then
    # adds them (~15 min).
    read = Progress("vectors read", len(todo), context.log.info, every_s=30)
    progress = Progress("vectors indexed", len(todo), context.log.info)

    def batches() -> Iterator[IndexBatch]:
        for uuids, matrix in iter_vectors(image_embeddings.folder, only=set(todo), parts=parts):
            yield IndexBatch(
                ids=uuids,
                vectors=matrix,
                captions=[fields[u].get("caption") for u in uuids],
                splits=["train"] * len(uuids),
                shards=[str(fields[u].get("shard", "")) for u in uuids],
            )
            read.advance(len(uuids))

    count = vector_index.build(version, image_embeddings.dim, batches(),
                               on_indexed=progress.advance, base=plan.base,
                               removed=sorted(plan.removed))
    context.log.info(progress.summary())
    write_version_record(layout.index_record(version), wanted,
                         VersionRecord(build_key, plan.tombstones, plan.base))
    value = IndexBuild(version, vector_index.backend, count, image_embeddings.dim,
                       vector_index.params(), plan.action, plan.base, len(plan.added),
                       len(plan.removed))
    yield dg.Output(value, metadata={
        "version": version,
        "action": plan.action,
        "reason": plan.reason,
        "base_version": plan.base or "",
        "added": len(plan.added),
        "removed": len(plan.removed),
        "documents": count,
        "dim": image_embeddings.dim,
        "model_id": image_embeddings.model_id,
        "params": dg.MetadataValue.json(vector_index.params()),
        "build_s": round(progress.elapsed_s(), 2),
    })


@dg.asset(group_name="index", deps=["recall_report"])  # kinds added by the definitions
def live_index(
    context: dg.AssetExecutionContext,
    search_index: IndexBuild,
    vector_index: VectorIndex,
    home: PipelineHome,
) -> dg.MaterializeResult:
    """The version that searches use. Runs only after the blocking check
    ``recall_meets_target`` on ``recall_report`` passes; otherwise the previous stays live."""
    try:
        previous = vector_index.live_version()
    except IntegrityError as error:  # a damaged pointer is replaced by the publish below
        previous = f"(unreadable: {error})"
    vector_index.publish(search_index.version)
    pruned = _prune(vector_index, home.layout)
    context.log.info(f"live index: {previous} -> {search_index.version}; pruned {pruned}")
    return dg.MaterializeResult(metadata={
        "live_version": search_index.version,
        "previous_version": str(previous),
        "action": search_index.action,
        "documents": search_index.count,
        "pruned_versions": dg.MetadataValue.json(pruned),
    })
