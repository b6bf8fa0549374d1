"""Faults mid-run: the process killed while embedding, the object store going away, a shard
breaking part way. Each time a re-run ends with every post stored, embedded and indexed once."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.resources.object_store import LocalObjectStore
from imgsearch_pipeline.sample_data import write_dataset

from .pipeline import materialize_all, pipeline_resources
from .reaper import server_process

PROJECT = Path(__file__).resolve().parents[1]


def _post_uuids(home: Path) -> list[str]:
    return pq.read_table(home / "tables" / "posts.parquet", columns=["uuid"]).column("uuid").to_pylist()


def _embedded_rows(home: Path) -> list[str]:
    """Every uuid row of every embedding part, duplicates included (no de-duplication)."""
    parts = sorted((home / "tables" / "embeddings").glob("**/part-*.parquet"))
    return [u for p in parts for u in pq.read_table(p, columns=["uuid"]).column("uuid").to_pylist()]


def _assert_complete(home: Path, object_keys: list[str]) -> None:
    posts = _post_uuids(home)
    embedded = _embedded_rows(home)
    assert len(embedded) == len(set(embedded)), "an image was embedded twice"
    assert set(embedded) == set(posts), "embeddings and posts differ"
    assert sorted(Path(k).stem for k in object_keys) == sorted(posts)


# ---- the process killed while embedding parts are being written --------------------------

def _materialize_command(home: Path, dataset: Path, config: Path, dagster_home: Path):
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "IMGSEARCH_HOME": str(home),
           "IMGSEARCH_DATASET": str(dataset), "IMGSEARCH_EMBEDDER": "color-texture"}
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
               "--select", "*", "-m", "imgsearch_pipeline",
               "-c", str(config)]
    return command, env


@pytest.mark.slow
def test_killed_while_embedding_then_rerun_completes(tmp_path):
    dataset = write_dataset(tmp_path / "sample", images=320, shards=2, size=128, seed=5,
                            exact_duplicates=4)[0].parent
    home, dagster_home = tmp_path / "var", tmp_path / "dagster"
    dagster_home.mkdir()
    config = tmp_path / "run.yaml"
    # Small parts and batches: many atomic part writes, so the kill lands between two of them.
    config.write_text("ops:\n  image_embeddings:\n    config:\n      part_rows: 4\n"
                      "resources:\n  embedder:\n    config:\n      batch_size: 4\n")
    command, env = _materialize_command(home, dataset, config, dagster_home)
    # Its own session: the kill reaches the step processes too, as a machine going down would.
    with server_process(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE) as process:
        embeddings = home / "tables" / "embeddings"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if len(list(embeddings.glob("**/part-*.parquet"))) >= 3:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        process.stderr.close()
    written = _embedded_rows(home)
    posts = _post_uuids(home)
    assert 0 < len(set(written)) < len(posts), "the kill did not land during embedding"
    assert not (home / "index" / "LIVE").exists()

    rerun = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    keys = list(LocalObjectStore(root=str(home / "objects")).iter_keys("images/"))
    _assert_complete(home, keys)
    # Left-over temporary files of the killed writes are hidden, never read as parts.
    assert all(p.name.startswith(".") for p in embeddings.glob("**/*.tmp"))
    live = (home / "index" / "LIVE").read_text().strip()
    docs = pq.read_table(home / "index" / "versions" / live / "docs.parquet")
    train = pq.read_table(home / "tables" / "posts.parquet", columns=["split"]).column("split")
    assert docs.num_rows == train.to_pylist().count("train")


# ---- the object store failing mid-run -------------------------------------------------------

class FlakyStore(LocalObjectStore):
    """A local store whose puts fail with OSError during a window of calls: a store whose
    client has no retries of its own. Records every key it was asked to put."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with OUTAGE["lock"]:
            OUTAGE["calls"] += 1
            OUTAGE["keys"].append(key)
            down = OUTAGE["from"] <= OUTAGE["calls"] < OUTAGE["until"]
        if down:
            raise OSError("connection refused (injected outage)")
        super().put(key, data, content_type)


OUTAGE: dict = {"lock": threading.Lock(), "calls": 0, "from": 0, "until": 0, "keys": []}


