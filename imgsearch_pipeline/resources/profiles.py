"""Which backends a deployment uses, chosen by environment variables.

IMGSEARCH_PROFILE   embedded (default: local folder + faiss HNSW) | production (S3 + Elasticsearch)
IMGSEARCH_EMBEDDER  siglip (default) | color-texture (weight-free, for demos and CI)
IMGSEARCH_MODEL     SigLIP model name or local folder (default google/siglip-base-patch16-512)
IMGSEARCH_DATASET   folder or s3:// URI of the parquet shards (default data/sample)
IMGSEARCH_HOME      where the pipeline keeps its own files: a folder (default var, made
                    absolute) or an s3:// URI; the production profile's default is the
                    object store's s3://<bucket>/<prefix>, which every container sees
"""

import os

import dagster as dg

from ..core.layout import Layout, is_uri
from .embedders import DEFAULT_SIGLIP, ColorTextureEmbedder, Embedder, SiglipEmbedder
from .environment import ConfigurationError
from .object_store import LocalObjectStore
from .storage import PipelineHome, PostsDataset, values_io_manager
from .vector_index import FaissHnswIndex

PROFILES = ("embedded", "production")
EMBEDDERS = ("siglip", "color-texture")


def _choice(env, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip()
    if value not in choices:
        raise ConfigurationError(f"unknown {name.split('_')[-1].lower()} {value!r} ({name}): "
                                 f"choose one of {', '.join(choices)}")
    return value


def backend_kinds(environ: dict[str, str] | None = None) -> tuple[set[str], set[str]]:
    """The UI's kind tags of the object store and the vector index this deployment uses."""
    env = os.environ if environ is None else environ
    if env.get("IMGSEARCH_PROFILE", "embedded").strip() == "production":
        return {"s3"}, {"elasticsearch"}
    return {"filesystem"}, {"faiss"}


def make_embedder(name: str, model: str = DEFAULT_SIGLIP) -> Embedder:
    """``name`` is one of EMBEDDERS (checked by ``resources_for``)."""
    return SiglipEmbedder(model_name=model) if name == "siglip" else ColorTextureEmbedder()


def resources_for(environ: dict[str, str] | None = None) -> dict[str, object]:
    env = os.environ if environ is None else environ
    profile = _choice(env, "IMGSEARCH_PROFILE", "embedded", PROFILES)
    embedder = _choice(env, "IMGSEARCH_EMBEDDER", "siglip", EMBEDDERS)
    dataset = env.get("IMGSEARCH_DATASET", "data/sample")
    if "IMGSEARCH_HOME" in env and not env["IMGSEARCH_HOME"].strip() or not dataset.strip():
        raise ConfigurationError("IMGSEARCH_HOME and IMGSEARCH_DATASET must not be empty")
    common = {
        "dataset": PostsDataset(location=dataset),
        "embedder": make_embedder(embedder, env.get("IMGSEARCH_MODEL", DEFAULT_SIGLIP)),
    }
    if profile == "embedded":
        if is_uri(env.get("IMGSEARCH_HOME", "")):
            raise ConfigurationError("IMGSEARCH_HOME is a URI: the embedded profile keeps its "
                                     "files in a local folder (IMGSEARCH_PROFILE=production "
                                     "keeps them in the bucket)")
        layout = Layout.at(env.get("IMGSEARCH_HOME", "var"))  # absolute: values read the same
        return {**common,                                     # from any working directory
                "home": PipelineHome(root=layout.root),
                # Small values handed between assets (locations, counts, the report).
                "io_manager": dg.FilesystemIOManager(base_dir=layout.values),
                "object_store": LocalObjectStore(root=layout.objects),
                "vector_index": FaissHnswIndex(root=layout.index)}
    from .production import production_backends  # only production needs its clients

    backends = production_backends(env)
    # Tables and values where every container and machine sees them: the bucket.
    layout = Layout.at(env.get("IMGSEARCH_HOME") or backends["object_store"].uri)
    return {**common, **backends, "home": PipelineHome(root=layout.root),
            "io_manager": values_io_manager(layout.values, backends["object_store"])}
