"""The Dagster code location: assets, checks, jobs, schedules, sensors and resources."""

import dagster as dg

from . import checks
from .assets import embeddings, evaluation, images, index, posts
from .jobs import full_pipeline_job, reindex_job
from .resources.profiles import resources_for
from .schedules import reindex_schedule
from .sensors import alerts_from_env, new_shards, report_failures

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([posts, images, embeddings, index, evaluation]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[full_pipeline_job, reindex_job],
    schedules=[reindex_schedule],
    sensors=[new_shards, report_failures],
    resources={**resources_for(), "alerts": alerts_from_env()},
)
