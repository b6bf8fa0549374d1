"""Stage 4: image embeddings, L2-normalised, as parquet parts per model id."""

import os
import uuid

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
from pydantic import Field

from ..artifacts import EmbeddingSet, ImageObjects, PostsTable
from ..core.embedding import embed_in_batches
from ..core.images import DEFAULT_MAX_PIXELS, load_rgb
from ..core.progress import Progress
from ..core.tables import write_table_atomic
from ..core.vectors import embedded_uuids, model_slug, read_vectors, vectors_table
from ..resources.embedders import Embedder
from ..resources.object_store import ObjectStore
from ..resources.storage import TableStore


class EmbeddingConfig(dg.Config):
    part_rows: int = Field(2048, gt=0, description="Rows per parquet part (the resume unit).")
    loader_workers: int = Field(max(2, os.cpu_count() or 2), gt=0)


@dg.asset(group_name="embedding", kinds={"pytorch", "parquet"})
def image_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    posts: PostsTable,
    image_objects: ImageObjects,
    object_store: ObjectStore,
    embedder: Embedder,
    tables: TableStore,
) -> dg.Output[EmbeddingSet]:
    """Embeds every stored image not yet embedded with this model id (resumable by part)."""
    model = embedder.load()
    folder = tables.path("embeddings", model_slug(model.model_id))
    done = embedded_uuids(folder)
    table = pq.read_table(posts.path, columns=["uuid", "split", "key"])
    split_of = dict(zip(table.column("uuid").to_pylist(), table.column("split").to_pylist(),
                        strict=True))
    key_of = dict(zip(table.column("uuid").to_pylist(), table.column("key").to_pylist(),
                      strict=True))
    todo = [u for u in split_of if u not in done]
    context.log.info(f"model {model.model_id} (dim {model.dim}): {len(done):,} already embedded, "
                     f"{len(todo):,} to embed, batch size {embedder.batch_size}")

    progress = Progress("images embedded", len(todo), context.log.info)
    buffer_ids: list[str] = []
    buffer_vectors: list[np.ndarray] = []
    failures: list[tuple[str, str]] = []

    def flush() -> None:
        if buffer_ids:
            part = vectors_table(buffer_ids, [split_of[u] for u in buffer_ids], model.model_id,
                                 np.concatenate(buffer_vectors))
            write_table_atomic(part, folder / f"part-{uuid.uuid4().hex}.parquet")
            buffer_ids.clear()
            buffer_vectors.clear()

    batches = embed_in_batches(
        todo,
        load_image=lambda u: load_rgb(object_store.get(key_of[u]), DEFAULT_MAX_PIXELS),
        prepare=model.prepare,
        encode=model.encode,
        batch_size=embedder.batch_size,
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
    context.log.info(progress.summary())
    for item, reason in failures:
        context.log.warning(f"not embedded {item}: {reason}")

    ids, _ = read_vectors(folder)
    train = sum(1 for u in ids if split_of.get(u) == "train")
    value = EmbeddingSet(str(folder), model.model_id, model.dim, len(ids), train, len(ids) - train)
    return dg.Output(value, metadata={
        "model_id": model.model_id,
        "dim": model.dim,
        "embedded_now": len(todo) - len(failures),
        "reused": len(done),
        "failed": len(failures),
        "failures": dg.MetadataValue.json(dict(failures[:100])),
        "images_per_s": round(progress.rate, 1),
        "total": len(ids),
        "folder": dg.MetadataValue.path(str(folder)),
    })
