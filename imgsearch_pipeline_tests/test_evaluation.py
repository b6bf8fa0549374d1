"""Timing and scoring ANN answers against exact ones, without Dagster."""

import numpy as np
import pytest

from imgsearch_pipeline.core.evaluation import (
    evaluate_queries,
    exact_search,
    summarise,
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
    exact_s = time_exact(corpus, queries, 10, warmup=2, on_query=lambda: calls.append(1))
    exact = evaluate_queries(queries, truth,
                             lambda q: [ids[i] for i in exact_search(corpus, q, 10)],
                             exact_s, 10, warmup=2, on_query=lambda: calls.append(1))
    assert [r.recall for r in exact] == [1.0] * len(queries)
    assert len(calls) == 2 * len(queries)  # once per query and pass
    assert all(r.ann_s > 0 and r.exact_s > 0 for r in exact)

    answers = iter([t[:5] + ["elsewhere"] * 5 for t in truth])
    half = evaluate_queries(queries, truth, lambda q: next(answers),
                            time_exact(corpus, queries, 10, warmup=0), 10, warmup=0)
    report = summarise(half, 10)
    assert report["mean_recall"] == pytest.approx(0.5)
    assert report["queries_below_1"] == len(queries)
    assert report["ann_latency"]["p50_ms"] > 0 and report["exact_latency"]["p99_ms"] > 0


def test_exact_latency_is_timed_on_a_sample_and_recall_on_every_query():
    corpus, queries, ids, truth = _data(1)
    calls = []
    answers = iter([t[:5] + ["elsewhere"] * 5 if i % 2 else t for i, t in enumerate(truth)])
    exact_s = time_exact(corpus, queries, 10, sample=4, warmup=0,
                         on_query=lambda: calls.append(1))
    results = evaluate_queries(queries, truth, lambda q: next(answers), exact_s, 10, warmup=0,
                               on_query=lambda: calls.append(1))
    timed = [i for i, r in enumerate(results) if r.exact_s is not None]
    assert len(timed) == 4 and timed[0] == 0 and timed[-1] == len(queries) - 1
    assert len(calls) == len(queries) + 4
    assert all(r.ann_s > 0 for r in results)
    assert [r.recall for r in results] == [0.5 if i % 2 else 1.0 for i in range(len(queries))]
    report = summarise(results, 10)
    assert report["exact_timed"] == 4 and report["queries"] == len(queries)
    assert report["exact_latency"]["p50_ms"] > 0
