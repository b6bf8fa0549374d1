"""Vectors at the prototype's scale: the embeddings asset when it is big enough, else
generated with the structure of real image embeddings (low-rank clusters)."""

from pathlib import Path

import numpy as np

from imgsearch_pipeline.core.knn import exact_knn
from imgsearch_pipeline.core.similarity import l2_normalise

from .common import PROTOTYPE


def asset_vectors(home: Path, need: int) -> tuple[np.ndarray, str] | None:
    from imgsearch_pipeline.core.layout import Layout
    from imgsearch_pipeline.core.vectors import read_vectors

    root = Path(Layout.at(home).embeddings("any model")).parent  # every model's folder is in it
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        _, vectors = read_vectors(str(folder))
        if len(vectors) >= need:
            return vectors, f"embeddings asset {folder} ({len(vectors):,} rows)"
    return None


def clustered_vectors(n: int, dim: int, seed: int = 0, rank: int = 64, clusters: int = 1500,
                      spread: float = 0.6, noise: float = 0.25, chunk: int | None = None,
                      out: np.ndarray | None = None) -> np.ndarray:
    """Points in ``clusters`` groups of Zipf-distributed sizes inside a rank-``rank``
    subspace with a decaying spectrum, plus isotropic noise. Isotropic random blobs make
    every neighbour equally far and HNSW recall trivially 1.0; this does not.

    ``chunk`` draws the points that many at a time into ``out`` (e.g. a memmap), for sets
    too large to draw at once (1M x 768 in one draw needs ~9 GB of float64 temporaries);
    the same structure, other draws than the one-shot call.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)
    scale = (np.arange(1, rank + 1) ** -0.25).astype(np.float32)
    centres = rng.standard_normal((clusters, rank)).astype(np.float32) * scale
    weights = rng.zipf(1.6, clusters).astype(np.float64)

    def draw(count: int) -> np.ndarray:
        labels = rng.choice(clusters, count, p=weights / weights.sum())
        low = centres[labels] + spread * rng.standard_normal((count, rank)).astype(np.float32) * scale
        iso = rng.standard_normal((count, dim)).astype(np.float32) * (noise * 0.3 * np.sqrt(rank / dim))
        return l2_normalise(low @ basis + iso)

    if chunk is None:
        return draw(n)
    out = np.empty((n, dim), np.float32) if out is None else out
    for start in range(0, n, chunk):
        out[start:start + chunk] = draw(min(chunk, n - start))
    return out


def neighbour_cosines(queries: np.ndarray, corpus: np.ndarray) -> dict[str, float]:
    """Mean cosine of each query's 1st and 10th nearest neighbour, and of random pairs."""
    first, tenth = [], []
    for _, _, scores in exact_knn(queries, corpus, 10):
        first.append(scores[:, 0])
        tenth.append(scores[:, 9])
    rng = np.random.default_rng(1)
    a = corpus[rng.integers(0, len(corpus), 5000)]
    b = corpus[rng.integers(0, len(corpus), 5000)]
    return {"mean_top1_cosine": float(np.concatenate(first).mean()),
            "mean_top10_cosine": float(np.concatenate(tenth).mean()),
            "mean_random_pair_cosine": float((a * b).sum(1).mean())}


def prototype_scale(home: Path, indexed: int = PROTOTYPE["indexed"],
                    queries: int = PROTOTYPE["queries"], dim: int = PROTOTYPE["dim"]):
    """(corpus, queries, description): queries are held out, never indexed."""
    found = asset_vectors(home, indexed + queries)
    if found is not None:
        vectors, source = found
        rng = np.random.default_rng(0)
        order = rng.permutation(len(vectors))[: indexed + queries]
        vectors = vectors[order]
    else:
        vectors = clustered_vectors(indexed + queries, dim)
        source = (f"generated: {indexed + queries:,} x {dim} low-rank clustered vectors "
                  "(no embeddings asset with enough rows)")
    return np.ascontiguousarray(vectors[queries:]), np.ascontiguousarray(vectors[:queries]), source
