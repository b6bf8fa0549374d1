"""Search depth per index version: the smallest depth (HNSW ``efSearch``, Elasticsearch
``num_candidates``) whose mean recall@k against the exact answers reaches a target.

Recall at a fixed depth falls as an index grows (at m=32, ef_construction=200 and depth 128:
R@10 0.9985 at 27k vectors, 0.972 at 1M), so each new version measures its own curve over
a short list of depths and keeps the first that reaches the target. Only ANN searches run
in the sweep (the exact answers come from the ground truth), so it costs a few passes of
cheap searches next to the build: the recall report counts recall on every query, searched
in batches, and times a sample of them one at a time, as a service runs them.
"""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .evaluation import search_pass, time_each
from .recall import latency_summary, recall_at_k

# 16, 32, then 64, 96, 128, 192, 256, 384, ... (each power of two and 1.5 times it).
_FIRST_STEPS = (16, 32)


def candidate_depths(k: int, cap: int) -> list[int]:
    """The depths a sweep tries, shallowest first: k, 16, 32, 64, 96, 128, 192, ... up to
    ``cap``, which is always the last one tried."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if cap < k:
        raise ValueError(f"the depth cap {cap} is below k={k}: a search needs at least k "
                         "candidates")
    steps = list(_FIRST_STEPS)
    power = 64
    while power < cap:
        steps += [power, power * 3 // 2]
        power *= 2
    return [k] + [d for d in steps if k < d < cap] + ([cap] if cap > k else [])


def depths_from(depths: list[int], previous: int, grew: bool = False) -> list[int]:
    """The sweep of a version that extends one whose chosen depth was ``previous``: from the
    depth just below it upward, or from ``previous`` itself when the version ``grew`` (more
    added than removed). A few added or removed items move the depth a step at most, a
    larger graph needs no shallower search, and the shallow depths of a large index (the
    cheap ones, missing the target by far) are not searched again; the version is still
    judged at the depth the sweep chooses, and a full build sweeps them all."""
    below = [d for d in depths if d < previous]
    if grew:
        return depths[len(below):] or depths[-1:]
    return depths[len(below) - 1:] if below else depths


@dataclass(frozen=True)
class DepthPoint:
    """Recall and ANN latency of one search depth over the evaluation queries."""

    depth: int
    mean_recall: float
    min_recall: float
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True)
class DepthSweep:
    """The measured points, shallowest first, and the depth chosen (None: none reached)."""

    k: int
    target: float
    cap: int
    points: tuple[DepthPoint, ...]
    chosen: int | None

    @property
    def reached(self) -> bool:
        return self.chosen is not None

    @property
    def best(self) -> DepthPoint:
        """The chosen point, or when none reached the target the highest recall measured."""
        if self.chosen is not None:
            return next(p for p in self.points if p.depth == self.chosen)
        return max(self.points, key=lambda p: (p.mean_recall, -p.depth))

    def verdict(self) -> str:
        best = self.best
        if self.reached:
            return (f"search depth {best.depth}: mean recall@{self.k} {best.mean_recall:.4f} >= "
                    f"target {self.target} (ANN p50 {best.p50_ms:.3f} ms)")
        return (f"no search depth up to {self.cap} reaches mean recall@{self.k} >= "
                f"{self.target}: the best was {best.mean_recall:.4f} at depth {best.depth}. "
                "Raise the cap (recall_report max_num_candidates), or build the index with "
                "larger m / ef_construction")

    def record(self) -> dict:
        """What a version keeps of its sweep: the chosen depth and how it was found."""
        if self.chosen is None:
            raise ValueError(self.verdict())
        best = self.best
        return {"num_candidates": best.depth, "k": self.k, "target": self.target,
                "mean_recall": best.mean_recall, "p50_ms": best.p50_ms}

    def as_dict(self) -> dict:
        return {"k": self.k, "target": self.target, "cap": self.cap, "chosen": self.chosen,
                "points": [asdict(p) for p in self.points]}


def depth_point(depth: int, truth: Sequence[Sequence[str]], answers: Sequence[list[str]],
                seconds: Sequence[float | None], k: int) -> DepthPoint:
    """Mean and lowest recall@k of ``answers`` (every query) against ``truth``, and the
    p50/p95 of ``seconds`` (None: a query not timed)."""
    recalls = np.array([recall_at_k(t, a, k) for t, a in zip(truth, answers, strict=True)])
    latency = latency_summary([s for s in seconds if s is not None])
    return DepthPoint(depth, float(recalls.mean()) if len(recalls) else float("nan"),
                      float(recalls.min()) if len(recalls) else float("nan"),
                      latency["p50_ms"], latency["p95_ms"])


def measure_depth(search: Callable[[np.ndarray, int], list[str]], queries: np.ndarray,
                  truth: Sequence[Sequence[str]], k: int, depth: int, warmup: int = 5,
                  on_query: Callable[[], None] | None = None) -> DepthPoint:
    """Recall and latency of ``search(vector, depth)``, every query searched and timed one
    at a time (the index comparison's form; the recall report times a sample)."""
    seconds, answers = time_each(lambda vector: search(vector, depth), queries, warmup, on_query)
    return depth_point(depth, truth, answers, seconds, k)


def sweep_depths(measure: Callable[[int], DepthPoint], depths: Sequence[int], k: int,
                 target: float, beyond: int = 1) -> DepthSweep:
    """Measure ``depths`` in order until one reaches ``target``, then ``beyond`` more (to
    show the curve past the choice); the cap is the last depth given."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {target}")
    if not depths:
        raise ValueError("no search depths to try")
    points: list[DepthPoint] = []
    chosen: int | None = None
    chosen_at = 0
    for depth in depths:
        if chosen is not None and len(points) - chosen_at > beyond:
            break
        point = measure(depth)
        points.append(point)
        if chosen is None and point.mean_recall >= target:  # NaN (no queries) never passes
            chosen, chosen_at = depth, len(points) - 1
    return DepthSweep(k, target, max(depths), tuple(points), chosen)


@dataclass(frozen=True)
class DepthEvaluation:
    """A sweep, and the answers and ANN seconds at its chosen (or best) depth: the pass the
    report is made of, reused rather than searched again."""

    sweep: DepthSweep
    answers: list[list[str]]
    ann_s: list[float | None]


def evaluate_depths(
    search_many: Callable[[np.ndarray, int], list[list[str]]],
    search_one: Callable[[np.ndarray, int], object],
    queries: np.ndarray,
    truth: Sequence[Sequence[str]],
    sample: np.ndarray,
    depths: Sequence[int],
    k: int,
    target: float,
    on_searched: Callable[[int], None] | None = None,
    beyond: int = 1,
) -> DepthEvaluation:
    """``sweep_depths`` where each depth is one ``search_pass``: recall on every query
    (``search_many(batch, depth)``), latency of ``search_one(vector, depth)`` on ``sample``.

    The per-depth latencies draw the recall/latency curve only; the report's ANN-against-exact
    comparison is timed afterwards at the chosen depth, the two interleaved query by query
    (``evaluation.time_interleaved``), so that both see the same machine. ``beyond``: the
    depths measured past the chosen one, for the curve only (the choice is the same)."""
    passes: dict[int, tuple[list[list[str]], list[float | None]]] = {}

    def measure(depth: int) -> DepthPoint:
        answers, seconds = search_pass(lambda batch: search_many(batch, depth),
                                       lambda vector: search_one(vector, depth),
                                       queries, sample, on_searched=on_searched)
        passes[depth] = (answers, seconds)
        return depth_point(depth, truth, answers, seconds, k)

    sweep = sweep_depths(measure, depths, k, target, beyond)
    return DepthEvaluation(sweep, *passes[sweep.best.depth])
