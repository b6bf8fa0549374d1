"""Operations with real runs: incremental shards through the sensor, the recall gate keeping the
old index live, one failed bucket re-run alone, and a model change re-embedding everything."""

from pathlib import Path, PurePosixPath

import dagster as dg
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.assets.embeddings import uuids_written_by
from imgsearch_pipeline.core.buckets import BUCKET_KEYS, bucket_of
from imgsearch_pipeline.definitions import defs
from imgsearch_pipeline.jobs import full_pipeline_job, reindex_job
from imgsearch_pipeline.resources.object_store import LocalObjectStore
from imgsearch_pipeline.resources.storage import PostsDataset
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex
from imgsearch_pipeline.sample_data import write_dataset
from imgsearch_pipeline.schedules import reindex_schedule
from imgsearch_pipeline.sensors import failure_text, new_shards

from .pipeline import all_assets, materialize_all, pipeline_resources

UNREACHABLE = {"ops": {"recall_report_recall_meets_target": {"config": {"target": 1.5}}}}


@pytest.fixture
def small_dataset(tmp_path) -> Path:
    write_dataset(tmp_path / "ds", images=120, shards=2, size=64, seed=5, exact_duplicates=2)
    return tmp_path / "ds" / "data"


def job(name: str, resources: dict) -> dg.JobDefinition:
    """A job of the code location, bound to test resources instead of the environment's."""
    return dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks,
                          jobs=[full_pipeline_job, reindex_job],
                          resources=resources).resolve_job_def(name)


def tick(dataset: Path, cursor: str | None, instance: dg.DagsterInstance):
    return new_shards(dg.build_sensor_context(
        cursor=cursor, instance=instance, resources={"dataset": PostsDataset(location=str(dataset))}))


def uuids(result: dg.ExecuteInProcessResult) -> set[str]:
    path = result.output_for_node("posts").path
    return set(pq.read_table(path, columns=["uuid"]).column("uuid").to_pylist())


