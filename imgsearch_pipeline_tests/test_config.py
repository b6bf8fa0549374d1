"""Bad settings are refused at launch with a message that names the setting."""

import inspect
import os
import subprocess
import sys

import dagster as dg
import pydantic
import pytest

from imgsearch_pipeline.resources.profiles import resources_for
from imgsearch_pipeline.run_config import (
    OP_CONFIGS,
    RecallReportConfig,
    SplitConfig,
    run_config_errors,
)
from imgsearch_pipeline.settings import ConfigurationError, Settings

from .pipeline import materialize_all, pipeline_resources


def _ops(**configs) -> dict:
    return {"ops": {name: {"config": values} for name, values in configs.items()}}


@pytest.mark.parametrize(("run_config", "message"), [
    (_ops(recall_report={"k": 0}), "recall_report: k: Input should be greater than 0"),
    (_ops(recall_report={"k": -3}), "recall_report: k: Input should be greater than 0"),
    (_ops(recall_report={"k": 20, "num_candidates": 10}),
     "recall_report: num_candidates=10 must be >= k=20"),
    (_ops(recall_report={"target": 1.5}),
     "recall_report: target: Input should be less than or equal to 1"),
    (_ops(recall_report={"k": 10, "max_num_candidates": 5}),
     "recall_report: max_num_candidates=5 must be >= k=10"),
    (_ops(recall_report={"max_num_candidates": 20000}),
     "recall_report: max_num_candidates: Input should be less than or equal to 10000"),
    (_ops(posts={"test_fraction": 0.0}), "posts: test_fraction: Input should be greater than 0"),
    (_ops(posts={"test_fraction": 1.0}), "posts: test_fraction: Input should be less than 1"),
    (_ops(posts={"test_fraction": 1.5}), "posts: test_fraction: Input should be less than 1"),
    (_ops(posts={"max_pixels": 0}), "posts: max_pixels: Input should be greater than 0"),
    (_ops(ground_truth={"k": 5}, recall_report={"k": 10}),
     "recall_report: k=10 exceeds ground_truth k=5"),
    (_ops(image_objects={"upload_workers": 0}),
     "image_objects: upload_workers: Input should be greater than 0"),
    (_ops(recall_reprot={"k": 5}), "unknown op 'recall_reprot': configurable ops are posts,"),
    (_ops(raw_posts={"x": 1}), "unknown op 'raw_posts'"),
    (_ops(recall_report={"kk": 5}), "recall_report: unknown field(s) kk; known: k, target"),
    (_ops(image_embeddings={"part_rows": 0}),
     "image_embeddings: part_rows: Input should be greater than 0"),
    (_ops(recall_report={"target": "high"}),
     "recall_report: target: Input should be a valid number"),
    (_ops(recall_report_recall_meets_target={"target": 0.9}),
     "unknown op 'recall_report_recall_meets_target'"),
])
def test_bad_run_config_is_named(run_config, message):
    errors = run_config_errors(run_config)
    assert any(message in e for e in errors), errors


def test_good_and_default_run_config_pass():
    assert run_config_errors({}) == []
    assert run_config_errors(_ops(recall_report={"k": 5, "num_candidates": 5},
                                       posts={"test_fraction": 0.2})) == []


def test_every_configurable_op_is_checked_with_its_own_config_class():
    """An asset (or check) whose compute function takes a ``config`` is in OP_CONFIGS with
    that very class, and OP_CONFIGS names no other op: none escapes run_config_errors."""
    from imgsearch_pipeline.definitions import defs

    taking_config = {}
    for definition in [*defs.assets, *defs.asset_checks]:
        node = definition.node_def
        parameter = inspect.signature(node.compute_fn.decorated_fn).parameters.get("config")
        if parameter is not None:
            taking_config[node.name] = parameter.annotation
    assert taking_config == OP_CONFIGS
    # and each is refused by name when a field is wrong, not let through
    for name in taking_config:
        assert any(e.startswith(f"{name}: unknown field(s) nope")
                   for e in run_config_errors(_ops(**{name: {"nope": 1}})))


def test_config_classes_validate_on_their_own():
    with pytest.raises(pydantic.ValidationError, match="num_candidates=3 must be >= k=4"):
        RecallReportConfig(k=4, num_candidates=3)
    with pytest.raises(pydantic.ValidationError, match="less than 1"):
        SplitConfig(test_fraction=1.0)


