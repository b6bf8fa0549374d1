"""Stage 4: image embeddings, L2-normalised, as parquet parts per model id and bucket.

``embedding_buckets`` does the work, partitioned by a stable hash of the uuid (16 buckets):
a failed bucket re-runs alone and a backfill can fan out, one bucket per worker. One run can
also cover every bucket (single-run backfill policy). ``image_embeddings`` then gathers the
model's whole set for the index and the evaluation.

Layout: ``tables/embeddings/<model>/bucket=NN/part-<run>-<hex>.parquet``.
"""

import os
import uuid
import warnings
from collections import defaultdict
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
from pydantic import Field

from ..artifacts import EmbeddingSet, PostsTable
from ..core.buckets import BUCKET_KEYS, bucket_folder, bucket_of
from ..core.embedding import embed_in_batches
from ..core.images import DEFAULT_MAX_PIXELS, load_rgb
from ..core.progress import Progress
from ..core.tables import write_table_atomic
from ..core.vectors import embedded_uuids, model_slug, stored_dim, vectors_table
from ..resources.embedders import Embedder, EmbeddingModel
from ..resources.object_store import ObjectStore
from ..resources.storage import TableStore

embedding_partitions = dg.StaticPartitionsDefinition(list(BUCKET_KEYS))
# Single-run backfills are what let one run embed every bucket; the API is marked beta.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)


class EmbeddingConfig(dg.Config):
    part_rows: int = Field(2048, gt=0, description="Rows per parquet part (the resume unit).")
    loader_workers: int = Field(max(2, os.cpu_count() or 2), gt=0)


def run_tag(run_id: str) -> str:
    """Part files carry the run that wrote them: ``part-<run_id[:8]>-<hex>.parquet``."""
    return run_id.replace("-", "")[:8]


def embed_bucket(
    todo: list[str],
    folder: Path,
    split_of: dict[str, str],
    key_of: dict[str, str],
    model: EmbeddingModel,
    object_store: ObjectStore,
    batch_size: int,
    config: EmbeddingConfig,
    run_id: str,
    progress: Progress,
) -> list[tuple[str, str]]:
    """Embed ``todo`` into ``folder`` part by part; return the (uuid, reason) not embedded."""
    buffer_ids: list[str] = []
    buffer_vectors: list[np.ndarray] = []
    failures: list[tuple[str, str]] = []

    def flush() -> None:
        if buffer_ids:
            part = vectors_table(buffer_ids, [split_of[u] for u in buffer_ids], model.model_id,
                                 np.concatenate(buffer_vectors))
            write_table_atomic(part, folder / f"part-{run_tag(run_id)}-{uuid.uuid4().hex}.parquet")
            buffer_ids.clear()
            buffer_vectors.clear()

    batches = embed_in_batches(
        todo,
        load_image=lambda u: load_rgb(object_store.get(key_of[u]), DEFAULT_MAX_PIXELS),
        prepare=model.prepare,
        encode=model.encode,
        batch_size=batch_size,
        workers=config.loader_workers,
    )
    for batch in batches:
        buffer_ids += batch.ids
        if batch.ids:
            buffer_vectors.append(batch.vectors)
        failures += batch.failures
        progress.advance(len(batch.ids) + len(batch.failures))
        if len(buffer_ids) >= config.part_rows:
            flush()
    flush()
    return failures


