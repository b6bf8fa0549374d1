"""What every embedder is: the resource the assets see (``Embedder``), the model it loads
(``EmbeddingModel``) and the errors loading can raise. The embedders themselves are
``color_texture.py`` and ``siglip.py``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import dagster as dg
import numpy as np
from PIL import Image

DEFAULT_SIGLIP = "google/siglip-base-patch16-512"


class ModelUnavailableError(RuntimeError):
    """The embedding model could not be loaded; the message says where we looked."""


class MissingDependencyError(ImportError):
    """A Python package the model needs is not installed: a set-up problem, not a missing model."""


class TextNotSupportedError(ValueError):
    """The embedder has no text tower."""


class EmbeddingModel(ABC):
    """A loaded model. ``prepare`` runs in loader threads, ``encode`` on the compute device."""

    model_id: str
    dim: int
    supports_text: bool = False
    # The runtime and precision that computed the vectors (recorded with them).
    numerics: str = "numpy-fp32"

    @abstractmethod
    def prepare(self, images: list[Image.Image]) -> Any:
        """CPU preprocessing of a batch of RGB images (thread-safe)."""

    @abstractmethod
    def encode(self, prepared: Any) -> np.ndarray:
        """L2-normalised float32 vectors, one row per prepared image."""

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.encode(self.prepare(images))

    def encode_text(self, texts: list[str]) -> np.ndarray:
        raise TextNotSupportedError(f"embedder '{self.model_id}' has no text encoder")


class Embedder(dg.ConfigurableResource, ABC):
    """Dependency-injected embedder: assets only see ``load()`` and ``batch_size``."""

    batch_size: int = 32

    @property
    @abstractmethod
    def model_id(self) -> str:
        """What identifies the embeddings (their folder), known without loading the model."""

    @abstractmethod
    def load(self) -> EmbeddingModel: ...
