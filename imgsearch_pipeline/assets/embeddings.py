"""Stage 4: image embeddings, L2-normalised, as parquet parts per model id.

One asset, one run: it embeds the stored images of the posts that have no embedding yet
with this model id, writing a part every ``part_rows`` rows, so a killed run resumes where
it stopped and new shards cost only their new posts. Items that cannot be embedded are
listed with their reason. Location: ``Layout.embeddings(model_id)``.

The step runs in the concurrency pool ``embedding`` (limit 1 in ``dagster.yaml``): a second
run that reaches it waits until the first is done, then finds everything embedded.
"""

from collections.abc import Callable

import dagster as dg
from PIL import Image

from ..artifacts import EmbeddingSet, PostsTable
from ..core.embedding import embed_into_parts, embedding_figures
from ..core.images import DEFAULT_MAX_PIXELS, load_rgb
from ..core.progress import Progress
from ..core.vectors import (
    embedded_uuids,
    embedding_parts,
    set_aside_damaged_parts,
    stored_embeddings,
    vector_numerics,
)
from ..resources.embedders import Embedder
from ..resources.object_store import ObjectStore
from ..resources.storage import PipelineHome
from ..run_config import EmbeddingConfig, check_in_first_step

EMBEDDING_POOL = "embedding"
FAILURES_SHOWN = 100  # items listed in the metadata; the log names every one


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
    table = posts.read(["uuid", "split", "key"]).to_pydict()
    split_of = dict(zip(table["uuid"], table["split"], strict=True))
    key_of = dict(zip(table["uuid"], table["key"], strict=True))
    done = embedded_uuids(folder, parts)
    todo = [u for u in table["uuid"] if u not in done]
    context.log.info(f"model {model_id}: {len(split_of):,} posts, "
                     f"{len(split_of) - len(todo):,} already embedded, {len(todo):,} to embed")
    failures, rate = _embed(context, config, embedder, todo, folder, parts, split_of,
                            load_image=lambda u: load_rgb(object_store.get(key_of[u]),
                                                          DEFAULT_MAX_PIXELS))
    # With this run's new parts, verified again; none new: the parts verified above.
    stored = stored_embeddings(folder, split_of, parts=None if todo else parts)
    figures = embedding_figures(stored, len(split_of), len(todo), len(failures))
    if figures["missing"]:
        context.log.warning(f"{figures['missing']:,} posts have no embedding (listed above); the "
                            "index is built without them and a re-run tries them again")
    value = EmbeddingSet(folder, model_id, stored.dim, stored.present, stored.train, stored.test)
    return dg.Output(value, metadata={
        "model_id": model_id,
        **figures,
        "not_embedded_items": dg.MetadataValue.json(dict(failures[:FAILURES_SHOWN])),
        "images_per_s": dg.MetadataValue.float(round(rate, 1)),
        "folder": dg.MetadataValue.path(folder),
        "dagster/row_count": stored.present,
    })


def _embed(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    embedder: Embedder,
    todo: list[str],
    folder: str,
    parts: list[str],
    split_of: dict[str, str],
    load_image: Callable[[str], Image.Image],
) -> tuple[list[tuple[str, str]], float]:
    """Load the model (only when there is something to embed) and embed ``todo`` into new
    parts; returns the items not embedded, with why, and the images embedded per second."""
    if not todo:
        return [], 0.0
    model = embedder.load()
    context.log.info(f"model loaded: dim {model.dim}, batch size {embedder.batch_size}, "
                     f"numerics {model.numerics}")
    if others := sorted(set(vector_numerics(folder, parts)) - {model.numerics}):
        context.log.warning(
            f"the stored vectors of {embedder.model_id} were computed with {', '.join(others)}; "
            f"this run adds {model.numerics} to the same set (README's 'SigLIP on a CPU' says "
            "why one set, and what was measured); the metadata lists the rows of each")
    progress = Progress("images embedded", len(todo), context.log.info)
    failures = embed_into_parts(todo, folder, split_of, load_image, model, embedder.batch_size,
                                config.loader_workers, config.part_rows, progress.advance)
    context.log.info(progress.summary())
    for item, reason in failures:
        context.log.warning(f"not embedded {item}: {reason}")
    return failures, progress.rate