@dg.asset(
    group_name="embedding",
    kinds={"pytorch", "parquet"},
    partitions_def=embedding_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["image_objects"],
)
def embedding_buckets(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    posts: PostsTable,
    object_store: ObjectStore,
    embedder: Embedder,
    tables: TableStore,
) -> dg.MaterializeResult:
    """Embeds the stored images of this run's buckets not yet embedded with this model id.

    Buckets run one after another; a bucket that fails does not stop the others, and the run
    then fails naming it, so that it can be re-run alone (its finished parts are kept).
    """
    buckets = list(context.partition_keys)
    model = embedder.load()
    folder = tables.path("embeddings", model_slug(model.model_id))
    # Over the whole model folder: embeddings made under another layout are reused too.
    done = embedded_uuids(folder)
    table = pq.read_table(posts.path, columns=["uuid", "split", "key"])
    uuids = table.column("uuid").to_pylist()
    split_of = dict(zip(uuids, table.column("split").to_pylist(), strict=True))
    key_of = dict(zip(uuids, table.column("key").to_pylist(), strict=True))
    todo: dict[str, list[str]] = defaultdict(list)
    reused = 0
    wanted = set(buckets)
    for u in uuids:
        bucket = bucket_of(u)
        if bucket in wanted:
            if u in done:
                reused += 1
            else:
                todo[bucket].append(u)
    total = sum(len(v) for v in todo.values())
    context.log.info(f"model {model.model_id} (dim {model.dim}), buckets {buckets[0]}..{buckets[-1]} "
                     f"({len(buckets)}): {reused:,} already embedded, {total:,} to embed, "
                     f"batch size {embedder.batch_size}")

    progress = Progress("images embedded", total, context.log.info)
    embedded: dict[str, int] = {}
    failures: list[tuple[str, str]] = []
    failed_buckets: dict[str, str] = {}
    for bucket in buckets:
        if not todo.get(bucket):
            continue
        try:
            bad = embed_bucket(todo[bucket], bucket_folder(folder, bucket), split_of, key_of, model,
                               object_store, embedder.batch_size, config, context.run_id, progress)
        except Exception as error:  # one bucket's failure must not cost the other buckets' work
            context.log.error(f"bucket {bucket} failed: {type(error).__name__}: {error}")
            failed_buckets[bucket] = f"{type(error).__name__}: {error}"
            continue
        failures += bad
        embedded[bucket] = len(todo[bucket]) - len(bad)
    context.log.info(progress.summary())
    for item, reason in failures:
        context.log.warning(f"not embedded {item}: {reason}")
    if failed_buckets:
        listed = ", ".join(sorted(failed_buckets))
        raise dg.Failure(
            description=(f"embedding bucket(s) {listed} failed; the other buckets are stored. "
                         f"Re-run only those: dagster asset materialize --select embedding_buckets "
                         f"--partition <bucket> (or the failed partitions in the UI)."),
            metadata={"failed_buckets": dg.MetadataValue.json(failed_buckets),
                      "embedded_now": sum(embedded.values())},
        )
    return dg.MaterializeResult(metadata={
        "model_id": model.model_id,
        "dim": model.dim,
        "buckets": len(buckets),
        "embedded_now": sum(embedded.values()),
        "reused": reused,
        "failed": len(failures),
        "failures": dg.MetadataValue.json(dict(failures[:100])),
        "embedded_per_bucket": dg.MetadataValue.json(embedded),
        "images_per_s": round(progress.rate, 1),
        "folder": dg.MetadataValue.path(str(folder)),
    })


def uuids_written_by(folder: Path, run_id: str) -> set[str]:
    parts = Path(folder).glob(f"**/part-{run_tag(run_id)}-*.parquet")
    return {u for part in parts for u in pq.read_table(part, columns=["uuid"]).column("uuid").to_pylist()}


@dg.asset(group_name="embedding", kinds={"parquet"}, deps=[embedding_buckets])
def image_embeddings(
    context: dg.AssetExecutionContext,
    posts: PostsTable,
    embedder: Embedder,
    tables: TableStore,
) -> dg.Output[EmbeddingSet]:
    """The model's embeddings of the current posts, all buckets together.

    Reads the stored parts only: the model itself is not loaded here."""
    model_id = embedder.model_id
    folder = tables.path("embeddings", model_slug(model_id))
    table = pq.read_table(posts.path, columns=["uuid", "split"])
    split_of = dict(zip(table.column("uuid").to_pylist(), table.column("split").to_pylist(),
                        strict=True))
    stored = embedded_uuids(folder)
    present = stored & split_of.keys()
    train = sum(1 for u in present if split_of[u] == "train")
    embedded_now = len(uuids_written_by(folder, context.run_id) & present)
    missing = len(split_of) - len(present)
    if missing:
        context.log.warning(f"{missing:,} posts have no embedding (failed images or buckets not "
                            "run yet); the index is built without them")
    dim = stored_dim(folder) or 0
    value = EmbeddingSet(str(folder), model_id, dim, len(present), train, len(present) - train)
    return dg.Output(value, metadata={
        "model_id": model_id,
        "dim": dim,
        "total": len(present),
        "train": train,
        "test": len(present) - train,
        "embedded_now": embedded_now,
        "reused": len(present) - embedded_now,
        "missing": missing,
        "stale": len(stored - present),
        "folder": dg.MetadataValue.path(str(folder)),
    })
