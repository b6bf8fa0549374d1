"""The whole graph on a dataset holding every kind of bad input: it runs to completion,
every bad row is in the quarantine with its reason, every good row is indexed."""

from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.core.ids import is_valid_uuid
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex

from .bad_data import HOSTILE_PATHS, BadDataset, write_bad_dataset
from .pipeline import materialize_all, pipeline_resources


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory) -> BadDataset:
    return write_bad_dataset(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def run(bad_dataset, tmp_path_factory):
    home = tmp_path_factory.mktemp("home") / "var"
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_all(pipeline_resources(home, bad_dataset.folder), instance=instance,
                             run_config={"ops": {"posts": {"config": {"test_fraction": 0.2}}}})
    return result, home, instance


def test_run_completes_and_counts_add_up(run, bad_dataset):
    result, home, _ = run
    assert result.success
    posts = result.output_for_node("posts")
    assert posts.rejected == len(bad_dataset.expected_rejects)
    assert posts.duplicates == bad_dataset.duplicates
    assert posts.posts == bad_dataset.good
    assert posts.posts + posts.rejected + posts.duplicates == bad_dataset.rows
    embeddings = result.output_for_node("image_embeddings")
    assert embeddings.count == posts.posts  # every unusual image was normalised and embedded
    report = result.output_for_node("recall_report")
    assert report.indexed == posts.train
    index = FaissHnswIndex(root=str(home / "index"))
    assert index.count(index.live_version()) == posts.train


def test_every_bad_row_is_quarantined_with_its_reason(run, bad_dataset):
    result, _, _ = run
    rejects = pq.read_table(result.output_for_node("posts").rejects_path).to_pylist()
    found = {(Path(r["shard"]).name, r["row"]): r["reason"] for r in rejects}
    assert found.keys() == bad_dataset.expected_rejects.keys()
    for position, (kind, reason) in bad_dataset.expected_rejects.items():
        assert reason in found[position], (kind, found[position])


def test_unusual_images_and_hostile_columns_become_ordinary_posts(run, bad_dataset):
    result, _, _ = run
    table = pq.read_table(result.output_for_node("posts").path).to_pylist()
    by_position = {(Path(p["shard"]).name, p["row"]): p for p in table}
    for position, kind in bad_dataset.unusual.items():
        assert position in by_position, kind
    rotated = next(by_position[p] for p, k in bad_dataset.unusual.items()
                   if k == "exif_rotated_jpeg")
    assert (rotated["width"], rotated["height"]) == (48, 80)  # upright size
    assert all(is_valid_uuid(p["uuid"]) for p in table)
    # A source column named "uuid" is kept aside; it can never replace the content id.
    assert {p.get("source_uuid") for p in table} == {None, "../../etc/passwd"}
    assert all(p["caption"] is None or isinstance(p["caption"], str) for p in table)
    assert set(HOSTILE_PATHS) <= {p["source_path"] for p in table}


def test_unreadable_shards_are_listed_and_the_check_warns(run, bad_dataset):
    result, _, _ = run
    failed = result.output_for_node("raw_posts").failed
    assert {Path(p).name for p in failed} == bad_dataset.bad_files.keys()
    for path, message in failed.items():
        assert Path(path).name in message
        assert bad_dataset.bad_files[Path(path).name] in message
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    shards = checks["all_shards_readable"]
    assert not shards.passed and shards.severity == dg.AssetCheckSeverity.WARN
    assert checks["all_rows_read"].passed
    assert all(e.passed for name, e in checks.items() if name != "all_shards_readable"), checks


def test_quarantine_is_an_asset_with_reasons_in_the_ui(run, bad_dataset):
    result, _, _ = run
    metadata = result.asset_materializations_for_node("rejected_posts")[0].metadata
    assert metadata["rejected"].value == len(bad_dataset.expected_rejects)
    assert sum(metadata["by_reason"].value.values()) == len(bad_dataset.expected_rejects)
    preview = metadata["preview"].value
    assert len(preview.records) == len(bad_dataset.expected_rejects)
    assert {"shard", "row", "reason"} <= set(preview.records[0].data)


def test_rejects_are_logged_as_one_summary_line(run, bad_dataset):
    result, _, instance = run
    warnings = [e.user_message for e in instance.all_logs(result.run_id)
                if e.step_key == "posts" and e.level == 30 and not e.is_dagster_event]
    assert len(warnings) == 1
    assert f"{len(bad_dataset.expected_rejects)} rows rejected" in warnings[0]
