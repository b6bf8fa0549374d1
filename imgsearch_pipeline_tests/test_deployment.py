"""The production Dagster deployment for real, without Docker: a PostgreSQL server, and
`dagster code-server start`, `dagster-daemon run` and `dagster-webserver` started as
processes with the commands of the compose services, on deploy/dagster.yaml and
deploy/workspace.yaml. Nobody launches anything: the shard sensor runs the pipeline on
the dataset it finds, then the nightly schedule (its cron set to a minute ahead) launches
a reindex run that publishes a new index version. Both runs are read back from
PostgreSQL itself and through the webserver's GraphQL API.
"""

import contextlib
import datetime as dt
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from imgsearch_pipeline.resources.vector_index import FaissHnswIndex
from imgsearch_pipeline.sample_data import write_dataset

from .compose import service_command
from .servers import Processes, free_port, postgres_bin, postgres_server, venv_command, wait_for

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(postgres_bin() is None and not os.environ.get("CI"),
                       reason="no PostgreSQL server binaries: apt-get install postgresql "
                              "(.ci/run installs it)"),
]

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId jobName status tags { key value } }
  }
}
"""


def graphql(port: int, query: str, variables: dict) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


def runs_in_postgres(pg) -> dict[str, dict]:
    """run id -> job, status and tags, straight from Dagster's tables (none before the
    first process has created them)."""
    import psycopg2.errors

    with contextlib.closing(pg.connect()) as conn, conn.cursor() as cursor:
        try:
            cursor.execute("SELECT run_id, pipeline_name, status FROM runs")
        except psycopg2.errors.UndefinedTable:
            return {}
        runs = {run_id: {"job": job, "status": status, "tags": {}}
                for run_id, job, status in cursor.fetchall()}
        cursor.execute("SELECT run_id, key, value FROM run_tags")
        for run_id, key, value in cursor.fetchall():
            if run_id in runs:
                runs[run_id]["tags"][key] = value
    return runs


def cron_in(minutes_ahead_of: dt.datetime) -> str:
    """A daily cron firing at the first whole minute at or after the given UTC time."""
    at = (minutes_ahead_of + dt.timedelta(seconds=59)).replace(second=0, microsecond=0)
    return f"{at.minute} {at.hour} * * *"


def live_version_of(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    for record in records:
        materialization = record.dagster_event.event_specific_data.materialization
        if materialization.asset_key == dg.AssetKey("live_index"):
            return materialization.metadata["live_version"].value
    raise AssertionError(f"run {run_id} published no index version")


def test_daemon_on_postgres_runs_the_sensor_and_the_schedule_by_itself(tmp_path, monkeypatch):
    write_dataset(tmp_path / "ds", images=120, shards=2, size=64, seed=21, exact_duplicates=2)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")  # the production instance
    (tmp_path / "logs").mkdir()
    code_port, web_port = free_port(), free_port()

    with postgres_server() as pg:
        started = dt.datetime.now(dt.UTC)
        env = {
            **os.environ,
            **pg.env(),
            "DAGSTER_HOME": str(home),
            "DAGSTER_LOGS_DIR": str(tmp_path / "logs"),
            "DAGSTER_CODE_LOCATION_HOST": "127.0.0.1",
            "DAGSTER_CODE_LOCATION_PORT": str(code_port),
            "IMGSEARCH_PROFILE": "embedded",
            "IMGSEARCH_EMBEDDER": "color-texture",
            "IMGSEARCH_HOME": str(tmp_path / "var"),
            "IMGSEARCH_DATASET": str(tmp_path / "ds" / "data"),
            "IMGSEARCH_AUTOMATION": "running",  # as in docker-compose.yml
            "IMGSEARCH_SHARD_SENSOR_INTERVAL_S": "5",
            # Far enough ahead for the sensor's run to be queued first (one run at a time:
            # the schedule's run waits in the queue until the pipeline's has finished).
            "IMGSEARCH_REINDEX_CRON": cron_in(started + dt.timedelta(seconds=180)),
        }
        processes = Processes(tmp_path, env)
        clock = time.monotonic()
        try:
            # The commands of the code-location, daemon and webserver services, with this
            # machine's ports, loopback and the repository's workspace file.
            replace = {"0.0.0.0": "127.0.0.1", "4000": str(code_port), "3000": str(web_port),
                       "/opt/dagster/workspace.yaml": str(DEPLOY / "workspace.yaml"),
                       **{name: venv_command(name) for name in ("dagster", "dagster-daemon",
                                                                "dagster-webserver")}}
            processes.start("code-location", service_command("code-location", replace))
            wait_for("code server", lambda: processes_ok(venv_command("dagster"), code_port, env),
                     240, lambda: processes.dead("code-location"))
            processes.start("daemon", service_command("daemon", replace))
            processes.start("webserver", service_command("webserver", replace))

            def finished(job: str) -> dict | None:
                dead = processes.dead("daemon") or processes.dead("code-location")
                if dead:
                    raise RuntimeError(dead)
                done = [(run_id, run) for run_id, run in runs_in_postgres(pg).items()
                        if run["job"] == job and run["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
                return dict([done[0]]) if done else None

            deadline = time.monotonic() + 600
            pipeline = reindex = None
            while time.monotonic() < deadline and not (pipeline and reindex):
                pipeline = pipeline or finished("full_pipeline")
                reindex = reindex or finished("reindex")
                time.sleep(2)
            assert pipeline and reindex, (
                f"runs in postgres: {runs_in_postgres(pg)}\n--- daemon log:\n{processes.log('daemon')}"
                f"\n--- code location log:\n{processes.log('code-location')}")

            (pipeline_id, first), = pipeline.items()
            (reindex_id, second), = reindex.items()
            # Recorded in PostgreSQL: who launched each run, and how it ended.
            assert first["status"] == "SUCCESS", processes.log("code-location")
            assert first["tags"]["dagster/sensor_name"] == "new_shards"
            assert second["status"] == "SUCCESS", processes.log("code-location")
            assert second["tags"]["dagster/schedule_name"] == "nightly_reindex"
            assert second["tags"]["imgsearch/trigger"] == "schedule"
            print(f"\nsensor run {pipeline_id}, schedule run {reindex_id} "
                  f"({time.monotonic() - clock:.0f} s after the code server started)")

            # The sensor's run published a version; the schedule's run found nothing new
            # since (the same shards): it succeeded, built and published nothing, and said so.
            for name, value in pg.env().items():  # this process reads the instance too
                monkeypatch.setenv(name, value)
            monkeypatch.setenv("DAGSTER_LOGS_DIR", env["DAGSTER_LOGS_DIR"])
            instance = dg.DagsterInstance.from_config(str(home))
            try:
                before = live_version_of(instance, pipeline_id)
                with pytest.raises(AssertionError, match="published no index version"):
                    live_version_of(instance, reindex_id)
                observed = [r.dagster_event.event_specific_data.asset_observation.metadata
                            for r in instance.all_logs(
                                reindex_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)]
                assert instance.get_run_by_id(reindex_id).status == dg.DagsterRunStatus.SUCCESS
            finally:
                instance.dispose()
            assert [m["action"].value for m in observed] == ["unchanged"]
            assert before in observed[0]["reason"].value
            assert FaissHnswIndex(root=str(tmp_path / "var" / "index")).live_version() == before

            # The webserver, on the same instance, answers for that run.
            wait_for("webserver", lambda: http_ok(f"http://127.0.0.1:{web_port}/server_info"), 180,
                     lambda: processes.dead("webserver"))
            answer = graphql(web_port, RUN_QUERY, {"runId": reindex_id})
            run = answer["data"]["runOrError"]
            assert run["__typename"] == "Run", answer
            assert (run["runId"], run["jobName"], run["status"]) == (reindex_id, "reindex", "SUCCESS")
            assert {"key": "dagster/schedule_name", "value": "nightly_reindex"} in run["tags"]
        finally:
            processes.stop_all()
    for name, process in processes.started.items():
        assert process.poll() is not None, f"{name} still running"


def processes_ok(dagster: str, port: int, env: dict) -> bool:
    """`dagster api grpc-health-check`, the code location's compose healthcheck."""
    import subprocess

    return subprocess.run([dagster, "api", "grpc-health-check", "-p", str(port)], env=env,
                          capture_output=True, timeout=30).returncode == 0
