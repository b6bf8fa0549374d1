"""Stage 5: the search index, built as a new version, then published once it passes."""

from datetime import UTC, datetime

import dagster as dg

from ..artifacts import EmbeddingSet, IndexBuild, PostsTable
from ..core.integrity import IntegrityError
from ..core.progress import Progress
from ..core.vectors import iter_vectors
from ..resources.vector_index import IndexBatch, VectorIndex


def new_version(run_id: str) -> str:
    """Sortable, unique per run: ``20261124t101500-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dt%H%M%S}-{run_id[:8]}"


@dg.asset(group_name="index")  # kinds added by the definitions
def search_index(
    context: dg.AssetExecutionContext,
    image_embeddings: EmbeddingSet,
    posts: PostsTable,
    vector_index: VectorIndex,
) -> dg.Output[IndexBuild]:
    """A new index version holding the train embeddings; not live until ``live_index``."""
    # Versions that failed the recall gate are never published; prune before building so
    # that nightly runs do not pile them up (the live version is never pruned).
    pruned = vector_index.prune()
    if pruned:
        context.log.info(f"pruned old index versions before building: {pruned}")
    train = posts.uuids("train")
    fields = posts.display_fields()
    version = new_version(context.run_id)
    # Reading and indexing are reported apart: a graph built from vectors spilled to disk
    # first (faiss with coded vectors) reads them all at once (20 s at 1M, measured), then
    # adds them (~15 min).
    read = Progress("vectors read", len(train), context.log.info, every_s=30)
    progress = Progress("vectors indexed", len(train), context.log.info)

    def batches():
        for uuids, matrix in iter_vectors(image_embeddings.folder, only=train):
            yield IndexBatch(
                ids=uuids,
                vectors=matrix,
                captions=[fields[u].get("caption") for u in uuids],
                splits=["train"] * len(uuids),
                shards=[str(fields[u].get("shard", "")) for u in uuids],
            )
            read.advance(len(uuids))

    count = vector_index.build(version, image_embeddings.dim, batches(),
                               on_indexed=progress.advance)
    context.log.info(progress.summary())
    value = IndexBuild(version, vector_index.backend, count, image_embeddings.dim,
                       vector_index.params())
    return dg.Output(value, metadata={
        "version": version,
        "backend": vector_index.backend,
        "documents": count,
        "dim": image_embeddings.dim,
        "model_id": image_embeddings.model_id,
        "params": dg.MetadataValue.json(vector_index.params()),
        "build_s": round(progress.elapsed_s(), 2),
    })


@dg.asset(group_name="index", deps=["recall_report"])  # kinds added by the definitions
def live_index(
    context: dg.AssetExecutionContext, search_index: IndexBuild, vector_index: VectorIndex
) -> dg.MaterializeResult:
    """The version that searches use. Runs only after the blocking check
    ``recall_meets_target`` on ``recall_report`` passes; otherwise the previous stays live."""
    try:
        previous = vector_index.live_version()
    except IntegrityError as error:  # a damaged pointer is replaced by the publish below
        previous = f"(unreadable: {error})"
    vector_index.publish(search_index.version)
    pruned = vector_index.prune()
    context.log.info(f"live index: {previous} -> {search_index.version}; pruned {pruned}")
    return dg.MaterializeResult(metadata={
        "live_version": search_index.version,
        "previous_version": str(previous),
        "documents": search_index.count,
        "pruned_versions": dg.MetadataValue.json(pruned),
    })
