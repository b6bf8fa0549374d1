"""What both SigLIP runtimes share: the checkpoint in the Hub's own file layout, used as it
was trained. Two families load here, both ``SiglipModel`` (``model_type: siglip``):

- SigLIP (``google/siglip-base-patch16-224/256/384/512``): ``config.json``,
  ``model.safetensors``, ``preprocessor_config.json`` (bicubic square resize, mean = std =
  0.5), ``special_tokens_map.json``, ``spiece.model``, ``tokenizer_config.json``:
  ``SiglipTokenizer`` (T5's sentencepiece, 32,000 pieces), which lower-cases and drops
  punctuation itself, ``</s>`` appended and used as padding;
- SigLIP 2 fixed-resolution (``google/siglip2-base-patch16-224/256/384/512``): the same
  architecture with Gemma's tokenizer (``tokenizer.json``/``tokenizer.model``,
  ``GemmaTokenizer``, 256,000 pieces, ``<eos>`` appended, ``<pad>`` = 0) and a bilinear
  resize. SigLIP 2 was trained on lower-cased text, which Gemma's tokenizer does not do:
  transformers added ``Siglip2Tokenizer`` for that (PR 43101), but only for the NaFlex
  checkpoints (``model_type: siglip2``), so ``load_processor`` adds the lower-casing here.

Both are padded to 64 tokens as trained (the text tower pools the last position, a pad).
The NaFlex SigLIP 2 (``model_type: siglip2``, variable patches) is another family and is
refused by name.

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
import threading
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
# The vocabulary: SigLIP's sentencepiece model, or SigLIP 2's Gemma tokenizer.
VOCABULARY_FILES = ("spiece.model", "tokenizer.json")
# The tokenizer class each family ships (tokenizer_config.json), and its family's name.
TOKENIZER_FAMILIES = {"SiglipTokenizer": "SigLIP", "GemmaTokenizer": "SigLIP 2",
                      "GemmaTokenizerFast": "SigLIP 2"}
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


def missing_siglip_files(folder: Path) -> list[str]:
    """What a SigLIP or SigLIP 2 checkpoint folder lacks (empty: nothing)."""
    missing = [f for f in CHECKPOINT_FILES if not (folder / f).is_file()]
    if not any((folder / f).is_file() for f in VOCABULARY_FILES):
        missing.append(" or ".join(VOCABULARY_FILES))
    return missing


def locate_checkpoint(name: str, missing_files=missing_siglip_files, kind: str = "SigLIP",
                      patterns: list[str] | None = None, variable: str = "IMGSEARCH_MODEL") -> Path:
    """The folder holding the checkpoint ``name``: a local folder, else the Hugging Face
    cache, else a download from the Hub. Without a local copy and without a reachable Hub
    this fails within ``HUB_PROBE_TIMEOUT_S`` (plus connection set-up), never in retries.
    ``missing_files(folder)`` says what a local folder lacks to be a ``kind`` checkpoint."""
    patterns = patterns or DOWNLOAD_PATTERNS
    folder = Path(name).expanduser()
    if folder.is_dir():
        missing = missing_files(folder)
        if missing:
            raise ModelUnavailableError(
                f"The folder {folder.resolve()} ({variable}) is not a {kind} checkpoint: it has no "
                f"{', '.join(missing)}. It should hold the files of the Hub's repository. "
                + _how_to_point_at_a_copy(name))
        return folder

    # Imported here, not at the top: huggingface_hub is slow to import and is not needed by
    # a local folder (nor by the weight-free embedder, which imports this package too).
    from huggingface_hub import HfApi, constants, is_offline_mode, snapshot_download

    looked = (f"There is no local folder '{name}' ({folder.resolve()}) and no copy in the "
              f"Hugging Face cache at {constants.HF_HUB_CACHE}")
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
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
        return Path(snapshot_download(name, allow_patterns=patterns))
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
        # A fast tokenizer (SigLIP 2's) sets its padding and truncation on shared state at
        # each call: the API's request threads take turns (a few ms).
        self._tokenize_lock = threading.Lock()

    # -- preprocessing (CPU; loader threads and request threads call these) ---------------

    def prepare(self, images: list[Image.Image]) -> Any:
        """Pixel values of upright RGB images: the checkpoint's own resize (bicubic, square,
        no crop), rescale and normalisation."""
        return self._image_processor(images=images, return_tensors=self.tensors)["pixel_values"]

    def tokenize(self, texts: list[str]) -> Any:
        """Token ids as trained: lower-cased (SigLIP's tokenizer also drops punctuation),
        the end token appended (``</s>``; SigLIP 2: ``<eos>``), padded to ``text_length`` and
        truncated beyond it: a text gets the same ids alone or in any batch."""
        with self._tokenize_lock:
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


def check_family(folder: Path, name: str) -> str:
    """``SigLIP`` or ``SigLIP 2`` from the checkpoint's own files; ModelUnavailableError,
    naming what was expected, for any other model."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
        tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"'{name}': unreadable config.json or tokenizer_config.json in "
                                    f"{folder} ({type(exc).__name__}: {exc})") from None
    model_type = config.get("model_type")
    if model_type == "siglip2":
        raise ModelUnavailableError(
            f"'{name}' is a NaFlex SigLIP 2 (model_type 'siglip2', variable resolution), which the "
            "siglip embedder does not run: use a fixed-resolution SigLIP 2 such as "
            "google/siglip2-base-patch16-512 (model_type 'siglip').")
    if model_type != "siglip":
        raise ModelUnavailableError(
            f"'{name}' is a '{model_type}' model, not a SigLIP or SigLIP 2 checkpoint (expected "
            "model_type 'siglip' in config.json). For a sentence-transformers model set "
            "IMGSEARCH_EMBEDDER=sentence-transformers.")
    tokenizer_class = tokenizer.get("tokenizer_class")
    if tokenizer_class not in TOKENIZER_FAMILIES:
        raise ModelUnavailableError(
            f"'{name}' has a {tokenizer_class} tokenizer; a SigLIP checkpoint ships SiglipTokenizer "
            "(spiece.model) and a SigLIP 2 one GemmaTokenizer (tokenizer.json).")
    return TOKENIZER_FAMILIES[tokenizer_class]


def lower_casing(tokenizer: Any) -> Any:
    """``tokenizer`` lower-casing its input first, as SigLIP 2 was trained (the same
    normaliser transformers' Siglip2Tokenizer prepends); unchanged if it lower-cases already."""
    from tokenizers import normalizers

    backend = tokenizer.backend_tokenizer
    current = backend.normalizer
    if current is not None and current.normalize_str("AÉ") == "aé":
        return tokenizer
    backend.normalizer = (normalizers.Lowercase() if current is None
                          else normalizers.Sequence([normalizers.Lowercase(), current]))
    return tokenizer


def load_processor(folder: Path, name: str) -> Any:
    """The checkpoint's processor (image processor + tokenizer), SigLIP 2's lower-casing."""
    from transformers import AutoProcessor  # heavy (and torch with it): only when loading

    family = check_family(folder, name)
    processor = _loading(name, folder, lambda: AutoProcessor.from_pretrained(folder))
    if family == "SigLIP 2":
        lower_casing(processor.tokenizer)
    return processor


def load_torch_model(folder: Path, name: str) -> Any:
    """The transformers model of the checkpoint in ``folder``, in eval mode, on the CPU."""
    from transformers import AutoModel  # heavy (and torch with it): only when loading

    model = _loading(name, folder, lambda: AutoModel.from_pretrained(folder))
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ModelUnavailableError(f"'{name}' is a {type(model).__name__}, not a SigLIP image-text model")
    return model.eval()
