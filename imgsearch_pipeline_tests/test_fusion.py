"""Reciprocal rank fusion against a reference computed from exact numpy rankings, and the
vector side's similarity cutoff."""

from fractions import Fraction

import numpy as np
import pytest

from imgsearch_pipeline.core import fusion
from imgsearch_pipeline.resources.vector_index import Hit


def exact_ranking(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Corpus rows by descending inner product (ties: the smaller row), one row per query."""
    sims = queries @ corpus.T
    return np.lexsort((np.broadcast_to(np.arange(corpus.shape[0]), sims.shape), -sims), axis=-1)


def reference_rrf(orders: list[np.ndarray], n: int, rank_constant: int, window: int):
    """RRF over the whole corpus with numpy: each document's rank in each ordering (its
    inverse permutation), kept where it is within the window; exact scores as fractions so
    that ties are ties; ties to the better best rank, the earlier ranking, the smaller id."""
    ranks = np.zeros((len(orders), n), dtype=np.int64)
    for i, order in enumerate(orders):
        ranks[i, order] = np.arange(1, n + 1)
    ranks[ranks > window] = 0  # 0: not in that ranking's window
    rows = []
    for doc in np.flatnonzero(ranks.any(axis=0)):
        present = ranks[:, doc][ranks[:, doc] > 0]
        score = sum(Fraction(1, rank_constant + int(r)) for r in present)
        best = int(present.min())
        first = int(np.flatnonzero(ranks[:, doc] == best)[0])
        sources = tuple(int(i) for i in np.flatnonzero(ranks[:, doc]))
        rows.append((-score, best, first, f"doc{doc:04d}", sources))
    rows.sort()
    return [(uuid, float(-neg), sources) for neg, _, _, uuid, sources in rows]


@pytest.mark.parametrize(("rank_constant", "window", "n_rankings"), [(60, 100, 2), (1, 10, 3), (60, 500, 2)])
def test_rrf_matches_a_reference_from_exact_rankings(rank_constant, window, n_rankings):
    rng = np.random.default_rng(rank_constant + window)
    # Small integer vectors: many exact similarity ties (broken by the row) and RRF ties.
    corpus = rng.integers(-2, 3, (400, 16)).astype(np.float64)
    queries = rng.integers(-2, 3, (n_rankings, 16)).astype(np.float64)
    orders = list(exact_ranking(queries, corpus))
    uuids = [f"doc{i:04d}" for i in range(len(corpus))]
    rankings = [[uuids[i] for i in order] for order in orders]
    got = fusion.rrf(rankings, rank_constant=rank_constant, window=window)
    expected = reference_rrf(orders, len(corpus), rank_constant, window)
    assert [h.key for h in got] == [uuid for uuid, _, _ in expected]
    assert [h.sources for h in got] == [sources for _, _, sources in expected]
    assert [h.score for h in got] == pytest.approx([score for _, score, _ in expected], rel=1e-12)
    assert len(got) <= n_rankings * window
    assert fusion.rrf(rankings, rank_constant=rank_constant, window=window, limit=7) == got[:7]


def test_every_limit_gives_the_first_hits_of_the_whole_fusion():
    # Two rankings are fused on a short path that gives no key to hits that cannot be among
    # the first ``limit``: each limit must give the whole fusion's first hits, with repeated
    # uuids in a ranking and overlaps of every size, against a reference from the definition.
    rng = np.random.default_rng(21)
    for trial in range(60):
        pool = [f"u{i:03d}" for i in range(int(rng.integers(5, 80)))]
        rankings = [[str(u) for u in rng.choice(pool, int(rng.integers(0, 60)))] for _ in range(2)]
        window = int(rng.integers(1, 70))
        first = [{} for _ in rankings]  # each uuid's first rank within the window
        for ranks, ranking in zip(first, rankings, strict=True):
            for rank, uuid in enumerate(ranking[:window], start=1):
                ranks.setdefault(uuid, rank)
        rows = sorted((-sum(Fraction(1, 60 + r[u]) for r in first if u in r),
                       *min((r[u], i) for i, r in enumerate(first) if u in r), u)
                      for u in set(first[0]) | set(first[1]))
        whole = fusion.rrf(rankings, window=window)
        assert [h.key for h in whole] == [row[-1] for row in rows], trial
        assert [h.ranks for h in whole] == [(first[0].get(u), first[1].get(u)) for *_, u in rows]
        for limit in range(len(whole) + 2):
            assert fusion.rrf(rankings, window=window, limit=limit) == whole[:limit], (trial, limit)


def test_rrf_by_hand():
    # a: 1/61 + 1/62, c: 1/61 + 1/63 (ranks 3 and 1), b: 1/62, d: 1/63
    fused = fusion.rrf([["a", "b", "c"], ["c", "a", "d"]])
    assert [(h.key, h.sources, h.ranks) for h in fused] == [
        ("a", (0, 1), (1, 2)), ("c", (0, 1), (3, 1)), ("b", (0,), (2, None)), ("d", (1,), (None, 3))]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert [fusion.found_by(h) for h in fused] == ["both", "both", "picture", "words"]


def test_rrf_window_duplicates_and_ties():
    # The window cuts each ranking; a repeated uuid counts at its best rank only.
    fused = fusion.rrf([["a", "b", "a"], ["c", "b"]], window=1)
    assert [(h.key, h.ranks) for h in fused] == [("a", (1, None)), ("c", (None, 1))]
    assert fusion.rrf([["a", "a", "b"]])[0].score == pytest.approx(1 / 61)
    assert fusion.rrf([["a", "a", "b"]])[1].ranks == (3,)
    # Equal scores: the earlier ranking's first hit.
    assert [h.key for h in fusion.rrf([["z"], ["a"]])] == ["z", "a"]
    assert [h.key for h in fusion.rrf([["y", "x"], ["x", "y"]])] == ["y", "x"]
    assert fusion.rrf([[], []]) == []
    for bad in ({"rank_constant": 0}, {"window": 0}):
        with pytest.raises(ValueError):
            fusion.rrf([["a"]], **bad)


def test_pages_of_fused_hits():
    fused = fusion.rrf([[f"v{i}" for i in range(30)], [f"w{i}" for i in range(30)]], window=20)
    assert len(fused) == 40
    pages = [fusion.page(fused, 7, offset) for offset in range(0, 40, 7)]
    assert [h for p in pages for h in p] == fused
    assert fusion.page(fused, 10, 40) == []


def test_min_score_keeps_hits_at_or_above_the_cutoff():
    hits = [Hit("a", 0.9), Hit("b", 0.5), Hit("c", 0.49999), Hit("d", -0.2)]
    assert [h.uuid for h in fusion.above_min_score(hits, 0.5)] == ["a", "b"]
    assert fusion.above_min_score(hits, None) == hits
    assert fusion.above_min_score([("a", 0.3), ("b", -1.0)], -1.0) == [("a", 0.3), ("b", -1.0)]
    for bad in (1.5, -1.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            fusion.above_min_score(hits, bad)
