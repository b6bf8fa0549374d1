"""Operations without running the pipeline: schedule, shard sensor, failure sensor, checks on
bad data, and the pure helpers behind them."""

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.artifacts import EmbeddingSet, IndexBuild, PostsTable
from imgsearch_pipeline.checks import (
    embeddings_are_unit_vectors,
    gate_verdict,
    index_count_matches_train,
    object_counts,
    split_is_disjoint,
)
from imgsearch_pipeline.core.ids import image_uuid
from imgsearch_pipeline.core.integrity import write_checked_table
from imgsearch_pipeline.core.report import RecallReport
from imgsearch_pipeline.core.vectors import read_vectors, vectors_table
from imgsearch_pipeline.core.watch import compare, decode_cursor, encode_cursor
from imgsearch_pipeline.definitions import defs
from imgsearch_pipeline.resources.storage import PostsDataset
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex, IndexBatch
from imgsearch_pipeline.sample_data import write_dataset
from imgsearch_pipeline.schedules import make_reindex_schedule
from imgsearch_pipeline.sensors import FailureAlerts, failure_alerts, failure_text, make_shard_sensor
from imgsearch_pipeline.settings import ConfigurationError, Settings

# --- embedding parts and the shard listing -------------------------------------------------


def test_parts_are_read_once_per_uuid_and_other_files_are_not_parts(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    write_checked_table(vectors_table(["a", "b"], ["train"] * 2, "m", vectors[:2]),
                        tmp_path / "part-1.parquet")
    write_checked_table(vectors_table(["b", "c"], ["train"] * 2, "m", vectors[1:]),
                        tmp_path / "part-2.parquet")
    write_checked_table(vectors_table(["d"], ["train"], "m", vectors[:1]),
                        tmp_path / "elsewhere" / "part-3.parquet")
    ids, matrix = read_vectors(tmp_path)
    assert sorted(ids) == ["a", "b", "c"] and matrix.shape == (3, 3)  # "b" once, no "d"


def test_compare_listings_and_cursor():
    before = {"s/a.parquet": "10-1", "s/b.parquet": "20-1"}
    after = {"s/a.parquet": "10-1", "s/b.parquet": "21-2", "s/c.parquet": "5-3"}
    changes = compare(before, after)
    assert (changes.added, changes.changed, changes.removed) == (["s/c.parquet"], ["s/b.parquet"], [])
    assert not compare(after, after).any
    assert compare(after, before).removed == ["s/c.parquet"]
    assert decode_cursor(encode_cursor(after)) == after
    assert decode_cursor(None) is None and decode_cursor("not json") is None


# --- schedule ------------------------------------------------------------------------------


def test_schedule_requests_a_plain_reindex_run(monkeypatch):
    reindex_schedule = make_reindex_schedule(Settings.read({}))
    when = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    request = reindex_schedule(dg.build_schedule_context(scheduled_execution_time=when))
    assert isinstance(request, dg.RunRequest)
    assert request.tags == {"imgsearch/trigger": "schedule"}
    assert request.partition_key is None
    assert reindex_schedule.job_name == "reindex"
    assert reindex_schedule.cron_schedule == "0 3 * * *"
    assert reindex_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    # the job it targets is the re-index: embeddings onwards, not ingest
    job = defs.resolve_job_def("reindex")
    selected = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"image_embeddings", "search_index", "ground_truth",
            "recall_report", "live_index"} <= selected
    assert not selected & {"raw_posts", "posts", "image_objects"}


def test_schedule_cron_and_status_are_configurable():
    schedule = make_reindex_schedule(Settings.read({"IMGSEARCH_REINDEX_CRON": "*/30 * * * *",
                                                    "IMGSEARCH_AUTOMATION": "running"}))
    assert schedule.cron_schedule == "*/30 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert not Settings.read({"IMGSEARCH_AUTOMATION": "stopped"}).automation_running
    with pytest.raises(ConfigurationError, match="IMGSEARCH_AUTOMATION"):
        Settings.read({"IMGSEARCH_AUTOMATION": "sometimes"})
    with pytest.raises(Exception, match="cron"):
        make_reindex_schedule(Settings.read({"IMGSEARCH_REINDEX_CRON": "every night"}))


def test_the_shard_sensor_follows_the_settings():
    sensor = make_shard_sensor(Settings.read({"IMGSEARCH_SHARD_SENSOR_INTERVAL_S": "42"}))
    assert sensor.name == "new_shards" and sensor.minimum_interval_seconds == 42
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    running = make_shard_sensor(Settings.read({"IMGSEARCH_AUTOMATION": "running"}))
    assert running.default_status == dg.DefaultSensorStatus.RUNNING


