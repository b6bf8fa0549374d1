"""Timing ANN against exact search, query by query, and summarising the recall."""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

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


def exact_search(corpus: np.ndarray | Sequence[np.ndarray], vector: np.ndarray, k: int,
                 excluded: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k positions for one query (the baseline a person would write) in a matrix
    or in consecutive blocks of its rows, never one of the ``excluded`` positions (rows a
    version still stores but no longer serves)."""
    query = vector.reshape(1, -1)
    if isinstance(corpus, np.ndarray):
        scores = similarities(query, corpus)
    else:
        scores = np.concatenate([similarities(query, block) for block in corpus], axis=1)
    if excluded is not None and len(excluded):
        scores[0, excluded] = -np.inf
    indices, _ = top_k(scores, k)
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


# The fewest queries a timing stops at, whatever its budget: the p50 of 100 runs of a search
# whose time varies by a few percent query to query is within ~1-2% of the set's.
MIN_TIMED = 100


def timing_order(count: int, seed: int = 0) -> np.ndarray:
    """Every query position in a fixed shuffled order: any prefix of it is a random sample of
    the set, so a timing cut short by its budget (``time_interleaved``) still spans it."""
    return np.random.default_rng(seed).permutation(count).astype(np.int64)


def time_interleaved(
    ann: Callable[[np.ndarray], object],
    exact: Callable[[np.ndarray], object],
    queries: np.ndarray,
    positions: np.ndarray,
    warmup: int = 5,
    on_query: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    budget_s: float | None = None,
    minimum: int = MIN_TIMED,
) -> tuple[list[float | None], list[float | None]]:
    """Seconds of the ``ann`` and the ``exact`` search of each query at ``positions`` (None
    for the others), interleaved query by query: ANN then exact on one query, exact then ANN
    on the next, and so on. With ``budget_s``, it stops once that many seconds have passed
    and at least ``minimum`` queries are timed (``timing_order``: any prefix is a sample):
    a small corpus is timed on every query, a large one on as many as the budget allows.

    Timed apart, in separate steps or minutes apart, the two sides saw different machines (a
    make demo timed the exact search at p50 5.85 ms beside a graph build, 1.31 ms alone);
    interleaved, any load lands on both. Alternating which goes first shares out the cache
    each leaves to the other. ``warmup`` sample queries are searched both ways untimed first.
    """
    positions = np.asarray(positions, dtype=np.int64)
    for vector in queries[positions[:warmup]]:
        ann(vector)
        exact(vector)
    ann_s: list[float | None] = [None] * len(queries)
    exact_s: list[float | None] = [None] * len(queries)
    began = clock()
    for turn, position in enumerate(positions.tolist()):
        if budget_s is not None and turn >= minimum and clock() - began >= budget_s:
            break
        vector = queries[position]
        order = ((ann, ann_s), (exact, exact_s)) if turn % 2 == 0 else ((exact, exact_s), (ann, ann_s))
        for search, seconds in order:
            started = clock()
            search(vector)
            seconds[position] = clock() - started
        if on_query:
            on_query()
    return ann_s, exact_s


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
    exact seconds where they were timed (``time_interleaved``)."""
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
    """The queries a report evaluates, in the ground truth's order, and their exact top-k."""

    ids: list[str]
    expected: list[list[str]]


def evaluation_queries(truth: dict[str, list], k: int,
                       max_queries: int | None = None) -> EvaluationQueries:
    """The first ``max_queries`` queries (all when None) of a stored ground truth (its
    ``to_pydict()``: columns query and neighbours), with their first ``k`` neighbours."""
    missing = {"query", "neighbours"} - set(truth)
    if missing:
        raise ValueError(f"the ground truth has no column {', '.join(sorted(missing))}: "
                         "materialize ground_truth again")
    return EvaluationQueries(
        ids=list(truth["query"][:max_queries]),
        expected=[list(n[:k]) for n in truth["neighbours"][:max_queries]],
    )
