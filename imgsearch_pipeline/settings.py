"""Every ``IMGSEARCH_*`` setting, declared once: its variable, type, default and allowed values.

The environment is read here and nowhere else, once per process: by the code location when
its definitions load (``definitions.py``), by the API when it starts (``api/app.py``) and by
the command line (``cli.py``). Everything else is handed a ``Settings``. A bad value stops
the process with one line that names the variable, its value and what is allowed.

Secrets (passwords, keys, the webhook URL) are held as ``SecretStr``; the resources that send
them are given ``dg.EnvVar(name)`` instead, so Dagster shows only their names in the UI.

``python -m imgsearch_pipeline.settings`` rewrites the variable tables in the docs from the
declarations below (a test keeps them in step).
"""

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from .core.fusion import RANK_CONSTANT, WINDOW
from .core.images import DEFAULT_MAX_PIXELS
from .resources.embedders import DEFAULT_SIGLIP


class ConfigurationError(ValueError):
    """A setting that cannot work; raised when a process starts, before any run or request."""


def variable(name: str, description: str, group: str, shown_default: str | None = None,
             **kwargs: Any) -> Any:
    """A field read from the environment variable ``name``; ``group`` names its docs table,
    ``shown_default`` what the docs say of a default computed on each machine."""
    extra = {"group": group, **({"shown_default": shown_default} if shown_default else {})}
    return Field(validation_alias=name, description=description, json_schema_extra=extra,
                 **kwargs)


def _split(value: Any) -> Any:
    """A comma-separated variable as a tuple of its non-empty items."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def key_digest(key: str) -> str:
    """What the API keeps of an API key: its SHA-256 (the key itself is not held)."""
    return hashlib.sha256(key.encode()).hexdigest()


class _Variables(BaseModel):
    """Fields are filled from their variables' names, or by field name in code and tests.
    Blank variables count as unset (``X=`` in a compose file means "use the default")."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True,
                              validate_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: Any) -> Any:
        if not isinstance(values, Mapping):
            return values
        return {name: value.strip() if isinstance(value, str) else value
                for name, value in values.items()
                if not (isinstance(value, str) and not value.strip())}


