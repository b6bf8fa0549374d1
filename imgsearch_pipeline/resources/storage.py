"""Where the pipeline keeps its own tables: posts, embeddings, ground truth, reports."""

from pathlib import Path

import dagster as dg

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


class TableStore(dg.ConfigurableResource):
    """A local folder of parquet tables and reports, written atomically."""

    root: str = "var/tables"

    def path(self, *parts: str) -> Path:
        return Path(self.root, *parts)