def test_a_store_outage_fails_image_objects_without_retries_and_a_rerun_completes(
        sample_dataset, tmp_path):
    """image_objects adds no retries of its own: riding out a short outage is the store
    client's policy (for S3, the one retry policy of its client, tested in test_s3_store).
    Retried here as well, an object was tried up to (asset retries + 1) x (client tries)
    times; now a failed put fails the step, each object tried once, and the re-run uploads
    only what is missing."""
    home = tmp_path / "var"
    OUTAGE.update(calls=0, keys=[], **{"from": 40, "until": 60})
    store = FlakyStore(root=str(home / "objects"))
    run_config = {"ops": {"image_objects": {"config": {"upload_batch": 16, "upload_workers": 2}}}}
    first = materialize_all(pipeline_resources(home, sample_dataset, object_store=store),
                            run_config=run_config, raise_on_error=False)
    assert not first.success
    assert [e.step_key for e in first.get_step_failure_events()] == ["image_objects"]
    assert OUTAGE["calls"] >= 40  # the outage happened inside the run
    assert len(OUTAGE["keys"]) == len(set(OUTAGE["keys"]))  # no object was put twice

    stored_before = len(list(store.iter_keys("images/")))
    second = materialize_all(pipeline_resources(home, sample_dataset, object_store=store),
                             run_config=run_config)
    objects = second.output_for_node("image_objects")
    assert objects.already_there == stored_before
    assert objects.uploaded == objects.stored - stored_before  # nothing uploaded twice
    _assert_complete(home, list(store.iter_keys("images/")))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_s3_outage_fails_the_run_and_a_rerun_completes(sample_dataset, tmp_path, monkeypatch):
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    from imgsearch_pipeline.core import filesystems
    from imgsearch_pipeline.resources.s3_store import S3ObjectStore

    secret = "s3cr3t-never-logged-7f3a"
    port = _free_port()
    for name, value in {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": secret}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(filesystems, "S3_MAX_ATTEMPTS", 2)  # fail soon once the server is gone
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        class OutageStore(S3ObjectStore):
            """Stops the S3 server after some uploads: the endpoint goes away mid-run."""

            def put(self, key: str, data: bytes, content_type: str) -> None:
                with OUTAGE["lock"]:
                    OUTAGE["calls"] += 1
                    if OUTAGE["calls"] == OUTAGE["from"]:
                        server.stop()
                super().put(key, data, content_type)

        store = OutageStore(bucket="imgsearch-faults")
        store.ensure_bucket()
        OUTAGE.update(calls=0, **{"from": 50})
        home = tmp_path / "var"
        instance = dg.DagsterInstance.ephemeral()
        run_config = {"ops": {"image_objects": {"config": {
            "upload_batch": 16, "upload_workers": 2}}}}
        first = materialize_all(pipeline_resources(home, sample_dataset, object_store=store),
                                run_config=run_config, instance=instance, raise_on_error=False)
        assert not first.success
        assert [e.step_key for e in first.get_step_failure_events()] == ["image_objects"]

        server.start()  # same process, same port: the stored objects are still there
        stored_before = len(list(store.iter_keys("images/")))
        assert 0 < stored_before < first.output_for_node("posts").posts
        second = materialize_all(pipeline_resources(home, sample_dataset, object_store=store),
                                 run_config=run_config, instance=instance)
        assert second.success
        objects = second.output_for_node("image_objects")
        assert objects.already_there == stored_before
        assert objects.uploaded == objects.stored - stored_before  # nothing uploaded twice
        _assert_complete(home, list(store.iter_keys("images/")))

        logs = "\n".join(str(entry) for run in (first, second)
                         for entry in instance.all_logs(run.run_id))
        assert "image_objects" in logs and secret not in logs
    finally:
        server.stop()


# ---- a shard that breaks part way through -------------------------------------------------

def test_shard_breaking_part_way_keeps_the_rows_before(tmp_path):
    paths = write_dataset(tmp_path / "sample", images=120, shards=2, size=48, seed=9,
                          exact_duplicates=0, row_group_rows=20)
    broken = paths[1]
    metadata = pq.ParquetFile(broken).metadata
    last = metadata.row_group(metadata.num_row_groups - 1).column(0)
    start = last.data_page_offset
    data = bytearray(broken.read_bytes())
    data[start: start + 64] = b"\xff" * 64  # a garbled page header in the last row group
    broken.write_bytes(bytes(data))

    home = tmp_path / "var"
    result = materialize_all(pipeline_resources(home, paths[0].parent))
    assert result.success  # the run goes on; the check says what was lost
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["all_rows_read"].passed
    assert checks["all_rows_read"].severity == dg.AssetCheckSeverity.WARN
    failed = result.asset_materializations_for_node("posts")[0].metadata["failed_shards"].value
    assert list(failed) == [str(broken)] and broken.name in failed[str(broken)]
    posts = result.output_for_node("posts")
    assert 60 <= posts.posts + posts.duplicates + posts.rejected < 120  # rows before the break
    keys = list(LocalObjectStore(root=str(home / "objects")).iter_keys("images/"))
    _assert_complete(home, keys)


# ---- a damaged embeddings part -----------------------------------------------------------

def test_a_damaged_embeddings_part_is_set_aside_and_its_rows_embedded_again(sample_dataset, tmp_path):
    home = tmp_path / "var"
    assert materialize_all(pipeline_resources(home, sample_dataset)).success
    parts = sorted((home / "tables" / "embeddings").glob("**/part-*.parquet"))
    damaged = parts[len(parts) // 2]
    lost = set(pq.read_table(damaged, columns=["uuid"]).column("uuid").to_pylist())
    with open(damaged, "r+b") as handle:  # a byte range overwritten in place
        handle.seek(damaged.stat().st_size // 2)
        handle.write(b"\xff" * 64)

    result = materialize_all(pipeline_resources(home, sample_dataset))
    assert result.success
    assert (damaged.parent / (damaged.name + ".damaged")).is_file() and not damaged.exists()
    embedded = _embedded_rows(home)
    assert len(embedded) == len(set(embedded)) and set(embedded) == set(_post_uuids(home))
    new_rows = result.asset_materializations_for_node("image_embeddings")[0].metadata
    assert new_rows["embedded_now"].value == len(lost)
