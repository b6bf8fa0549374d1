"""Run configuration: what each configurable op accepts, checked before a run does any work.

The ``dg.Config`` classes live here, next to ``OP_CONFIGS`` (op name -> class), so the assets
import them from this module and this module imports no asset. A test checks that every op
of the definitions whose compute function takes a ``config`` is in ``OP_CONFIGS`` with its
own class, so a new configurable asset cannot be left out of the check below.

Dagster checks run config against its schema (types, names) at launch, but the schema
carries no pydantic constraints (k > 0, 0 < test_fraction < 1, num_candidates >= k), and
asset jobs let config through for ops they do not hold. ``run_config_errors`` checks a run's
whole config against ``OP_CONFIGS``: an op name or field it does not know is refused by
name, every config object is built, and the one ``k`` rule is applied. ``raw_posts`` calls
it first, so a full run with a bad value fails in seconds, naming the op and the field.
"""

import os

import dagster as dg
import pydantic
from pydantic import Field, model_validator

from .core.depth import candidate_depths
from .core.es_queries import MAX_NUM_CANDIDATES
from .core.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE
from .core.knn import DEFAULT_BUFFER_BYTES
from .settings import ConfigurationError


class SplitConfig(dg.Config):
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Share of posts held out.")
    seed: int = Field(42, description="Seed of the split's hash: changing it re-deals.")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Larger images are rejected.")
    min_side: int = Field(DEFAULT_MIN_SIDE, gt=0,
                          description="Images with a side shorter than this are rejected.")


class ImageObjectsConfig(dg.Config):
    # No retry setting: the object store's client owns the retry policy (botocore's, for S3).
    upload_workers: int = Field(8, gt=0, description="Parallel uploads.")
    upload_batch: int = Field(64, gt=0, description="Objects per put_many call.")


class EmbeddingConfig(dg.Config):
    part_rows: int = Field(2048, gt=0, description="Rows per parquet part (the resume unit).")
    loader_workers: int = Field(max(2, os.cpu_count() or 2), gt=0,
                                description="Threads fetching and decoding images.")


class SearchIndexConfig(dg.Config):
    full_rebuild: bool = Field(
        False, description="Build the new version from every train embedding, even when the "
                           "live version plus what changed would do (a model, metric or index "
                           "setting change, or too many removals, rebuilds in full anyway).")


class GroundTruthConfig(dg.Config):
    # 10 = the report's k. Top-k selection is the cost beyond the matrix product and grows
    # with k (benchmarks/README.md). Raise it together with recall_report's k for recall@k
    # beyond 10. A change of k recomputes the whole table.
    k: int = Field(10, gt=0, description="Neighbours kept per query (reports use up to k).")
    buffer_mb: int = Field(
        DEFAULT_BUFFER_BYTES // 2**20, gt=0,
        description="Memory of a block of queries in MiB: their float32 scores against one "
                    "embedding part, their vectors and their running top-k. The train "
                    "vectors are read part by part, so memory is this plus one part whatever "
                    "the corpus size (more blocks, each a pass over the parts, when the "
                    "queries do not fit).")


class RecallReportConfig(dg.Config):
    k: int = Field(10, gt=0, description="Recall@k and the number of hits asked for.")
    target: float = Field(
        0.997, gt=0.0, le=1.0,
        description="Mean recall@k the version must reach: the search depth chosen is the "
                    "smallest that reaches it, and the recall gate publishes only if one does.")
    max_num_candidates: int = Field(
        1024, gt=0, le=MAX_NUM_CANDIDATES,
        description="Cap of the search-depth sweep (HNSW efSearch / ES num_candidates).")
    num_candidates: int | None = Field(
        None, gt=0, description="Evaluate at this depth instead of sweeping for the smallest "
                                "one that reaches the target.")
    max_queries: int | None = Field(None, gt=0, description="Evaluate only the first N queries.")
    latency_sample: int | None = Field(
        200, gt=0,
        description="Time the ANN search of each swept depth one query at a time on this many "
                    "queries spread evenly (all when unset); recall is counted on every query.")
    timing_budget_s: float = Field(
        10.0, gt=0,
        description="Time the ANN and the exact search one query at a time, interleaved, on "
                    "queries in a shuffled order until this many seconds have passed (at least "
                    "100 queries, at most all). Each exact search scans the whole train split.")

    @model_validator(mode="after")
    def _enough_candidates(self) -> "RecallReportConfig":
        if self.num_candidates is not None and self.num_candidates < self.k:
            raise ValueError(f"num_candidates={self.num_candidates} must be >= k={self.k}")
        if self.max_num_candidates < self.k:
            raise ValueError(f"max_num_candidates={self.max_num_candidates} must be >= k={self.k}")
        return self

    def depths(self) -> list[int]:
        """The depths the evaluation tries, shallowest first."""
        if self.num_candidates is not None:
            return [self.num_candidates]
        return candidate_depths(self.k, self.max_num_candidates)


# Op name -> its config class, in pipeline order (error messages list them so).
OP_CONFIGS: dict[str, type[dg.Config]] = {
    "posts": SplitConfig,
    "image_objects": ImageObjectsConfig,
    "image_embeddings": EmbeddingConfig,
    "search_index": SearchIndexConfig,
    "ground_truth": GroundTruthConfig,
    "recall_report": RecallReportConfig,
}


def k_error(report_k: int, truth_k: int) -> str | None:
    """The one ``k`` rule: the report cannot ask for more neighbours than the truth keeps."""
    if report_k > truth_k:
        return f"recall_report: k={report_k} exceeds ground_truth k={truth_k}"
    return None


def _messages(error: pydantic.ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts)


def run_config_errors(run_config: dict | None) -> list[str]:
    """One line per problem in the run's op config (empty when everything is valid)."""
    ops = (run_config or {}).get("ops") or {}
    errors: list[str] = []
    built: dict[str, dg.Config] = {}
    for name in ops:
        if name not in OP_CONFIGS:
            errors.append(f"unknown op {name!r}: configurable ops are {', '.join(OP_CONFIGS)}")
    for name, cls in OP_CONFIGS.items():
        values = (ops.get(name) or {}).get("config") or {}
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            errors.append(f"{name}: unknown field(s) {', '.join(unknown)}; "
                          f"known: {', '.join(cls.model_fields)}")
            continue
        try:
            built[name] = cls(**values)
        except pydantic.ValidationError as error:
            errors.append(f"{name}: {_messages(error)}")
    report, truth = built.get("recall_report"), built.get("ground_truth")
    if report is not None and truth is not None and (problem := k_error(report.k, truth.k)):
        errors.append(problem)
    return errors


def check_run_config(run_config: dict | None) -> None:
    errors = run_config_errors(run_config)
    if errors:
        raise ConfigurationError("invalid run config: " + " | ".join(errors))


def check_in_first_step(context: dg.AssetExecutionContext, upstream: str | None) -> None:
    """Check the run config in the run's first step: ``raw_posts`` in a full run, and
    ``image_embeddings`` in the re-index (whose ``upstream``, ``posts``, is not in the run)."""
    if upstream is not None and context.job_def.graph.has_node_named(upstream):
        return
    try:
        check_run_config(context.run_config)
    except ConfigurationError as error:
        raise dg.Failure(str(error)) from None
