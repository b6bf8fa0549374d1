"""API settings, read from the same environment as the pipeline (plus a few IMGSEARCH_API_*)."""

import hashlib
import os
import tempfile
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator

from ..core.images import DEFAULT_MAX_PIXELS
from ..resources.environment import ConfigurationError, settings_error

_TRUE = ("1", "true", "yes", "on")


def key_digest(key: str) -> str:
    """What the API keeps of an API key: its SHA-256 (the key itself is not held)."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiSettings(BaseModel):
    """Limits, defaults and access rules of the search API.

    IMGSEARCH_API_MAX_UPLOAD_BYTES  largest accepted upload (default 10 MB)
    IMGSEARCH_API_MAX_PIXELS        larger images are rejected as decompression bombs
    IMGSEARCH_API_INFERENCE_THREADS decode + model calls running at once
    IMGSEARCH_API_QUEUE             decode + model calls waiting beyond those; more get a 503
    IMGSEARCH_API_HEAVY_PIXELS      uploads decoding more pixels than this share a narrow lane
    IMGSEARCH_API_DECODE_SIDE       uploads are decoded at no more than ~2x this side
    IMGSEARCH_API_LIVE_CHECK_S      how often to look for a newly published index version
    IMGSEARCH_API_RETRY_MAX_S       longest wait between retries of a version that failed
    IMGSEARCH_API_KEYS              comma-separated API keys; when set, data endpoints need one
    IMGSEARCH_API_PUBLIC            "true": serve without keys in the production profile
    IMGSEARCH_API_PUBLIC_URL        base of the links in answers (default: relative links)
    IMGSEARCH_API_CORS_ORIGINS      comma-separated origins allowed to call the API from a browser
    IMGSEARCH_API_VECTOR_CACHE      local folder of the memory-mapped copy of the stored vectors
                                    (default: imgsearch-vectors in the system's temporary folder)
    """

    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0)
    inference_threads: int = Field(2, gt=0)
    queue: int = Field(8, ge=0)
    heavy_pixels: int = Field(4_000_000, gt=0)
    decode_side: int = Field(1024, ge=64)
    live_check_s: float = Field(5.0, gt=0)
    retry_max_s: float = Field(300.0, gt=0)
    key_digests: tuple[str, ...] = ()
    public: bool = False
    public_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    link_ttl_s: int = Field(3600, gt=0)
    max_candidates: int = 1000
    vector_cache: str = Field(default_factory=lambda: os.path.join(tempfile.gettempdir(),
                                                                   "imgsearch-vectors"))

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL without query or fragment, e.g. "
                             "https://search.example.org")
        return value.rstrip("/")

    @property
    def auth_required(self) -> bool:
        return bool(self.key_digests)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ApiSettings":
        env = os.environ if environ is None else environ
        names = {"max_upload_bytes": "IMGSEARCH_API_MAX_UPLOAD_BYTES",
                 "max_pixels": "IMGSEARCH_API_MAX_PIXELS",
                 "inference_threads": "IMGSEARCH_API_INFERENCE_THREADS",
                 "queue": "IMGSEARCH_API_QUEUE",
                 "heavy_pixels": "IMGSEARCH_API_HEAVY_PIXELS",
                 "decode_side": "IMGSEARCH_API_DECODE_SIDE",
                 "live_check_s": "IMGSEARCH_API_LIVE_CHECK_S",
                 "retry_max_s": "IMGSEARCH_API_RETRY_MAX_S",
                 "public_url": "IMGSEARCH_API_PUBLIC_URL",
                 "vector_cache": "IMGSEARCH_API_VECTOR_CACHE"}
        values: dict = {field: env[name] for field, name in names.items() if name in env}
        keys = [k.strip() for k in env.get("IMGSEARCH_API_KEYS", "").split(",") if k.strip()]
        values["key_digests"] = tuple(key_digest(k) for k in keys)
        values["public"] = env.get("IMGSEARCH_API_PUBLIC", "").strip().lower() in _TRUE
        values["cors_origins"] = tuple(
            o.strip().rstrip("/") for o in env.get("IMGSEARCH_API_CORS_ORIGINS", "").split(",")
            if o.strip())
        try:
            return cls(**values)
        except ValidationError as error:
            raise ConfigurationError(settings_error(error, names, env)) from None


def check_access_rules(settings: ApiSettings, environ: Mapping[str, str] | None = None) -> None:
    """The production profile never serves without keys unless the operator said it is public."""
    env = os.environ if environ is None else environ
    production = env.get("IMGSEARCH_PROFILE", "embedded").strip() == "production"
    if production and not settings.auth_required and not settings.public:
        raise ConfigurationError(
            "the production profile needs API keys: set IMGSEARCH_API_KEYS (comma-separated), "
            "or IMGSEARCH_API_PUBLIC=true to serve every indexed image to anyone")
