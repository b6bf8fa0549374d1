"""Reading only the shards that changed: after every change (a shard added, changed,
removed, the settings changed, a cached entry damaged, a run killed part way) the posts
table, the rejects table and the figures equal those of a full read from scratch."""

import io
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from imgsearch_pipeline.assets.posts import posts, raw_posts, rejected_posts
from imgsearch_pipeline.core import post_cache
from imgsearch_pipeline.core.layout import Layout
from imgsearch_pipeline.core.post_cache import (
    CHANGED,
    DAMAGED,
    NEW,
    REUSED,
    list_entries,
    path_id,
    plan_cache,
    refresh_posts,
)
from imgsearch_pipeline.core.posts import (
    ScanParams,
    posts_table,
    reason_counts,
    rejects_table,
    scan_shards,
)
from imgsearch_pipeline.core.shards import ShardError, describe_shard, find_shard_paths, iter_batches
from imgsearch_pipeline.core.tables import read_table
from imgsearch_pipeline.resources.storage import PipelineHome, PostsDataset

PARAMS = ScanParams(test_fraction=0.5, seed=1, max_pixels=10_000, min_side=8)
BATCH_ROWS = 2  # several batches per shard, across its row groups


def png(n: int, side: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (n % 256, n // 256, 99)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_shard(folder: Path, name: str, images: list[bytes | None], **columns: list) -> Path:
    """A shard of ``images`` (None: a null image struct) and the extra columns given."""
    structs = [None if data is None else {"bytes": data, "path": f"{name}/{i}.png"}
               for i, data in enumerate(images)]
    path = folder / name
    existed = path.exists()
    pq.write_table(pa.table({"image": structs, **columns}), path, row_group_size=3)
    if existed:  # a rewrite in the same tick of the clock still gets a new fingerprint
        mtime = path.stat().st_mtime_ns + 1_000_000_000
        os.utime(path, ns=(mtime, mtime))
    return path


def inventory(folder: Path) -> list[dict]:
    """The shards as ``raw_posts`` lists them."""
    filesystem, paths = find_shard_paths(str(folder))
    shards = [describe_shard(filesystem, path) for path in paths]
    return [{"path": s.path, "rows": s.rows, "size_bytes": s.size_bytes,
             "fingerprint": s.fingerprint} for s in shards]


class Reader:
    """``batches(path)`` over the real files, remembering which shards were read."""

    def __init__(self, folder: Path):
        self.filesystem, _ = find_shard_paths(str(folder))
        self.read: list[str] = []

    def __call__(self, path: str) -> Iterator[pa.RecordBatch]:
        self.read.append(Path(path).name)
        return iter_batches(self.filesystem, path, BATCH_ROWS)


def refresh(home: Path, folder: Path, params: ScanParams = PARAMS, reader=None,
            failed: tuple[str, ...] = ()) -> post_cache.Refresh:
    layout = Layout.at(home)
    plan = plan_cache(inventory(folder), params, list_entries(layout.shard_scans),
                      keep_paths=failed)
    return refresh_posts(plan, layout.shard_scans, reader or Reader(folder), layout.posts,
                         layout.rejects, workers=2)


def assert_equals_full_read(home: Path, folder: Path, result: post_cache.Refresh,
                            params: ScanParams = PARAMS, batches=None) -> None:
    """The tables written under ``home`` and the run's figures are those of a full read:
    same rows in the same order (uuid, split, key, shard, row, every source column, their
    types), same rejects with their reasons, same duplicates figure; and a from-scratch run
    in an empty home gives the same data version."""
    full = scan_shards(inventory(folder), batches or Reader(folder), params.test_fraction,
                       params.seed, params.max_pixels, params.min_side, workers=2)
    layout = Layout.at(home)
    written_posts = read_table(layout.posts).replace_schema_metadata(None)
    written_rejects = read_table(layout.rejects).replace_schema_metadata(None)
    expected_posts, expected_rejects = posts_table(full.posts), rejects_table(full.rejects)
    assert written_posts.schema == expected_posts.schema
    assert written_posts.to_pylist() == expected_posts.to_pylist()
    assert written_posts.equals(expected_posts)
    assert written_rejects.to_pylist() == expected_rejects.to_pylist()
    assert result.figures == full.figures()
    assert result.figures["duplicates_collapsed"] == full.duplicates
    assert result.reasons == reason_counts(full.rejects)
    assert result.read_failures == full.read_failures
    uuids = written_posts.column("uuid").to_pylist()
    assert len(uuids) == len(set(uuids))
    fresh = home.parent / f"fresh-{len(list(home.parent.glob('fresh-*')))}"
    scratch = refresh(fresh, folder, params, reader=batches)
    assert scratch.data_version == result.data_version


@pytest.fixture
def folder(tmp_path) -> Path:
    """Three shards: duplicates within and across shards, rejects of several kinds, a
    caption that is text in one shard and a number in another, a column only some shards
    have, a ``score`` of mixed types, and a source column named like a post column."""
    data = tmp_path / "data"
    data.mkdir()
    write_shard(data, "a.parquet", [png(1), b"not an image", png(2), png(1), png(3),
                                    png(4, side=4), None],
                caption=["one", "junk", "two", "one again", "three", "tiny", "none"])
    write_shard(data, "b.parquet", [png(5), png(2), png(6), b""],
                caption=[5, 2, 6, 0], score=[1, 2, 3, 4])
    write_shard(data, "c.parquet", [png(7), png(8), png(5), b"<html/>"],
                caption=["seven", "eight", "five", "html"], score=["x", None, "z", "w"],
                uuid=["../../etc/passwd"] * 4)
    return data


def test_each_change_reads_only_what_changed_and_equals_a_full_read(folder, tmp_path):
    home = tmp_path / "home"
    reader = Reader(folder)
    first = refresh(home, folder, reader=reader)
    assert sorted(reader.read) == ["a.parquet", "b.parquet", "c.parquet"]
    assert (len(first.scanned[NEW]), first.reused, first.removed) == (3, 0, 0)
    assert first.rows_scanned == 15 and first.figures["rows_read"] == 15
    assert first.figures["duplicates_collapsed"] == 3
    assert_equals_full_read(home, folder, first)

    # Nothing changed: nothing is read, not even the cached entries, nothing rewritten.
    posts_file = Layout.at(home).posts
    before = os.stat(posts_file).st_mtime_ns
    untouched = refresh(home, folder, reader=lambda path: pytest.fail(f"{path} was read"))
    assert not untouched.rewritten and untouched.reused == 3 and untouched.rows_scanned == 0
    assert untouched.data_version == first.data_version and untouched.figures == first.figures
    assert os.stat(posts_file).st_mtime_ns == before
    assert untouched.summary() == ("0 shards scanned, 3 reused, 0 removed; 0 rows scanned; "
                                   "the posts table is unchanged")

    # A new shard sorted between b and c: its copy of c's first image now comes first.
    write_shard(folder, "b2.parquet", [png(7), png(9), png(1)], caption=["7", "9", "1"])
    reader = Reader(folder)
    added = refresh(home, folder, reader=reader)
    assert reader.read == ["b2.parquet"] and added.rows_scanned == 3
    assert [Path(p).name for p in added.scanned[NEW]] == ["b2.parquet"] and added.reused == 3
    assert added.summary() == "1 shard scanned (1 new), 3 reused, 0 removed; 3 rows scanned"
    assert added.data_version != first.data_version
    assert_equals_full_read(home, folder, added)
    winner = {p["uuid"]: p for p in read_table(Layout.at(home).posts).to_pylist()}
    assert {Path(p["shard"]).name for p in winner.values() if p["caption"] == "7"} == {
        "b2.parquet"}

    # A changed shard: read again, its old entry deleted.
    write_shard(folder, "a.parquet", [png(8), png(10), b"junk", png(10)],
                caption=["eight", "ten", "junk", "ten again"])
    reader = Reader(folder)
    changed = refresh(home, folder, reader=reader)
    assert reader.read == ["a.parquet"]
    assert [Path(p).name for p in changed.scanned[CHANGED]] == ["a.parquet"]
    assert changed.reused == 3 and changed.removed == 0
    assert_equals_full_read(home, folder, changed)
    entries = list_entries(Layout.at(home).shard_scans)
    assert len(entries) == 2 * 4  # one entry (two files) per shard, no older versions

    # A removed shard: its posts and rejects leave the tables, its entry is deleted.
    (folder / "c.parquet").unlink()
    removed = refresh(home, folder, reader=lambda path: pytest.fail(f"{path} was read"))
    assert removed.removed == 1 and removed.reused == 3 and removed.rows_scanned == 0
    assert removed.rewritten
    assert_equals_full_read(home, folder, removed)
    assert "c.parquet" not in {Path(r["shard"]).name
                               for r in read_table(Layout.at(home).rejects).to_pylist()}
    c_id = path_id(str(folder / "c.parquet"))
    assert not [n for n in list_entries(Layout.at(home).shard_scans) if n.startswith(c_id)]

    # Other settings: every shard is scanned again (as changed), and equals a full read.
    other = ScanParams(test_fraction=0.3, seed=7, max_pixels=10_000, min_side=8)
    reseeded = refresh(home, folder, params=other)
    assert len(reseeded.scanned[CHANGED]) == 3 and reseeded.reused == 0
    assert_equals_full_read(home, folder, reseeded, params=other)
    assert len(list_entries(Layout.at(home).shard_scans)) == 2 * 3


def test_a_damaged_or_half_written_entry_is_scanned_again(folder, tmp_path):
    home = tmp_path / "home"
    refresh(home, folder)
    cache = Path(Layout.at(home).shard_scans)
    b_id, c_id = path_id(str(folder / "b.parquet")), path_id(str(folder / "c.parquet"))
    next(cache.glob(f"{b_id}-*.posts.parquet")).write_bytes(b"PAR1 garbage")
    next(cache.glob(f"{c_id}-*.posts.parquet")).unlink()  # a crash between the two writes
    plan = plan_cache(inventory(folder), PARAMS, list_entries(str(cache)))
    assert plan.status == [REUSED, REUSED, DAMAGED]
    reader = Reader(folder)
    again = refresh(home, folder, reader=reader)
    assert sorted(reader.read) == ["b.parquet", "c.parquet"]
    assert len(again.scanned[DAMAGED]) == 2 and again.reused == 1
    assert again.summary().startswith("2 shards scanned (2 damaged), 1 reused")
    assert_equals_full_read(home, folder, again)
    assert refresh(home, folder, reader=lambda path: pytest.fail(path)).reused == 3


def test_a_run_killed_part_way_is_finished_by_the_next_with_no_duplicates(folder, tmp_path):
    home = tmp_path / "home"
    reader = Reader(folder)

    def dies_on_c(path: str):
        if path.endswith("c.parquet"):
            raise KeyboardInterrupt  # the process killed while reading the last shard
        return reader(path)

    with pytest.raises(KeyboardInterrupt):
        refresh(home, folder, reader=dies_on_c)
    assert not Path(Layout.at(home).posts).exists()
    assert len(list_entries(Layout.at(home).shard_scans)) == 2 * 2  # a and b were finished
    reader = Reader(folder)
    finished = refresh(home, folder, reader=reader)
    assert reader.read == ["c.parquet"] and finished.reused == 2
    assert_equals_full_read(home, folder, finished)


def test_a_shard_breaking_part_way_is_not_cached_and_is_read_again(folder, tmp_path):
    home = tmp_path / "home"
    reader = Reader(folder)

    def breaks_b(path: str):
        batches = reader(path)
        if not path.endswith("b.parquet"):
            return batches

        def first_then_error():
            yield next(batches)
            raise ShardError(f"{path}: read failed (truncated)")
        return first_then_error()

    broken = refresh(home, folder, reader=breaks_b)
    b_path = str(folder / "b.parquet")
    assert broken.read_failures == {b_path: f"{b_path}: read failed (truncated); "
                                            "rows 2 to 3 are skipped"}
    assert_equals_full_read(home, folder, broken, batches=breaks_b)
    assert not [n for n in list_entries(Layout.at(home).shard_scans)
                if n.startswith(path_id(b_path))]
    reader = Reader(folder)
    healed = refresh(home, folder, reader=reader)
    assert reader.read == ["b.parquet"] and healed.rewritten and not healed.read_failures
    assert [Path(p).name for p in healed.scanned[NEW]] == ["b.parquet"]
    assert_equals_full_read(home, folder, healed)


def test_a_shard_that_cannot_be_opened_keeps_its_entry_for_later(folder, tmp_path):
    home = tmp_path / "home"
    refresh(home, folder)
    saved, mtime = (folder / "b.parquet").read_bytes(), (folder / "b.parquet").stat().st_mtime_ns
    (folder / "b.parquet").write_bytes(b"not parquet")  # raw_posts lists it as failed
    os.utime(folder / "b.parquet", ns=(1, 1))
    filesystem, paths = find_shard_paths(str(folder))
    shards = []
    for path in paths:
        try:
            shard = describe_shard(filesystem, path)
        except ShardError:
            continue
        shards.append({"path": shard.path, "rows": shard.rows, "fingerprint": shard.fingerprint})
    layout = Layout.at(home)
    b_path = str(folder / "b.parquet")
    plan = plan_cache(shards, PARAMS, list_entries(layout.shard_scans), keep_paths=[b_path])
    without_b = refresh_posts(plan, layout.shard_scans, Reader(folder), layout.posts,
                              layout.rejects, workers=2)
    assert without_b.removed == 0 and without_b.reused == 2
    assert not {Path(p["shard"]).name for p in read_table(layout.posts).to_pylist()} & {
        "b.parquet"}
    assert [n for n in list_entries(layout.shard_scans) if n.startswith(path_id(b_path))]
    (folder / "b.parquet").write_bytes(saved)  # readable again, as it was: nothing to scan
    os.utime(folder / "b.parquet", ns=(mtime, mtime))
    back = refresh(home, folder, reader=lambda path: pytest.fail(f"{path} was read"))
    assert back.reused == 3 and back.rewritten
    assert_equals_full_read(home, folder, back)


def test_the_cache_works_under_an_s3_home(folder, tmp_path, monkeypatch):
    from moto.server import ThreadedMotoServer

    from .servers import free_port

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name, value in {"AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
                            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        import boto3
        boto3.client("s3").create_bucket(Bucket="home")
        layout = Layout.at("s3://home/imgsearch")

        def run(reader) -> post_cache.Refresh:
            plan = plan_cache(inventory(folder), PARAMS, list_entries(layout.shard_scans))
            return refresh_posts(plan, layout.shard_scans, reader, layout.posts, layout.rejects,
                                 workers=2)

        first = run(Reader(folder))
        assert len(first.scanned[NEW]) == 3
        assert len(list_entries(layout.shard_scans)) == 6
        (folder / "c.parquet").unlink()
        second = run(lambda path: pytest.fail(f"{path} was read"))
        assert second.removed == 1 and second.reused == 2
        assert len(list_entries(layout.shard_scans)) == 4
        local = tmp_path / "local"
        assert refresh(local, folder).data_version == second.data_version
        assert read_table(layout.posts).replace_schema_metadata(None).equals(
            read_table(Layout.at(local).posts).replace_schema_metadata(None))
    finally:
        server.stop()
        server._server.server_close()


def test_the_asset_reports_what_it_read_and_a_data_version(folder, tmp_path):
    resources = {"dataset": PostsDataset(location=str(folder), batch_rows=BATCH_ROWS),
                 "home": PipelineHome(root=str(tmp_path / "home"))}
    config = {"ops": {"posts": {"config": {"test_fraction": 0.5, "seed": 1}}}}
    instance = dg.DagsterInstance.ephemeral()

    def run() -> tuple[dict, str, list[str]]:
        result = dg.materialize([raw_posts, posts, rejected_posts], resources=resources,
                                run_config=config, instance=instance)
        materialization = result.asset_materializations_for_node("posts")[0]
        logs = [e.user_message for e in instance.all_logs(result.run_id)
                if e.step_key == "posts" and not e.is_dagster_event]
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        return metadata, materialization.tags["dagster/data_version"], logs

    first, version, logs = run()
    assert (first["shards_new"], first["shards_reused"], first["rows_scanned"]) == (3, 0, 15)
    assert any(line.startswith("3 shards scanned (3 new), 0 reused") for line in logs)
    again, same_version, logs = run()
    assert (again["shards_scanned"], again["shards_reused"], again["rows_scanned"]) == (0, 3, 0)
    assert same_version == version
    assert {k: again[k] for k in ("posts", "train", "test", "duplicates_collapsed", "rejected",
                                  "rows_read")} == {k: first[k] for k in (
        "posts", "train", "test", "duplicates_collapsed", "rejected", "rows_read")}
    assert any("the posts table is unchanged" in line for line in logs)
    (folder / "c.parquet").unlink()
    removed, other_version, _ = run()
    assert removed["shards_removed"] == 1 and other_version != version


def test_tables_of_two_different_runs_are_never_taken_as_unchanged(folder, tmp_path, monkeypatch):
    home = tmp_path / "home"
    first = refresh(home, folder)
    strict = ScanParams(test_fraction=0.5, seed=1, max_pixels=10_000, min_side=20)
    written = post_cache.write_table_atomic

    def dies_before_the_posts_table(table, location):
        if location == Layout.at(home).posts:
            raise KeyboardInterrupt  # killed after the rejects table, before the posts table
        return written(table, location)

    monkeypatch.setattr(post_cache, "write_table_atomic", dies_before_the_posts_table)
    with pytest.raises(KeyboardInterrupt):
        refresh(home, folder, params=strict)  # every 16-pixel image is rejected now
    monkeypatch.setattr(post_cache, "write_table_atomic", written)
    back = refresh(home, folder)  # the first run's entries again: its posts table is there
    assert back.rewritten and back.data_version == first.data_version
    assert_equals_full_read(home, folder, back)


def test_a_shard_touched_but_not_changed_keeps_the_data_version(folder, tmp_path):
    home = tmp_path / "home"
    first = refresh(home, folder)
    mtime = (folder / "b.parquet").stat().st_mtime_ns + 5_000_000_000
    os.utime(folder / "b.parquet", ns=(mtime, mtime))  # same bytes, new fingerprint
    touched = refresh(home, folder)
    assert [Path(p).name for p in touched.scanned[CHANGED]] == ["b.parquet"]
    assert touched.rewritten and touched.data_version == first.data_version
