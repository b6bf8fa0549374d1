"""`make bench` runs from a fresh install: every benchmark module imports, and the machine
record (which needs threadpoolctl) is complete. The figures themselves are not tested."""

import importlib
import json
import pkgutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

import benchmarks
from benchmarks import growth
from benchmarks.common import machine
from imgsearch_pipeline.core.layout import model_slug
from imgsearch_pipeline.core.vectors import read_vectors
from imgsearch_pipeline.resources.profiles import resources_for
from imgsearch_pipeline.settings import Settings

from .pipeline import all_assets, all_checks


def test_every_benchmark_module_imports():
    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__)]
    assert {"run", "common", "embedding", "growth"} <= set(names)
    for name in names:
        importlib.import_module(f"benchmarks.{name}")


def test_machine_record_names_the_blas_kernels():
    info = machine()
    assert info["cores"] >= 1
    assert any(pool["user_api"] == "blas" for pool in info["threadpools"]), info["threadpools"]


def test_growth_inputs_carry_the_graph_from_the_index_on(tmp_path, monkeypatch):
    """The generated home is what the assets expect: the graph from search_index to the
    publish runs on it without embedding anything, over exactly the generated splits."""
    monkeypatch.setattr(growth, "INPUTS", tmp_path / "inputs")
    folder = growth.inputs(400, 40, 96, log=lambda message: None)

    def generated_again(message: str) -> None:
        raise AssertionError(f"inputs generated twice: {message}")

    assert growth.inputs(400, 40, 96, log=generated_again) == folder  # cached
    layout = growth.make_home(folder, tmp_path / "home")
    posts = pq.read_table(folder / "posts.parquet").to_pydict()
    split_of = dict(zip(posts["uuid"], posts["split"], strict=True))
    assert sorted(split_of.values()).count("test") == 40 and len(split_of) == 440
    ids, vectors = read_vectors(folder / "embeddings" / model_slug(growth.MODEL_ID))
    assert set(ids) == set(split_of) and vectors.shape == (440, 96)

    resources = resources_for(Settings.read({"IMGSEARCH_HOME": layout.root, "IMGSEARCH_DATASET": str(folder),
                               "IMGSEARCH_EMBEDDER": "color-texture"}))
    result = dg.materialize(all_assets() + all_checks(), resources=resources,
                            selection=dg.AssetSelection.assets(*growth.STEPS))
    assert result.success
    assert {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} == \
        set(growth.STEPS)
    report = json.loads(Path(layout.report("recall_report.json")).read_text())
    assert (report["indexed"], report["queries"], report["exact_timed"]) == (400, 40, 40)
    assert resources["vector_index"].live_version() == report["index_version"]


def test_others_cpu_share_counts_other_processes_not_the_benchmark_itself(monkeypatch):
    from benchmarks import common
    from imgsearch_pipeline.core import cpu_load

    # one owner: the benchmarks measure with the recall report's code
    assert common.OthersCpuShare is cpu_load.OthersCpuShare

    # /proc/stat's first line in clock ticks: user nice system idle iowait irq softirq steal
    # (guest columns after steal are already inside user and nice, so they are not added).
    busy, total = common.cpu_seconds("cpu  100 20 30 400 50 6 4 10 7 0", tick=100)
    assert (busy, total) == (pytest.approx(1.70), pytest.approx(6.20))  # idle, iowait not busy

    # Over 20 CPU seconds of the machine, 6 were busy; 3 of them were this process and its
    # waited-for children: the others kept 3 of 20 busy.
    assert common.others_share((10.0, 20.0), (16.0, 40.0), 2.0, 5.0) == pytest.approx(0.15)
    # This process alone kept the machine busy: nothing is "other".
    assert common.others_share((10.0, 20.0), (16.0, 40.0), 2.0, 8.0) == 0.0
    # Children counted when waited for can exceed the window's busy time: never below 0.
    assert common.others_share((10.0, 20.0), (11.0, 40.0), 0.0, 4.0) == 0.0
    assert common.others_share((10.0, 20.0), (10.0, 20.0), 0.0, 0.0) == 0.0  # no time passed

    # The watch reads the machine and this process once when made and once per share().
    machine = iter([(10.0, 20.0), (16.0, 40.0), (30.0, 60.0)])
    own = iter([2.0, 5.0, 5.0])
    monkeypatch.setattr(cpu_load, "_machine_cpu_seconds", lambda: next(machine))
    monkeypatch.setattr(cpu_load, "_own_cpu_seconds", lambda: next(own))
    watch = common.OthersCpuShare()
    assert watch.share() == pytest.approx(0.15)
    assert watch.share() == pytest.approx((20.0 - 3.0) / 40.0)  # still since it was made


def test_a_section_is_loaded_above_the_others_share(monkeypatch):
    from benchmarks import common

    limit = common.OTHERS_SHARE_LIMIT
    quiet, busy = common.load_now(limit), common.load_now(limit + 0.01)
    assert not quiet["loaded"] and busy["loaded"] and busy["others_cpu_share"] == limit + 0.01
    # Loaded before or during flags the section.
    assert common.section_load(quiet, busy)["loaded"] and common.section_load(busy, quiet)["loaded"]
    assert not common.section_load(quiet, quiet)["loaded"]


def test_report_shows_the_flag_beside_the_section():
    from benchmarks import common, report

    busy, quiet = common.load_now(0.9), common.load_now(0.0)
    results = {"ran_at": {"growth": {"load": common.section_load(quiet, busy)},
                          "indexes": {"load": common.section_load(quiet, quiet)}}}
    assert "LOADED MACHINE" in report._load_note(results, "growth")[0]
    assert "90% during it" in report._load_note(results, "growth")[0]
    assert report._load_note(results, "indexes")[0].startswith("Quiet machine")


def test_strict_run_refuses_a_section_on_a_loaded_machine(tmp_path, monkeypatch):
    from benchmarks import common, run

    monkeypatch.setattr(run, "quiet_check", lambda: common.load_now(1.0))
    monkeypatch.setattr(growth, "run", lambda *a: pytest.fail("a refused section ran"))
    with pytest.raises(SystemExit, match="growth"):
        run.main(["--only", "growth", "--strict", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert "growth" not in results and "growth" not in results["ran_at"]

    # Without --strict the section runs and its figures carry the flag.
    monkeypatch.setattr(growth, "run", lambda *a: {"rows": []})
    monkeypatch.setattr(run, "report_markdown", lambda *a: "")
    run.main(["--only", "growth", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["growth"] == {"rows": []} and results["ran_at"]["growth"]["load"]["loaded"]


def test_the_keyword_benchmark_times_three_modes_through_the_apis_path(tmp_path, capsys):
    from benchmarks import keywords

    results = keywords.main(["--captions", "800", "--queries", "60", "--hybrid", "--rounds", "2",
                             "--json", str(tmp_path / "keywords.json")])
    assert [e["engine"].split()[0] for e in results["engines"]] == ["sqlite-fts5", "tantivy"]
    modes = results["hybrid"]["modes"]
    assert set(modes) == {"semantic", "keyword", "hybrid"}
    assert all(m["query"]["p50_ms"] > 0 for m in modes.values())
    assert len(results["hybrid"]["round_ratios"]) == 2
    assert json.loads((tmp_path / "keywords.json").read_text())["hybrid"]["path"].startswith(
        "SearchService.search")
    assert "hybrid p50 / vector-only p50" in capsys.readouterr().out
