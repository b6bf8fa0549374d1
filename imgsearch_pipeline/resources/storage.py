"""The data the pipeline reads (the dataset) and the home where it keeps its own files."""

import dagster as dg

from ..core.layout import Layout, is_uri
from ..core.shards import Shard, describe_shard, find_shard_paths, open_location
from .environment import ConfigurationError
from .s3_store import S3ObjectStore


class PostsDataset(dg.ConfigurableResource):
    """The raw posts: Hugging Face-layout parquet shards in a folder or under ``s3://``."""

    location: str = "data/sample"
    batch_rows: int = 256

    def filesystem_and_paths(self):
        return find_shard_paths(self.location)

    def filesystem(self):
        return open_location(self.location)[0]

    def describe(self, filesystem, path: str) -> Shard:
        return describe_shard(filesystem, path)


class PipelineHome(dg.ConfigurableResource):
    """The pipeline's home (``IMGSEARCH_HOME``): its ``layout`` names every table and folder."""

    root: str = "var"

    @property
    def layout(self) -> Layout:
        return Layout.at(self.root)


class ObjectStoreValues(dg.ConfigurableIOManagerFactory):
    """The values handed between assets, pickled under ``s3://<bucket>/<prefix>``:
    dagster-aws's S3 IO manager, on the object store's client (its retries, and the
    path-style addressing MinIO needs, which ``S3Resource.get_client()`` cannot set)."""

    store: S3ObjectStore
    bucket: str
    prefix: str

    def create_io_manager(self, context) -> dg.IOManager:
        from dagster_aws.s3.io_manager import PickledObjectS3IOManager

        return PickledObjectS3IOManager(s3_bucket=self.bucket, s3_session=self.store.client(),
                                        s3_prefix=self.prefix)


def values_io_manager(location: str, store: S3ObjectStore
                      ) -> dg.ConfigurableIOManager | dg.ConfigurableIOManagerFactory:
    """The IO manager for values at ``location``: a local folder, or ``s3://`` through
    ``store`` (an S3ObjectStore on the same endpoint)."""
    if not is_uri(location):
        return dg.FilesystemIOManager(base_dir=location)
    if not location.startswith("s3://"):
        raise ConfigurationError(f"IMGSEARCH_HOME must be a folder or an s3:// URI: {location!r}")
    bucket, _, prefix = location[len("s3://"):].partition("/")
    return ObjectStoreValues(store=store, bucket=bucket, prefix=prefix.strip("/"))
