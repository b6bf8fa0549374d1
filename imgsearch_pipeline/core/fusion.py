"""Hybrid ranking: reciprocal rank fusion of a picture's (or a text's) kNN hits with the
caption keyword hits, and the similarity cutoff on the vector side.

Both backends fuse here, in the project: Elasticsearch's own ``rrf`` retriever is a licensed
feature (a basic-licence cluster answers 403), so its kNN and its match come back from one
``_msearch`` and are fused by the same function as the embedded backend's.

RRF (Cormack, Clarke and Buettcher, SIGIR 2009), as Elasticsearch computes it
(``RRFRetrieverBuilder.combineInnerRetrieverResults``): each ranking, cut to its first
``window`` hits, adds ``1 / (rank_constant + rank)`` to a hit's score, rank counted from 1.
Elasticsearch defaults ``rank_constant`` to 60; its ``rank_window_size`` defaults to the
search size, 10 (``RankBuilder.DEFAULT_RANK_WINDOW_SIZE = SearchService.DEFAULT_SIZE``). The
project's window defaults to 100 instead so that pages after the first (``offset``) still
come from fused hits: a page past the window is empty, as in Elasticsearch.
"""

import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

RANK_CONSTANT = 60  # Elasticsearch's RRFRetrieverBuilder.DEFAULT_RANK_CONSTANT
WINDOW = 100  # the project's; Elasticsearch's rank_window_size default is the size (10)


class FusedHit(NamedTuple):
    key: Hashable  # as in the rankings: a uuid, or a faiss row
    score: float  # the RRF score: sum of 1 / (rank_constant + rank) over the rankings
    sources: tuple[int, ...]  # which rankings found it (their positions in ``rankings``)
    ranks: tuple[int | None, ...]  # its rank in each ranking (from 1), None where absent


def rrf(rankings: Sequence[Sequence[Hashable]], rank_constant: int = RANK_CONSTANT,
        window: int = WINDOW, limit: int | None = None) -> list[FusedHit]:
    """Fuse best-first rankings into one, best first. A ranking lists keys that name each
    document alike in every ranking (uuids; the embedded index fuses on its rows).

    Each ranking is cut to its first ``window`` keys; a key repeated within one ranking
    counts at its first (best) rank only. Ties in score (the same ranks in a different order,
    say) go to the hit with the better best rank, then to the earlier ranking that holds that
    rank: one key holds a given rank of a given ranking, so the order is decided there and
    never depends on dict or set iteration (nor on how keys compare).
    Equal rank sets get equal scores (two terms add alike in either order; more are summed
    exactly with ``math.fsum``), so they tie exactly. ``limit`` keeps
    only the first ``limit`` fused hits (a page's ``offset + k``): the same hits, fewer made.
    """
    if rank_constant < 1:
        raise ValueError(f"rank_constant must be at least 1, got {rank_constant}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    cut = [ranking[:window] for ranking in rankings]
    # Each ranking's keys at their first rank (reversed: the first occurrence is written
    # last, so it wins).
    rank_of = [dict(zip(reversed(ranking), range(len(ranking), 0, -1), strict=True))
               for ranking in cut]
    inverse = _inverse_ranks(rank_constant, window)
    keys = (_two_keys(cut, rank_of, inverse, limit) if len(rank_of) == 2
            else _keys(rank_of, inverse))
    hits = []
    for negated, _, _, key in sorted(keys)[:limit]:  # few keys with a limit: see _two_keys
        ranks = tuple([first.get(key) for first in rank_of])
        sources = tuple([i for i, r in enumerate(ranks) if r is not None])
        hits.append(FusedHit(key, -negated, sources, ranks))
    return hits


# Sort keys are plain tuples (-score, best rank, the first ranking holding it, key):
# compared in C, several times faster than a key function.

def _two_keys(rankings: list[Sequence[Hashable]], rank_of: list[dict[Hashable, int]],
              inverse: tuple[float, ...], limit: int | None) -> list[tuple]:
    """Keys of two rankings' hits (two terms add the same in either order: equal rank sets
    tie exactly). With a ``limit``, a hit found by one ranking only can be among the first
    ``limit`` only if it is among that ranking's first ``limit`` such hits (its score falls
    with its rank): the others get no key, the result is the same."""
    a, b = rank_of
    both = a.keys() & b.keys()
    keys = [(-(inverse[a[u]] + inverse[b[u]]), *((b[u], 1) if b[u] < a[u] else (a[u], 0)), u)
            for u in both]
    for position, (ranking, mine, other) in enumerate(((rankings[0], a, b), (rankings[1], b, a))):
        alone = (u for u in dict.fromkeys(ranking) if u not in other)  # in rank order
        keys += [(-inverse[mine[u]], mine[u], position, u) for u in itertools.islice(alone, limit)]
    return keys


def _keys(rank_of: list[dict[Hashable, int]], inverse: tuple[float, ...]) -> list[tuple]:
    """Keys of any number of rankings' hits: more than two terms are summed exactly with
    ``math.fsum``, so that equal rank sets tie whatever the order."""
    parts: dict[Hashable, list[float]] = {}
    best: dict[Hashable, tuple[int, int]] = {}
    for position, first in enumerate(rank_of):
        for key, rank in first.items():
            parts.setdefault(key, []).append(inverse[rank])
            if key not in best or rank < best[key][0]:
                best[key] = (rank, position)
    return [(-math.fsum(values), *best[key], key) for key, values in parts.items()]


@lru_cache(maxsize=16)
def _inverse_ranks(rank_constant: int, window: int) -> tuple[float, ...]:
    """1 / (rank_constant + rank) for ranks 0..window (0 unused)."""
    return (0.0,) + tuple(1.0 / (rank_constant + rank) for rank in range(1, window + 1))


def found_by(hit: FusedHit, names: Sequence[str] = ("picture", "words")) -> str:
    """Why a hit was found, for the page: one ranking's name, or "both" when every ranking
    found it (``names`` follow the order of the rankings given to ``rrf``)."""
    if len(hit.sources) == len(names) and len(names) > 1:
        return "both"
    return "+".join(names[i] for i in hit.sources)


def page(hits: Sequence[FusedHit], k: int, offset: int = 0) -> list[FusedHit]:
    """One page of fused hits (``offset`` past the fused list gives an empty page)."""
    if k < 1 or offset < 0:
        raise ValueError(f"need k >= 1 and offset >= 0, got k={k}, offset={offset}")
    return list(hits[offset:offset + k])


# -- the similarity cutoff ----------------------------------------------------------------

T = TypeVar("T")


def check_min_score(min_score: float | None) -> float | None:
    """A cosine cutoff must lie in [-1, 1] (None: no cutoff)."""
    if min_score is not None and not (math.isfinite(min_score) and -1.0 <= min_score <= 1.0):
        raise ValueError(f"min_score must be a cosine similarity in [-1, 1], got {min_score}")
    return min_score


def _score_of(hit: Any) -> float:
    return float(hit.score if hasattr(hit, "score") else hit[1])


def above_min_score(hits: Iterable[T], min_score: float | None,
                    score: Callable[[T], float] = _score_of) -> list[T]:
    """The hits whose cosine similarity is at least ``min_score``, in their order (a search
    then returns fewer than k). On faiss, pass the exact re-ranked scores; Elasticsearch
    applies the same cutoff inside the search with the kNN ``similarity`` parameter."""
    if check_min_score(min_score) is None:
        return list(hits)
    return [hit for hit in hits if score(hit) >= min_score]
