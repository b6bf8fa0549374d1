"""Operations with real runs: incremental shards through the sensor, the recall gate keeping the
old index live, unreadable images listed and re-tried alone, and a model change re-embedding
everything."""

from pathlib import Path, PurePosixPath

import dagster as dg
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.definitions import defs
from imgsearch_pipeline.jobs import full_pipeline_job, reindex_job
from imgsearch_pipeline.resources.object_store import LocalObjectStore
from imgsearch_pipeline.resources.storage import PostsDataset
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex
from imgsearch_pipeline.sample_data import write_dataset
from imgsearch_pipeline.schedules import make_reindex_schedule
from imgsearch_pipeline.sensors import failure_text, make_shard_sensor
from imgsearch_pipeline.settings import Settings

from .pipeline import all_assets, materialize_all, pipeline_resources

# A graph too sparse to find the neighbours (m=2, ef_construction=2) searched no deeper than
# k: no depth up to the cap reaches the target.
UNREACHABLE = {"ops": {"recall_report": {"config": {"max_num_candidates": 10}}}}


def sparse_index(resources: dict) -> dict:
    root = resources["vector_index"].root
    return {**resources, "vector_index": FaissHnswIndex(root=root, m=2, ef_construction=2)}


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
    return make_shard_sensor(Settings.read({}))(dg.build_sensor_context(
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
    assert metadata(run1, "image_embeddings")["embedded_now"] == len(before)
    folder = Path(run1.output_for_node("image_embeddings").folder)
    parts_before = files(folder)

    write_dataset(small_dataset.parent, images=40, shards=1, size=64, seed=11, first_shard=2)
    second = tick(small_dataset, first.cursor, instance)
    assert second.run_requests[0].tags["imgsearch/shard_changes"] == "1 new, 0 changed, 0 removed"
    run2 = pipeline.execute_in_process(tags=second.run_requests[0].tags, instance=instance)
    after = uuids(run2)
    new = after - before
    assert before < after and len(new) > 20

    assert run2.output_for_node("image_objects").uploaded == len(new)
    embedded = metadata(run2, "image_embeddings")
    assert embedded["embedded_now"] == len(new) and embedded["reused"] == len(before)
    embeddings = run2.output_for_node("image_embeddings")
    written = files(folder).keys() - parts_before.keys()
    assert part_uuids(folder, written) == new  # exactly the new posts, in new parts
    assert embeddings.count == len(after)
    report = run2.output_for_node("recall_report")
    assert report.indexed == run2.output_for_node("posts").train
    assert FaissHnswIndex(root=str(tmp_path / "var/index")).live_version() == report.index_version
    assert isinstance(tick(small_dataset, second.cursor, instance), dg.SkipReason)


def test_failing_recall_gate_leaves_the_previous_index_live(small_dataset, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    resources = pipeline_resources(tmp_path / "var", small_dataset)
    index = FaissHnswIndex(root=str(tmp_path / "var/index"))
    good = materialize_all(resources, instance=instance)
    live = index.live_version()
    assert live == good.output_for_node("recall_report").index_version
    history = good.asset_materializations_for_node("recall_report")[0].metadata
    for name in ("mean_recall", "min_recall", "ann_p50_ms", "ann_p95_ms", "exact_p50_ms",
                 "exact_p95_ms", "speedup_p50"):
        assert isinstance(history[name], dg.FloatMetadataValue), name
    for name in ("k", "queries", "indexed", "num_candidates"):
        assert isinstance(history[name], dg.IntMetadataValue), name

    # in-process materialize of everything, unreachable target
    blocked = materialize_all(sparse_index(resources), run_config=UNREACHABLE,
                              instance=instance, raise_on_error=False)
    # and the scheduled re-index job, same target
    request = make_reindex_schedule(Settings.read({}))(dg.build_schedule_context())
    blocked_job = job("reindex", sparse_index(resources)).execute_in_process(
        run_config=UNREACHABLE, tags=request.tags, instance=instance, raise_on_error=False)

    for result in (blocked, blocked_job):
        assert not result.success
        assert index.live_version() == live  # the LIVE pointer did not move
        assert not result.asset_materializations_for_node("live_index")
        new_version = result.output_for_node("recall_report").index_version
        assert new_version != live and new_version in index.versions()  # built, not published
        gate = next(e for e in result.get_asset_check_evaluations()
                    if e.check_name == "recall_meets_target")
        assert not gate.passed
        assert "below the target 0.997" in gate.description
        assert "no search depth up to 10 reaches mean recall@10 >= 0.997" in gate.description
        assert index.recorded_search_depth(new_version) is None  # nothing to record
        assert f"live index stays {live}" in gate.description
        # the failure sensor's message carries the reason
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        text = failure_text(dg.build_run_status_sensor_context(
            sensor_name="report_failures", dagster_instance=instance, dagster_run=run,
            dagster_event=failure).for_run_failure())
        assert "recall_meets_target failed: NOT PUBLISHED" in text

    # with the default index the scheduled job builds nothing: the live version already
    # holds every train embedding, built that way (the failed versions never went live)
    unchanged = job("reindex", resources).execute_in_process(tags=request.tags, instance=instance)
    assert unchanged.success and not unchanged.asset_materializations_for_node("search_index")
    assert index.live_version() == live
    # a requested full rebuild with the default sweep is built, passes and is published
    rebuild = {"ops": {"search_index": {"config": {"full_rebuild": True}}}}
    passed = job("reindex", resources).execute_in_process(run_config=rebuild, tags=request.tags,
                                                          instance=instance)
    assert index.live_version() == passed.output_for_node("recall_report").index_version != live
    assert passed.output_for_node("search_index").action == "full"
    assert metadata(passed, "image_embeddings")["embedded_now"] == 0


class FlakyStore(LocalObjectStore):
    """A store whose reads fail for some images (a flaky backend, say)."""

    unreadable: list[str]

    def get(self, key: str) -> bytes:
        if PurePosixPath(key).stem in self.unreadable:
            raise OSError(f"object store timed out reading {key}")
        return super().get(key)


def files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("part-*.parquet")}


def part_uuids(folder: Path, names) -> set[str]:
    return {u for name in names
            for u in pq.read_table(folder / name, columns=["uuid"]).column("uuid").to_pylist()}


def test_unreadable_images_are_listed_and_a_rerun_embeds_only_them(small_dataset, tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    home = tmp_path / "var"
    good = pipeline_resources(home, small_dataset)
    posts = sorted(uuids(materialize_all(good, instance=instance)))
    folder = next((home / "tables/embeddings").iterdir())
    for part in folder.glob("part-*.parquet"):
        part.unlink()  # start the embeddings afresh, with some images unreadable
    unreadable = posts[::7]
    flaky = {**good, "object_store": FlakyStore(root=str(home / "objects"), unreadable=unreadable)}

    first = materialize_all(flaky, instance=instance, raise_on_error=False)
    listed = metadata(first, "image_embeddings")
    assert listed["not_embedded"] == len(unreadable) == listed["missing"]
    assert sorted(listed["not_embedded_items"]) == unreadable
    assert all("timed out" in reason for reason in listed["not_embedded_items"].values())
    cover = next(e for e in first.get_asset_check_evaluations()
                 if e.check_name == "embeddings_cover_posts")
    assert not cover.passed and cover.metadata["missing"].value == len(unreadable)
    kept = files(folder)
    assert part_uuids(folder, kept) == set(posts) - set(unreadable)

    rerun = dg.materialize(all_assets(), selection=["image_embeddings"], resources=good,
                           instance=instance)
    done = metadata(rerun, "image_embeddings")
    assert done["embedded_now"] == len(unreadable) and done["missing"] == 0
    now = files(folder)
    assert {name: now[name] for name in kept} == kept  # earlier parts untouched
    assert part_uuids(folder, now.keys() - kept.keys()) == set(unreadable)

    finished = materialize_all(good, instance=instance)
    assert metadata(finished, "image_embeddings")["embedded_now"] == 0
    assert finished.output_for_node("image_embeddings").count == len(posts)


def test_changing_the_model_reembeds_everything_in_its_own_folder(small_dataset, tmp_path, tiny_siglip):
    instance = dg.DagsterInstance.ephemeral()
    home = tmp_path / "var"
    colour = pipeline_resources(home, small_dataset)
    first = materialize_all(colour, instance=instance)
    posts = len(uuids(first))
    colour_folder = Path(first.output_for_node("image_embeddings").folder)
    colour_files = files(colour_folder)

    siglip = pipeline_resources(home, small_dataset, "siglip", model=str(tiny_siglip))
    other = dg.materialize(all_assets(), selection=["image_embeddings"],
                           resources=siglip, instance=instance)
    embeddings = other.output_for_node("image_embeddings")
    assert Path(embeddings.folder) != colour_folder and embeddings.model_id == str(tiny_siglip)
    assert metadata(other, "image_embeddings")["embedded_now"] == posts
    assert metadata(other, "image_embeddings")["reused"] == 0
    assert embeddings.count == posts and embeddings.dim != first.output_for_node("image_embeddings").dim
    assert files(colour_folder) == colour_files  # the other model's vectors are kept as they were

    back = dg.materialize(all_assets(), selection=["image_embeddings"],
                          resources=colour, instance=instance)
    assert metadata(back, "image_embeddings")["embedded_now"] == 0
