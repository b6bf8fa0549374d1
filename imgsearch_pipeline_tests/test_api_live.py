"""The API follows the live index: a version published while it runs is served without a restart."""

import shutil
import time

from fastapi.testclient import TestClient

from imgsearch_pipeline.api.app import create_app
from imgsearch_pipeline.api.settings import ApiSettings
from imgsearch_pipeline.core.layout import Layout
from imgsearch_pipeline.core.vectors import read_vectors
from imgsearch_pipeline.resources.embedders import ColorTextureModel
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex, IndexBatch

from .test_api import build_demo, demo_env

NEWER = "99990101t000000-newer"


def _wait_for_version(client: TestClient, version: str, seconds: float = 10.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        body = client.get("/health").json()
        if body.get("index_version") == version or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_newly_published_version_is_served_without_restart(tmp_path_factory, sample_dataset,
                                                            tmp_path):
    home = tmp_path / "var"
    shutil.copytree(build_demo(tmp_path_factory, sample_dataset), home)  # private copy
    index = FaissHnswIndex(root=str(home / "index"))
    ids, vectors = read_vectors(Layout.at(home).embeddings(ColorTextureModel.model_id))
    subset = ids[:40]

    with TestClient(create_app(demo_env(home), ApiSettings(live_check_s=0.05))) as client:
        before = client.get("/health").json()
        assert before["index_version"] == index.live_version() != NEWER

        index.build(NEWER, vectors.shape[1], [IndexBatch(subset, vectors[:40])])
        index.publish(NEWER)
        after = _wait_for_version(client, NEWER)
        assert after["index_version"] == NEWER and after["documents"] == len(subset)
        hits = client.get(f"/images/{subset[0]}/similar?k=10").json()["hits"]
        assert hits and {h["uuid"] for h in hits} <= set(subset)
