"""Any sentence-transformers model that embeds images, as an embedder
(``IMGSEARCH_EMBEDDER=sentence-transformers``): loaded from the layout sentence-transformers
saves (``modules.json`` and its module folders, as 2.x wrote them on the Hub and as current
releases write them), a Hub id or a local folder.

Two models when the text queries come from another model trained into the image model's
space (``IMGSEARCH_TEXT_MODEL``): e.g. ``sentence-transformers/clip-ViT-B-32-multilingual-v1``
(50+ languages, distilled onto CLIP's text tower) for an index of
``sentence-transformers/clip-ViT-B-32`` image vectors. The vectors stored and indexed are the
image model's only, so the model id (the embeddings' folder) is the image model's.

Preprocessing is sentence-transformers' own: ``SentenceTransformer.preprocess`` (in the
pipeline's loader threads) and its forward for images, ``SentenceTransformer.encode`` for
texts. It matches training for CLIP (images: shortest side bicubic, centre crop, OpenAI's
mean/std; texts: lower-cased, at most 77 tokens, and padding to the batch's longest is
harmless because CLIP's text tower is causal and pools at ``<|endoftext|>``) and for the
multilingual students (mean pooling over the attention mask, 128 tokens, cased). It does
not for SigLIP, whose text tower pools the last of 64 positions and was trained padded to
64 (and, for SigLIP 2, lower-cased): ``train_time_text`` sets that on the module.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field

from .interface import Embedder, EmbeddingModel, MissingDependencyError, ModelUnavailableError
from .siglip_base import locate_checkpoint, lower_casing

log = logging.getLogger(__name__)

DEFAULT_ST_MODEL = "sentence-transformers/clip-ViT-B-32"
# What a sentence-transformers repository needs (the ONNX/OpenVINO/Core ML exports some
# repositories carry are left on the Hub).
ST_PATTERNS = ["*.json", "*.safetensors", "pytorch_model.bin", "*/pytorch_model.bin", "*.txt",
               "*.model"]
SIGLIP_TEXT_LENGTH = 64


def missing_st_files(folder: Path) -> list[str]:
    """What a sentence-transformers folder lacks: ``modules.json`` and the module folders it
    names."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return ["modules.json (the file sentence-transformers saves its module list in)"]
    try:
        listed = json.loads(modules.read_text())
    except ValueError as exc:
        return [f"a readable modules.json ({exc})"]
    return [f"{m['path']}/ (module {m.get('type')})" for m in listed
            if m.get("path") and not (folder / m["path"]).is_dir()]


def check_st_dependencies() -> None:
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"The sentence-transformers embedder needs the Python package 'sentence-transformers' "
            f"({exc}). Install the project's dependencies with `make setup`, or this package "
            "alone with `.venv/bin/pip install sentence-transformers -c constraints.txt`.") from exc


def train_time_text(model: Any) -> list[str]:
    """Set, on each transformer module of ``model`` that wraps a SigLIP, the text
    preprocessing it was trained with (sentence-transformers pads to the batch's longest,
    which changes a SigLIP's vectors): padded to 64 tokens, lower-cased for SigLIP 2's Gemma
    vocabulary. Returns what was changed (logged)."""
    changed = []
    for module in model:
        auto_model = getattr(module, "auto_model", None)
        config = getattr(auto_model, "config", None)
        if getattr(config, "model_type", None) != "siglip":
            continue
        text = {**module.processing_kwargs.get("text", {}), "padding": "max_length",
                "max_length": SIGLIP_TEXT_LENGTH, "truncation": True}
        module.processing_kwargs = {**module.processing_kwargs, "text": text}
        changed.append(f"SigLIP text padded to {SIGLIP_TEXT_LENGTH} tokens")
        tokenizer = getattr(module, "tokenizer", None)
        if tokenizer is not None and type(tokenizer).__name__.startswith("Gemma"):
            lower_casing(tokenizer)
            changed.append("SigLIP 2 text lower-cased")
    return changed


