"""Image embedders behind one interface (``interface.py``): SigLIP (``siglip.py``, with its
torch and OpenVINO runtimes) and the weight-free colour-and-texture descriptor
(``color_texture.py``). The public names are re-exported here; the modules of this package
import each other directly, never this file."""

from .color_texture import ColorTextureEmbedder, ColorTextureModel
from .interface import (
    DEFAULT_SIGLIP,
    Embedder,
    EmbeddingModel,
    MissingDependencyError,
    ModelUnavailableError,
    TextNotSupportedError,
)
from .siglip import SiglipEmbedder

__all__ = [
    "DEFAULT_SIGLIP",
    "ColorTextureEmbedder",
    "ColorTextureModel",
    "Embedder",
    "EmbeddingModel",
    "MissingDependencyError",
    "ModelUnavailableError",
    "SiglipEmbedder",
    "TextNotSupportedError",
]
