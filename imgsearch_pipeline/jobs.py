"""Jobs: the whole pipeline, and the re-index from embeddings onwards.

Both contain the bucket-partitioned ``embedding_buckets``, so a run names its buckets: one
bucket (``dagster/partition``) or a range (``all_buckets_tags()``, what the schedule and the
sensors request: one run covers every bucket, and each bucket only embeds what is new).
"""

import dagster as dg

from .core.buckets import all_buckets_tags

full_pipeline_job = dg.define_asset_job(
    "full_pipeline", selection=dg.AssetSelection.all(),
    description="Raw posts to a published, evaluated search index (new shards included).",
)

reindex_job = dg.define_asset_job(
    "reindex",
    selection=dg.AssetSelection.assets("embedding_buckets").downstream(),
    description="Embeddings, index, ground truth, recall report and publishing.",
)

ALL_BUCKETS = all_buckets_tags()
