"""The SigLIP embedder: the resource, and the choice of its runtime (``load_siglip``):
OpenVINO on a CPU (``siglip_openvino.py``), torch on a GPU or where OpenVINO cannot run
(``siglip_torch.py``). What both runtimes share is in ``siglip_base.py``."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from pydantic import Field

from .interface import DEFAULT_SIGLIP, Embedder, EmbeddingModel, MissingDependencyError, ModelUnavailableError
from .siglip_base import SiglipEncoder, check_dependencies, locate_checkpoint
from .siglip_openvino import load_openvino_siglip
from .siglip_torch import load_torch_siglip

RUNTIMES = ("auto", "torch", "openvino")

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> str:
    import torch  # heavy: only once a SigLIP is loaded

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@functools.lru_cache(maxsize=4)
def load_siglip(name: str, device: str, half: bool, runtime: str = "torch",
                openvino_cache: str = "") -> SiglipEncoder:
    """Load once per process (the API and the pipeline share it); call
    ``check_dependencies`` first. ``runtime`` (one of RUNTIMES): ``auto`` is OpenVINO on a
    CPU (torch, with a warning, where OpenVINO cannot run) and torch on any other device."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown SigLIP runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime == "openvino" and device != "cpu":
        raise ValueError(f"the OpenVINO runtime runs SigLIP on the CPU, not on '{device}'")
    folder = locate_checkpoint(name)
    if device == "cpu" and runtime in ("auto", "openvino"):
        cache = Path(openvino_cache).expanduser() if openvino_cache else None
        try:
            return load_openvino_siglip(folder, name, cache)
        except (MissingDependencyError, ModelUnavailableError):
            raise
        except ImportError as exc:
            if runtime == "openvino":
                raise MissingDependencyError(
                    f"The SigLIP runtime 'openvino' needs the Python package 'openvino' ({exc}). "
                    "Install the project's dependencies with `make setup`.") from exc
            log.warning(f"SigLIP runs through torch fp32 on the CPU: OpenVINO cannot be imported "
                        f"({type(exc).__name__}: {exc})")
        except Exception as exc:
            if runtime == "openvino":
                raise
            log.warning(f"SigLIP runs through torch fp32 on the CPU: OpenVINO failed "
                        f"({type(exc).__name__}: {exc})")
    return load_torch_siglip(folder, name, device, half)


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
        check_dependencies()  # before torch is imported by pick_device
        device = pick_device(self.device)
        half = self.half_precision and device == "cuda"
        return load_siglip(self.model_name, device, half, self.runtime, self.openvino_cache)
