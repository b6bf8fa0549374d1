"""The weight-free colour-and-texture descriptor as an embedder, for demos and CI."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ...core.descriptor import DESCRIPTOR_DIM, DESCRIPTOR_VERSION, color_texture_descriptor
from ...core.similarity import l2_normalise
from .interface import Embedder, EmbeddingModel


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
