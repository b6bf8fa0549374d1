"""The Dagster code location: assets, checks, jobs, schedules, sensors and resources.

The settings are read here, once, when the code location loads; the schedule, the shard
sensor and the resources are made from them.
"""

import dagster as dg

from . import checks
from .assets import embeddings, evaluation, images, index, posts
from .jobs import full_pipeline_job, reindex_job
from .resources.profiles import backend_kinds, resources_for
from .schedules import make_reindex_schedule
from .sensors import failure_alerts, make_shard_sensor, report_failures
from .settings import Settings


def with_backend_kinds(assets: list, settings: Settings) -> list:
    """Each asset kept in a backend shows that backend's kind in the UI (S3 or a folder,
    Elasticsearch or faiss): the profile decides, so it is added here, not at import."""
    store, index_kind = backend_kinds(settings)
    kinds = {"image_objects": store, "search_index": index_kind, "live_index": index_kind}
    return list(dg.map_asset_specs(
        lambda spec: spec.merge_attributes(kinds=kinds.get(spec.key.to_user_string(), set())),
        assets))


def make_definitions(settings: Settings) -> dg.Definitions:
    assets = dg.load_assets_from_modules([posts, images, embeddings, index, evaluation])
    return dg.Definitions(
        assets=with_backend_kinds(assets, settings),
        asset_checks=dg.load_asset_checks_from_modules([checks]),
        jobs=[full_pipeline_job, reindex_job],
        schedules=[make_reindex_schedule(settings)],
        sensors=[make_shard_sensor(settings), report_failures],
        resources={**resources_for(settings), "alerts": failure_alerts(settings)},
        # Steps run one after another in the run's process. A process per step cost 2-3 s
        # of start-up each (a re-index with nothing new on the demo: 13.4 s, in one process
        # 4.0 s); the one pair that could overlap (the index build and the ground truth)
        # shares the same cores, and the report's timing never has a step beside it.
        executor=dg.in_process_executor,
    )


defs = make_definitions(Settings.read())
