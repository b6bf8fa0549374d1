"""The production profile keeps its tables and the values handed between assets in the
bucket (moto's S3 server here), so every container and machine sees the same state: the
whole graph runs with nothing written under the working directory (uploads are staged
in the system's temporary folder; the index stays local), and the API, built
afresh as another process would build it, answers from those tables, its stored vectors
memory-mapped from a local cache file.

Elasticsearch is not what this test is about (test_elasticsearch_integration.py is): the
embedded faiss index stands in for it, in a local folder (the index files, and the faiss
index's search-depth records beside them, stay local; with Elasticsearch they live in the
cluster)."""

import io
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

import imgsearch_pipeline.api.service as service_module
from imgsearch_pipeline.api.app import create_app
from imgsearch_pipeline.api.service import load_service
from imgsearch_pipeline.core.integrity import write_checked_table
from imgsearch_pipeline.core.vectors import (
    embedding_parts,
    mapped_vectors,
    parts_fingerprint,
    read_vectors,
    set_aside_damaged_parts,
    vectors_table,
)
from imgsearch_pipeline.definitions import defs
from imgsearch_pipeline.resources.profiles import resources_for
from imgsearch_pipeline.resources.storage import PickledValues
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex
from imgsearch_pipeline.settings import ConfigurationError, Settings

from .pipeline import materialize_all
from .test_s3_store import moto_url, new_bucket, raw_client, s3_environment  # noqa: F401


@pytest.fixture
def production(s3_environment, tmp_path, sample_dataset, monkeypatch):  # noqa: F811
    bucket = new_bucket()
    env = {"IMGSEARCH_PROFILE": "production", "IMGSEARCH_EMBEDDER": "color-texture",
           "IMGSEARCH_DATASET": str(sample_dataset), "IMGSEARCH_ES_URL": "http://127.0.0.1:9",
           "IMGSEARCH_S3_BUCKET": bucket, "IMGSEARCH_S3_PREFIX": "prod",
           "AWS_ENDPOINT_URL_S3": s3_environment, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "IMGSEARCH_API_PUBLIC": "true",
           "IMGSEARCH_API_VECTOR_CACHE": str(tmp_path / "vector-cache")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("IMGSEARCH_HOME", raising=False)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # anything written to a relative local path would land here
    index = FaissHnswIndex(root=str(tmp_path / "index"))

    def resources() -> dict:
        """The production resources as a fresh process builds them, on the test's index."""
        return {**resources_for(Settings.read(env)), "vector_index": index}

    return bucket, env, resources, workdir


def keys_in(bucket: str, prefix: str) -> list[str]:
    pages = raw_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_tables_and_values_live_in_the_bucket_and_the_api_reads_them(production, monkeypatch):
    bucket, env, resources, workdir = production
    first = resources()
    assert first["home"].root == f"s3://{bucket}/prod"
    assert first["io_manager"] == PickledValues(root=f"s3://{bucket}/prod/values")

    result = materialize_all(first)
    assert result.success
    store = first["object_store"]
    tables = keys_in(bucket, "prod/tables/")
    for name in ("posts.parquet", "rejected_posts.parquet", "ground_truth.parquet",
                 "reports/recall_report.json", "reports/recall_report.md",
                 "reports/recall_per_query.parquet", "reports/latency.png"):
        assert f"prod/tables/{name}" in tables, tables
    assert any(k.startswith("prod/tables/embeddings/") and k.endswith(".parquet") for k in tables)
    values = keys_in(bucket, "prod/values/")
    assert {"prod/values/posts", "prod/values/recall_report"} <= set(values), values
    assert list(workdir.iterdir()) == []  # nothing went to the local disk

    # The posts table read straight from the bucket (boto3, not the pipeline's readers).
    body = raw_client().get_object(Bucket=bucket, Key="prod/tables/posts.parquet")["Body"].read()
    posts = pq.read_table(io.BytesIO(body))
    made = result.output_for_node("posts")
    assert posts.num_rows == made.posts and made.path == f"s3://{bucket}/prod/tables/posts.parquet"

    # Another process: fresh resources load the values the run handed between assets.
    report = dg.Definitions(assets=defs.assets, resources=resources()).load_asset_value(
        "recall_report", instance=dg.DagsterInstance.ephemeral())
    assert report == result.output_for_node("recall_report")
    assert report.indexed == made.train and report.mean_recall >= 0.9

    # The API, built from the same environment, serves from the bucket's tables; its stored
    # vectors are a memory map of a local cache file, equal to the bucket's parts (read here
    # with boto3 and pyarrow, not the pipeline's readers).
    monkeypatch.setattr(service_module, "resources_for", lambda settings: resources())
    settings = Settings.read(env)
    service = load_service(settings, settings.api)
    assert isinstance(service.vectors.matrix, np.memmap)
    assert Path(service.vectors.matrix.filename).parent.parent == Path(
        env["IMGSEARCH_API_VECTOR_CACHE"])
    reference = {}
    for key in tables:
        if key.startswith("prod/tables/embeddings/") and key.endswith(".parquet"):
            part = pq.read_table(io.BytesIO(
                raw_client().get_object(Bucket=bucket, Key=key)["Body"].read()))
            for uuid, vector in zip(part.column("uuid").to_pylist(),
                                    part.column("vector").to_pylist(), strict=True):
                reference.setdefault(uuid, vector)
    assert set(service.vectors.row) == set(reference)
    for uuid, vector in reference.items():
        assert np.array_equal(service.vectors.get(uuid), np.asarray(vector, np.float32))
    with TestClient(create_app(env)) as client:
        health = client.get("/health").json()
        assert health["index_loaded"] and health["documents"] == made.train
        train = [row for row in posts.to_pylist() if row["split"] == "train"]
        image = store.get(train[0]["key"])
        answer = client.post("/search", files={"image": ("q.jpg", image, "image/jpeg")})
        assert answer.status_code == 200, answer.text
        assert answer.json()["hits"][0]["uuid"] == train[0]["uuid"]
        similar = client.get(f"/images/{train[1]['uuid']}/similar").json()
        assert similar["hits"] and all(h["uuid"] != train[1]["uuid"] for h in similar["hits"])
        redirect = client.get(f"/images/{train[0]['uuid']}", follow_redirects=False)
        assert redirect.status_code == 307 and bucket in redirect.headers["location"]
    assert not (Path(workdir) / "var").exists()
    assert list(workdir.iterdir()) == []


def test_checksums_find_damage_on_the_object_store(s3_environment):  # noqa: F811
    """Parts written to the bucket carry their manifests there; bytes changed in the bucket
    are found, never read, and set aside in the bucket."""
    bucket = new_bucket()
    folder = f"s3://{bucket}/home/tables/embeddings/m"
    vectors = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    for i in range(2):
        write_checked_table(vectors_table([f"u{i}{j}" for j in range(3)], ["train"] * 3, "m",
                                          vectors[3 * i:3 * i + 3]), f"{folder}/part-{i}.parquet")
    parts, damaged = embedding_parts(folder)
    assert parts == [f"{folder}/part-0.parquet", f"{folder}/part-1.parquet"] and damaged == {}
    ids, matrix = read_vectors(folder)
    assert ids == ["u00", "u01", "u02", "u10", "u11", "u12"] and np.array_equal(matrix, vectors)

    client = raw_client()
    key = "home/tables/embeddings/m/part-1.parquet"
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body[:40] + b"\xff" * 8 + body[48:])
    parts, damaged = embedding_parts(folder)
    assert parts == [f"{folder}/part-0.parquet"]
    assert list(damaged) == ["part-1.parquet"] and "checksum mismatch" in damaged["part-1.parquet"]
    assert read_vectors(folder)[0] == ["u00", "u01", "u02"]
    assert set_aside_damaged_parts(folder) == damaged
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"{key}.damaged" in listed and key not in listed


