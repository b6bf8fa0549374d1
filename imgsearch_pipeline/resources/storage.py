"""The data the pipeline reads (the dataset) and the home where it keeps its own files."""

import dagster as dg

from ..core.layout import Layout
from ..core.shards import Shard, describe_shard, find_shard_paths, open_location


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
