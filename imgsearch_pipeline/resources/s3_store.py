"""Image objects in S3 or an S3-compatible store (MinIO), through the pipeline's one S3
filesystem (``core.filesystems.s3_filesystem``: the AWS SDK's environment and one retry
policy), the same that carries the tables and the values handed between assets.

boto3 only presigns ``url()``, a local computation that sends no request, with the same
environment's credentials and the filesystem's region; like pyarrow, botocore addresses a
custom endpoint path-style and AWS by virtual host.
"""

import threading
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs
from pydantic import Field, PrivateAttr

from ..core.filesystems import s3_filesystem
from .object_store import ObjectStore, check_key

# pyarrow never gives the AWS SDK's retry quota back (500 tokens; a retry takes 5, or 10
# after a timeout or connection error): one filesystem stops retrying for good after 100
# retries in its life. The store starts a new one (new connections) every 100 calls: one
# retry a call to spend on average (half one after connection errors), never none for good.
CALLS_PER_FILESYSTEM = 100


class S3ObjectStore(ObjectStore):
    """Objects under ``s3://<bucket>/<prefix>``; keys are validated like the local store's."""

    bucket: str
    prefix: str = Field(default="", description="Folder inside the bucket, e.g. 'imgsearch'")
    public_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint browsers reach, for presigned URLs, when it differs from the "
                    "pipeline's (e.g. http://127.0.0.1:9000 vs http://minio:9000 in compose)")
    url_expiry_s: int = 3600

    _filesystem: pafs.S3FileSystem | None = PrivateAttr(default=None)
    _calls: int = PrivateAttr(default=0)
    _presigners: dict[str | None, Any] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def filesystem(self) -> pafs.S3FileSystem:
        """Shared by every upload thread (pyarrow's filesystems are thread-safe), so its
        connections are reused; renewed every CALLS_PER_FILESYSTEM calls."""
        with self._lock:
            self._calls += 1
            if self._filesystem is None or self._calls > CALLS_PER_FILESYSTEM:
                self._filesystem, self._calls = s3_filesystem(), 1
            return self._filesystem

    def _root(self) -> str:
        prefix = self.prefix.strip("/")
        return f"{self.bucket}/{prefix}" if prefix else self.bucket

    def _path(self, key: str) -> str:
        return f"{self._root()}/{check_key(key)}"

    def _no_bucket(self) -> FileNotFoundError:
        return FileNotFoundError(
            f"bucket {self.bucket!r} does not exist: create it first "
            "(python -m imgsearch_pipeline.cli ensure-bucket; compose's minio-init runs it)")

    def _bucket_missing(self, exc: OSError) -> bool:
        # pyarrow passes S3's NoSuchBucket on in its message; the HEAD before a GET answers
        # a bare 404 for a missing key and a missing bucket alike, so ask about the bucket.
        if "NO_SUCH_BUCKET" in str(exc):
            return True
        return isinstance(exc, FileNotFoundError) and \
            self.filesystem().get_file_info(self.bucket).type == pafs.FileType.NotFound

    def _error(self, exc: OSError, key: str) -> OSError:
        if self._bucket_missing(exc):
            return self._no_bucket()
        if isinstance(exc, FileNotFoundError):
            return FileNotFoundError(f"no object {key!r} in s3://{self._root()}")
        return exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        try:
            # One write of the whole object: the stream sends it as one PUT when it closes.
            with self.filesystem().open_output_stream(
                    path, metadata={"Content-Type": content_type}) as stream:
                stream.write(data)
        except OSError as exc:
            raise self._error(exc, key) from exc

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with self.filesystem().open_input_stream(path) as stream:
                return stream.read()
        except OSError as exc:
            raise self._error(exc, key) from exc

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        # One recursive listing (every page) of the folder the prefix is in.
        root = self._root()
        folder = prefix.rpartition("/")[0]
        selector = pafs.FileSelector(f"{root}/{folder}" if folder else root, recursive=True)
        try:
            found = self.filesystem().get_file_info(selector)
        except OSError as exc:
            if self._bucket_missing(exc):
                raise self._no_bucket() from exc
            if isinstance(exc, FileNotFoundError):
                return  # nothing stored under it yet
            raise
        for info in found:
            key = info.path[len(root) + 1:]
            if info.type == pafs.FileType.File and key.startswith(prefix):
                yield key

    def _presigner(self, endpoint_url: str | None) -> Any:
        with self._lock:
            client = self._presigners.get(endpoint_url)
        if client is None:
            import boto3
            from botocore.config import Config

            # endpoint_url None: the environment's endpoint, as the filesystem's. boto3
            # reads AWS_DEFAULT_REGION but not AWS_REGION: the filesystem's region it is.
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=self.filesystem().region,
                config=Config(signature_version="s3v4"))
            with self._lock:
                client = self._presigners.setdefault(endpoint_url, client)
        return client

    def url(self, key: str) -> str | None:
        bucket, _, object_key = self._path(key).partition("/")
        return self._presigner(self.public_endpoint_url).generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": object_key},
            ExpiresIn=self.url_expiry_s)

    @property
    def uri(self) -> str:
        """``s3://<bucket>/<prefix>``: where the production profile's home defaults to."""
        return f"s3://{self._root()}"

    def ensure_bucket(self) -> bool:
        """Create the bucket unless it exists; True when it was created."""
        filesystem = s3_filesystem(allow_bucket_creation=True)
        if filesystem.get_file_info(self.bucket).type != pafs.FileType.NotFound:
            return False
        filesystem.create_dir(self.bucket)
        return True
