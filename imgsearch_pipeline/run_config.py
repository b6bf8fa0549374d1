"""Run configuration, checked before a run does any work.

Dagster checks run config against its schema (types, names) at launch, but the schema
carries no pydantic constraints (k > 0, 0 < test_fraction < 1, num_candidates >= k), and
asset jobs let config through for ops they do not hold. ``run_config_errors`` checks a run's
whole config against ``op_configs()``, the explicit map from op name to config class: an op
name or field it does not know is refused by name, every config object is built, and the
one ``k`` rule is applied. ``raw_posts`` calls it first, so a full run with a bad value
fails in seconds, naming the op and the field.
"""

import dagster as dg
import pydantic

from .resources.environment import ConfigurationError


def op_configs() -> dict[str, type[dg.Config]]:
    """Op name -> its ``dg.Config`` class (imported here: the assets import this module)."""
    from .assets.embeddings import EmbeddingConfig
    from .assets.evaluation import GroundTruthConfig, RecallReportConfig
    from .assets.images import ImageObjectsConfig
    from .assets.posts import SplitConfig

    return {
        "posts": SplitConfig,
        "image_objects": ImageObjectsConfig,
        "image_embeddings": EmbeddingConfig,
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
    configs = op_configs()
    ops = (run_config or {}).get("ops") or {}
    errors: list[str] = []
    built: dict[str, dg.Config] = {}
    for name in ops:
        if name not in configs:
            errors.append(f"unknown op {name!r}: configurable ops are {', '.join(configs)}")
    for name, cls in configs.items():
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
