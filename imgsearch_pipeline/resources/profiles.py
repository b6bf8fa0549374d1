"""Which backends a deployment uses: the settings' profile, embedder and locations."""

from ..core.layout import Layout, is_uri
from ..settings import ConfigurationError, Settings
from .embedders import (
    DEFAULT_ST_MODEL,
    ColorTextureEmbedder,
    Embedder,
    SentenceTransformerEmbedder,
    SiglipEmbedder,
)
from .object_store import LocalObjectStore
from .production import production_backends
from .storage import PipelineHome, PostsDataset, values_io_manager
from .vector_index import FaissHnswIndex


def backend_kinds(settings: Settings) -> tuple[set[str], set[str]]:
    """The UI's kind tags of the object store and the vector index of the settings' profile."""
    return ({"s3"}, {"elasticsearch"}) if settings.production else ({"filesystem"}, {"faiss"})


def make_embedder(settings: Settings) -> Embedder:
    if settings.embedder == "siglip":
        return SiglipEmbedder(model_name=settings.model, openvino_cache=settings.openvino_cache)
    if settings.embedder == "sentence-transformers":
        # IMGSEARCH_MODEL's default names a SigLIP: unset, this embedder takes its own default.
        model = settings.model if "model" in settings.model_fields_set else DEFAULT_ST_MODEL
        return SentenceTransformerEmbedder(model_name=model, text_model_name=settings.text_model or "")
    return ColorTextureEmbedder()


def resources_for(settings: Settings) -> dict[str, object]:
    """Every resource the assets, checks and sensors use, for the settings' profile."""
    common = {"dataset": PostsDataset(location=settings.dataset),
              "embedder": make_embedder(settings)}
    if not settings.production:
        if is_uri(settings.home or ""):
            raise ConfigurationError("IMGSEARCH_HOME is a URI: the embedded profile keeps its "
                                     "files in a local folder (IMGSEARCH_PROFILE=production "
                                     "keeps them in the bucket)")
        layout = Layout.at(settings.home or "var")  # absolute: values read the same
        return {**common,                            # from any working directory
                "home": PipelineHome(root=layout.root),
                # Small values handed between assets (locations, counts, the report).
                "io_manager": values_io_manager(layout.values),
                "object_store": LocalObjectStore(root=layout.objects),
                "vector_index": FaissHnswIndex(root=layout.index)}
    backends = production_backends(settings)
    # Tables and values where every container and machine sees them: the bucket.
    layout = Layout.at(settings.home or backends["object_store"].uri)
    return {**common, **backends, "home": PipelineHome(root=layout.root),
            "io_manager": values_io_manager(layout.values)}