class ApiSettings(_Variables):
    """Limits, defaults and access rules of the search API."""

    max_upload_bytes: int = variable("IMGSEARCH_API_MAX_UPLOAD_BYTES", "Largest upload.", "api",
                                     default=10 * 1024 * 1024, gt=0)
    max_pixels: int = variable("IMGSEARCH_API_MAX_PIXELS",
                               "Larger images are refused (decompression bombs).", "api",
                               default=DEFAULT_MAX_PIXELS, gt=0)
    inference_threads: int = variable("IMGSEARCH_API_INFERENCE_THREADS",
                                      "Decode + embed jobs running at once.", "api", default=2, gt=0)
    queue: int = variable("IMGSEARCH_API_QUEUE",
                          "Jobs waiting beyond those; more get 503 + `Retry-After`.", "api",
                          default=8, ge=0)
    heavy_pixels: int = variable(
        "IMGSEARCH_API_HEAVY_PIXELS",
        "Uploads decoding more pixels share a lane of 1 running + queue/4 waiting.", "api",
        default=4_000_000, gt=0)
    decode_side: int = variable(
        "IMGSEARCH_API_DECODE_SIDE",
        "Uploads are decoded only as large as needed to keep both sides above this.", "api",
        default=1024, ge=64)
    live_check_s: float = variable("IMGSEARCH_API_LIVE_CHECK_S",
                                   "How often the live pointer is read (seconds).", "api",
                                   default=5.0, gt=0)
    retry_max_s: float = variable(
        "IMGSEARCH_API_RETRY_MAX_S",
        "Longest wait between retries of a version that failed to load (seconds).", "api",
        default=300.0, gt=0)
    key_digests: Annotated[tuple[str, ...], Field(repr=False)] = variable(
        "IMGSEARCH_API_KEYS",
        "Comma-separated API keys (secret); when set, data endpoints need `X-API-Key`.", "api",
        default=())
    public: bool = variable("IMGSEARCH_API_PUBLIC",
                            "`true`: the production profile may serve without keys.", "api",
                            default=False)
    public_url: str | None = variable("IMGSEARCH_API_PUBLIC_URL",
                                      "Base of the links in answers; relative links when unset.",
                                      "api", default=None)
    cors_origins: tuple[str, ...] = variable(
        "IMGSEARCH_API_CORS_ORIGINS",
        "Comma-separated origins that browsers may call the API from; CORS is off when unset.",
        "api", default=())
    vector_cache: str = variable(
        "IMGSEARCH_API_VECTOR_CACHE",
        "Local folder of the memory-mapped copy of the stored vectors.", "api",
        shown_default="`imgsearch-vectors` in the system's temporary folder",
        default_factory=lambda: os.path.join(tempfile.gettempdir(), "imgsearch-vectors"))
    link_secret: SecretStr | None = variable(
        "IMGSEARCH_API_LINK_SECRET",
        "Secret of the signed image links (at least 32 characters), the same in every API "
        "process and replica; unset: derived from the API keys.", "api", default=None)
    rrf_rank_constant: int = variable(
        "IMGSEARCH_API_RRF_RANK_CONSTANT",
        "Hybrid search: reciprocal rank fusion's rank constant (Elasticsearch's default).", "api",
        default=RANK_CONSTANT, ge=1)
    rrf_window: int = variable(
        "IMGSEARCH_API_RRF_WINDOW",
        "Hybrid search: hits of each ranking fused; a page ends there at the deepest.", "api",
        default=WINDOW, ge=1, le=1000)
    link_ttl_s: int = Field(3600, gt=0)
    max_candidates: int = 1000

    @field_validator("key_digests", mode="before")
    @classmethod
    def _digests(cls, value: Any) -> Any:
        # From the variable: the keys, hashed at once; in code: digests already.
        return tuple(key_digest(k) for k in _split(value)) if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        return tuple(o.rstrip("/") for o in _split(value))

    @field_validator("link_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters, e.g. the output of "
                             "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        return value

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


class Settings(_Variables):
    """The whole deployment's settings: backends, model, data, automation, API."""

    profile: Literal["embedded", "production"] = variable(
        "IMGSEARCH_PROFILE",
        "The backends: a local folder and faiss, or S3 and Elasticsearch.", "pipeline",
        default="embedded")
    embedder: Literal["siglip", "sentence-transformers", "color-texture"] = variable(
        "IMGSEARCH_EMBEDDER",
        "The image model: SigLIP or SigLIP 2, a sentence-transformers model (CLIP), or a "
        "weight-free one for demos and CI.", "pipeline", default="siglip")
    model: str = variable(
        "IMGSEARCH_MODEL",
        "Hub id or local folder of the model (sentence-transformers: "
        "`sentence-transformers/clip-ViT-B-32` when unset).", "pipeline", default=DEFAULT_SIGLIP)
    text_model: str | None = variable(
        "IMGSEARCH_TEXT_MODEL",
        "sentence-transformers only: a text model aligned to IMGSEARCH_MODEL for text queries "
        "(e.g. `sentence-transformers/clip-ViT-B-32-multilingual-v1`); unset: the model itself.",
        "pipeline", default=None)
    openvino_cache: str = variable(
        "IMGSEARCH_OPENVINO_CACHE", "Folder of the SigLIP models converted for OpenVINO.",
        "pipeline", shown_default="`$XDG_CACHE_HOME/imgsearch/openvino` (`~/.cache/...`)",
        default_factory=lambda: os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "imgsearch", "openvino"))
    dataset: str = variable("IMGSEARCH_DATASET", "Folder or `s3://` URI of the parquet shards.",
                            "pipeline", default="data/sample")
    home: str | None = variable(
        "IMGSEARCH_HOME",
        "Where the pipeline keeps its own files: a folder (made absolute) or an `s3://` URI.",
        "pipeline", shown_default="`var`; production: `s3://<IMGSEARCH_S3_BUCKET>/<IMGSEARCH_S3_PREFIX>`",
        default=None)

    automation: Literal["running", "stopped"] = variable(
        "IMGSEARCH_AUTOMATION",
        "Whether the schedule and the shard sensor run from the moment the code location loads.",
        "automation", default="stopped")
    reindex_cron: str = variable("IMGSEARCH_REINDEX_CRON", "Cron of `nightly_reindex`.",
                                 "automation", default="0 3 * * *")
    timezone: str = variable("IMGSEARCH_TIMEZONE", "Its time zone.", "automation", default="UTC")
    shard_sensor_interval_s: int = variable(
        "IMGSEARCH_SHARD_SENSOR_INTERVAL_S", "Seconds between looks at the dataset location.",
        "automation", default=300, ge=1)
    alert_webhook: SecretStr | None = variable(
        "IMGSEARCH_ALERT_WEBHOOK",
        "URL that failed runs are POSTed to as `{\"text\": ...}` (Slack, Mattermost, "
        "Teams-style); a secret, sent through `dg.EnvVar`.", "automation", default=None)

    es_url: str | None = variable("IMGSEARCH_ES_URL",
                                  "Elasticsearch URL (production: required).", "production",
                                  default=None)
    es_username: str | None = variable(
        "IMGSEARCH_ES_USERNAME", "Basic-auth user (`elastic` when a password is set).",
        "production", default=None)
    es_password: SecretStr | None = variable("IMGSEARCH_ES_PASSWORD", "Basic-auth password "
                                             "(secret).", "production", default=None)
    es_api_key: SecretStr | None = variable(
        "IMGSEARCH_ES_API_KEY", "Encoded API key instead of user and password (secret).",
        "production", default=None)
    es_ca_certs: str | None = variable("IMGSEARCH_ES_CA_CERTS", "CA bundle for an https URL.",
                                       "production", default=None)
    es_index: str = variable("IMGSEARCH_ES_INDEX",
                             "Alias name and prefix of the index versions.", "production",
                             default="imgsearch")
    es_index_type: Literal["hnsw", "int8_hnsw", "bbq_hnsw"] = variable(
        "IMGSEARCH_ES_INDEX_TYPE", "`dense_vector` index type.", "production", default="hnsw")
    es_replicas: int = variable("IMGSEARCH_ES_REPLICAS",
                                "Replicas per index version (0: a single node).", "production",
                                default=0, ge=0)
    es_ready_timeout_s: int = variable(
        "IMGSEARCH_ES_READY_TIMEOUT_S",
        "How long the first request waits for a yellow cluster (seconds).", "production",
        default=120, ge=1)
    s3_bucket: str | None = variable("IMGSEARCH_S3_BUCKET",
                                     "Bucket of the image objects (production: required).",
                                     "production", default=None)
    s3_prefix: str = variable("IMGSEARCH_S3_PREFIX", "Folder inside the bucket.", "production",
                              default="imgsearch")
    s3_public_endpoint: str | None = variable(
        "IMGSEARCH_S3_PUBLIC_ENDPOINT",
        "Endpoint in presigned URLs, when browsers reach the store by another name.",
        "production", default=None)

    api: ApiSettings = Field(default_factory=ApiSettings)

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, values: Any) -> Any:
        # An empty home or dataset would silently mean the current directory.
        if isinstance(values, Mapping) and any(
                isinstance(values.get(name), str) and not values[name].strip()
                for name in ("IMGSEARCH_HOME", "IMGSEARCH_DATASET")):
            raise ValueError("IMGSEARCH_HOME and IMGSEARCH_DATASET must not be empty")
        return values

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """The settings from ``environ`` (default: this process's environment)."""
        env = dict(os.environ if environ is None else environ)
        try:
            return cls.model_validate({**env, "api": env})
        except ValidationError as error:
            raise ConfigurationError(describe(error, env)) from None

    @property
    def production(self) -> bool:
        return self.profile == "production"

    @property
    def automation_running(self) -> bool:
        return self.automation == "running"