def metadata(result, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def test_new_shard_is_noticed_and_only_its_posts_are_stored_and_embedded(small_dataset, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    resources = pipeline_resources(tmp_path / "var", small_dataset)
    pipeline = job("full_pipeline", resources)

    first = tick(small_dataset, None, instance)
    run1 = pipeline.execute_in_process(tags=first.run_requests[0].tags, instance=instance)
    before = uuids(run1)
    assert metadata(run1, "embedding_buckets")["embedded_now"] == len(before)

    write_dataset(small_dataset.parent, images=40, shards=1, size=64, seed=11, first_shard=2)
    second = tick(small_dataset, first.cursor, instance)
    assert second.run_requests[0].tags["imgsearch/shard_changes"] == "1 new, 0 changed, 0 removed"
    run2 = pipeline.execute_in_process(tags=second.run_requests[0].tags, instance=instance)
    after = uuids(run2)
    new = after - before
    assert before < after and len(new) > 20

    assert run2.output_for_node("image_objects").uploaded == len(new)
    buckets = metadata(run2, "embedding_buckets")
    assert buckets["embedded_now"] == len(new) and buckets["reused"] == len(before)
    assert metadata(run2, "image_embeddings")["embedded_now"] == len(new)
    embeddings = run2.output_for_node("image_embeddings")
    assert uuids_written_by(Path(embeddings.folder), run2.run_id) == new  # exactly the new posts
    assert embeddings.count == len(after)
    # every bucket was covered by the one run
    assert sorted(m.partition for m in run2.asset_materializations_for_node("embedding_buckets")) \
        == list(BUCKET_KEYS)
    report = run2.output_for_node("recall_report")
    assert report["indexed"] == run2.output_for_node("posts").train
    assert FaissHnswIndex(root=str(tmp_path / "var/index")).live_version() == report["index_version"]
    assert isinstance(tick(small_dataset, second.cursor, instance), dg.SkipReason)


def test_failing_recall_gate_leaves_the_previous_index_live(small_dataset, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    resources = pipeline_resources(tmp_path / "var", small_dataset)
    index = FaissHnswIndex(root=str(tmp_path / "var/index"))
    good = materialize_all(resources, instance=instance)
    live = index.live_version()
    assert live == good.output_for_node("recall_report")["index_version"]
    history = good.asset_materializations_for_node("recall_report")[0].metadata
    for name in ("mean_recall", "min_recall", "ann_p50_ms", "ann_p95_ms", "exact_p50_ms",
                 "exact_p95_ms", "speedup_p50"):
        assert isinstance(history[name], dg.FloatMetadataValue), name
    for name in ("k", "queries", "indexed", "num_candidates"):
        assert isinstance(history[name], dg.IntMetadataValue), name

    # in-process materialize of everything, unreachable target
    blocked = materialize_all(resources, run_config=UNREACHABLE, instance=instance,
                              raise_on_error=False)
    # and the scheduled re-index job, same target
    request = reindex_schedule(dg.build_schedule_context())
    blocked_job = job("reindex", resources).execute_in_process(
        run_config=UNREACHABLE, tags=request.tags, instance=instance, raise_on_error=False)

    for result in (blocked, blocked_job):
        assert not result.success
        assert index.live_version() == live  # the LIVE pointer did not move
        assert not result.asset_materializations_for_node("live_index")
        new_version = result.output_for_node("recall_report")["index_version"]
        assert new_version != live and new_version in index.versions()  # built, not published
        gate = next(e for e in result.get_asset_check_evaluations()
                    if e.check_name == "recall_meets_target")
        assert not gate.passed
        assert "below the target 1.5" in gate.description
        assert f"live index stays {live}" in gate.description
        # the failure sensor's message carries the reason
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        text = failure_text(dg.build_run_status_sensor_context(
            sensor_name="report_failures", dagster_instance=instance, dagster_run=run,
            dagster_event=failure).for_run_failure())
        assert "recall_meets_target failed: NOT PUBLISHED" in text

    # with the default target the scheduled job publishes again
    passed = job("reindex", resources).execute_in_process(tags=request.tags, instance=instance)
    assert index.live_version() == passed.output_for_node("recall_report")["index_version"] != live
    assert metadata(passed, "embedding_buckets")["embedded_now"] == 0


class BrokenBucketStore(LocalObjectStore):
    """A store whose reads fail for the images of one bucket (a flaky backend, say)."""

    broken_bucket: str

    def get(self, key: str) -> bytes:
        if bucket_of(PurePosixPath(key).stem) == self.broken_bucket:
            raise RuntimeError(f"object store timed out reading {key}")
        return super().get(key)


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("part-*.parquet")}


def test_a_failed_bucket_reruns_alone(small_dataset, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    home = tmp_path / "var"
    good = pipeline_resources(home, small_dataset)
    broken = {**good, "object_store": BrokenBucketStore(root=str(home / "objects"), broken_bucket="03")}

    failed = materialize_all(broken, instance=instance, raise_on_error=False)
    assert not failed.success
    step_failure = next(e for e in failed.all_events
                        if e.is_step_failure and e.step_key == "embedding_buckets")
    assert "bucket(s) 03 failed" in step_failure.step_failure_data.user_failure_data.description
    folder = next((home / "tables/embeddings").iterdir())
    kept = files(folder)
    assert not (folder / "bucket=03").exists()
    assert {Path(p).parts[0] for p in kept} == {f"bucket={k}" for k in BUCKET_KEYS if k != "03"}
    in_bucket = {u for u in uuids(failed) if bucket_of(u) == "03"}
    assert in_bucket

    rerun = dg.materialize(all_assets(), selection=["embedding_buckets"], partition_key="03",
                           resources=good, instance=instance)
    assert [m.partition for m in rerun.asset_materializations_for_node("embedding_buckets")] == ["03"]
    assert metadata(rerun, "embedding_buckets")["embedded_now"] == len(in_bucket)
    assert uuids_written_by(folder, rerun.run_id) == in_bucket
    now = files(folder)
    assert {p: t for p, t in now.items() if not p.startswith("bucket=03")} == kept  # untouched

    finished = materialize_all(good, instance=instance)
    assert metadata(finished, "embedding_buckets")["embedded_now"] == 0
    assert finished.output_for_node("image_embeddings").count == len(uuids(finished))


def test_changing_the_model_reembeds_everything_in_its_own_folder(small_dataset, tmp_path, tiny_siglip):
    instance = dg.DagsterInstance.ephemeral()
    home = tmp_path / "var"
    colour = pipeline_resources(home, small_dataset)
    first = materialize_all(colour, instance=instance)
    posts = len(uuids(first))
    colour_folder = Path(first.output_for_node("image_embeddings").folder)
    colour_files = files(colour_folder)

    siglip = pipeline_resources(home, small_dataset, "siglip", model=str(tiny_siglip))
    other = dg.materialize(all_assets(), selection=["embedding_buckets", "image_embeddings"],
                           resources=siglip, instance=instance,
                           tags=reindex_schedule(dg.build_schedule_context()).tags)
    embeddings = other.output_for_node("image_embeddings")
    assert Path(embeddings.folder) != colour_folder and embeddings.model_id == str(tiny_siglip)
    assert metadata(other, "embedding_buckets")["embedded_now"] == posts
    assert metadata(other, "embedding_buckets")["reused"] == 0
    assert embeddings.count == posts and embeddings.dim != first.output_for_node("image_embeddings").dim
    assert files(colour_folder) == colour_files  # the other model's vectors are kept as they were

    back = dg.materialize(all_assets(), selection=["embedding_buckets", "image_embeddings"],
                          resources=colour, instance=instance,
                          tags=reindex_schedule(dg.build_schedule_context()).tags)
    assert metadata(back, "embedding_buckets")["embedded_now"] == 0
