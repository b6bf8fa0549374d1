"""Schedules: the nightly re-index, at the cron and time zone of the settings."""

import dagster as dg

from .jobs import reindex_job
from .settings import Settings


def make_reindex_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """``IMGSEARCH_AUTOMATION=running`` starts it when the code location loads; otherwise
    turn it on in the UI or with ``dagster schedule start nightly_reindex``."""

    @dg.schedule(
        name="nightly_reindex",
        job=reindex_job,
        cron_schedule=settings.reindex_cron,
        execution_timezone=settings.timezone,
        default_status=(dg.DefaultScheduleStatus.RUNNING if settings.automation_running
                        else dg.DefaultScheduleStatus.STOPPED),
        description="Embeds what is new, rebuilds, evaluates and publishes the "
                    "index (publishing only if the recall gate passes).",
    )
    def nightly_reindex(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(tags={"imgsearch/trigger": "schedule"})

    return nightly_reindex

