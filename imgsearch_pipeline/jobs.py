"""Jobs: the whole pipeline, and the re-index from embeddings onwards (plain runs)."""

import dagster as dg

full_pipeline_job = dg.define_asset_job(
    "full_pipeline", selection=dg.AssetSelection.all(),
    description="Raw posts to a published, evaluated search index (new shards included).",
)

reindex_job = dg.define_asset_job(
    "reindex",
    selection=dg.AssetSelection.assets("image_embeddings").downstream(),
    description="Embeddings, index, ground truth, recall report and publishing.",
)
