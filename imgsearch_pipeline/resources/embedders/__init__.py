"""Image embedders behind one interface (``interface.py``): SigLIP and SigLIP 2
(``siglip.py``, with its torch and OpenVINO runtimes), sentence-transformers models
(``sentence_transformers.py``: CLIP, with an aligned multilingual text model) and the
weight-free colour-and-texture descriptor (``color_texture.py``). The public names are
re-exported here; the modules of this package import each other directly, never this file."""

from .color_texture import ColorTextureEmbedder, ColorTextureModel
from .interface import (
    DEFAULT_SIGLIP,
    Embedder,
    EmbeddingModel,
    MissingDependencyError,
    ModelUnavailableError,
    TextNotSupportedError,
)
from .sentence_transformers import DEFAULT_ST_MODEL, SentenceTransformerEmbedder
from .siglip import SiglipEmbedder

__all__ = [
    "DEFAULT_SIGLIP",
    "DEFAULT_ST_MODEL",
    "ColorTextureEmbedder",
    "ColorTextureModel",
    "Embedder",
    "EmbeddingModel",
    "MissingDependencyError",
    "ModelUnavailableError",
    "SentenceTransformerEmbedder",
    "SiglipEmbedder",
    "TextNotSupportedError",
]
