"""Sensors: new parquet shards start the pipeline; failed runs are reported (in the log,
and to the settings' webhook as JSON ``{"text": ...}``, Slack/Mattermost/Teams-style)."""

import json
import urllib.error
import urllib.request

import dagster as dg

from .core.watch import compare, decode_cursor, encode_cursor, listing_digest, shard_fingerprints
from .jobs import full_pipeline_job, reindex_job
from .resources.storage import PostsDataset
from .settings import Settings, variable_of

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
          dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def pipeline_in_flight(instance: dg.DagsterInstance) -> str | None:
    """The id of a queued or running pipeline/re-index run, if any."""
    for job in (full_pipeline_job.name, reindex_job.name):
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=job, statuses=ACTIVE), limit=1)
        if runs:
            return runs[0].run_id
    return None


def new_shards(context: dg.SensorEvaluationContext, dataset: PostsDataset):
    try:
        current = shard_fingerprints(dataset.location)
    except OSError as error:
        return dg.SkipReason(f"cannot list {dataset.location}: {error}")
    previous = decode_cursor(context.cursor)
    changes = compare(previous or {}, current)
    if previous is not None and not changes.any:
        return dg.SkipReason(f"no new or changed shards at {dataset.location} ({len(current)} shards)")
    busy = pipeline_in_flight(context.instance)
    if busy:
        # The cursor stays put, so the next tick sees the same changes and tries again.
        return dg.SkipReason(f"shards changed ({changes.summary()}) but run {busy} is in progress")
    why = "first look at the dataset" if previous is None else changes.summary()
    context.log.info(f"{dataset.location}: {why}; requesting a pipeline run")
    new = changes.added + changes.changed
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=listing_digest(current),  # the same listing never runs twice
            tags={"imgsearch/trigger": "new-shards",
                  "imgsearch/shard_changes": why,
                  "imgsearch/new_shards": ", ".join(p.rsplit("/", 1)[-1] for p in new)[:200]},
        )],
        cursor=encode_cursor(current),
    )


def make_shard_sensor(settings: Settings) -> dg.SensorDefinition:
    """``new_shards`` at the settings' interval, running from the start when automation is."""
    return dg.sensor(
        name="new_shards",
        job=full_pipeline_job,
        minimum_interval_seconds=settings.shard_sensor_interval_s,
        default_status=(dg.DefaultSensorStatus.RUNNING if settings.automation_running
                        else dg.DefaultSensorStatus.STOPPED),
        description="Requests a full pipeline run when shards are added to, changed at or "
                    "removed from the dataset location (their size and mtime against the cursor).",
    )(new_shards)


class FailureAlerts(dg.ConfigurableResource):
    """Where failed runs are reported: the sensor log always, a webhook when configured."""

    webhook_url: str | None = None
    timeout_s: float = 10.0

    def send(self, text: str, log) -> bool:
        if not self.webhook_url:
            return False
        request = urllib.request.Request(
            self.webhook_url, data=json.dumps({"text": text}).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s):
                return True
        except (urllib.error.URLError, OSError) as error:
            # The URL is a secret: name the failure, not the address.
            log.warning(f"failure alert webhook did not answer: {type(error).__name__}: {error}")
            return False


def failure_alerts(settings: Settings) -> FailureAlerts:
    """The webhook is a secret: Dagster reads it from the environment when a sensor runs."""
    if settings.alert_webhook is None:
        return FailureAlerts()
    return FailureAlerts(webhook_url=dg.EnvVar(variable_of(Settings, "alert_webhook")))


def root_cause(error) -> str:
    """The first line of the innermost error: the user's exception, not Dagster's wrapper."""
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None or not error.message:
        return "no message"
    return error.message.strip().splitlines()[0]


def failure_text(context: dg.RunFailureSensorContext) -> str:
    """One readable paragraph: which run failed, which steps, why, and failed checks."""
    run = context.dagster_run
    lines = [f"imgsearch run {run.run_id} ({run.job_name}) failed: {context.failure_event.message}"]
    for event in context.get_step_failure_events():
        data = event.event_specific_data
        lines.append(f"- step {event.step_key}: {root_cause(data.error if data else None)}")
    for record in context.instance.all_logs(
        run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ):
        evaluation = record.dagster_event.event_specific_data
        if not evaluation.passed:
            lines.append(f"- check {evaluation.check_name} failed: {evaluation.description or ''}")
    return "\n".join(lines)


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs every failed run of this code location (steps, errors, failed checks) "
                "and posts it to IMGSEARCH_ALERT_WEBHOOK when that is set.",
)
def report_failures(context: dg.RunFailureSensorContext, alerts: FailureAlerts) -> None:
    text = failure_text(context)
    context.log.error(text)
    alerts.send(text, context.log)
