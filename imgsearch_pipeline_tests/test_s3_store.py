"""The S3 object store, tables, asset values and s3:// datasets against moto's S3 server on
127.0.0.1: one pyarrow filesystem for all of them, reached as the AWS SDK's environment says
(AWS_ENDPOINT_URL_S3, AWS_REGION, the credential chain), with one retry budget."""

import logging
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from imgsearch_pipeline import cli
from imgsearch_pipeline.core import filesystems, tables
from imgsearch_pipeline.core.filesystems import open_location, s3_filesystem
from imgsearch_pipeline.core.shards import find_shard_paths, iter_batches
from imgsearch_pipeline.resources import s3_store
from imgsearch_pipeline.resources.s3_store import S3ObjectStore
from imgsearch_pipeline.resources.storage import PickledValues

from .pipeline import materialize_all, pipeline_resources
from .servers import FlakyProxy, free_port

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request lines


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


def use_endpoint(monkeypatch, endpoint: str) -> None:
    """Point the AWS SDK's environment (pyarrow's and boto3's) at ``endpoint``."""
    for name, value in {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3_environment(moto_url, monkeypatch):
    use_endpoint(monkeypatch, moto_url)
    return moto_url


def make_store(bucket: str, **fields) -> S3ObjectStore:
    """A store on the endpoint the environment names when it is first used."""
    return S3ObjectStore(bucket=bucket, **fields)


def new_bucket() -> str:
    bucket = f"imgsearch-{uuid.uuid4().hex[:12]}"
    assert make_store(bucket).ensure_bucket()
    return bucket


def raw_client():
    """boto3 on the environment's endpoint: what is in the bucket, not read by our code."""
    return boto3.client("s3")


@pytest.fixture
def store(s3_environment) -> S3ObjectStore:
    return make_store(new_bucket(), prefix="imgsearch")


def image_items(count: int, start: int = 0) -> list[tuple[str, bytes, str]]:
    return [(f"images/{i % 256:02x}/{i:06d}.jpg", f"jpeg bytes {i}".encode(), "image/jpeg")
            for i in range(start, start + count)]


# -- the object store -------------------------------------------------------------------

def test_put_get_list_and_content_type(store):
    store.put("images/ab/one.png", b"\x89PNG data", "image/png")
    assert store.get("images/ab/one.png") == b"\x89PNG data"
    assert list(store.iter_keys("images/ab/")) == ["images/ab/one.png"]  # and no two.png
    raw = raw_client().head_object(Bucket=store.bucket, Key="imgsearch/images/ab/one.png")
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


def test_missing_bucket_is_a_clear_error(s3_environment):
    missing = make_store(f"absent-{uuid.uuid4().hex[:8]}")
    for action in (lambda: missing.put("images/ab/x.jpg", b"x", "image/jpeg"),
                   lambda: missing.get("images/ab/x.jpg"), lambda: list(missing.iter_keys())):
        with pytest.raises(FileNotFoundError, match=f"bucket '{missing.bucket}' does not exist"):
            action()


def test_iter_keys_follows_every_page_and_stays_in_its_prefix(s3_environment, monkeypatch):
    bucket = new_bucket()
    store = make_store(bucket, prefix="imgsearch")
    items = image_items(1010)  # S3 answers 1,000 keys a page
    assert store.put_many(items, max_workers=8) == 1010
    # Objects outside the store's prefix, including one whose name merely starts like it.
    other = make_store(bucket, prefix="imgsearch-old")
    other.put("images/00/000000.jpg", b"other", "image/jpeg")

    upstream = int(s3_environment.rsplit(":", 1)[1])
    with FlakyProxy(upstream, 0, statuses=(503,), error=s3_error) as proxy:
        use_endpoint(monkeypatch, proxy.url)
        keys = list(make_store(bucket, prefix="imgsearch").iter_keys("images/"))
        assert proxy.forwarded == 2  # one listing, two pages
    assert sorted(keys) == sorted(key for key, _, _ in items)
    assert list(store.iter_keys("images/01/")) == [k for k, _, _ in items if k.startswith("images/01/")]
    assert list(store.iter_keys("images/01/0000")) == ["images/01/000001.jpg"]
    assert list(store.iter_keys("nothing/")) == []


def test_presigned_url_is_fetchable(store):
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
    assert store.url("images/cd/public.jpg").startswith(f"{moto_url}/{store.bucket}/")


def test_ensure_bucket_command_creates_the_bucket_once(s3_environment, monkeypatch, capsys):
    """``python -m imgsearch_pipeline.cli ensure-bucket`` (compose's minio-init), on the
    store the production settings give (here one on moto)."""
    store = make_store(f"imgsearch-{uuid.uuid4().hex[:12]}")
    monkeypatch.setattr(cli, "production_backends", lambda settings: {"object_store": store})
    cli.main(["ensure-bucket"])
    assert capsys.readouterr().out == f"bucket {store.bucket} created\n"
    store.put("images/ab/kept.jpg", b"kept", "image/jpeg")
    cli.main(["ensure-bucket"])
    assert capsys.readouterr().out == f"bucket {store.bucket} already there\n"
    assert store.get("images/ab/kept.jpg") == b"kept"
    with pytest.raises(SystemExit, match="usage: python -m imgsearch_pipeline.cli ensure-bucket"):
        cli.main(["make-bucket"])


def test_writes_to_a_missing_bucket_fail_and_never_create_it(s3_environment):
    """Only ensure_bucket may create a bucket. A table write's failed upload is raised:
    ``pafs.copy_files`` dropped the error of an upload's last request (nothing stored,
    nothing said)."""
    missing = f"absent-{uuid.uuid4().hex[:8]}"
    with pytest.raises(OSError, match="NO_SUCH_BUCKET"):
        tables.write_text_atomic("x", f"s3://{missing}/home/tables/note.txt")
    assert s3_filesystem().get_file_info(missing).type.name == "NotFound"


def test_the_store_renews_its_filesystem_before_the_retry_quota_runs_out(store):
    """pyarrow never refills the AWS SDK's retry quota: one filesystem stops retrying after
    100 retries in its life (measured), so the store never keeps one for more calls."""
    used = [store.filesystem() for _ in range(2 * s3_store.CALLS_PER_FILESYSTEM + 1)]
    assert len({id(filesystem) for filesystem in used}) == 3
    assert s3_store.CALLS_PER_FILESYSTEM <= 100  # 500 tokens, 5 a retry


def test_an_interrupted_upload_never_reaches_its_target(s3_environment, monkeypatch):
    """pyarrow's stream completes what it holds when closed, an interrupted upload too:
    that happens to a hidden key, never to the file a run trusts."""
    bucket = new_bucket()
    location = f"s3://{bucket}/home/tables/t.parquet"
    tables.write_table_atomic(pa.table({"x": [1]}), location)

    def interrupted(source, target, length):
        target.write(source.read(10))
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(tables.shutil, "copyfileobj", interrupted)
        with pytest.raises(KeyboardInterrupt):
            tables.write_table_atomic(pa.table({"x": [1, 2, 3]}), location)
    assert tables.read_table(location).to_pydict() == {"x": [1]}
    listed = raw_client().list_objects_v2(Bucket=bucket)["Contents"]
    assert not [o["Key"] for o in listed if o["Key"].endswith(".tmp")]  # and none left over


# -- the AWS SDK's environment -----------------------------------------------------------

def test_the_sdk_environment_configures_the_one_filesystem(s3_environment, monkeypatch):
    # Building the filesystem and presigning send nothing to the endpoint (the region is
    # the environment's, not asked of the server).
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    with flaky_moto(s3_environment, failures=0) as proxy:
        use_endpoint(monkeypatch, proxy.url)
        monkeypatch.setenv("AWS_REGION", "eu-west-3")
        assert s3_filesystem().region == "eu-west-3"
        url = make_store("imgsearch").url("images/ab/x.jpg")
        assert url.startswith(f"{proxy.url}/imgsearch/images/ab/x.jpg?")
        assert "eu-west-3" in url  # signed for the filesystem's region
        assert proxy.forwarded == 0 and proxy.failed == []
    # AWS_ENDPOINT_URL (every service's) works as well as the S3 one.
    use_endpoint(monkeypatch, s3_environment)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_environment)
    bucket = new_bucket()
    assert raw_client().head_bucket(Bucket=bucket)


