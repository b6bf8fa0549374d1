"""Helpers to materialise the asset graph in-process on test resources."""

from pathlib import Path

import dagster as dg

from imgsearch_pipeline.definitions import defs
from imgsearch_pipeline.resources.profiles import resources_for
from imgsearch_pipeline.settings import Settings


def pipeline_resources(home: Path, dataset: Path, embedder: str = "color-texture",
                   model: str | None = None, **overrides) -> dict:
    env = {"IMGSEARCH_HOME": str(home), "IMGSEARCH_DATASET": str(dataset),
           "IMGSEARCH_EMBEDDER": embedder}
    if model:
        env["IMGSEARCH_MODEL"] = model
    return {**resources_for(Settings.read(env)), **overrides}


def all_assets() -> list:
    return list(defs.assets)


def all_checks() -> list:
    return list(defs.asset_checks)


def materialize_all(resources: dict, run_config: dict | None = None,
                    instance: dg.DagsterInstance | None = None,
                    raise_on_error: bool = True, tags: dict | None = None,
                    ) -> dg.ExecuteInProcessResult:
    """One run of every asset and check."""
    return dg.materialize(
        all_assets() + all_checks(),
        resources=resources,
        run_config=run_config or {},
        instance=instance,
        raise_on_error=raise_on_error,
        tags=tags,
    )
