"""Damaged or missing files under IMGSEARCH_HOME: never served, never a crash, a clear state,
and recovery without a restart once fixed."""

import os
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from imgsearch_pipeline.api.app import create_app
from imgsearch_pipeline.api.settings import ApiSettings
from imgsearch_pipeline.core.integrity import part_manifest_name, write_checked_table
from imgsearch_pipeline.core.layout import Layout
from imgsearch_pipeline.core.vectors import read_vectors
from imgsearch_pipeline.resources import vector_index
from imgsearch_pipeline.resources.embedders import ColorTextureModel
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex, Hit, IndexBatch

from .test_api import Demo, build_demo, demo_env

FAST = ApiSettings(live_check_s=0.05, retry_max_s=0.2)


@pytest.fixture
def home(tmp_path_factory, sample_dataset, tmp_path) -> Path:
    home = tmp_path / "var"
    shutil.copytree(build_demo(tmp_path_factory, sample_dataset), home)  # private copy
    return home


def _index(home: Path) -> FaissHnswIndex:
    return FaissHnswIndex(root=str(home / "index"))


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def _wait(client: TestClient, done, seconds: float = 10.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        response = client.get("/health")
        body = response.json()
        if done(response.status_code, body) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def _no_server_path(home: Path, text: str) -> None:
    assert str(home) not in text and os.getcwd() not in text


def test_overwritten_bytes_in_the_index_are_never_served(home):
    faiss_file = home / "index" / "versions" / _index(home).live_version() / "index.faiss"
    _overwrite(faiss_file, faiss_file.stat().st_size // 2, b"\xff" * 4096)
    with TestClient(create_app(demo_env(home), FAST)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        message = health.json()["message"]
        assert "index.faiss: checksum mismatch" in message
        _no_server_path(home, message)
        uuid = sorted(Demo(home).indexed)[0]
        response = client.get(f"/images/{uuid}/similar")
        assert response.status_code == 503 and "index.faiss" in response.json()["message"]


def test_a_damaged_new_version_keeps_the_good_one_live_then_recovers(home):
    index = _index(home)
    good = index.live_version()
    ids, vectors = read_vectors(Path(Layout.at(home).embeddings(ColorTextureModel.model_id)))
    with TestClient(create_app(demo_env(home), FAST)) as client:
        assert client.get("/health").json()["index_version"] == good
        index.build("99990101t000000-bad", vectors.shape[1], [IndexBatch(ids[:50], vectors[:50])])
        folder = home / "index/versions/99990101t000000-bad"
        _overwrite(folder / "index.faiss", 200, os.urandom(64))
        (home / "index/LIVE").write_text("99990101t000000-bad")  # published behind our back
        body = _wait(client, lambda status, b: "next in" in (b.get("message") or ""))
        assert body["index_version"] == good and body["live_version"] == "99990101t000000-bad"
        assert "not served" in body["message"] and "index.faiss: checksum mismatch" in body["message"]
        assert f"still serving {good}" in body["message"]
        _no_server_path(home, body["message"])
        query = sorted(Demo(home).indexed)[0]
        hits = client.get(f"/images/{query}/similar?k=5").json()["hits"]
        assert len(hits) == 5  # the good version answers meanwhile
        # Fixed (rebuilt) while the app runs: served without a restart.
        index.build("99990101t000000-bad", vectors.shape[1], [IndexBatch(ids[:50], vectors[:50])])
        body = _wait(client, lambda status, b: b.get("index_version") == "99990101t000000-bad")
        assert body["index_version"] == "99990101t000000-bad" and body["documents"] == 50
        assert body["message"] is None


def _split_into_two_parts(folder: Path) -> tuple[Path, Path]:
    """The demo's embeddings as two checksummed parts (as a larger run writes them)."""
    (part,) = sorted(folder.glob("part-*.parquet"))
    table = pq.read_table(part)
    half = table.num_rows // 2
    first = write_checked_table(table.slice(0, half), folder / "part-a.parquet")
    second = write_checked_table(table.slice(half), folder / "part-b.parquet")
    part.unlink()
    (folder / part_manifest_name(part)).unlink()
    return first, second


def test_a_truncated_embeddings_part_is_left_out_and_named(home):
    folder = Path(Layout.at(home).embeddings(ColorTextureModel.model_id))
    part, _ = _split_into_two_parts(folder)
    lost = set(read_vectors(folder, parts=[part])[0])
    part.write_bytes(part.read_bytes()[:100])
    with TestClient(create_app(demo_env(home), FAST)) as client:
        health = client.get("/health")
        assert health.status_code == 200  # the index itself is sound: search goes on
        message = health.json()["message"]
        assert part.name in message and "left out" in message
        _no_server_path(home, message)
        demo = Demo(home)
        gone = sorted(lost & demo.indexed)[0]
        assert client.get(f"/images/{gone}/similar").status_code == 404
        kept = sorted(demo.indexed - lost)[0]
        assert client.get(f"/images/{kept}/similar").status_code == 200


def test_when_every_embeddings_part_is_damaged_the_api_says_so(home):
    folder = Path(Layout.at(home).embeddings(ColorTextureModel.model_id))
    for part in folder.glob("part-*.parquet"):
        part.write_bytes(part.read_bytes()[:100])
    with TestClient(create_app(demo_env(home), FAST)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert "damaged part" in health.json()["message"] and "left out" in health.json()["message"]


@pytest.mark.parametrize("live, reason", [
    ("20990101t000000-missing", "not on disk"),
    ("../../../etc", "LIVE: does not name a valid index version"),
    ("\x00\xff" * 50, "LIVE: does not name a valid index version"),
])
def test_missing_or_hostile_live_pointer_then_fixed(home, live, reason):
    pointer = home / "index" / "LIVE"
    good = pointer.read_text()
    pointer.write_bytes(live.encode("utf-8", "surrogateescape"))
    with TestClient(create_app(demo_env(home), FAST)) as client:
        health = client.get("/health")
        assert health.status_code == 503 and reason in health.json()["message"]
        _no_server_path(home, health.json()["message"])
        pointer.write_text(good)
        body = _wait(client, lambda status, b: status == 200)
        assert body["index_version"] == good


def test_missing_tables_give_503_not_a_crash(home):
    Path(Layout.at(home).posts).unlink()
    with TestClient(create_app(demo_env(home), FAST)) as client:
        health = client.get("/health")
        assert health.status_code == 503 and "tables/posts.parquet" in health.json()["message"]


def test_impossible_scores_never_reach_a_client(home, monkeypatch):
    demo = Demo(home)
    real = sorted(demo.indexed)[:3]
    forged = [Hit(real[0], 5.8e37), Hit(real[1], float("nan")), Hit(real[2], 0.5)]
    monkeypatch.setattr(FaissHnswIndex, "search", lambda self, *args, **kwargs: forged)
    with TestClient(create_app(demo_env(home), FAST)) as client:
        hits = client.get(f"/images/{sorted(demo.indexed)[5]}/similar?k=3").json()["hits"]
    assert [(h["uuid"], h["score"]) for h in hits] == [(real[2], 0.5)]


def test_old_versions_are_released_after_a_swap(home):
    index = _index(home)
    first = index.live_version()
    key = lambda version: (os.path.abspath(index.root), version)  # noqa: E731
    ids, vectors = read_vectors(Path(Layout.at(home).embeddings(ColorTextureModel.model_id)))
    with TestClient(create_app(demo_env(home), FAST)) as client:
        assert key(first) in vector_index._LOADED
        index.build("99990101t000000-next", vectors.shape[1], [IndexBatch(ids[:30], vectors[:30])])
        index.publish("99990101t000000-next")
        _wait(client, lambda status, b: b.get("index_version") == "99990101t000000-next")
        deadline = time.monotonic() + 10
        while key(first) in vector_index._LOADED and time.monotonic() < deadline:
            time.sleep(0.1)
        assert key(first) not in vector_index._LOADED
        assert key("99990101t000000-next") in vector_index._LOADED


def test_a_failing_backend_is_a_503_for_that_request(home, monkeypatch):
    from imgsearch_pipeline.resources.object_store import LocalObjectStore

    def down(*args, **kwargs):
        raise ConnectionError("backend down")

    demo = Demo(home)
    uuid = sorted(demo.indexed)[0]
    with TestClient(create_app(demo_env(home), FAST)) as client:
        monkeypatch.setattr(FaissHnswIndex, "search", down)
        monkeypatch.setattr(LocalObjectStore, "get", down)
        for path in (f"/images/{uuid}/similar", f"/images/{uuid}"):
            response = client.get(path)
            assert response.status_code == 503 and "ConnectionError" in response.json()["message"]
        monkeypatch.undo()
        assert client.get(f"/images/{uuid}/similar").status_code == 200  # back by itself