def test_no_job_or_asset_is_partitioned():
    """Plain runs everywhere: no partition picker in the UI, no partition flags on the CLI."""
    for name in ("full_pipeline", "reindex"):
        assert defs.resolve_job_def(name).partitions_def is None
    assert all(spec.partitions_def is None for spec in defs.resolve_all_asset_specs())


# --- the new-shard sensor ------------------------------------------------------------------


def _tick(dataset: Path, cursor: str | None, instance: dg.DagsterInstance):
    context = dg.build_sensor_context(cursor=cursor, instance=instance,
                                      resources={"dataset": PostsDataset(location=str(dataset))})
    return make_shard_sensor(Settings.read({}))(context)


def test_sensor_cursor_lifecycle(tmp_path):
    write_dataset(tmp_path, images=20, shards=2, size=32, seed=1)
    data = tmp_path / "data"
    instance = dg.DagsterInstance.ephemeral()

    first = _tick(data, None, instance)
    assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
    assert first.run_requests[0].tags["imgsearch/shard_changes"] == "first look at the dataset"
    assert len(json.loads(first.cursor)) == 2

    quiet = _tick(data, first.cursor, instance)
    assert isinstance(quiet, dg.SkipReason) and "no new or changed shards" in quiet.skip_message

    write_dataset(tmp_path, images=10, shards=1, size=32, seed=2, first_shard=2)
    added = _tick(data, first.cursor, instance)
    request = added.run_requests[0]
    assert request.tags["imgsearch/shard_changes"] == "1 new, 0 changed, 0 removed"
    assert request.tags["imgsearch/new_shards"] == "train-00002-of-00003.parquet"
    assert request.partition_key is None
    assert request.run_key != first.run_requests[0].run_key
    assert len(json.loads(added.cursor)) == 3
    assert isinstance(_tick(data, added.cursor, instance), dg.SkipReason)


def test_sensor_waits_for_a_running_pipeline_without_moving_the_cursor(tmp_path):
    write_dataset(tmp_path, images=10, shards=1, size=32, seed=1)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_run(dg.DagsterRun(job_name="full_pipeline", run_id="a" * 8 + "-0000-0000-0000-" + "0" * 12,
                                   status=dg.DagsterRunStatus.STARTED))
    result = _tick(tmp_path / "data", None, instance)
    assert isinstance(result, dg.SkipReason) and "in progress" in result.skip_message


def test_sensor_skips_a_missing_location(tmp_path):
    result = _tick(tmp_path / "nowhere", None, dg.DagsterInstance.ephemeral())
    assert isinstance(result, dg.SkipReason) and "cannot list" in result.skip_message


# --- the run-failure sensor ----------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@dg.op
def _broken_op():
    raise ValueError("disk full while writing parts")


@dg.job
def _broken_job():
    _broken_op()


def test_failure_sensor_logs_and_posts_the_reason(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = _broken_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="report_failures", dagster_instance=instance, dagster_run=run,
        dagster_event=failure).for_run_failure()
    text = failure_text(context)
    assert result.run_id in text and "_broken_op" in text and "disk full" in text

    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        alerts = FailureAlerts(webhook_url=f"http://127.0.0.1:{server.server_port}/hook")
        assert alerts.send(text, context.log)
    finally:
        server.shutdown()
    assert _Hook.received[-1]["text"] == text
    # no webhook configured: only the log line, nothing sent
    assert not FailureAlerts().send(text, context.log)
    assert failure_alerts(Settings.read({})).webhook_url is None
    hooked = failure_alerts(Settings.read({"IMGSEARCH_ALERT_WEBHOOK": "http://127.0.0.1:9/x"}))
    assert isinstance(hooked.webhook_url, dg.EnvVar)  # a secret: resolved when a run starts


def test_failure_sensor_survives_a_dead_webhook():
    class Log:
        lines: list[str] = []

        def warning(self, line):
            self.lines.append(line)

    log = Log()
    assert not FailureAlerts(webhook_url="http://127.0.0.1:9/none", timeout_s=2).send("x", log)
    assert "did not answer" in log.lines[0] and "127.0.0.1:9" not in log.lines[0]


# --- checks that fail on bad data ----------------------------------------------------------


def _posts_table(path: Path, uuids: list[str], splits: list[str]) -> PostsTable:
    pq.write_table(pa.table({"uuid": uuids, "split": splits,
                             "key": [f"images/{u[:2]}/{u}.jpg" for u in uuids]}), path)
    return PostsTable(str(path), "", len(uuids), 0, 0, 0, 0)


def test_split_check_fails_on_overlap(tmp_path):
    a, b = image_uuid(b"a"), image_uuid(b"b")
    good = split_is_disjoint(posts=_posts_table(tmp_path / "good.parquet", [a, b], ["train", "test"]))
    bad = split_is_disjoint(posts=_posts_table(tmp_path / "bad.parquet", [a, b, a],
                                               ["train", "test", "test"]))
    assert good.passed and not bad.passed
    assert bad.metadata["overlap"].value == 1


