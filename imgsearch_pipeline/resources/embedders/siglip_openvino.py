"""SigLIP on a CPU through OpenVINO: both towers converted from the transformers model once,
saved as OpenVINO IR in a cache folder keyed by the checkpoint and the runtime versions, and
compiled at bf16 inference precision where the CPU computes bf16 (avx512_bf16 or AMX),
f32 otherwise.

    <cache>/siglip-<key>/image.xml|.bin   vision tower + pooling head, batch dynamic
    <cache>/siglip-<key>/text.xml|.bin    text tower + head, batch dynamic, 64 tokens
    <cache>/siglip-<key>/manifest.json    what the key was made of (and the model's name)
    <cache>/siglip-<key>/checksums.json   sha256 of the four IR files, checked at each load
    <cache>/compiled/                           OpenVINO's own compiled-blob cache

The key is a digest of the checkpoint's weights and config (their contents, not their
paths) and of the openvino, transformers and torch versions, so another checkpoint or an
upgrade converts again, and a second run loads the IR without converting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ...core.integrity import IntegrityError, verify_manifest, write_manifest
from ...core.similarity import l2_normalise
from .siglip_base import SiglipEncoder, load_processor, load_torch_model, pooled

log = logging.getLogger(__name__)

# Bump when what is converted changes (the wrapped forward, the input shapes).
CONVERSION_VERSION = 1
TOWERS = ("image", "text")
IR_FILES = tuple(f"{tower}.{suffix}" for tower in TOWERS for suffix in ("xml", "bin"))
CHECKSUMS = "checksums.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def default_cache() -> Path:
    """``~/.cache/imgsearch/openvino``: where an embedder built without settings converts
    (the settings' IMGSEARCH_OPENVINO_CACHE follows XDG_CACHE_HOME)."""
    return Path.home() / ".cache" / "imgsearch" / "openvino"


def cpu_capabilities(core: Any) -> list[str]:
    """What OpenVINO's CPU plugin can compute on this CPU (``BF16`` where it has avx512_bf16
    or AMX)."""
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def inference_precision(capabilities: Iterable[str]) -> str:
    """bf16 where the CPU computes it natively, f32 otherwise (bf16 emulated is slower)."""
    return "bf16" if "BF16" in set(capabilities) else "f32"


def checkpoint_digest(folder: Path) -> str:
    """sha256 over the contents of ``config.json`` and the weight files (names and bytes)."""
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and (p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES))
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            digest.update(f"{path.name}\0".encode() + hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def runtime_versions() -> dict[str, str]:
    import openvino  # heavy: imported when a model is loaded, never with the package
    import torch
    import transformers

    return {"openvino": openvino.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__, "conversion": str(CONVERSION_VERSION)}


def converted_folder(cache: Path, model_id: str, checkpoint: Path) -> tuple[Path, dict]:
    """Where the IR of ``checkpoint`` for these runtime versions lives, and its manifest:
    the key is the checkpoint's contents and the versions, not where the checkpoint lies."""
    keyed = {"checkpoint_sha256": checkpoint_digest(checkpoint), **runtime_versions()}
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:20]
    return cache / f"siglip-{key}", {"model": model_id, **keyed}


def _tower(model: Any, features: str) -> Any:
    """One tower as a module to trace: ``model.<features>`` then pooling, as the torch path
    computes it (``get_image_features`` on pixel values, ``get_text_features`` on ids)."""
    import torch  # heavy: only when converting

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, inputs):
            return pooled(getattr(self.model, features)(inputs))

    return Tower().eval()


