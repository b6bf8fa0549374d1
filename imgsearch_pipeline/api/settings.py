"""API settings, read from the same environment as the pipeline (plus a few IMGSEARCH_API_*)."""

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field

from ..core.images import DEFAULT_MAX_PIXELS


class ApiSettings(BaseModel):
    """Limits and defaults of the search API.

    IMGSEARCH_API_MAX_UPLOAD_BYTES  largest accepted upload (default 10 MB)
    IMGSEARCH_API_MAX_PIXELS        larger images are rejected as decompression bombs
    IMGSEARCH_API_INFERENCE_THREADS model calls running at once (the rest queue)
    IMGSEARCH_API_LIVE_CHECK_S      how often to look for a newly published index version
    """

    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0)
    inference_threads: int = Field(2, gt=0)
    live_check_s: float = Field(5.0, gt=0)
    default_k: int = 10
    max_k: int = 100
    max_candidates: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ApiSettings":
        env = os.environ if environ is None else environ
        names = {"max_upload_bytes": "IMGSEARCH_API_MAX_UPLOAD_BYTES",
                 "max_pixels": "IMGSEARCH_API_MAX_PIXELS",
                 "inference_threads": "IMGSEARCH_API_INFERENCE_THREADS",
                 "live_check_s": "IMGSEARCH_API_LIVE_CHECK_S"}
        return cls(**{field: env[name] for field, name in names.items() if name in env})