def variable_of(model: type[BaseModel], field: str) -> str:
    """The environment variable of a field (its alias)."""
    alias = model.model_fields[field].validation_alias
    if not isinstance(alias, str):
        raise KeyError(f"{model.__name__}.{field} is not read from the environment")
    return alias


def describe(error: ValidationError, env: Mapping[str, str]) -> str:
    """One clause per invalid variable: ``NAME='value' is not allowed: why``."""
    lines = []
    for item in error.errors():
        names = [str(p) for p in item["loc"] if str(p).startswith("IMGSEARCH_")]
        message = item["msg"].removeprefix("Value error, ")
        if not names:
            lines.append(message)
            continue
        name, value = names[-1], env.get(names[-1], "")
        if name in SECRETS:  # a rejected secret is named, never shown
            value = "<hidden>"
        if item["type"] == "literal_error":  # a choice: say which ones there are
            choices = ", ".join(re.findall(r"'([^']*)'", item["ctx"]["expected"]))
            lines.append(f"unknown {name.split('_')[-1].lower()} {value!r} ({name}): "
                         f"choose one of {choices}")
        else:
            lines.append(f"{name}={value!r} is not allowed: {message}")
    return "; ".join(lines)


SECRETS = ("IMGSEARCH_API_KEYS", "IMGSEARCH_API_LINK_SECRET", "IMGSEARCH_ES_PASSWORD",
           "IMGSEARCH_ES_API_KEY", "IMGSEARCH_ALERT_WEBHOOK")


def declared() -> list[tuple[str, FieldInfo]]:
    """Every variable with its field, in declaration order (API last)."""
    fields = [*Settings.model_fields.values(), *ApiSettings.model_fields.values()]
    return [(f.validation_alias, f) for f in fields if isinstance(f.validation_alias, str)]


GROUPS = {"pipeline": "README.md", "automation": "docs/operations.md",
          "production": "docs/production.md", "api": "docs/api.md"}


def _shown(field: FieldInfo) -> str:
    extra = field.json_schema_extra or {}
    if "shown_default" in extra:
        return str(extra["shown_default"])
    if field.default in (None, ()):
        return "unset"
    if field.default is False:
        return "`false`"
    return f"`{field.default}`"


def _meaning(field: FieldInfo) -> str:
    choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    return field.description + (f" One of {', '.join(f'`{c}`' for c in choices)}."
                                if choices else "")


def markdown_table(group: str) -> str:
    """The docs table of one group of variables, as ``python -m imgsearch_pipeline.cli
    settings-docs`` writes it between ``<!-- settings:GROUP -->`` and ``<!-- /settings -->``."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {_shown(field)} | {_meaning(field)} |"
             for name, field in declared() if (field.json_schema_extra or {})["group"] == group]
    return "\n".join(rows)


def with_tables(text: str) -> str:
    """``text`` with every marked settings table replaced by the declared one."""
    return re.sub(r"(<!-- settings:(\w+) -->\n).*?(<!-- /settings -->)",
                  lambda m: f"{m[1]}{markdown_table(m[2])}\n{m[3]}", text, flags=re.S)
