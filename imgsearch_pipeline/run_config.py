"""Run configuration, checked before a run does any work.

Dagster checks run config against its schema (types, names) at launch, but the schema
carries no pydantic constraints (k > 0, 0 < test_fraction < 1, num_candidates >= k): those
run when each step builds its config object, i.e. after the steps before it have worked.
``run_config_errors`` builds every step's config object up front; ``raw_posts`` calls it
first, so a full run with a bad value fails in seconds, naming the step and the field.
"""

import inspect

import dagster as dg
import pydantic

from .resources.environment import ConfigurationError


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
