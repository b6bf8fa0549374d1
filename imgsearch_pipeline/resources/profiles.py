"""Which backends a deployment uses, chosen by environment variables.

IMGSEARCH_PROFILE   embedded (default: local folder + faiss HNSW) | production (S3 + Elasticsearch)
IMGSEARCH_EMBEDDER  siglip (default) | color-texture (weight-free, for demos and CI)
IMGSEARCH_MODEL     SigLIP model name or local folder (default google/siglip-base-patch16-512)
IMGSEARCH_DATASET   folder or s3:// URI of the parquet shards (default data/sample)
IMGSEARCH_HOME      folder for the pipeline's own files (default var)
"""

import inspect
import os

import dagster as dg
import pydantic

from .embedders import DEFAULT_SIGLIP, ColorTextureEmbedder, Embedder, SiglipEmbedder
from .object_store import LocalObjectStore
from .storage import PostsDataset, TableStore
from .vector_index import FaissHnswIndex

PROFILES = ("embedded", "production")
EMBEDDERS = ("siglip", "color-texture")


class ConfigurationError(ValueError):
    """A setting that cannot work; raised when the definitions load, before any run."""


def _choice(env, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default).strip()
    if value not in choices:
        raise ConfigurationError(f"unknown {name.split('_')[-1].lower()} {value!r} ({name}): "
                                 f"choose one of {', '.join(choices)}")
    return value


def make_embedder(name: str, model: str = DEFAULT_SIGLIP) -> Embedder:
    if name == "siglip":
        return SiglipEmbedder(model_name=model)
    if name == "color-texture":
        return ColorTextureEmbedder()
    raise ConfigurationError(
        f"unknown embedder {name!r} (IMGSEARCH_EMBEDDER): choose one of {', '.join(EMBEDDERS)}"
    )


def resources_for(environ: dict[str, str] | None = None) -> dict[str, object]:
    env = os.environ if environ is None else environ
    profile = _choice(env, "IMGSEARCH_PROFILE", "embedded", PROFILES)
    embedder = _choice(env, "IMGSEARCH_EMBEDDER", "siglip", EMBEDDERS)
    home = env.get("IMGSEARCH_HOME", "var")
    dataset = env.get("IMGSEARCH_DATASET", "data/sample")
    if not home.strip() or not dataset.strip():
        raise ConfigurationError("IMGSEARCH_HOME and IMGSEARCH_DATASET must not be empty")
    common = {
        "dataset": PostsDataset(location=dataset),
        "tables": TableStore(root=f"{home}/tables"),
        "embedder": make_embedder(embedder, env.get("IMGSEARCH_MODEL", DEFAULT_SIGLIP)),
        # Small values handed between assets (paths, counts, the report).
        "io_manager": dg.FilesystemIOManager(base_dir=f"{home}/values"),
    }
    if profile == "embedded":
        return {**common,
                "object_store": LocalObjectStore(root=f"{home}/objects"),
                "vector_index": FaissHnswIndex(root=f"{home}/index")}
    if profile == "production":
        from .production import production_backends

        return {**common, **production_backends(env)}
    raise ConfigurationError(
        f"unknown profile {profile!r} (IMGSEARCH_PROFILE): choose one of {', '.join(PROFILES)}"
    )


# --- run configuration, checked before a run does any work --------------------------------
# Dagster checks run config against its schema (types, names) at launch, but the schema
# carries no pydantic constraints (k > 0, 0 < test_fraction < 1, num_candidates >= k): those
# run when each step builds its config object, i.e. after the steps before it have worked.
# ``run_config_errors`` builds every step's config object up front; ``raw_posts`` calls it
# first, so a full run with a bad value fails in seconds, naming the step and the field.


def config_class(node_definition) -> type[dg.Config] | None:
    """The ``dg.Config`` class a step's ``config`` parameter is annotated with, if any."""
    function = getattr(getattr(node_definition, "compute_fn", None), "decorated_fn", None)
    if function is None:
        return None
    parameter = inspect.signature(function).parameters.get("config")
    annotation = parameter.annotation if parameter is not None else None
    if inspect.isclass(annotation) and issubclass(annotation, dg.Config):
        return annotation
    return None


def _messages(error: pydantic.ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts)


def run_config_errors(job_def, run_config: dict | None) -> list[str]:
    """One line per invalid step config of the run (empty when everything is valid)."""
    ops = (run_config or {}).get("ops") or {}
    errors: list[str] = []
    built: dict[str, dg.Config] = {}
    for node in job_def.graph.nodes:
        cls = config_class(node.definition)
        if cls is None:
            continue
        values = (ops.get(node.name) or {}).get("config") or {}
        try:
            built[node.name] = cls(**values)
        except pydantic.ValidationError as error:
            errors.append(f"{node.name}: {_messages(error)}")
    report, truth = built.get("recall_report"), built.get("ground_truth")
    if report is not None and truth is not None and report.k > truth.k:
        errors.append(f"recall_report: k={report.k} exceeds ground_truth k={truth.k}")
    return errors


def check_run_config(job_def, run_config: dict | None) -> None:
    errors = run_config_errors(job_def, run_config)
    if errors:
        raise ConfigurationError("invalid run config: " + " | ".join(errors))
