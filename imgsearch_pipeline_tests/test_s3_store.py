"""The S3 object store and s3:// datasets against moto's S3 server on 127.0.0.1."""

import logging
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from moto.server import ThreadedMotoServer

from imgsearch_pipeline.core.shards import find_shard_paths, iter_batches, open_location
from imgsearch_pipeline.resources.s3_store import S3ObjectStore

from .pipeline import materialize_all, pipeline_resources
from .servers import FlakyProxy, free_port

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines

KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def start_moto(port: int) -> ThreadedMotoServer:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server


def stop_moto(server: ThreadedMotoServer) -> None:
    server.stop()
    server._server.server_close()  # stop() leaves the socket bound; free the port for real


@pytest.fixture(scope="module")
def moto_url():
    server = start_moto(free_port())
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    stop_moto(server)


def make_store(endpoint: str, bucket: str, **fields) -> S3ObjectStore:
    max_attempts = fields.pop("max_attempts", 5)
    return S3ObjectStore(s3=S3Resource(endpoint_url=endpoint, region_name="us-east-1",
                                       max_attempts=max_attempts, **KEYS),
                         bucket=bucket, **fields)


def new_bucket(endpoint: str) -> str:
    bucket = f"imgsearch-{uuid.uuid4().hex[:12]}"
    make_store(endpoint, bucket).client().create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def store(moto_url) -> S3ObjectStore:
    return make_store(moto_url, new_bucket(moto_url), prefix="imgsearch")


def image_items(count: int, start: int = 0) -> list[tuple[str, bytes, str]]:
    return [(f"images/{i % 256:02x}/{i:06d}.jpg", f"jpeg bytes {i}".encode(), "image/jpeg")
            for i in range(start, start + count)]


# -- the object store -------------------------------------------------------------------

def test_put_get_exists_and_content_type(store):
    store.put("images/ab/one.png", b"\x89PNG data", "image/png")
    assert store.get("images/ab/one.png") == b"\x89PNG data"
    assert store.exists("images/ab/one.png")
    assert not store.exists("images/ab/two.png")
    raw = store.client().head_object(Bucket=store.bucket, Key="imgsearch/images/ab/one.png")
    assert raw["ContentType"] == "image/png"  # stored under the prefix, with its type
    with pytest.raises(FileNotFoundError, match="two.png"):
        store.get("images/ab/two.png")


def test_put_is_idempotent(store):
    store.put("images/ab/same.jpg", b"same", "image/jpeg")
    store.put("images/ab/same.jpg", b"same", "image/jpeg")
    assert list(store.iter_keys()) == ["images/ab/same.jpg"]


@pytest.mark.parametrize("key", ["../escape.jpg", "/abs.jpg", "images//x.jpg", "a\\b.jpg", ""])
def test_bad_keys_are_refused_before_any_request(store, key):
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(key, b"x", "image/jpeg")
    assert list(store.iter_keys()) == []


