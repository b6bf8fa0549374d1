"""recall@k at its edges: short answers, no answers, k beyond the exact list, duplicates."""

import pytest

from imgsearch_pipeline.core.recall import latency_summary, recall_at_k

EXACT = ["a", "b", "c", "d", "e"]


def test_perfect_and_partial_recall():
    assert recall_at_k(EXACT, EXACT, 5) == 1.0
    assert recall_at_k(EXACT, ["a", "x", "c", "y", "z"], 5) == pytest.approx(2 / 5)
    assert recall_at_k(EXACT, list(reversed(EXACT)), 5) == 1.0  # order inside top-k is free


def test_fewer_than_k_results():
    assert recall_at_k(EXACT, ["a", "b"], 5) == pytest.approx(2 / 5)


def test_no_results():
    assert recall_at_k(EXACT, [], 5) == 0.0


def test_nothing_to_find_counts_as_found():
    assert recall_at_k([], [], 3) == 1.0
    assert recall_at_k([], ["a"], 3) == 1.0


def test_k_bigger_than_the_exact_list():
    # A corpus of 3 has only 3 neighbours: finding all of them is full recall.
    assert recall_at_k(["a", "b", "c"], ["c", "a", "b", "x"], 10) == 1.0
    assert recall_at_k(["a", "b", "c"], ["a"], 10) == pytest.approx(1 / 3)


def test_only_the_first_k_of_each_list_count():
    assert recall_at_k(EXACT, ["x", "y", "a", "b"], 2) == 0.0
    assert recall_at_k(EXACT, ["b", "a", "c"], 2) == 1.0


def test_duplicates_in_the_approximate_answer_are_not_counted_twice():
    assert recall_at_k(EXACT, ["a", "a", "a", "a", "a"], 5) == pytest.approx(1 / 5)


def test_duplicates_in_the_exact_answer_count_once():
    assert recall_at_k(["a", "a", "b"], ["a", "b"], 3) == 1.0
    assert recall_at_k(["a", "a", "b", "c"], ["a", "b"], 3) == pytest.approx(2 / 3)


@pytest.mark.parametrize("k", [0, -1])
def test_k_must_be_positive(k):
    with pytest.raises(ValueError, match="k must be positive"):
        recall_at_k(EXACT, EXACT, k)


def test_latency_summary_of_nothing_is_nan_not_an_error():
    summary = latency_summary([])
    assert all(value != value for value in summary.values())  # NaN
    assert latency_summary([0.001, 0.003])["p50_ms"] == pytest.approx(2.0)
