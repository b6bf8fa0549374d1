"""SigLIP through transformers/torch: fp16 on CUDA, fp32 elsewhere (a GPU's runtime, and a
CPU's where OpenVINO cannot run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .siglip_base import SiglipEncoder, load_processor, load_torch_model, pooled


class TorchSiglipEncoder(SiglipEncoder):
    """Both towers through transformers/torch: fp32 on a CPU, fp16 on CUDA."""

    def __init__(self, model: Any, image_processor: Any, tokenizer: Any, model_id: str, half: bool):
        import torch  # heavy: imported once a model is loaded, not with the package

        super().__init__(model.config, image_processor, tokenizer, model_id,
                         numerics="torch-fp16" if half else "torch-fp32")
        self._torch = torch
        self._model = model
        self.device = next(model.parameters()).device
        self._dtype = torch.float16 if half else torch.float32

    def image_features(self, pixel_values: Any) -> Any:
        pixel_values = pixel_values.to(self.device, dtype=self._dtype, non_blocking=True)
        return pooled(self._model.get_image_features(pixel_values=pixel_values))

    def text_features(self, input_ids: Any) -> Any:
        return pooled(self._model.get_text_features(input_ids=input_ids.to(self.device)))

    def encode(self, prepared: Any) -> np.ndarray:
        with self._torch.inference_mode():
            return self._unit_rows(self.image_features(prepared))

    def encode_tokens(self, input_ids: Any) -> np.ndarray:
        with self._torch.inference_mode():
            return self._unit_rows(self.text_features(input_ids))

    def _unit_rows(self, features: Any) -> np.ndarray:
        vectors = self._torch.nn.functional.normalize(features.float(), dim=-1)
        return vectors.cpu().numpy().astype(np.float32)


def load_torch_siglip(checkpoint: Path, model_id: str, device: str, half: bool) -> TorchSiglipEncoder:
    """The checkpoint's model on ``device``, in fp16 when ``half``."""
    processor = load_processor(checkpoint, model_id)
    model = load_torch_model(checkpoint, model_id).to(device)
    if half:
        model.half()
    return TorchSiglipEncoder(model, processor.image_processor, processor.tokenizer, model_id, half)
