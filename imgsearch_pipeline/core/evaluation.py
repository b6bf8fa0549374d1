"""Timing ANN against exact search, query by query, and summarising the recall."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .knn import top_k
from .recall import latency_summary, recall_at_k
from .similarity import similarities

# Queries per batch of the recall count (answers held per batch: k hits each).
SEARCH_BATCH = 1024


@dataclass
class QueryResult:
    recall: float
    ann_s: float | None  # None: not in the latency sample
    exact_s: float | None  # None: not in the latency sample
    found: list[str]


def exact_search(corpus: np.ndarray, vector: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k positions for one query (the baseline a person would write)."""
    indices, _ = top_k(similarities(vector.reshape(1, -1), corpus), k)
    return indices[0]


def time_each(search: Callable[[np.ndarray], list[str]], queries: np.ndarray, warmup: int = 5,
              on_query: Callable[[], None] | None = None,
              clock: Callable[[], float] = time.perf_counter) -> tuple[list[float], list]:
    """Seconds (by ``clock``) and answer of each query, one at a time, after ``warmup``
    untimed ones."""
    for vector in queries[:warmup]:
        search(vector)
    seconds, answers = [], []
    for vector in queries:
        started = clock()
        answers.append(search(vector))
        seconds.append(clock() - started)
        if on_query:
            on_query()
    return seconds, answers


def latency_sample(count: int, size: int | None) -> np.ndarray:
    """Positions of ``size`` of ``count`` queries spread evenly over them (all if None or
    ``size >= count``), in order: the searches are timed on these only."""
    if size is None or size >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, num=size).round().astype(np.int64))


def time_at(
    search: Callable[[np.ndarray], object],
    queries: np.ndarray,
    positions: np.ndarray,
    warmup: int = 5,
    on_query: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float | None]:
    """Seconds of ``search`` on each query, one at a time, as a service runs them: timed on
    the queries at ``positions`` (a ``latency_sample``), None for the others.

    A latency is a property of the index and the corpus size more than of the query: a
    sample of a few hundred gives the percentiles, while recall is counted on every query.
    """
    timed, _ = time_each(search, queries[positions], warmup, on_query, clock)
    seconds: list[float | None] = [None] * len(queries)
    for position, elapsed in zip(np.asarray(positions).tolist(), timed, strict=True):
        seconds[position] = elapsed
    return seconds


def time_exact(
    corpus: np.ndarray,
    queries: np.ndarray,
    k: int,
    positions: np.ndarray,
    warmup: int = 5,
    on_query: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float | None]:
    """Seconds of the exact search of the queries at ``positions`` (None for the others).
    Each one scans the whole corpus, so its cost grows with the corpus."""
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    return time_at(lambda vector: exact_search(corpus, vector, k), queries, positions,
                   warmup, on_query, clock)


def search_pass(
    search_many: Callable[[np.ndarray], list[list[str]]],
    search_one: Callable[[np.ndarray], object],
    queries: np.ndarray,
    sample: np.ndarray,
    batch: int = SEARCH_BATCH,
    on_searched: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[list[str]], list[float | None]]:
    """Every query's answer from ``search_many``, ``batch`` queries at a time (recall is
    counted on all of them), and the seconds of ``search_one`` on the queries at ``sample``
    one at a time (``time_at``: None for the others). ``on_searched(n)`` after each n."""
    answers: list[list[str]] = []
    for start in range(0, len(queries), batch):
        hits = search_many(queries[start:start + batch])
        answers += hits
        if on_searched:
            on_searched(len(hits))
    seconds = time_at(search_one, queries, sample,
                      on_query=(lambda: on_searched(1)) if on_searched else None, clock=clock)
    return answers, seconds


def query_results(
    truth: Sequence[Sequence[str]],
    answers: Sequence[list[str]],
    ann_s: Sequence[float | None],
    exact_s: Sequence[float | None],
    k: int,
) -> list[QueryResult]:
    """Each query's recall@k of its ANN answer against the exact one, with its ANN and
    exact seconds where they were timed.

    The ANN and exact passes are timed apart, as each would run in a service of its own:
    interleaved, every exact scan would evict the HNSW graph from the CPU caches and bill
    the ANN side for the exact side's memory traffic.
    """
    return [
        QueryResult(recall_at_k(expected, hits, k), a, e, hits)
        for expected, hits, a, e in zip(truth, answers, ann_s, exact_s, strict=True)
    ]


def summarise(results: Sequence[QueryResult], k: int) -> dict:
    recalls = np.array([r.recall for r in results])
    ann = latency_summary([r.ann_s for r in results if r.ann_s is not None])
    exact = latency_summary([r.exact_s for r in results if r.exact_s is not None])
    return {
        "k": k,
        "queries": len(results),
        "mean_recall": float(recalls.mean()) if len(recalls) else float("nan"),
        "min_recall": float(recalls.min()) if len(recalls) else float("nan"),
        "queries_below_1": int((recalls < 1.0).sum()),
        "ann_latency": ann,
        "exact_latency": exact,
        "ann_timed": sum(r.ann_s is not None for r in results),
        "exact_timed": sum(r.exact_s is not None for r in results),
        "speedup_p50": exact["p50_ms"] / ann["p50_ms"] if ann["p50_ms"] > 0 else float("nan"),
    }


@dataclass(frozen=True)
class EvaluationQueries:
    """The queries a report evaluates, in the ground truth's order: their exact top-k and the
    exact search's seconds where ground_truth timed it (None elsewhere)."""

    ids: list[str]
    expected: list[list[str]]
    exact_s: list[float | None]

    @property
    def sample(self) -> np.ndarray:
        """Positions of the timed queries: the ANN search is timed on the same ones."""
        return np.flatnonzero([s is not None for s in self.exact_s]).astype(np.int64)


def ground_truth_table(query_ids: Sequence[str], neighbours: Sequence[Sequence[str]],
                       scores: Sequence[Sequence[float]],
                       exact_s: Sequence[float | None]) -> pa.Table:
    """The ground truth as stored: each query's exact neighbours and scores, best first,
    and the exact search's milliseconds where it was timed."""
    return pa.table({"query": list(query_ids), "neighbours": [list(n) for n in neighbours],
                     "scores": pa.array([list(s) for s in scores], pa.list_(pa.float32())),
                     "exact_ms": pa.array([None if s is None else s * 1000 for s in exact_s],
                                          pa.float64())})


def evaluation_queries(truth: dict[str, list], k: int,
                       max_queries: int | None = None) -> EvaluationQueries:
    """The first ``max_queries`` queries (all when None) of a stored ground truth (its
    ``to_pydict()``), with their first ``k`` neighbours. A truth without timings (written
    before ground_truth timed the exact search) is refused: the report needs them."""
    if "exact_ms" not in truth:
        raise ValueError("the ground truth holds no exact-search timings (written by an older "
                         "version): materialize ground_truth again")
    return EvaluationQueries(
        ids=list(truth["query"][:max_queries]),
        expected=[list(n[:k]) for n in truth["neighbours"][:max_queries]],
        exact_s=[None if ms is None else ms / 1000 for ms in truth["exact_ms"][:max_queries]],
    )
