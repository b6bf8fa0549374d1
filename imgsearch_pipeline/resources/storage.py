"""The data the pipeline reads (the dataset) and the home where it keeps its own files."""

import pickle

import dagster as dg
from pydantic import Field

from ..core.filesystems import open_location
from ..core.layout import Layout, is_uri
from ..core.shards import Shard, describe_shard, find_shard_paths
from ..core.tables import join, open_input, write_bytes_atomic
from ..settings import ConfigurationError


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


class PickledValues(dg.ConfigurableIOManager):
    """The values handed between assets, pickled to ``<root>/<asset key path>`` in a local
    folder or under ``s3://`` (through the tables' filesystem and retry policy), each
    written whole or not at all; ``storage/<run>/<step>/<output>`` for an op's output."""

    root: str = Field(description="A folder or an s3:// URI, e.g. s3://bucket/imgsearch/values")

    def _location(self, context: dg.InputContext | dg.OutputContext) -> str:
        parts = (context.get_asset_identifier() if context.has_asset_key
                 else ["storage", *context.get_identifier()])
        return join(self.root, "/".join(parts))

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        location = self._location(context)
        write_bytes_atomic(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL), location)
        context.add_output_metadata({"path": dg.MetadataValue.path(location)})

    def load_input(self, context: dg.InputContext) -> object:
        with open_input(self._location(context)) as handle:
            return pickle.loads(handle.read())


def values_io_manager(location: str) -> PickledValues:
    """The IO manager for values at ``location``: a local folder or an ``s3://`` URI."""
    if is_uri(location) and not location.startswith("s3://"):
        raise ConfigurationError(f"IMGSEARCH_HOME must be a folder or an s3:// URI: {location!r}")
    return PickledValues(root=location)
