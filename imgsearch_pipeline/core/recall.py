"""Recall@k of approximate answers against exact ones, and latency summaries."""

from collections.abc import Sequence

import numpy as np


def recall_at_k(exact: Sequence[str], approximate: Sequence[str], k: int) -> float:
    """|exact top-k ∩ approximate top-k| / min(k, |exact|).

    A query whose exact answer is empty has nothing to find: its recall is 1.0.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    truth = list(dict.fromkeys(exact))[:k]  # a repeated id in the exact list counts once
    if not truth:
        return 1.0
    found = set(list(approximate)[:k])
    return len(set(truth) & found) / min(k, len(truth))


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Mean and percentiles in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"mean_ms": float("nan"), "p50_ms": float("nan"),
                "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"mean_ms": float(ms.mean()), "p50_ms": float(p50),
            "p95_ms": float(p95), "p99_ms": float(p99)}