def test_missing_bucket_is_a_clear_error(moto_url):
    missing = make_store(moto_url, f"absent-{uuid.uuid4().hex[:8]}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        missing.put("images/ab/x.jpg", b"x", "image/jpeg")


def test_iter_keys_follows_every_page_and_stays_in_its_prefix(moto_url):
    bucket = new_bucket(moto_url)
    store = make_store(moto_url, bucket, prefix="imgsearch", list_page_size=25)
    items = image_items(130)
    assert store.put_many(items, max_workers=8) == 130
    # Objects outside the store's prefix, including one whose name merely starts like it.
    other = make_store(moto_url, bucket, prefix="imgsearch-old")
    other.put("images/00/000000.jpg", b"other", "image/jpeg")

    pages = []
    store.client().meta.events.register("before-call.s3.ListObjectsV2",
                                        lambda **kwargs: pages.append(1))
    keys = list(store.iter_keys("images/"))
    assert sorted(keys) == sorted(key for key, _, _ in items)
    assert len(pages) == 6  # 130 keys, 25 a page
    assert list(store.iter_keys("images/01/")) == [k for k, _, _ in items if k.startswith("images/01/")]
    assert len(store._clients) == 1  # eight upload threads shared one client


def test_presigned_url_is_fetchable(store, moto_url):
    store.put("images/cd/photo.jpg", b"jpeg body", "image/jpeg")
    with urllib.request.urlopen(store.url("images/cd/photo.jpg"), timeout=10) as response:
        assert response.read() == b"jpeg body"
        assert response.headers["Content-Type"] == "image/jpeg"


def test_presigned_url_uses_the_public_endpoint(store, moto_url):
    public = moto_url.replace("127.0.0.1", "localhost")
    browser_side = store.model_copy(update={"public_endpoint_url": public})
    store.put("images/cd/public.jpg", b"public body", "image/jpeg")
    url = browser_side.url("images/cd/public.jpg")
    assert url.startswith(f"{public}/{store.bucket}/imgsearch/images/cd/public.jpg?")
    assert "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"public body"


# -- failures: injected 5xx and a server restart ----------------------------------------

def s3_error(status: int) -> tuple[list[tuple[str, str]], bytes]:
    code = {503: "SlowDown", 500: "InternalError"}[status]
    return ([("Content-Type", "application/xml")],
            f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode())


def flaky_moto(upstream_port: int, failures: int) -> FlakyProxy:
    """Forwards to moto, but answers the first ``failures`` requests with 503/500 errors."""
    return FlakyProxy(upstream_port, failures, statuses=(503, 500), error=s3_error)


def test_retries_injected_503_and_500_then_succeeds(moto_url):
    bucket = new_bucket(moto_url)
    upstream_port = int(moto_url.rsplit(":", 1)[1])
    with flaky_moto(upstream_port, failures=2) as proxy:
        store = make_store(proxy.url, bucket, max_attempts=3)
        store.put("images/ef/retried.jpg", b"kept", "image/jpeg")
        assert proxy.failed == [503, 500] and proxy.forwarded == 1
        assert store.get("images/ef/retried.jpg") == b"kept"


def test_gives_up_when_the_retry_budget_is_spent(moto_url):
    bucket = new_bucket(moto_url)
    upstream_port = int(moto_url.rsplit(":", 1)[1])
    with flaky_moto(upstream_port, failures=10) as proxy:
        store = make_store(proxy.url, bucket, max_attempts=2)
        with pytest.raises(ClientError, match="SlowDown|InternalError"):
            store.put("images/ef/lost.jpg", b"x", "image/jpeg")
        assert proxy.failed == [503, 500] and proxy.forwarded == 0  # the first try counts
    assert not make_store(moto_url, bucket).exists("images/ef/lost.jpg")


def test_put_many_continues_across_a_server_restart():
    port = free_port()
    server = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    bucket = new_bucket(endpoint)
    store = make_store(endpoint, bucket, max_attempts=12)
    items = image_items(150)
    outcome: dict = {}

    def upload():
        try:
            outcome["count"] = store.put_many(items, max_workers=4)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    uploader = threading.Thread(target=upload)
    uploader.start()
    deadline = time.monotonic() + 20
    while sum(1 for _ in store.iter_keys()) < 10:  # let the run get going
        assert time.monotonic() < deadline, "uploads never started"
        time.sleep(0.01)
    stop_moto(server)  # connections are now refused
    assert uploader.is_alive(), "put_many finished before the server stopped"
    time.sleep(0.8)
    server = start_moto(port)  # moto keeps its buckets in the process
    uploader.join(timeout=60)
    try:
        assert "error" not in outcome, outcome.get("error")
        assert outcome["count"] == 150
        assert sorted(store.iter_keys()) == sorted(key for key, _, _ in items)
    finally:
        stop_moto(server)


# -- s3:// datasets and the whole graph ---------------------------------------------------

@pytest.fixture
def s3_environment(moto_url, monkeypatch):
    for name, value in {"IMGSEARCH_S3_ENDPOINT": moto_url, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    return moto_url


def upload_dataset(store: S3ObjectStore, folder: Path) -> list[str]:
    keys = []
    for path in sorted(folder.glob("*.parquet")):
        store.put(f"data/{path.name}", path.read_bytes(), "application/vnd.apache.parquet")
        keys.append(f"data/{path.name}")
    return keys


def test_dataset_location_on_s3(s3_environment, sample_dataset):
    bucket = new_bucket(s3_environment)
    upload_dataset(make_store(s3_environment, bucket, prefix="posts"), sample_dataset)
    filesystem, paths = find_shard_paths(f"s3://{bucket}/posts/data")
    local = sorted(sample_dataset.glob("*.parquet"))
    assert paths == [f"{bucket}/posts/data/{p.name}" for p in local]
    remote_rows = sum(b.num_rows for b in iter_batches(filesystem, paths[0], 50, ["image"]))
    assert remote_rows == pq.ParquetFile(local[0]).metadata.num_rows
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_shard_paths(f"s3://{bucket}/nothing-here")
    with pytest.raises(ValueError, match="names no bucket"):
        open_location("s3://")


def test_whole_graph_with_s3_objects_and_dataset(s3_environment, sample_dataset, tmp_path):
    bucket = new_bucket(s3_environment)
    upload_dataset(make_store(s3_environment, bucket, prefix="posts"), sample_dataset)
    objects = make_store(s3_environment, bucket, prefix="objects")
    resources = pipeline_resources(tmp_path / "var", f"s3://{bucket}/posts/data",
                                   object_store=objects)
    first = materialize_all(resources)
    assert first.success
    posts = first.output_for_node("posts")
    stored = sorted(objects.iter_keys("images/"))
    assert len(stored) == posts.posts == first.output_for_node("image_objects").uploaded
    head = objects.client().head_object(Bucket=bucket, Key=f"objects/{stored[0]}")
    assert head["ContentType"].startswith("image/")

    again = materialize_all(resources)
    uploaded = again.output_for_node("image_objects")
    assert uploaded.uploaded == 0 and uploaded.already_there == posts.posts