def _load(name: str, role: str, variable: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer  # heavy: only when loading

    folder = locate_checkpoint(name, missing_st_files, kind="sentence-transformers",
                               patterns=ST_PATTERNS, variable=variable)
    try:
        model = SentenceTransformer(str(folder), device=device, local_files_only=True)
    except ImportError as exc:
        raise MissingDependencyError(f"Loading '{name}' needs a Python package that is not "
                                     f"installed: {exc}") from exc
    except Exception as exc:
        raise ModelUnavailableError(f"Could not load the {role} '{name}' ({variable}) from "
                                    f"{folder}: {type(exc).__name__}: {exc}") from exc
    for change in train_time_text(model):
        log.info(f"{name}: {change}, as trained (sentence-transformers would pad to the longest)")
    return model.eval()


@functools.lru_cache(maxsize=4)
def load_sentence_transformer(image_model: str, text_model: str, device: str) -> SentenceTransformerModel:
    """Both models once per process (the API and the pipeline share them)."""
    check_st_dependencies()
    image = _load(image_model, "image model", "IMGSEARCH_MODEL", device)
    if not image.supports("image"):
        raise ModelUnavailableError(
            f"'{image_model}' (IMGSEARCH_MODEL) embeds only {', '.join(map(str, image.modalities))}, "
            "not images: set IMGSEARCH_MODEL to a model that embeds images (e.g. "
            f"{DEFAULT_ST_MODEL}) and a text model aligned to it in IMGSEARCH_TEXT_MODEL.")
    text = image
    if text_model and text_model != image_model:
        text = _load(text_model, "text model", "IMGSEARCH_TEXT_MODEL", device)
        if not text.supports("text"):
            raise ModelUnavailableError(f"'{text_model}' (IMGSEARCH_TEXT_MODEL) does not embed text")
        dims = (image.get_embedding_dimension(), text.get_embedding_dimension())
        if dims[0] != dims[1]:
            raise ModelUnavailableError(
                f"The text model '{text_model}' gives {dims[1]}-dimensional vectors and the image "
                f"model '{image_model}' {dims[0]}: a text model must be trained into its image "
                "model's space (e.g. clip-ViT-B-32-multilingual-v1 for clip-ViT-B-32).")
    return SentenceTransformerModel(image, text, image_model, text_model or image_model)


class SentenceTransformerModel(EmbeddingModel):
    """The image model's vectors for images, the text model's (the same model unless one
    is aligned to it) for queries; both L2-normalised."""

    supports_text = True

    def __init__(self, image: Any, text: Any, model_id: str, text_model_id: str):
        import torch  # heavy: imported once a model is loaded

        self._torch = torch
        self._image = image
        self._text = text
        self.model_id = model_id
        self.text_model_id = text_model_id
        self.dim = int(image.get_embedding_dimension())
        self.device = image.device
        self.numerics = f"torch-{str(image.dtype).removeprefix('torch.')}"
        # sentence-transformers' encode is not meant for concurrent calls on one model (its
        # tokenizer's truncation settings are shared state): the API's threads take turns.
        self._text_lock = threading.Lock()

    def prepare(self, images: list[Image.Image]) -> Any:
        """sentence-transformers' own preprocessing (what ``encode`` runs before the model)."""
        return self._image.preprocess(images)

    def encode(self, prepared: Any) -> np.ndarray:
        from sentence_transformers.util import batch_to_device

        with self._torch.inference_mode():
            features = self._image(batch_to_device(prepared, self.device))["sentence_embedding"]
            vectors = self._torch.nn.functional.normalize(features.float(), dim=-1)
        return vectors.cpu().numpy().astype(np.float32)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """``SentenceTransformer.encode`` as documented, normalised."""
        with self._text_lock:
            vectors = self._text.encode(list(texts), batch_size=max(1, len(texts)),
                                        normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model that embeds images (``model_name``), and optionally a
    text model aligned to it (``text_model_name``) for text queries."""

    model_name: str = DEFAULT_ST_MODEL
    text_model_name: str = Field("", description="A text model trained into model_name's space "
                                 "(e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1); "
                                 "empty: model_name embeds the texts too.")
    device: str = "auto"

    @property
    def model_id(self) -> str:
        return self.model_name

    def load(self) -> EmbeddingModel:
        from .siglip import pick_device

        check_st_dependencies()
        return load_sentence_transformer(self.model_name, self.text_model_name,
                                         pick_device(self.device))
