"""What a re-index builds, decided from the live version's record (plain functions)."""

import pytest

from imgsearch_pipeline.core.index_plan import (
    MAX_TOMBSTONE_SHARE,
    VersionRecord,
    plan_index,
    read_version_record,
    write_version_record,
)

KEY = {"model_id": "m", "dim": 8, "backend": "faiss-hnsw", "m": 32}
LIVE = [f"u{i}" for i in range(100)]


def test_the_same_documents_built_the_same_way_need_nothing():
    plan = plan_index(set(LIVE), KEY, "v1", LIVE, VersionRecord(KEY))
    assert plan.action == "unchanged" and "nothing to build" in plan.reason


def test_added_and_removed_make_an_incremental_version_on_the_live_one():
    wanted = set(LIVE[5:]) | {"new1", "new2"}
    plan = plan_index(wanted, KEY, "v1", LIVE, VersionRecord(KEY, tombstones=3))
    assert (plan.action, plan.base) == ("incremental", "v1")
    assert plan.added == {"new1", "new2"} and plan.removed == set(LIVE[:5])
    assert plan.tombstones == 3 + 5


@pytest.mark.parametrize("change", [{"model_id": "other"}, {"m": 16}, {"dim": 4}])
def test_a_changed_model_or_index_setting_builds_in_full(change):
    plan = plan_index(set(LIVE), {**KEY, **change}, "v1", LIVE, VersionRecord(KEY))
    assert plan.action == "full" and next(iter(change)) in plan.reason


def test_too_many_carried_removals_build_in_full():
    limit = int(MAX_TOMBSTONE_SHARE * 90)
    at_limit = plan_index(set(LIVE[10:]), KEY, "v1", LIVE, VersionRecord(KEY, limit - 10))
    over = plan_index(set(LIVE[10:]), KEY, "v1", LIVE, VersionRecord(KEY, limit - 9))
    assert (at_limit.action, over.action) == ("incremental", "full")


def test_no_live_version_no_record_or_a_request_build_in_full():
    assert plan_index(set(LIVE), KEY, None, None, None).action == "full"
    assert plan_index(set(LIVE), KEY, "v1", None, None).action == "full"
    assert plan_index(set(LIVE), KEY, "v1", LIVE, VersionRecord(KEY), rebuild=True).action == "full"


def test_a_record_reads_back_and_a_damaged_one_reads_as_none(tmp_path):
    path = tmp_path / "v1.parquet"
    write_version_record(str(path), set(LIVE), VersionRecord(KEY, 4, "v0"))
    members, record = read_version_record(str(path))
    assert sorted(members) == sorted(LIVE) and record == VersionRecord(KEY, 4, "v0")
    path.write_bytes(b"not parquet")
    assert read_version_record(str(path)) is None
    assert read_version_record(str(tmp_path / "missing.parquet")) is None
