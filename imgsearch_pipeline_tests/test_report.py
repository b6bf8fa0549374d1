"""The recall report from a depth sweep to its files, on a fake index, without Dagster."""

import io
import json
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.core.depth import evaluate_depths
from imgsearch_pipeline.core.evaluation import EvaluationQueries, QueryResult, query_results
from imgsearch_pipeline.core.report import (
    RecallReport,
    per_query_table,
    report_documents,
    report_markdown,
)

# recall_report.json's keys, in order, as the API, the docs and benchmarks/growth.py read it.
JSON_KEYS = ["k", "queries", "mean_recall", "min_recall", "queries_below_1", "ann_latency",
             "exact_latency", "ann_timed", "exact_timed", "speedup_p50", "num_candidates",
             "target", "depth_sweep", "depth_verdict", "indexed", "ground_truth_corpus",
             "index_version", "index_params", "model_id", "timing_load"]

QUERIES = np.arange(12, dtype=np.float32).reshape(6, 2)
TRUTH = [[f"q{i}-{j}" for j in range(10)] for i in range(6)]


def fake_index(full_from: int, searched: list[tuple[int, int]]):
    """A version that finds every neighbour from depth ``full_from`` on, half below it."""
    def many(batch: np.ndarray, depth: int) -> list[list[str]]:
        rows = [int(vector[0]) // 2 for vector in batch]
        searched.extend((row, depth) for row in rows)
        return [TRUTH[r] if depth >= full_from else TRUTH[r][:5] + ["x"] * 5 for r in rows]

    def one(vector: np.ndarray, depth: int) -> None:
        return None

    return many, one


def test_the_sweep_keeps_the_chosen_depths_pass():
    searched: list[tuple[int, int]] = []
    many, one = fake_index(32, searched)
    counted: list[int] = []
    evaluation = evaluate_depths(many, one, QUERIES, TRUTH, np.array([0, 5]),
                                 [10, 16, 32, 64, 96], 10, 0.99, on_searched=counted.append)
    sweep = evaluation.sweep
    assert sweep.chosen == 32
    assert [p.depth for p in sweep.points] == [10, 16, 32, 64]  # one past the choice
    assert [p.mean_recall for p in sweep.points] == [0.5, 0.5, 1.0, 1.0]
    assert evaluation.answers == TRUTH  # the pass at 32, not the last one measured (64)
    assert [s is not None for s in evaluation.ann_s] == [True, False, False, False, False, True]
    # every query searched once per depth for recall; the sample timed once more each
    assert sorted(searched) == sorted((row, d) for d in (10, 16, 32, 64) for row in range(6))
    assert sum(counted) == 4 * (6 + 2)


def test_without_a_depth_reaching_the_target_the_best_pass_is_kept():
    many, one = fake_index(32, [])
    evaluation = evaluate_depths(many, one, QUERIES, TRUTH, np.array([0]), [10, 16], 10, 0.99)
    assert not evaluation.sweep.reached and evaluation.sweep.best.depth == 10
    assert evaluation.answers == [t[:5] + ["x"] * 5 for t in TRUTH]


LOAD = {"load_1min": 3.5, "cores": 16, "others_cpu_share": 0.42, "loaded": True}


def _report(results: list[QueryResult], load: dict | None = None
            ) -> tuple[RecallReport, object]:
    many, one = fake_index(16, [])
    evaluation = evaluate_depths(many, one, QUERIES, TRUTH, np.array([0, 5]), [10, 16, 32],
                                 10, 0.9)
    report = RecallReport.of(results, evaluation.sweep, indexed=500, ground_truth_corpus=500,
                             index_version="v7", index_params={"m": 32}, model_id="m",
                             timing_load=LOAD if load is None else load)
    return report, evaluation.sweep


RESULTS = [QueryResult(1.0, 0.001, 0.004, ["a"]), QueryResult(0.5, None, None, ["b"]),
           QueryResult(0.8, 0.003, 0.008, ["c"])]


def test_the_report_value_is_the_json_and_the_figures():
    report, sweep = _report(RESULTS)
    assert list(report.as_dict()) == JSON_KEYS
    assert (report.k, report.queries, report.num_candidates, report.target) == (10, 3, 16, 0.9)
    assert report.mean_recall == pytest.approx((1.0 + 0.5 + 0.8) / 3)
    assert (report.min_recall, report.queries_below_1) == (0.5, 2)
    assert (report.ann_timed, report.exact_timed) == (2, 2)
    assert report.ann_latency["p50_ms"] == pytest.approx(2.0)  # median of 1 and 3 ms
    assert report.exact_latency["p50_ms"] == pytest.approx(6.0)
    assert report.speedup_p50 == pytest.approx(3.0)
    assert report.depth_sweep == sweep.as_dict() and report.depth_verdict == sweep.verdict()
    assert (report.indexed, report.ground_truth_corpus, report.index_version,
            report.index_params, report.model_id) == (500, 500, "v7", {"m": 32}, "m")
    assert pickle.loads(pickle.dumps(report)) == report  # how the IO manager hands it on
    figures = report.figures()
    assert figures["mean_recall"] == round(report.mean_recall, 4)
    assert figures["speedup_p50"] == 3.0 and figures["num_candidates"] == 16
    assert figures["search_depth"] == sweep.verdict() and figures["index_version"] == "v7"
    assert {"min_recall", "ann_p50_ms", "ann_p95_ms", "exact_p50_ms", "exact_p95_ms",
            "queries", "indexed", "k", "target", "exact_timed"} <= set(figures)


def test_the_report_files_and_the_per_query_table():
    report, sweep = _report(RESULTS)
    queries = EvaluationQueries(["q1", "q2", "q3"], [["a"], ["b"], ["z"]])
    documents = report_documents(report, queries, RESULTS, sweep)
    assert list(documents.files) == ["recall_per_query.parquet", "recall_report.json",
                                     "latency.png", "search_depth.png", "recall_report.md"]
    stored = pq.read_table(io.BytesIO(documents.files["recall_per_query.parquet"]))
    assert stored.equals(per_query_table(queries.ids, queries.expected, RESULTS))
    assert json.loads(documents.files["recall_report.json"]) == report.as_dict()
    assert documents.files["latency.png"].startswith(b"\x89PNG")
    assert documents.files["search_depth.png"].startswith(b"\x89PNG")
    markdown = documents.files["recall_report.md"].decode()
    assert markdown.startswith("# Recall report") and "| **16** |" in markdown
    assert "![latency](latency.png)" in markdown and "![search depth](search_depth.png)" in markdown
    # the UI gets the pictures inline: it cannot follow the files' relative links
    assert documents.ui_markdown.count("data:image/png;base64,") == 2

    table = per_query_table(["q1", "q2", "q3"], [["a"], ["b"], ["z"]], RESULTS)
    assert table.column("ann_ms").to_pylist() == [1.0, None, 3.0]
    assert table.column("exact_ms").to_pylist() == [4.0, None, 8.0]
    assert table.column("recall").to_pylist() == [1.0, 0.5, 0.8]
    assert table.column("ann").to_pylist() == [["a"], ["b"], ["c"]]
    assert table.column("exact").to_pylist() == [["a"], ["b"], ["z"]]


def test_a_report_of_no_queries_has_no_pictures():
    report, sweep = _report([])
    documents = report_documents(report, EvaluationQueries([], []), [], sweep)
    assert list(documents.files) == ["recall_per_query.parquet", "recall_report.json",
                                     "recall_report.md"]
    assert "![search depth]" not in documents.files["recall_report.md"].decode()
    assert report.queries == 0 and np.isnan(report.mean_recall)


def test_query_results_feed_the_report_in_order():
    results = query_results([["a", "b"], ["c", "d"]], [["a", "x"], ["c", "d"]],
                            [0.001, None], [0.002, None], 2)
    assert [r.recall for r in results] == [0.5, 1.0]
    report, _ = _report(results)
    assert report.mean_recall == pytest.approx(0.75)


def test_the_report_states_the_load_its_latencies_were_timed_under():
    report, _ = _report(RESULTS)
    assert report.timing_load == LOAD and report.as_dict()["timing_load"] == LOAD
    markdown = " ".join(report_markdown(report).split())  # the prose wraps
    assert "interleaved query by query" in markdown
    assert "other processes used 42.0% of the CPU time of 16 cores" in markdown
    assert "1-minute load 3.50" in markdown and "LOADED" in markdown
    figures = report.figures()
    assert figures["others_cpu_share"] == 0.42 and "LOADED" in figures["timed_under"]
    quiet, _ = _report(RESULTS, {**LOAD, "others_cpu_share": 0.01, "loaded": False})
    assert "(quiet)" in report_markdown(quiet) and "LOADED" not in report_markdown(quiet)
    unmeasured, _ = _report(RESULTS, {})
    assert unmeasured.timed_under() == "load not measured"