def convert(checkpoint: Path, model_id: str, image_size: int, text_length: int, folder: Path,
            manifest: dict) -> None:
    """Convert both towers of ``checkpoint`` into ``folder`` (written beside it and renamed
    into place, so a reader never sees half an IR; two processes converting at once both
    succeed and one copy stays)."""
    import openvino as ov  # heavy: only when converting
    import torch

    model = load_torch_model(checkpoint, model_id)
    image, text = _tower(model, "get_image_features"), _tower(model, "get_text_features")
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # tracing notes shapes it treats as constants: batch stays dynamic, the rest is fixed
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            ir = ov.convert_model(image, example_input=torch.zeros(2, 3, image_size, image_size),
                                  input=[([-1, 3, image_size, image_size], ov.Type.f32)])
            ov.save_model(ir, partial / "image.xml", compress_to_fp16=False)
            ir = ov.convert_model(text, example_input=torch.ones(2, text_length, dtype=torch.long),
                                  input=[([-1, text_length], ov.Type.i64)])
            ov.save_model(ir, partial / "text.xml", compress_to_fp16=False)
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        write_manifest(partial, IR_FILES, manifest=CHECKSUMS)
        try:
            partial.rename(folder)
        except OSError:  # another process put its copy there first
            if not _verified(folder):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (*IR_FILES, "manifest.json", CHECKSUMS))


def _verified(folder: Path) -> bool:
    """Whether the cached IR is whole and unchanged; a damaged copy is removed (and converted
    again by the caller), never compiled: OpenVINO would run altered weights silently."""
    if not folder.is_dir():
        return False
    try:
        if not _complete(folder):
            raise IntegrityError(folder.name, "incomplete")
        verify_manifest(folder, manifest=CHECKSUMS)
        return True
    except IntegrityError as error:
        log.warning(f"SigLIP OpenVINO IR in {folder} is damaged ({error}); converting again")
        shutil.rmtree(folder, ignore_errors=True)
        return False


class OpenVinoSiglipEncoder(SiglipEncoder):
    """Both towers compiled for the CPU; preprocessing as the torch path (numpy out)."""

    tensors = "np"

    def __init__(self, image: Any, text: Any, config: Any, processor: Any, model_id: str,
                 precision: str, folder: Path):
        # What the plugin runs at (it may refuse the hint: bf16 on a CPU without it is f32).
        effective = image.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        super().__init__(config, processor.image_processor, processor.tokenizer, model_id,
                         numerics=f"openvino-{effective}")
        self._image = image
        self._text = text
        self.precision = precision
        self.folder = folder

    @staticmethod
    def _run(compiled: Any, inputs: np.ndarray) -> np.ndarray:
        # One infer request per call: the API encodes from several threads at once.
        return compiled.create_infer_request().infer([inputs])[0]

    def encode(self, prepared: Any) -> np.ndarray:
        return l2_normalise(self._run(self._image, np.asarray(prepared, dtype=np.float32)))

    def encode_tokens(self, input_ids: Any) -> np.ndarray:
        return l2_normalise(self._run(self._text, np.asarray(input_ids, dtype=np.int64)))


def load_openvino_siglip(checkpoint: Path, model_id: str, cache: Path | None = None
                         ) -> OpenVinoSiglipEncoder:
    """Both towers from the cache, converted first if the cache has no copy for this
    checkpoint and these runtime versions. Raises ImportError without openvino."""
    # Here, not at the top: without openvino this raises the ImportError that siglip.py
    # answers with the torch fallback.
    import openvino as ov
    from transformers import AutoConfig

    cache = cache or default_cache()
    processor = load_processor(checkpoint, model_id)
    config = AutoConfig.from_pretrained(checkpoint)
    text_length = min(int(processor.tokenizer.model_max_length),
                      int(config.text_config.max_position_embeddings))
    folder, manifest = converted_folder(cache, model_id, checkpoint)
    if _verified(folder):
        log.info(f"SigLIP OpenVINO IR reused from {folder} (checksums verified)")
    else:
        log.info(f"SigLIP: converting to OpenVINO IR into {folder} (once per checkpoint and versions)")
        convert(checkpoint, model_id, int(config.vision_config.image_size), text_length, folder,
                manifest)
    core = ov.Core()
    precision = inference_precision(cpu_capabilities(core))
    properties = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                  "CACHE_DIR": str(cache / "compiled")}
    image, text = (core.compile_model(core.read_model(folder / f"{tower}.xml"), "CPU", properties)
                   for tower in TOWERS)
    log.info(f"SigLIP on the CPU through OpenVINO {ov.__version__} at {precision}")
    return OpenVinoSiglipEncoder(image, text, config, processor, model_id, precision, folder)
