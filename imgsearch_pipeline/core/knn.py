"""Exact k-nearest-neighbour search by batched matrix products."""

from collections.abc import Iterator

import numpy as np


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k largest entries of each row, best first."""
    k = min(k, scores.shape[1])
    if k == 0:
        empty = np.empty((scores.shape[0], 0))
        return empty.astype(np.int64), empty.astype(scores.dtype)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def exact_knn(
    queries: np.ndarray, corpus: np.ndarray, k: int, batch_size: int = 1024
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (first query row, indices, scores) per batch of queries.

    Vectors are L2-normalised, so the inner product is the cosine similarity. One BLAS
    matrix product per batch; the batch bounds the score matrix's memory.
    """
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    for start in range(0, len(queries), batch_size):
        block = np.ascontiguousarray(queries[start : start + batch_size], dtype=np.float32)
        indices, scores = top_k(block @ corpus.T, k)
        yield start, indices, scores


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
