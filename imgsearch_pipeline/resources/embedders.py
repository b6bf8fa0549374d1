"""Image embedders: SigLIP (siglip.py) and a weight-free descriptor."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import dagster as dg
import numpy as np
from PIL import Image
from pydantic import Field

from ..core.descriptor import DESCRIPTOR_DIM, DESCRIPTOR_VERSION, color_texture_descriptor
from ..core.similarity import l2_normalise

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
# SigLIP (the model itself lives in siglip.py)
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


class SiglipEmbedder(Embedder):
    """SigLIP image tower (text tower too, for text search) from a checkpoint in the Hub's
    file layout (a local folder or a Hub model id): through OpenVINO on a CPU (converted
    once, cached in ``openvino_cache``; bf16 where the CPU has it, f32 otherwise), through
    transformers/torch on CUDA (fp16) or where OpenVINO cannot run."""

    model_name: str = DEFAULT_SIGLIP
    device: str = "auto"
    half_precision: bool = True
    runtime: str = Field("auto", description="auto (OpenVINO on a CPU, torch on a GPU) | torch | "
                         "openvino (CPU only): pick one explicitly for benchmarks and tests.")
    openvino_cache: str = Field("", description="Folder of the converted OpenVINO models; empty: "
                                "$XDG_CACHE_HOME/imgsearch/openvino (~/.cache/imgsearch/openvino).")

    @property
    def model_id(self) -> str:
        return self.model_name

    def load(self) -> EmbeddingModel:
        from .siglip import check_dependencies, load_siglip

        check_dependencies()  # before torch is imported by pick_device
        device = pick_device(self.device)
        half = self.half_precision and device == "cuda"
        return load_siglip(self.model_name, device, half, self.runtime, self.openvino_cache)