def _embeddings(folder: Path, vectors: np.ndarray, footer: bool = True) -> EmbeddingSet:
    """One part of ``vectors``; without ``footer``, as parts were written before they
    recorded their statistics (the check then reads the vectors)."""
    ids = [image_uuid(str(i).encode()) for i in range(len(vectors))]
    table = vectors_table(ids, ["train"] * len(ids), "m", vectors)
    write_checked_table(table if footer else table.replace_schema_metadata(None),
                        folder / "part-x.parquet")
    return EmbeddingSet(str(folder), "m", vectors.shape[1], len(ids), len(ids), 0)


@pytest.mark.parametrize("footer", [True, False])
def test_embedding_check_fails_on_nan_unnormalised_or_wrong_dims(tmp_path, footer):
    tmp_path = tmp_path / str(footer)
    rng = np.random.default_rng(0)
    unit = rng.normal(size=(20, 8)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    assert embeddings_are_unit_vectors(image_embeddings=_embeddings(tmp_path / "ok", unit, footer)).passed
    scaled = unit.copy()
    scaled[3] *= 1.5
    scaled_set = _embeddings(tmp_path / "scaled", scaled, footer)
    assert not embeddings_are_unit_vectors(image_embeddings=scaled_set).passed
    nan = unit.copy()
    nan[5, 2] = np.nan
    result = embeddings_are_unit_vectors(image_embeddings=_embeddings(tmp_path / "nan", nan, footer))
    assert not result.passed and result.metadata["finite"].value is False
    wrong = _embeddings(tmp_path / "dims", unit, footer)
    wrong = EmbeddingSet(wrong.folder, "m", 16, wrong.count, wrong.train, 0)
    assert not embeddings_are_unit_vectors(image_embeddings=wrong).passed
    empty = _embeddings(tmp_path / "none", unit[:0], footer)
    assert not embeddings_are_unit_vectors(image_embeddings=empty).passed


def test_object_counts_find_missing_and_doubled_objects():
    a, b, c = (image_uuid(x) for x in (b"a", b"b", b"c"))
    keys = [f"images/{u[:2]}/{u}.jpg" for u in (a, b)]
    assert object_counts(keys, keys) == {"posts": 2, "objects": 2, "missing": 0,
                                         "several_objects": 0, "orphans": 0}
    counts = object_counts(keys, [keys[0], f"images/{a[:2]}/{a}.png", f"images/{c[:2]}/{c}.jpg"])
    assert counts["missing"] == 1 and counts["several_objects"] == 1 and counts["orphans"] == 1


def test_index_count_check_fails_when_the_index_misses_documents(tmp_path):
    index = FaissHnswIndex(root=str(tmp_path / "index"))
    vectors = np.eye(4, dtype=np.float32)
    count = index.build("v1", 4, [IndexBatch(ids=list("abc"), vectors=vectors[:3])])
    build = IndexBuild("v1", index.backend, count, 4, {})
    full = EmbeddingSet("x", "m", 4, 3, 3, 0)
    assert index_count_matches_train(search_index=build, image_embeddings=full, vector_index=index).passed
    more = EmbeddingSet("x", "m", 4, 4, 4, 0)
    result = index_count_matches_train(search_index=build, image_embeddings=more, vector_index=index)
    assert not result.passed and result.metadata["indexed"].value == 3


def test_gate_verdict_explains_itself():
    latency = {"mean_ms": 1.0, "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0}
    report = RecallReport(
        mean_recall=0.97, k=10, ground_truth_corpus=100, index_version="v2", num_candidates=192,
        target=0.95, depth_verdict="search depth 192: ...", queries=10, min_recall=0.9,
        queries_below_1=1, ann_latency=latency, exact_latency=latency, ann_timed=10,
        exact_timed=10, speedup_p50=1.0, depth_sweep={}, indexed=100, index_params={},
        model_id="m")
    ok, why = gate_verdict(report, 100, "v1")
    assert ok and why.startswith("publish v2") and "at search depth 192" in why
    missed = replace(report, target=0.99, depth_verdict="no search depth up to 1024 reaches")
    ok, why = gate_verdict(missed, 100, "v1")
    assert not ok and "at search depth 192 is below the target 0.99" in why
    assert "no search depth up to 1024 reaches" in why and "live index stays v1" in why
    ok, why = gate_verdict(replace(report, target=0.9), 99, None)
    assert not ok and "99 documents but there are 100" in why
    ok, _ = gate_verdict(replace(report, mean_recall=float("nan"), target=0.01), 100, "v1")
    assert not ok
