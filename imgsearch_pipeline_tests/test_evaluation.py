"""Timing and scoring ANN answers against exact ones, without Dagster.

Expected neighbours come from a plain numpy brute force (every score, argsort), never
from the functions under test; timings come from fake clocks, so each one is known."""

import numpy as np
import pytest

from imgsearch_pipeline.core.evaluation import (
    evaluation_queries,
    exact_search,
    latency_sample,
    query_results,
    search_pass,
    summarise,
    time_interleaved,
)
from imgsearch_pipeline.core.similarity import l2_normalise


def _brute_force(corpus: np.ndarray, queries: np.ndarray, ids: list[str], k: int):
    """Each query's k best ids by dot product, best first: score all, sort all."""
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    return [[ids[i] for i in np.argsort(-row, kind="stable")[:k]] for row in scores]


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    corpus = l2_normalise(rng.standard_normal((200, 16)))
    queries = l2_normalise(rng.standard_normal((12, 16)))
    ids = [f"doc{i}" for i in range(len(corpus))]
    return corpus, queries, ids, _brute_force(corpus, queries, ids, 10)


class Clock:
    """A clock that moves only when a fake search says it took time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _position(queries: np.ndarray, vector: np.ndarray) -> int:
    return int(np.flatnonzero((queries == vector).all(axis=1))[0])


def test_exact_answers_score_one_and_half_answers_score_half():
    corpus, queries, ids, truth = _data()
    calls = []
    every = latency_sample(len(queries), None)
    exact_answers = [[ids[i] for i in exact_search(corpus, q, 10)] for q in queries]
    assert exact_answers == truth  # the same ten, in the same order
    clock, searched = Clock(), []

    def ann(vector):  # query i "takes" (i + 1) ms
        searched.append(("ann", _position(queries, vector)))
        clock.now += (searched[-1][1] + 1) / 1000

    def exact(vector):  # every exact search "takes" 1 s
        searched.append(("exact", _position(queries, vector)))
        clock.now += 1.0

    ann_s, exact_s = time_interleaved(ann, exact, queries, every, warmup=2,
                                      on_query=lambda: calls.append(1), clock=clock)
    results = query_results(truth, exact_answers, ann_s, exact_s, 10)
    assert [r.recall for r in results] == [1.0] * len(queries)
    assert len(calls) == len(queries)  # once per timed query
    assert all(r.ann_s > 0 and r.exact_s > 0 for r in results)
    # two warm-up queries searched both ways untimed; then query by query, the side that
    # goes first alternating
    timed = [(side, i) for i in range(len(queries))
             for side in (("ann", "exact") if i % 2 == 0 else ("exact", "ann"))]
    assert searched == [("ann", 0), ("exact", 0), ("ann", 1), ("exact", 1), *timed]
    assert ann_s == pytest.approx([(i + 1) / 1000 for i in range(len(queries))])
    assert exact_s == pytest.approx([1.0] * len(queries))  # each its own query's time

    half = query_results(truth, [t[:5] + ["elsewhere"] * 5 for t in truth], ann_s, exact_s, 10)
    report = summarise(half, 10)
    assert report["mean_recall"] == pytest.approx(0.5)
    assert report["queries_below_1"] == len(queries)
    assert report["ann_latency"]["p50_ms"] > 0 and report["exact_latency"]["p99_ms"] > 0
    assert report["ann_latency"]["p50_ms"] == pytest.approx(6.5)  # median of 1..12 ms
    assert report["exact_latency"] == pytest.approx(
        {"mean_ms": 1000.0, "p50_ms": 1000.0, "p95_ms": 1000.0, "p99_ms": 1000.0})
    assert report["speedup_p50"] == pytest.approx(1000 / 6.5)


def test_latency_is_timed_on_one_sample_and_recall_on_every_query():
    corpus, queries, ids, truth = _data(1)
    calls = []
    answers = [t[:5] + ["elsewhere"] * 5 if i % 2 else t for i, t in enumerate(truth)]
    sample = latency_sample(len(queries), 4)
    assert sample.tolist() == [0, 4, 7, 11]  # 0 to 11 in thirds, rounded
    clock, searched = Clock(), []

    def ann(vector):
        searched.append(vector)
        clock.now += (_position(queries, vector) + 1) / 1000

    def exact(vector):
        clock.now += 1.0

    ann_s, exact_s = time_interleaved(ann, exact, queries, sample, warmup=0,
                                      on_query=lambda: calls.append(1), clock=clock)
    results = query_results(truth, answers, ann_s, exact_s, 10)
    timed = [i for i, r in enumerate(results) if r.exact_s is not None]
    assert len(timed) == 4 and timed[0] == 0 and timed[-1] == len(queries) - 1
    # the ANN side is timed on the very same queries, each searched once
    assert [i for i, r in enumerate(results) if r.ann_s is not None] == timed
    assert all((q == queries[i]).all() for q, i in zip(searched, timed, strict=True))
    assert len(calls) == 4
    assert [r.recall for r in results] == [0.5 if i % 2 else 1.0 for i in range(len(queries))]
    assert exact_s == [pytest.approx(1.0) if i in (0, 4, 7, 11) else None
                       for i in range(len(queries))]
    assert ann_s == pytest.approx([(i + 1) / 1000 if i in (0, 4, 7, 11) else None
                                   for i in range(len(queries))])
    report = summarise(results, 10)
    assert report["exact_timed"] == report["ann_timed"] == 4
    assert report["queries"] == len(queries)
    assert report["mean_recall"] == pytest.approx(0.75)
    assert report["exact_latency"]["p50_ms"] > 0 and report["ann_latency"]["p50_ms"] > 0
    assert report["ann_latency"]["mean_ms"] == pytest.approx((1 + 5 + 8 + 12) / 4)


def test_a_search_pass_answers_every_query_in_batches_and_times_the_sample():
    queries = np.arange(10, dtype=np.float32).reshape(5, 2)
    batches, clock = [], Clock()

    def many(batch):
        batches.append(len(batch))
        return [[f"hit{int(row[0])}"] for row in batch]

    def one(vector):
        clock.now += 0.25

    counted = []
    answers, seconds = search_pass(many, one, queries, np.array([1, 3]), batch=2,
                                   on_searched=counted.append, clock=clock)
    assert batches == [2, 2, 1]
    assert answers == [["hit0"], ["hit2"], ["hit4"], ["hit6"], ["hit8"]]
    # time_at's default warm-up searches the sample once more before timing it
    assert seconds == [None, pytest.approx(0.25), None, pytest.approx(0.25), None]
    assert counted == [2, 2, 1, 1, 1]


def test_the_ground_truth_table_reads_back_as_the_evaluation_queries():
    truth = {"query": ["q1", "q2", "q3"], "neighbours": [["a", "b", "c"], ["d", "e", "f"], []],
             "scores": [[0.9, 0.8, 0.7], [0.6, 0.5, 0.4], []]}
    queries = evaluation_queries(truth, k=2, max_queries=2)
    assert queries.ids == ["q1", "q2"]
    assert queries.expected == [["a", "b"], ["d", "e"]]
    assert evaluation_queries(truth, k=10).expected == truth["neighbours"]
    with pytest.raises(ValueError, match="materialize ground_truth again"):
        evaluation_queries({"query": []}, k=10)


def test_a_timing_budget_stops_after_the_minimum_and_any_prefix_is_a_sample():
    from imgsearch_pipeline.core.evaluation import timing_order

    corpus, queries, ids, truth = _data(1)
    order = timing_order(len(queries))
    assert sorted(order.tolist()) == list(range(len(queries)))  # every query, once
    assert order.tolist() == timing_order(len(queries)).tolist()  # the same order each run
    assert order.tolist() != list(range(len(queries)))  # shuffled: a prefix spans the set
    clock = Clock()

    def ann(vector):
        clock.now += 0.5

    def exact(vector):
        clock.now += 1.0

    # 1.5 s a query: a 4 s budget is spent after 3 queries, but at least 5 are timed.
    ann_s, exact_s = time_interleaved(ann, exact, queries, order, warmup=0, clock=clock,
                                      budget_s=4.0, minimum=5)
    timed = [i for i, s in enumerate(exact_s) if s is not None]
    assert sorted(timed) == sorted(order[:5].tolist())
    assert [i for i, s in enumerate(ann_s) if s is not None] == timed
    # A budget larger than the whole set: every query is timed.
    ann_s, _ = time_interleaved(ann, exact, queries, order, warmup=0, clock=clock,
                                budget_s=1e6, minimum=5)
    assert None not in ann_s