def test_an_unreachable_endpoint_fails_soon_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(filesystems, "S3_MAX_ATTEMPTS", 2)
    use_endpoint(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    started = time.monotonic()
    with pytest.raises(OSError, match="(?i)connect"):
        make_store("imgsearch").put("images/ab/x.jpg", b"x", "image/jpeg")
    assert time.monotonic() - started < 15


# -- failures: injected 5xx and a server restart ----------------------------------------

def s3_error(status: int) -> tuple[list[tuple[str, str]], bytes]:
    code = {503: "SlowDown", 500: "InternalError"}[status]
    return ([("Content-Type", "application/xml")],
            f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode())


def flaky_moto(endpoint: str, failures: int) -> FlakyProxy:
    """Forwards to moto, but answers the first ``failures`` requests with 503/500 errors."""
    return FlakyProxy(int(endpoint.rsplit(":", 1)[1]), failures, statuses=(503, 500),
                      error=s3_error)


def write_and_read_back(kind: str, bucket: str):
    """Write one object, table or asset value to the bucket and read it back."""
    if kind == "object":
        store = make_store(bucket, prefix="home/objects")
        store.put("images/ef/one.jpg", b"kept", "image/jpeg")
        return store.get("images/ef/one.jpg")
    if kind == "table":
        location = f"s3://{bucket}/home/tables/t.parquet"
        tables.write_table_atomic(pa.table({"x": [1, 2]}), location)
        return tables.read_table(location).to_pydict()
    values = PickledValues(root=f"s3://{bucket}/home/values")
    values.handle_output(dg.build_output_context(asset_key=dg.AssetKey("posts")), {"n": 3})
    return values.load_input(dg.build_input_context(asset_key=dg.AssetKey("posts")))


KINDS = {"object": b"kept", "table": {"x": [1, 2]}, "value": {"n": 3}}


@pytest.mark.parametrize("kind", KINDS)
def test_retries_injected_503_and_500_then_succeeds(kind, s3_environment, monkeypatch):
    monkeypatch.setattr(filesystems, "S3_MAX_ATTEMPTS", 3)
    bucket = new_bucket()
    with flaky_moto(s3_environment, failures=2) as proxy:
        use_endpoint(monkeypatch, proxy.url)
        assert write_and_read_back(kind, bucket) == KINDS[kind]
        assert proxy.failed == [503, 500]


@pytest.mark.parametrize("kind", KINDS)
def test_one_retry_budget_for_objects_tables_and_values(kind, s3_environment, monkeypatch):
    """Each request gets exactly S3_MAX_ATTEMPTS tries, the first included, whatever
    carries it: no layer retries on top of another."""
    monkeypatch.setattr(filesystems, "S3_MAX_ATTEMPTS", 2)
    bucket = new_bucket()
    with flaky_moto(s3_environment, failures=10) as proxy:
        use_endpoint(monkeypatch, proxy.url)
        with pytest.raises(OSError, match="injected"):
            write_and_read_back(kind, bucket)
        assert proxy.failed == [503, 500] and proxy.forwarded == 0  # the first try counts
    use_endpoint(monkeypatch, s3_environment)
    assert raw_client().list_objects_v2(Bucket=bucket)["KeyCount"] == 0  # nothing stored


def test_put_many_continues_across_a_server_restart(monkeypatch):
    port = free_port()
    server = start_moto(port)
    use_endpoint(monkeypatch, f"http://127.0.0.1:{port}")
    store = make_store(new_bucket())  # S3_MAX_ATTEMPTS tries ride out the restart
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

def upload_dataset(store: S3ObjectStore, folder: Path) -> list[str]:
    keys = []
    for path in sorted(folder.glob("*.parquet")):
        store.put(f"data/{path.name}", path.read_bytes(), "application/vnd.apache.parquet")
        keys.append(f"data/{path.name}")
    return keys


def test_dataset_location_on_s3(s3_environment, sample_dataset):
    bucket = new_bucket()
    upload_dataset(make_store(bucket, prefix="posts"), sample_dataset)
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
    bucket = new_bucket()
    upload_dataset(make_store(bucket, prefix="posts"), sample_dataset)
    objects = make_store(bucket, prefix="objects")
    resources = pipeline_resources(tmp_path / "var", f"s3://{bucket}/posts/data",
                                   object_store=objects)
    first = materialize_all(resources)
    assert first.success
    posts = first.output_for_node("posts")
    stored = sorted(objects.iter_keys("images/"))
    assert len(stored) == posts.posts == first.output_for_node("image_objects").uploaded
    head = raw_client().head_object(Bucket=bucket, Key=f"objects/{stored[0]}")
    assert head["ContentType"].startswith("image/")

    again = materialize_all(resources)
    uploaded = again.output_for_node("image_objects")
    assert uploaded.uploaded == 0 and uploaded.already_there == posts.posts
