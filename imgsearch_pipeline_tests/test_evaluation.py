"""Timing and scoring ANN answers against exact ones, without Dagster."""

import numpy as np
import pytest

from imgsearch_pipeline.core.evaluation import (
    exact_search,
    latency_sample,
    query_results,
    summarise,
    time_at,
    time_exact,
)
from imgsearch_pipeline.core.similarity import l2_normalise


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    corpus = l2_normalise(rng.standard_normal((200, 16)))
    queries = l2_normalise(rng.standard_normal((12, 16)))
    ids = [f"doc{i}" for i in range(len(corpus))]
    truth = [[ids[i] for i in exact_search(corpus, q, 10)] for q in queries]
    return corpus, queries, ids, truth


def test_exact_answers_score_one_and_half_answers_score_half():
    corpus, queries, ids, truth = _data()
    calls = []
    every = latency_sample(len(queries), None)
    exact_s = time_exact(corpus, queries, 10, every, warmup=2, on_query=lambda: calls.append(1))
    exact_answers = [[ids[i] for i in exact_search(corpus, q, 10)] for q in queries]
    ann_s = time_at(lambda q: None, queries, every, warmup=2, on_query=lambda: calls.append(1))
    exact = query_results(truth, exact_answers, ann_s, exact_s, 10)
    assert [r.recall for r in exact] == [1.0] * len(queries)
    assert len(calls) == 2 * len(queries)  # once per timed query and pass
    assert all(r.ann_s > 0 and r.exact_s > 0 for r in exact)

    half = query_results(truth, [t[:5] + ["elsewhere"] * 5 for t in truth], ann_s, exact_s, 10)
    report = summarise(half, 10)
    assert report["mean_recall"] == pytest.approx(0.5)
    assert report["queries_below_1"] == len(queries)
    assert report["ann_latency"]["p50_ms"] > 0 and report["exact_latency"]["p99_ms"] > 0


def test_latency_is_timed_on_one_sample_and_recall_on_every_query():
    corpus, queries, ids, truth = _data(1)
    calls = []
    answers = [t[:5] + ["elsewhere"] * 5 if i % 2 else t for i, t in enumerate(truth)]
    sample = latency_sample(len(queries), 4)
    exact_s = time_exact(corpus, queries, 10, sample, warmup=0, on_query=lambda: calls.append(1))
    searched = []
    ann_s = time_at(lambda q: searched.append(q), queries, sample, warmup=0,
                    on_query=lambda: calls.append(1))
    results = query_results(truth, answers, ann_s, exact_s, 10)
    timed = [i for i, r in enumerate(results) if r.exact_s is not None]
    assert len(timed) == 4 and timed[0] == 0 and timed[-1] == len(queries) - 1
    # the ANN side is timed on the very same queries, each searched once
    assert [i for i, r in enumerate(results) if r.ann_s is not None] == timed
    assert all((q == queries[i]).all() for q, i in zip(searched, timed, strict=True))
    assert len(calls) == 8
    assert [r.recall for r in results] == [0.5 if i % 2 else 1.0 for i in range(len(queries))]
    report = summarise(results, 10)
    assert report["exact_timed"] == report["ann_timed"] == 4
    assert report["queries"] == len(queries)
    assert report["mean_recall"] == pytest.approx(0.75)
    assert report["exact_latency"]["p50_ms"] > 0 and report["ann_latency"]["p50_ms"] > 0
