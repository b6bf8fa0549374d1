"""Image embedders: SigLIP through sentence-transformers, and a weight-free descriptor."""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from typing import Any

import dagster as dg
import numpy as np
from PIL import Image

from ..core.descriptor import DESCRIPTOR_DIM, DESCRIPTOR_VERSION, color_texture_descriptor
from ..core.knn import l2_normalise

DEFAULT_SIGLIP = "google/siglip-base-patch16-512"


class ModelUnavailableError(RuntimeError):
    """The embedding model could not be loaded; the message says where we looked."""


class TextNotSupportedError(ValueError):
    """The embedder has no text tower."""


class EmbeddingModel(ABC):
    """A loaded model. ``prepare`` runs in loader threads, ``encode`` on the compute device."""

    model_id: str
    dim: int
    supports_text: bool = False

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


# ---------------------------------------------------------------------------------------
# Weight-free colour-and-texture descriptor
# ---------------------------------------------------------------------------------------


class ColorTextureModel(EmbeddingModel):
    model_id = f"color-texture-v{DESCRIPTOR_VERSION}"
    dim = DESCRIPTOR_DIM

    def prepare(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([color_texture_descriptor(image) for image in images])

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        return l2_normalise(prepared)


class ColorTextureEmbedder(Embedder):
    """Colour histogram, gradient and layout features: no weights, for demos and CI."""

    batch_size: int = 64

    @property
    def model_id(self) -> str:
        return ColorTextureModel.model_id

    def load(self) -> EmbeddingModel:
        return ColorTextureModel()


# ---------------------------------------------------------------------------------------
# SigLIP through sentence-transformers
# ---------------------------------------------------------------------------------------


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class SentenceTransformerModel(EmbeddingModel):
    supports_text = True

    def __init__(self, model: Any, model_id: str, half: bool):
        import torch

        self._torch = torch
        self._model = model
        self.model_id = model_id
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self._dtype = torch.float16 if half else None

    def prepare(self, images: list[Image.Image]) -> dict[str, Any]:
        return self._model.preprocess(images)

    def _forward(self, features: dict[str, Any]) -> np.ndarray:
        torch = self._torch
        device = self._model.device
        moved = {}
        for name, value in features.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=True)
                if self._dtype is not None and value.is_floating_point():
                    value = value.to(self._dtype)
            moved[name] = value
        with torch.inference_mode():
            output = self._model.forward(moved)["sentence_embedding"]
        vectors = torch.nn.functional.normalize(output.float(), dim=-1)
        return vectors.cpu().numpy().astype(np.float32)

    def encode(self, prepared: dict[str, Any]) -> np.ndarray:
        return self._forward(prepared)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self._forward(self._model.preprocess(texts))


@functools.lru_cache(maxsize=4)
def _load_sentence_transformer(name: str, device: str, half: bool) -> SentenceTransformerModel:
    from huggingface_hub import constants
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(name, device=device)
    except Exception as exc:
        where = (
            f"the local folder '{name}'" if os.path.isdir(name)
            else f"the Hugging Face cache at {constants.HF_HUB_CACHE} and the Hub"
        )
        raise ModelUnavailableError(
            f"Could not load embedding model '{name}' from {where}: {exc}. "
            "Without network access, download it on a connected machine "
            f"(`hf download {name}`), copy the folder here and set IMGSEARCH_MODEL to its "
            "path, or point HF_HOME at a cache that holds it."
        ) from exc
    model.eval()
    if half:
        model.half()
    return SentenceTransformerModel(model, name, half)


class SiglipEmbedder(Embedder):
    """SigLIP image tower (text tower too, for text search) via sentence-transformers."""

    model_name: str = DEFAULT_SIGLIP
    device: str = "auto"
    half_precision: bool = True

    @property
    def model_id(self) -> str:
        return self.model_name

    def load(self) -> EmbeddingModel:
        device = pick_device(self.device)
        half = self.half_precision and device == "cuda"
        return _load_sentence_transformer(self.model_name, device, half)
