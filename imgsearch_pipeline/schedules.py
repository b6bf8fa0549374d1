"""Schedules: the nightly re-index.

IMGSEARCH_REINDEX_CRON      cron of the re-index (default ``0 3 * * *``: 03:00 every night)
IMGSEARCH_TIMEZONE          its time zone (default UTC)
IMGSEARCH_AUTOMATION        ``running`` starts schedules and the shard sensor when the code
                            location loads; default ``stopped`` (turn them on in the UI, or
                            ``dagster schedule start nightly_reindex``); a daemon must run.
"""

import os

import dagster as dg

from .jobs import reindex_job


def automation_running(environ=None) -> bool:
    value = (os.environ if environ is None else environ).get("IMGSEARCH_AUTOMATION", "stopped")
    if value.strip().lower() not in ("running", "stopped"):
        raise ValueError(f"IMGSEARCH_AUTOMATION must be 'running' or 'stopped', not {value!r}")
    return value.strip().lower() == "running"


def make_reindex_schedule(cron: str | None = None, running: bool | None = None) -> dg.ScheduleDefinition:
    cron = cron or os.getenv("IMGSEARCH_REINDEX_CRON", "0 3 * * *")
    running = automation_running() if running is None else running

    @dg.schedule(
        name="nightly_reindex",
        job=reindex_job,
        cron_schedule=cron,
        execution_timezone=os.getenv("IMGSEARCH_TIMEZONE", "UTC"),
        default_status=(dg.DefaultScheduleStatus.RUNNING if running
                        else dg.DefaultScheduleStatus.STOPPED),
        description="Embeds what is new, rebuilds, evaluates and publishes the "
                    "index (publishing only if the recall gate passes).",
    )
    def nightly_reindex(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(tags={"imgsearch/trigger": "schedule"})

    return nightly_reindex


reindex_schedule = make_reindex_schedule()
