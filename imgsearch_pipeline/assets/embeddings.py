"""Stage 4: image embeddings, L2-normalised, as parquet parts per model id.

One asset, one run: it embeds the stored images of the posts that have no embedding yet
with this model id, writing a part every ``part_rows`` rows, so a killed run resumes where
it stopped and new shards cost only their new posts. Items that cannot be embedded are
listed with their reason. Location: ``Layout.embeddings(model_id)``.

The step runs in the concurrency pool ``embedding`` (limit 1 in ``dagster.yaml``): a second
run that reaches it waits until the first is done, then finds everything embedded.
"""

import os
import uuid

import dagster as dg
import numpy as np
from pydantic import Field

from ..artifacts import EmbeddingSet, PostsTable
from ..core.embedding import embed_in_batches
from ..core.images import DEFAULT_MAX_PIXELS, load_rgb
from ..core.integrity import write_checked_table
from ..core.progress import Progress
from ..core.tables import join
from ..core.vectors import (
    embedded_uuids,
    embedding_parts,
    set_aside_damaged_parts,
    stored_dim,
    vector_numerics,
    vectors_table,
)
from ..resources.embedders import Embedder, EmbeddingModel
from ..resources.object_store import ObjectStore
from ..resources.storage import PipelineHome
from ..run_config import check_in_first_step

EMBEDDING_POOL = "embedding"
FAILURES_SHOWN = 100  # items listed in the metadata; the log names every one


class EmbeddingConfig(dg.Config):
    part_rows: int = Field(2048, gt=0, description="Rows per parquet part (the resume unit).")
    loader_workers: int = Field(max(2, os.cpu_count() or 2), gt=0,
                                description="Threads fetching and decoding images.")


def embed_missing(
    todo: list[str],
    folder: str,
    split_of: dict[str, str],
    key_of: dict[str, str],
    model: EmbeddingModel,
    object_store: ObjectStore,
    batch_size: int,
    config: EmbeddingConfig,
    progress: Progress,
) -> list[tuple[str, str]]:
    """Embed ``todo`` into ``folder`` part by part; return the (uuid, reason) not embedded."""
    buffer_ids: list[str] = []
    buffer_vectors: list[np.ndarray] = []
    failures: list[tuple[str, str]] = []

    def flush() -> None:
        if buffer_ids:
            part = vectors_table(buffer_ids, [split_of[u] for u in buffer_ids], model.model_id,
                                 np.concatenate(buffer_vectors), model.numerics)
            write_checked_table(part, join(folder, f"part-{uuid.uuid4().hex}.parquet"))
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


@dg.asset(group_name="embedding", kinds={"pytorch", "parquet"}, deps=["image_objects"],
          pool=EMBEDDING_POOL)
def image_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    posts: PostsTable,
    object_store: ObjectStore,
    embedder: Embedder,
    home: PipelineHome,
) -> dg.Output[EmbeddingSet]:
    """The embeddings of the current posts with the configured model: embeds those not yet
    embedded with this model id (the model is loaded only when there are some)."""
    check_in_first_step(context, upstream="posts")  # the first step of the re-index
    model_id = embedder.model_id
    folder = home.layout.embeddings(model_id)
    # A part that fails its checksum is set aside and its rows are embedded again.
    parts, damaged = embedding_parts(folder)  # verified once: each check reads every part
    for name, reason in set_aside_damaged_parts(folder, damaged).items():
        context.log.warning(f"embeddings part {name} set aside ({reason}): its rows are re-embedded")
    table = posts.read(["uuid", "split", "key"])
    uuids = table.column("uuid").to_pylist()
    split_of = dict(zip(uuids, table.column("split").to_pylist(), strict=True))
    key_of = dict(zip(uuids, table.column("key").to_pylist(), strict=True))
    done = embedded_uuids(folder, parts)
    todo = [u for u in uuids if u not in done]
    reused = len(uuids) - len(todo)
    context.log.info(f"model {model_id}: {len(uuids):,} posts, {reused:,} already embedded, "
                     f"{len(todo):,} to embed")

    progress = Progress("images embedded", len(todo), context.log.info)
    failures: list[tuple[str, str]] = []
    if todo:
        model = embedder.load()
        context.log.info(f"model loaded: dim {model.dim}, batch size {embedder.batch_size}, "
                         f"numerics {model.numerics}")
        others = sorted(set(vector_numerics(folder, parts)) - {model.numerics})
        if others:
            context.log.warning(
                f"the stored vectors of {model_id} were computed with {', '.join(others)}; this "
                f"run adds {model.numerics} to the same set (README's 'SigLIP on a CPU' says why "
                "one set, and what was measured); the metadata lists the rows of each")
        failures = embed_missing(todo, folder, split_of, key_of, model, object_store,
                                 embedder.batch_size, config, progress)
        context.log.info(progress.summary())
    for item, reason in failures:
        context.log.warning(f"not embedded {item}: {reason}")

    parts = embedding_parts(folder)[0]  # with this run's new parts
    stored = embedded_uuids(folder, parts)
    present = stored & split_of.keys()
    train = sum(1 for u in present if split_of[u] == "train")
    missing = len(uuids) - len(present)
    if missing:
        context.log.warning(f"{missing:,} posts have no embedding (listed above); the index is "
                            "built without them and a re-run tries them again")
    dim = stored_dim(folder, parts) or 0
    value = EmbeddingSet(folder, model_id, dim, len(present), train, len(present) - train)
    numerics = vector_numerics(folder, parts)
    return dg.Output(value, metadata={
        "model_id": model_id,
        "numerics": ", ".join(f"{name}: {rows:,} rows" for name, rows in sorted(numerics.items())),
        "dim": dim,
        "total": len(present),
        "train": train,
        "test": len(present) - train,
        "embedded_now": len(todo) - len(failures),
        "reused": reused,
        "not_embedded": len(failures),
        "not_embedded_items": dg.MetadataValue.json(dict(failures[:FAILURES_SHOWN])),
        "missing": missing,
        "stale": len(stored - present),
        "images_per_s": dg.MetadataValue.float(round(progress.rate, 1)),
        "folder": dg.MetadataValue.path(folder),
        "dagster/row_count": len(present),
    })
