"""Re-indexing costs what changed: nothing new builds nothing, added and removed posts make
an incremental version (the live one plus the new, minus the removed), evaluated and gated
like any other; a removed post is never answered again."""

import shutil

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from imgsearch_pipeline.resources.vector_index import FaissHnswIndex
from imgsearch_pipeline.sample_data import write_dataset

from .pipeline import materialize_all, pipeline_resources


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def _observed(result: dg.ExecuteInProcessResult, asset: str) -> list[dict]:
    return [{k: v.value for k, v in event.event_specific_data.asset_observation.metadata.items()}
            for event in result.all_events
            if event.event_type == dg.DagsterEventType.ASSET_OBSERVATION
            and event.asset_key.to_user_string() == asset]


def _train_vectors(home) -> dict[str, np.ndarray]:
    posts = pq.read_table(home / "tables" / "posts.parquet", columns=["uuid", "split"]).to_pydict()
    train = {u for u, s in zip(posts["uuid"], posts["split"], strict=True) if s == "train"}
    return {row["uuid"]: np.asarray(row["vector"], dtype=np.float32)
            for part in (home / "tables" / "embeddings").glob("*/part-*.parquet")
            for row in pq.read_table(part, columns=["uuid", "vector"]).to_pylist()
            if row["uuid"] in train}


def test_a_reindex_builds_nothing_when_nothing_changed_and_only_the_change_otherwise(tmp_path):
    first_shards = write_dataset(tmp_path / "a", images=240, shards=6, size=64, seed=5,
                                 exact_duplicates=0)
    new_shard, = write_dataset(tmp_path / "b", images=40, shards=1, size=64, seed=9,
                               exact_duplicates=0, first_shard=6)
    data, home = tmp_path / "data", tmp_path / "var"
    data.mkdir()
    for shard in first_shards:
        shutil.copy(shard, data)
    resources = pipeline_resources(home, data)
    index = FaissHnswIndex(root=str(home / "index"))

    first = materialize_all(resources)
    v1 = first.output_for_node("search_index")
    assert v1.action == "full" and index.live_version() == v1.version

    # Nothing new: no version, no ground truth computed, no sweep, no publish; a success
    # that says why.
    second = materialize_all(resources)
    assert second.success
    assert not {"search_index", "recall_report", "live_index"} & _materialized(second)
    observed, = _observed(second, "search_index")
    assert observed["action"] == "unchanged" and v1.version in observed["reason"]
    assert index.live_version() == v1.version and index.versions() == [v1.version]
    before = _train_vectors(home)

    # One shard removed, one added: the live version plus the new, minus the removed.
    (data / first_shards[1].name).unlink()
    shutil.copy(new_shard, data)
    third = materialize_all(resources)
    assert third.success
    v2 = third.output_for_node("search_index")
    now = _train_vectors(home)
    gone = sorted(set(before) - set(now))
    assert gone and set(now) - set(before)
    assert (v2.action, v2.base) == ("incremental", v1.version)
    assert (v2.added, v2.removed) == (len(set(now) - set(before)), len(gone))
    assert index.live_version() == v2.version and index.count() == len(now) == v2.count
    checks = {e.check_name: e.passed for e in third.get_asset_check_evaluations()}
    assert checks["recall_meets_target"] and all(checks.values()), checks
    # A removed post is never answered, even to a query that is its own picture.
    for uuid in gone:
        hits = index.search(before[uuid], 10, num_candidates=100)
        assert uuid not in {hit.uuid for hit in hits} and len(hits) == 10

    # And nothing changed again: nothing built, the removed stay out.
    fourth = materialize_all(resources)
    assert not {"search_index", "recall_report", "live_index"} & _materialized(fourth)
    assert index.live_version() == v2.version
