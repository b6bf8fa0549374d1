"""core.knn against a brute-force reference (full sort of every score row)."""

import numpy as np
import pytest

from imgsearch_pipeline.core.knn import exact_knn, queries_per_batch, top_k
from imgsearch_pipeline.core.similarity import l2_normalise


def brute_force(queries: np.ndarray, corpus: np.ndarray, k: int):
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).standard_normal((n, dim)))


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
@pytest.mark.parametrize("k", [1, 10, 37])
def test_exact_knn_matches_brute_force(batch_size: int, k: int):
    queries, corpus = vectors(53, 24, 0), vectors(401, 24, 1)
    expected_ix, expected_scores = brute_force(queries, corpus, k)
    starts, indices, scores = [], [], []
    # A buffer of batch_size score rows, plus a few bytes that do not make another row.
    buffer_bytes = batch_size * 4 * len(corpus) + 3
    for start, block_ix, block_scores in exact_knn(queries, corpus, k, buffer_bytes):
        starts.append(start)
        indices.append(block_ix)
        scores.append(block_scores)
    assert starts == list(range(0, len(queries), batch_size))
    indices, scores = np.concatenate(indices), np.concatenate(scores)
    assert indices.shape == scores.shape == (len(queries), k)
    # Random float vectors have no ties, so positions must agree exactly.
    np.testing.assert_array_equal(indices, expected_ix)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_yielded_blocks_are_not_overwritten_by_later_batches():
    queries, corpus = vectors(20, 8, 2), vectors(50, 8, 3)
    blocks = list(exact_knn(queries, corpus, 5, buffer_bytes=4 * 4 * len(corpus)))
    expected_ix, expected_scores = brute_force(queries, corpus, 5)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in blocks]), expected_ix)
    np.testing.assert_allclose(np.concatenate([b[2] for b in blocks]), expected_scores, atol=1e-5)


def test_the_batch_follows_from_the_buffer_bytes_and_the_corpus_size():
    assert queries_per_batch(1_000_000, 256 * 2**20) == 67
    assert queries_per_batch(27_172, 256 * 2**20) == 2469
    assert queries_per_batch(10**9, 1024) == 1  # never less than one query
    with pytest.raises(ValueError):
        queries_per_batch(10, 0)


def test_k_larger_than_corpus_returns_every_item_best_first():
    queries, corpus = vectors(3, 8, 4), vectors(5, 8, 5)
    (_, indices, scores), = exact_knn(queries, corpus, 100)
    assert indices.shape == (3, 5)
    assert all(sorted(row) == list(range(5)) for row in indices.tolist())
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_top_k_with_ties_returns_a_valid_top_set():
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    indices, values = top_k(scores, 3)
    np.testing.assert_allclose(values, [[0.9, 0.9, 0.5], [1.0, 1.0, 1.0]])
    assert set(indices[0][:2]) == {1, 4} and indices[0][2] in (0, 2)
    assert len(set(indices[1])) == 3


def test_top_k_zero_and_float64():
    indices, values = top_k(np.zeros((2, 4)), 0)
    assert indices.shape == values.shape == (2, 0)
    assert indices.dtype == np.int64
    data = np.random.default_rng(6).standard_normal((4, 30))
    indices, values = top_k(data, 3)
    np.testing.assert_array_equal(indices, np.argsort(-data, axis=1)[:, :3])
    assert values.dtype == np.float64


def test_exact_knn_accepts_float64_and_non_contiguous_input():
    queries = vectors(10, 16, 7).astype(np.float64)[::-1]
    corpus = np.asfortranarray(vectors(60, 16, 8))
    (_, indices, _), = exact_knn(queries, corpus, 4)
    np.testing.assert_array_equal(indices, brute_force(queries, corpus, 4)[0])


def test_empty_queries_yield_nothing():
    assert list(exact_knn(np.zeros((0, 8), np.float32), vectors(5, 8, 9), 3)) == []
