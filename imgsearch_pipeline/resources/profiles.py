"""Which backends a deployment uses, chosen by environment variables.

IMGSEARCH_PROFILE   embedded (default: local folder + faiss HNSW) | production (S3 + Elasticsearch)
IMGSEARCH_EMBEDDER  siglip (default) | color-texture (weight-free, for demos and CI)
IMGSEARCH_MODEL     SigLIP model name or local folder (default google/siglip-base-patch16-512)
IMGSEARCH_DATASET   folder or s3:// URI of the parquet shards (default data/sample)
IMGSEARCH_HOME      folder for the pipeline's own files (default var)
"""

import os

import dagster as dg

from .embedders import DEFAULT_SIGLIP, ColorTextureEmbedder, Embedder, SiglipEmbedder
from .object_store import LocalObjectStore
from .storage import PostsDataset, TableStore
from .vector_index import FaissHnswIndex

PROFILES = ("embedded", "production")
EMBEDDERS = ("siglip", "color-texture")


class ConfigurationError(ValueError):
    """A setting that cannot work; raised when the definitions load, before any run."""


def make_embedder(name: str, model: str = DEFAULT_SIGLIP) -> Embedder:
    if name == "siglip":
        return SiglipEmbedder(model_name=model)
    if name == "color-texture":
        return ColorTextureEmbedder()
    raise ConfigurationError(
        f"unknown embedder {name!r} (IMGSEARCH_EMBEDDER): choose one of {', '.join(EMBEDDERS)}"
    )


def resources_for(environ: dict[str, str] | None = None) -> dict[str, object]:
    env = os.environ if environ is None else environ
    profile = env.get("IMGSEARCH_PROFILE", "embedded")
    home = env.get("IMGSEARCH_HOME", "var")
    common = {
        "dataset": PostsDataset(location=env.get("IMGSEARCH_DATASET", "data/sample")),
        "tables": TableStore(root=f"{home}/tables"),
        "embedder": make_embedder(env.get("IMGSEARCH_EMBEDDER", "siglip"),
                                  env.get("IMGSEARCH_MODEL", DEFAULT_SIGLIP)),
        # Small values handed between assets (paths, counts, the report).
        "io_manager": dg.FilesystemIOManager(base_dir=f"{home}/values"),
    }
    if profile == "embedded":
        return {**common,
                "object_store": LocalObjectStore(root=f"{home}/objects"),
                "vector_index": FaissHnswIndex(root=f"{home}/index")}
    if profile == "production":
        from .production import production_backends

        return {**common, **production_backends()}
    raise ConfigurationError(
        f"unknown profile {profile!r} (IMGSEARCH_PROFILE): choose one of {', '.join(PROFILES)}"
    )