def test_a_full_run_with_bad_config_stops_before_any_work(sample_dataset, tmp_path):
    home = tmp_path / "var"
    result = materialize_all(pipeline_resources(home, sample_dataset),
                             run_config=_ops(recall_report={"k": 10, "num_candidates": 2}),
                             raise_on_error=False)
    assert not result.success
    failures = result.get_step_failure_events()
    assert [f.step_key for f in failures] == ["raw_posts"]
    message = failures[0].step_failure_data.error.message
    assert "invalid run config" in message and "num_candidates=2 must be >= k=10" in message
    assert not (home / "tables" / "posts.parquet").exists()
    assert not (home / "objects").exists()


def test_a_missing_dataset_fails_raw_posts_with_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "dataset"
    result = materialize_all(pipeline_resources(tmp_path / "var", missing), raise_on_error=False)
    assert not result.success
    failures = result.get_step_failure_events()
    assert [f.step_key for f in failures] == ["raw_posts"]
    assert str(missing) in failures[0].step_failure_data.error.message
    assert "does not exist" in failures[0].step_failure_data.error.message


def test_an_empty_dataset_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = materialize_all(pipeline_resources(tmp_path / "var", tmp_path / "empty"),
                             raise_on_error=False)
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "no readable parquet shard at" in message and str(tmp_path / "empty") in message


@pytest.mark.parametrize(("env", "message"), [
    ({"IMGSEARCH_EMBEDDER": "clip"},
     "unknown embedder 'clip' (IMGSEARCH_EMBEDDER): choose one of siglip, sentence-transformers, "
     "color-texture"),
    ({"IMGSEARCH_PROFILE": "cloud"},
     "unknown profile 'cloud' (IMGSEARCH_PROFILE): choose one of embedded, production"),
    ({"IMGSEARCH_DATASET": " "}, "IMGSEARCH_HOME and IMGSEARCH_DATASET must not be empty"),
])
def test_bad_environment_is_refused(env, message):
    with pytest.raises(ConfigurationError) as caught:
        resources_for(Settings.read({"IMGSEARCH_EMBEDDER": "color-texture", **env}))
    assert message in str(caught.value)


def test_definitions_refuse_to_load_with_an_unknown_embedder(tmp_path):
    env = {**os.environ, "IMGSEARCH_EMBEDDER": "clip", "IMGSEARCH_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", "import imgsearch_pipeline.definitions"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "ConfigurationError: unknown embedder 'clip' (IMGSEARCH_EMBEDDER)" in done.stderr


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("IMGSEARCH_SHARD_SENSOR_INTERVAL_S", "abc", "Input should be a valid integer"),
    ("IMGSEARCH_SHARD_SENSOR_INTERVAL_S", "0", "Input should be greater than or equal to 1"),
    ("IMGSEARCH_API_INFERENCE_THREADS", "many", "Input should be a valid integer"),
    ("IMGSEARCH_API_LIVE_CHECK_S", "-1", "Input should be greater than 0"),
])
def test_a_bad_environment_variable_is_one_line_naming_it(variable, value, allowed, tmp_path):
    env = {**os.environ, variable: value, "IMGSEARCH_EMBEDDER": "color-texture",
           "IMGSEARCH_HOME": str(tmp_path)}
    code = ("from imgsearch_pipeline.settings import Settings; Settings.read()"
            if variable.startswith("IMGSEARCH_API_") else "import imgsearch_pipeline.definitions")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("imgsearch_pipeline.settings.ConfigurationError: ")
    assert f"{variable}={value!r} is not allowed" in last and allowed in last


def test_the_reindex_job_checks_its_run_config_in_its_first_step(sample_dataset, tmp_path):
    from .pipeline import all_assets
    from .test_ops_runs import job

    resources = pipeline_resources(tmp_path / "var", sample_dataset)
    dg.materialize(all_assets(), selection=["raw_posts", "posts"], resources=resources)
    result = job("reindex", resources).execute_in_process(
        run_config=_ops(recall_report={"k": 0}), raise_on_error=False)
    failures = result.get_step_failure_events()
    assert [f.step_key for f in failures] == ["image_embeddings"]  # before any embedding
    assert "recall_report: k: Input should be greater than 0" in \
        failures[0].step_failure_data.error.message
    assert not (tmp_path / "var" / "tables" / "embeddings").exists()
