"""What both SigLIP runtimes share: the checkpoint in the Hub's own file layout
(``config.json``, ``model.safetensors``, ``preprocessor_config.json``, ``spiece.model``,
``tokenizer_config.json``, ``special_tokens_map.json``), used as it was trained.

Four seams, so another runtime can replace the compute without touching the rest:

- loading: ``check_dependencies`` -> ``locate_checkpoint`` -> ``load_processor`` (and
  ``load_torch_model``, which the torch runtime runs and the OpenVINO one converts);
- preprocessing (CPU, thread-safe): ``SiglipEncoder.prepare`` (images -> pixel values) and
  ``SiglipEncoder.tokenize`` (texts -> token ids, padded to the trained length);
- encoding an image batch: ``SiglipEncoder.encode``;
- encoding a text batch: ``SiglipEncoder.encode_tokens``.

The runtimes behind those seams are ``siglip_torch.py`` (fp16 on CUDA, fp32 elsewhere) and,
on a CPU, ``siglip_openvino.py`` (the towers converted once and cached, bf16 where the CPU
has it); ``siglip.py`` chooses between them.
"""

from __future__ import annotations

import importlib
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .interface import DEFAULT_SIGLIP, EmbeddingModel, MissingDependencyError, ModelUnavailableError

# Python packages (import name -> distribution) that loading the Hub layout needs.
# sentencepiece and protobuf are what SiglipTokenizer needs for ``spiece.model``.
DEPENDENCIES = {"torch": "torch", "transformers": "transformers", "huggingface_hub": "huggingface-hub",
                "sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}
CHECKPOINT_FILES = ("config.json", "preprocessor_config.json", "tokenizer_config.json")
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model"]
HUB_PROBE_TIMEOUT_S = 5.0


def check_dependencies() -> None:
    for module, package in DEPENDENCIES.items():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependencyError(
                f"SigLIP needs the Python package '{package}', which is not installed "
                f"(import {module}: {exc}). Install the project's dependencies with `make setup`, "
                f"or this package alone with `.venv/bin/pip install {package}`."
            ) from exc


def _how_to_point_at_a_copy(name: str) -> str:
    repo = name if _is_repo_id(name) else DEFAULT_SIGLIP
    return (f"On a machine with network access run `hf download {repo} --local-dir "
            f"models/{repo.rsplit('/', 1)[-1]}`, copy that folder here and set IMGSEARCH_MODEL to its "
            "path (or point HF_HOME at a Hugging Face cache that holds the model).")


def _is_repo_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not os.path.exists(name)


def locate_checkpoint(name: str) -> Path:
    """The folder holding the checkpoint ``name``: a local folder, else the Hugging Face
    cache, else a download from the Hub. Without a local copy and without a reachable Hub
    this fails within ``HUB_PROBE_TIMEOUT_S`` (plus connection set-up), never in retries."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        missing = [f for f in CHECKPOINT_FILES if not (folder / f).is_file()]
        if missing:
            raise ModelUnavailableError(
                f"The folder {folder.resolve()} (IMGSEARCH_MODEL) is not a SigLIP checkpoint: it has no "
                f"{', '.join(missing)}. It should hold the files of the Hub's repository. "
                + _how_to_point_at_a_copy(name))
        return folder

    # Imported here, not at the top: huggingface_hub is slow to import and is not needed by
    # a local folder (nor by the weight-free embedder, which imports this package too).
    from huggingface_hub import HfApi, constants, is_offline_mode, snapshot_download

    looked = (f"There is no local folder '{name}' ({folder.resolve()}) and no copy in the "
              f"Hugging Face cache at {constants.HF_HUB_CACHE}")
    try:
        return Path(snapshot_download(name, allow_patterns=DOWNLOAD_PATTERNS, local_files_only=True))
    except Exception:  # not cached, or not a valid repository id
        pass
    if is_offline_mode():
        raise ModelUnavailableError(
            f"Could not load embedding model '{name}'. {looked}, and the Hub is not tried "
            "(HF_HUB_OFFLINE is set). " + _how_to_point_at_a_copy(name))
    try:
        HfApi().model_info(name, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:
        raise ModelUnavailableError(
            f"Could not load embedding model '{name}'. {looked}, and the Hugging Face Hub at "
            f"{constants.ENDPOINT} could not be reached or has no such model "
            f"({type(exc).__name__}: {exc}). " + _how_to_point_at_a_copy(name)) from None
    try:
        return Path(snapshot_download(name, allow_patterns=DOWNLOAD_PATTERNS))
    except Exception as exc:
        raise ModelUnavailableError(
            f"Could not download embedding model '{name}' from {constants.ENDPOINT} into "
            f"{constants.HF_HUB_CACHE}: {type(exc).__name__}: {exc}. " + _how_to_point_at_a_copy(name)
        ) from None


class SiglipEncoder(EmbeddingModel):
    """A loaded SigLIP: both towers, its image processor and its tokenizer. The runtime
    (siglip_torch.py or siglip_openvino.py) supplies ``encode`` and ``encode_tokens``;
    ``numerics`` names it and its precision (``torch-fp32``, ``openvino-bf16``...)."""

    supports_text = True
    tensors = "pt"  # what prepare and tokenize return: torch tensors, or numpy arrays

    def __init__(self, config: Any, image_processor: Any, tokenizer: Any, model_id: str,
                 numerics: str):
        self._image_processor = image_processor
        self._tokenizer = tokenizer
        self.model_id = model_id
        self.numerics = numerics
        self.dim = int(config.vision_config.hidden_size)
        # As trained: every text padded (with </s>) or cut to the tokenizer's length, 64.
        self.text_length = min(int(tokenizer.model_max_length),
                               int(config.text_config.max_position_embeddings))

    # -- preprocessing (CPU; loader threads and request threads call these) ---------------

    def prepare(self, images: list[Image.Image]) -> Any:
        """Pixel values of upright RGB images: the checkpoint's own resize (bicubic, square,
        no crop), rescale and normalisation."""
        return self._image_processor(images=images, return_tensors=self.tensors)["pixel_values"]

    def tokenize(self, texts: list[str]) -> Any:
        """Token ids, lower-cased, punctuation dropped, ``</s>`` appended, padded to
        ``text_length`` and truncated beyond it: a text gets the same ids alone or in any batch."""
        return self._tokenizer(texts, padding="max_length", max_length=self.text_length,
                               truncation=True, return_tensors=self.tensors)["input_ids"]

    # -- encoding (the compute device) ----------------------------------------------------

    @abstractmethod
    def encode_tokens(self, input_ids: Any) -> np.ndarray:
        """L2-normalised float32 vectors, one row per tokenized text."""

    def encode_text(self, texts: list[str]) -> np.ndarray:
        return self.encode_tokens(self.tokenize(texts))


def pooled(output: Any) -> Any:
    """transformers 5 returns a model output from get_*_features; 4.x the tensor itself."""
    pooled_output = getattr(output, "pooler_output", None)
    return output if pooled_output is None else pooled_output


def _loading(name: str, folder: Path, load):
    """``load()``, its failures told as a missing package or an unusable checkpoint."""
    try:
        return load()
    except ImportError as exc:  # a backend transformers asks for beyond DEPENDENCIES
        raise MissingDependencyError(
            f"Loading '{name}' needs a Python package that is not installed: {exc} "
            "Install it into .venv (`.venv/bin/pip install <package>`) and add it to pyproject.toml."
        ) from exc
    except Exception as exc:
        raise ModelUnavailableError(
            f"Could not load embedding model '{name}' from {folder}: {type(exc).__name__}: {exc}. "
            + _how_to_point_at_a_copy(name)
        ) from exc


def load_processor(folder: Path, name: str) -> Any:
    from transformers import AutoProcessor  # heavy (and torch with it): only when loading

    return _loading(name, folder, lambda: AutoProcessor.from_pretrained(folder))


def load_torch_model(folder: Path, name: str) -> Any:
    """The transformers model of the checkpoint in ``folder``, in eval mode, on the CPU."""
    from transformers import AutoModel  # heavy (and torch with it): only when loading

    model = _loading(name, folder, lambda: AutoModel.from_pretrained(folder))
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ModelUnavailableError(f"'{name}' is a {type(model).__name__}, not a SigLIP image-text model")
    return model.eval()
