"""The one similarity of the project: cosine on unit vectors, i.e. their inner product.

Every embedding is L2-normalised when it is made, so the cosine of two vectors is their dot
product. Each backend and each computation takes its metric from here: the faiss index
(``FAISS_METRIC``), the Elasticsearch mapping (``ES_SIMILARITY``) and its scores
(``cosine_from_es_score``), exact k-NN and the evaluation's exact baseline
(``similarities``), and the API's near-duplicate folding (``cosine``).
"""

import numpy as np

METRIC = "cosine"
ES_SIMILARITY = "cosine"  # dense_vector similarity; scores (1 + cos) / 2
FAISS_METRIC = "METRIC_INNER_PRODUCT"  # faiss constant name: inner product = cosine on unit vectors


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def similarities(queries: np.ndarray, corpus: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Cosine of every query row with every corpus row (unit vectors: one matrix product)."""
    return np.matmul(queries, corpus.T, out=out)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two unit vectors."""
    return float(a @ b)


def cosine_from_es_score(score: float) -> float:
    """Elasticsearch scores cosine similarity as (1 + cos) / 2; this gives cos back."""
    return 2.0 * float(score) - 1.0