def test_the_vector_cache_follows_the_parts(tmp_path):
    """The memory-mapped copy holds exactly the verified parts' vectors; a new part gives a
    new fingerprint and a new file, and the stale one goes."""
    folder = tmp_path / "embeddings"
    rng = np.random.default_rng(1)
    first = rng.normal(size=(5, 3)).astype(np.float32)
    write_checked_table(vectors_table(list("abcde"), ["train"] * 5, "m", first),
                        folder / "part-1.parquet")
    cache = tmp_path / "cache"
    parts = embedding_parts(folder)[0]
    name = parts_fingerprint(parts, "v1", "m")
    ids, matrix = mapped_vectors(parts, cache, name)
    assert ids == list("abcde") and isinstance(matrix, np.memmap) and not matrix.flags.writeable
    assert np.array_equal(matrix, first)
    assert json.loads((cache / f"{name}.json").read_text())["dim"] == 3
    assert parts_fingerprint(parts, "v2", "m") != name  # the version counts

    second = rng.normal(size=(2, 3)).astype(np.float32)
    write_checked_table(vectors_table(["e", "f"], ["train"] * 2, "m", second),
                        folder / "part-2.parquet")
    parts = embedding_parts(folder)[0]
    renamed = parts_fingerprint(parts, "v1", "m")
    assert renamed != name
    ids, matrix = mapped_vectors(parts, cache, renamed)
    assert ids == list("abcdef")  # "e" once, from the first part
    assert np.array_equal(matrix, np.concatenate([first, second[1:]]))
    assert sorted(p.name for p in cache.iterdir()) == [f"{renamed}.f32", f"{renamed}.json"]


def test_home_follows_imgsearch_home_when_it_is_set(tmp_path):
    env = {"IMGSEARCH_PROFILE": "production", "IMGSEARCH_EMBEDDER": "color-texture",
           "IMGSEARCH_ES_URL": "http://127.0.0.1:9", "IMGSEARCH_S3_BUCKET": "images"}
    assert resources_for(Settings.read(env))["home"].root == "s3://images/imgsearch"  # the default prefix
    other = resources_for(Settings.read({**env, "IMGSEARCH_HOME": "s3://state/run-a/"}))
    assert other["home"].root == "s3://state/run-a"
    assert other["io_manager"] == PickledValues(root="s3://state/run-a/values")
    local = resources_for(Settings.read({**env, "IMGSEARCH_HOME": str(tmp_path / "var")}))
    assert local["home"].root == str(tmp_path / "var")
    assert local["io_manager"] == PickledValues(root=str(tmp_path / "var" / "values"))
    with pytest.raises(ConfigurationError, match="folder or an s3:// URI"):
        resources_for(Settings.read({**env, "IMGSEARCH_HOME": "gs://state/run-a"}))
    with pytest.raises(ConfigurationError, match="embedded profile keeps its files in a local"):
        resources_for(Settings.read({**env, "IMGSEARCH_PROFILE": "embedded", "IMGSEARCH_HOME": "s3://state/a"}))
