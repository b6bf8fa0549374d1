"""Schedules: the nightly re-index."""

import os

import dagster as dg

from .jobs import reindex_job

reindex_schedule = dg.ScheduleDefinition(
    name="nightly_reindex",
    job=reindex_job,
    cron_schedule=os.getenv("IMGSEARCH_REINDEX_CRON", "0 3 * * *"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-embeds new images and rebuilds, evaluates and publishes the index.",
)
