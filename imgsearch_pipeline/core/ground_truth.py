"""The exact top-k train neighbours of every test query, streamed and kept up to date.

Memory stays bounded by a score buffer plus one embedding part, whatever the corpus size:
the corpus is read part by part, and the queries go through in blocks sized from the buffer,
each block keeping a running top-k across the parts; results are written block by block.
Only ids are held whole (16-byte binary when they are canonical uuids, else Arrow strings,
and small numpy index arrays; never Python sets).

Each run starts from the previous table when it can. The table records what it was computed
against (the corpus beside it: each train uuid and the part its vector came from; k and the
model id in its metadata), so the next run diffs:

- added train vectors (new uuids, or a vector re-embedded into another part): the kept
  queries' top-k are merged with their exact top-k among the added vectors only;
- queries that lost a neighbour (to a removal or a re-embedding), and new test queries, are
  computed against the whole corpus; queries no longer test queries leave the table;
- nothing added, removed or new: nothing is computed or written.

Incremental equals full: a neighbour's score is its float64 dot product rounded to float32
(``pair_scores``: the same number whichever block or run computed it, where a BLAS product's
last bits depend on the shape it was called with), ranked by score then uuid. The float32
matrix products only select candidates; every selection keeps spare candidates and checks,
with the product's rounding-error bound, that none outside could rank higher, and rescans the
rare query where it cannot tell (``_scan``).
"""

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .filesystems import open_location
from .knn import top_k
from .similarity import similarities
from .tables import (
    Location,
    atomic_path,
    base_name,
    parquet_metadata,
    read_schema,
    read_table,
    write_table_atomic,
)
from .vectors import to_matrix

META_KEY = b"imgsearch.ground_truth"
FORMAT = 2  # 1: the whole-memory table with exact_ms, no record of its corpus
_EMPTY = -1  # a neighbour slot not filled (a corpus smaller than k)
_UNIT_ROUNDING = 2.0**-24  # float32's unit roundoff


# -- which stored rows are the corpus and the queries ---------------------------------------

@dataclass(frozen=True)
class Rows:
    """Stored vectors in uuid order: ``uuids`` (sorted, each once; ``compact_uuids``, so
    16-byte binary when all are canonical uuids: ``uuid_strings`` gives the text back) and
    where each is stored, ``part`` (an index into ``StoredRows.parts``) and ``row`` (its row
    in that part). A position in these arrays is the row's rank by uuid: ties between equal
    scores go to the lower position, i.e. the smaller uuid, in every run."""

    uuids: pa.Array
    part: np.ndarray
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.uuids)


@dataclass(frozen=True)
class StoredRows:
    parts: list[str]  # verified part locations, in name order
    corpus: Rows
    queries: Rows

    @property
    def part_names(self) -> list[str]:
        return [base_name(p) for p in self.parts]


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_NIBBLE = np.full(256, 255, np.uint8)  # a lower-case hex digit's value, else 255
_NIBBLE[_HEX] = np.arange(16, dtype=np.uint8)
_DASHES = np.array([8, 13, 18, 23])
_DIGITS = np.setdiff1d(np.arange(36), _DASHES)  # where a canonical uuid's 32 digits are


def compact_uuids(ids: pa.Array) -> pa.Array:
    """``ids`` as 16-byte binary when every one is a canonical lower-case uuid (36
    characters, dashes at 8, 13, 18 and 23), else as they are. A 1M corpus's ids are 16 MB
    instead of 40 MB, and byte order is string order (a sorted array stays sorted)."""
    n = len(ids)
    if not n or ids.null_count or ids.type != pa.string():
        return ids
    offsets = np.frombuffer(ids.buffers()[1], np.int32, n + 1, ids.offset * 4)
    if offsets[-1] - offsets[0] != 36 * n or np.any(np.diff(offsets) != 36):
        return ids
    chars = np.frombuffer(ids.buffers()[2], np.uint8, 36 * n, int(offsets[0])).reshape(n, 36)
    if not (chars[:, _DASHES] == ord("-")).all():
        return ids
    nibbles = _NIBBLE[chars[:, _DIGITS]]
    if (nibbles == 255).any():
        return ids
    packed = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2])
    return pa.Array.from_buffers(pa.binary(16), n, [None, pa.py_buffer(packed)])


def uuid_strings(ids: pa.Array) -> pa.Array:
    """The text of ``compact_uuids``'s ids (string ids as they are)."""
    if ids.type != pa.binary(16):
        return ids
    n = len(ids)
    packed = np.frombuffer(ids.buffers()[1], np.uint8, 16 * n, ids.offset * 16).reshape(n, 16)
    chars = np.full((n, 36), ord("-"), np.uint8)
    chars[:, _DIGITS[0::2]] = _HEX[packed >> 4]
    chars[:, _DIGITS[1::2]] = _HEX[packed & 15]
    if 36 * n < 2**31:
        offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
        return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                      pa.py_buffer(chars)])
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets),
                                                        pa.py_buffer(chars)]).cast(pa.string())


def split_uuids(posts: pa.Table, split: str) -> pa.Array:
    """The uuids of one split of a posts table (columns uuid, split) as an Arrow array."""
    chosen = posts.filter(pc.equal(posts.column("split"), split)).column("uuid")
    return chosen.combine_chunks() if isinstance(chosen, pa.ChunkedArray) else chosen


def stored_rows(parts: Sequence[Location], train: pa.Array, test: pa.Array) -> StoredRows:
    """Where each train (corpus) and test (query) uuid's vector is stored: the first part
    holding it, as ``iter_vectors`` reads them. Reads the parts' uuid columns only."""
    parts = list(parts)
    columns = [read_table(p, columns=["uuid"]).column("uuid") for p in parts]
    counts = np.array([len(c) for c in columns], dtype=np.int64)
    chunks = [chunk for column in columns for chunk in column.chunks]
    ids = pa.chunked_array(chunks, pa.string()).combine_chunks() if chunks else pa.array([], pa.string())
    encoded = pc.dictionary_encode(ids)
    unique = encoded.dictionary
    # dictionary_encode numbers ids in order of first appearance: the first row of each
    first = np.unique(encoded.indices.to_numpy(zero_copy_only=False), return_index=True)[1]
    part_of_row = np.repeat(np.arange(len(parts), dtype=np.int32), counts)
    row_in_part = (np.arange(len(ids), dtype=np.int64)
                   - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)

    def select(group: pa.Array) -> Rows:
        chosen = np.flatnonzero(pc.is_in(unique, value_set=pa.array(group, pa.string()))
                                .to_numpy(zero_copy_only=False))
        order = pc.sort_indices(unique.take(pa.array(chosen))).to_numpy(zero_copy_only=False)
        chosen = chosen[order]
        rows = first[chosen]
        return Rows(compact_uuids(unique.take(pa.array(chosen))), part_of_row[rows],
                    row_in_part[rows])

    return StoredRows(parts, select(train), select(test))


def iter_rows(parts: Sequence[Location], rows: Rows, positions: np.ndarray | None = None
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions, vectors) part by part for the rows at ``positions`` (all when None):
    positions ascending within a part, one part's vectors in memory at a time."""
    # a stable sort of ascending positions by part keeps them ascending within each part
    if positions is None:  # every row: no position array beside the order
        part_of = rows.part
        order = np.argsort(part_of, kind="stable")
    else:
        positions = np.asarray(positions)
        if np.any(np.diff(positions) < 0):
            positions = np.sort(positions)
        part_of = rows.part[positions]
        order = positions[np.argsort(part_of, kind="stable")]
    if not len(order):
        return
    ends = np.cumsum(np.bincount(part_of, minlength=len(parts)))
    del part_of
    start = 0
    for part, stop in enumerate(ends.tolist()):
        if stop > start:
            group = order[start:stop]
            vectors = read_part_rows(parts[part], rows.row[group])
            yield group, vectors
            del vectors  # before the next part is read: one part's vectors at a time
        start = stop


def read_part_rows(location: Location, wanted: np.ndarray, batch_rows: int = 4096
                   ) -> np.ndarray:
    """The vectors of a part's rows ``wanted`` (row numbers, any order), in that order.

    Read a few thousand rows at a time into the result: a whole-column read decodes every
    float's nesting levels beside the values and grows its buffers by doubling (a 50k-row
    768-d part, 150 MB of floats, peaked at ~750 MB), where this holds the result and one
    batch (12 MB at 768-d)."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if not len(wanted):
        return np.zeros((0, 0), dtype=np.float32)
    order = np.argsort(wanted, kind="stable")
    ordered = wanted[order]
    in_order = bool(np.all(order == np.arange(len(order))))  # the usual case: a whole part
    out: np.ndarray | None = None
    filesystem, path = open_location(os.fspath(location))
    start = 0
    with filesystem.open_input_file(path) as source:
        # buffered reads of the column chunk, not the whole chunk's bytes at once
        reader = pq.ParquetFile(source, pre_buffer=False, buffer_size=4 << 20)
        for batch in reader.iter_batches(batch_size=batch_rows, columns=["vector"],
                                         use_threads=False):
            stop = start + batch.num_rows
            lo, hi = np.searchsorted(ordered, [start, stop])
            if hi > lo:
                matrix = to_matrix(batch.column(0))
                if out is None:
                    out = np.empty((len(wanted), matrix.shape[1]), dtype=np.float32)
                if in_order:  # straight into the result: no gathered copy on the heap
                    np.take(matrix, ordered[lo:hi] - start, axis=0, out=out[lo:hi], mode="clip")
                else:
                    out[order[lo:hi]] = matrix[ordered[lo:hi] - start]
            start = stop
            if hi == len(ordered):
                break
    _release_arrow_memory()  # the decoded batches: not kept as a reserve between parts
    if out is None or start <= ordered[-1]:
        raise IndexError(f"{base_name(location)} has {start} rows, no row {ordered[-1]}")
    return out


def spill_rows(parts: Sequence[Location], rows: Rows, positions: np.ndarray, path: Path) -> int:
    """Write the vectors of ``positions`` (ascending) to ``path`` as raw float32 rows in
    that order, part by part (positioned writes: nothing mapped, nothing held); their dim."""
    positions = np.asarray(positions)
    dim = 0
    with open(path, "wb") as handle:
        for group, matrix in iter_rows(parts, rows, positions):
            dim = matrix.shape[1]
            slots = np.searchsorted(positions, group)
            data = np.ascontiguousarray(matrix, dtype="<f4")
            # runs of consecutive slots go in one write
            breaks = np.flatnonzero(np.diff(slots) != 1) + 1
            for run, block in zip(np.split(slots, breaks), np.split(data, breaks), strict=True):
                os.pwrite(handle.fileno(), block.tobytes(), int(run[0]) * dim * 4)
    return dim


def read_spilled(path: Path, dim: int, start: int, stop: int) -> np.ndarray:
    return np.fromfile(path, dtype="<f4", count=(stop - start) * dim,
                       offset=start * dim * 4).reshape(stop - start, dim)


def map_rows(parts: Sequence[Location], rows: Rows, path: Path) -> np.ndarray:
    """The vectors of ``rows`` in their order as a read-only memory map of ``path`` (written
    part by part): the pages stay in the page cache, not in the heap."""
    dim = spill_rows(parts, rows, np.arange(len(rows)), path)
    if not len(rows):
        return np.zeros((0, 0), dtype=np.float32)
    return np.memmap(path, dtype="<f4", mode="r", shape=(len(rows), dim))


# -- exact top-k of a block of queries, streamed over parts ----------------------------------

def pair_scores(queries: np.ndarray, rows: np.ndarray, vectors: np.ndarray, cols: np.ndarray,
                chunk_bytes: int = 1 << 20) -> np.ndarray:
    """The dot product of each pair (``queries[rows[i]]``, ``vectors[cols[i]]``) in float64,
    rounded to float32: the same value for the same two vectors whatever else is computed
    beside them (a BLAS product's last bits depend on the shapes it is called with).
    Gathered a few pairs at a time (about ``chunk_bytes`` of copies), so memory stays small."""
    chunk = max(16, chunk_bytes // (24 * max(1, queries.shape[1])))
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        a = queries[rows[start:start + chunk]].astype(np.float64)
        b = vectors[cols[start:start + chunk]].astype(np.float64)
        out[start:start + chunk] = np.einsum("ij,ij->i", a, b)
    return out


def rank(positions: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first ``k`` by score, highest first, ties to the lower position; empty
    slots (position -1, score -inf) last."""
    order = np.lexsort((np.where(positions < 0, np.iinfo(np.int64).max, positions), -scores),
                       axis=1)[:, :k]
    return np.take_along_axis(positions, order, 1), np.take_along_axis(scores, order, 1)


def _error_bound(dim: int) -> float:
    """The float32 product's rounding error bound for unit vectors, plus the rounding of a
    float64 dot product to float32, with some room for vectors a little off unit length."""
    gamma = dim * _UNIT_ROUNDING / (1 - dim * _UNIT_ROUNDING)
    return 1.01 * gamma + 2 * _UNIT_ROUNDING


@dataclass
class ScanStats:
    rescanned: int = 0  # queries whose candidates could not be told apart: scanned again


def _scan(queries: np.ndarray, parts_of: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
          k: int, spare: int, scores_buffer: np.ndarray, stats: ScanStats,
          on_part: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k (positions, ``pair_scores``) of ``queries`` among the rows that
    ``parts_of()`` yields ((positions, vectors) per part).

    One float32 product per part into ``scores_buffer``; the best k + spare by it are kept
    across parts (their exact scores computed once, when they enter). At the end the kth
    and the last kept are compared: if they are further apart than twice the product's
    error bound, nothing left out can rank in the top k by exact score. Else (many near
    ties, rare) the query is scanned again, keeping every row within the bound.
    """
    n, width = len(queries), k + spare
    positions = np.full((n, width), _EMPTY, dtype=np.int64)
    products = np.full((n, width), -np.inf, dtype=np.float32)
    exact = np.full((n, width), -np.inf, dtype=np.float32)
    if not n:
        return positions[:, :k], exact[:, :k]
    for part_positions, vectors in parts_of():
        scores = scores_buffer[: n * len(vectors)].reshape(n, len(vectors))
        similarities(queries, vectors, out=scores)
        best, best_scores = top_k(scores, min(width, len(vectors)))
        # only the queries this part can change: its best reaches their last kept (once a
        # few parts are in, most queries' candidates stand)
        grow = np.flatnonzero(best_scores[:, 0] >= products[:, -1])
        if len(grow):
            merged_pos = np.concatenate([positions[grow], part_positions[best[grow]]], axis=1)
            merged_products = np.concatenate(
                [products[grow], best_scores[grow].astype(np.float32)], axis=1)
            merged_exact = np.concatenate(
                [exact[grow], np.full((len(grow), best.shape[1]), np.nan, np.float32)], axis=1)
            order = np.lexsort((np.where(merged_pos < 0, np.iinfo(np.int64).max, merged_pos),
                                -merged_products), axis=1)[:, :width]
            kept_pos = np.take_along_axis(merged_pos, order, 1)
            kept_exact = np.take_along_axis(merged_exact, order, 1)
            rows, slots = np.nonzero(np.isnan(kept_exact))  # entered from this part
            if len(rows):
                local = np.searchsorted(part_positions, kept_pos[rows, slots])
                kept_exact[rows, slots] = pair_scores(queries, grow[rows], vectors, local)
            positions[grow] = kept_pos
            products[grow] = np.take_along_axis(merged_products, order, 1)
            exact[grow] = kept_exact
        on_part(len(vectors))
        del vectors, scores  # let the part go before the next is read
    margin = 2 * _error_bound(queries.shape[1])
    # all k + spare slots filled (else every row was kept), the kth too close to the last
    full = positions[:, -1] != _EMPTY
    with np.errstate(invalid="ignore"):  # -inf - -inf in the slots not filled
        gap = np.where(full, products[:, k - 1] - products[:, -1], np.inf)
    unsure = np.flatnonzero(full & (width > k) & (gap <= margin))
    result_pos, result_scores = rank(positions, exact, k)
    if len(unsure):
        stats.rescanned += len(unsure)
        floor = products[unsure, k - 1] - margin
        found = _window(queries[unsure], floor, parts_of, scores_buffer)
        for i, (window_pos, window_scores) in zip(unsure, found, strict=True):
            pos, sc = rank(window_pos[None, :], window_scores[None, :], k)
            result_pos[i], result_scores[i] = _EMPTY, -np.inf
            result_pos[i, : pos.shape[1]], result_scores[i, : sc.shape[1]] = pos[0], sc[0]
    return result_pos, result_scores


def _window(queries: np.ndarray, floor: np.ndarray,
            parts_of: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
            scores_buffer: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every row whose product with a query reaches its ``floor``, with its exact score."""
    found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in queries]
    for part_positions, vectors in parts_of():
        scores = scores_buffer[: len(queries) * len(vectors)].reshape(len(queries), len(vectors))
        similarities(queries, vectors, out=scores)
        rows, cols = np.nonzero(scores >= floor[:, None])
        exact = pair_scores(queries, rows, vectors, cols)
        for i in np.unique(rows):
            mine = rows == i
            found[i].append((part_positions[cols[mine]], exact[mine]))
        del vectors, scores
    return [(np.concatenate([p for p, _ in f]), np.concatenate([s for _, s in f])) if f
            else (np.zeros(0, np.int64), np.zeros(0, np.float32)) for f in found]


# -- the stored table -----------------------------------------------------------------------

def corpus_location(truth: str) -> str:
    """Where the corpus a ground truth was computed against is kept: beside it."""
    stem = truth[: -len(".parquet")] if truth.endswith(".parquet") else truth
    return f"{stem}_corpus.parquet"


@dataclass(frozen=True)
class Previous:
    """A stored ground truth that the next run can start from."""

    corpus: pa.Array  # its corpus's uuids, sorted
    corpus_parts: pa.Array  # the part each one's vector came from (names)


def read_previous(location: str, k: int, model_id: str) -> tuple[Previous | None, str]:
    """The stored truth's corpus if the next run can start from it, else None and why."""
    try:
        schema = read_schema(location)
    except (OSError, pa.ArrowException) as error:
        return None, f"no previous table ({type(error).__name__})"
    try:
        meta = json.loads((schema.metadata or {}).get(META_KEY, b"{}"))
        if meta.get("format") != FORMAT:
            return None, "the previous table records no corpus (an older format)"
        if meta.get("k") != k or meta.get("model_id") != model_id:
            return None, (f"the previous table was computed with k={meta.get('k')}, model "
                          f"{meta.get('model_id')!r}")
        corpus = read_table(corpus_location(location))
        if (corpus.schema.metadata or {}).get(META_KEY) != meta["corpus_token"].encode():
            return None, "the previous corpus record is not the table's (an interrupted write)"
        parts = corpus.column("part").combine_chunks()
        if pa.types.is_dictionary(parts.type):
            parts = parts.dictionary_decode()
        return Previous(corpus.column("uuid").combine_chunks(), parts), ""
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError) as error:
        return None, f"the previous table is unreadable: {error}"


TABLE_SCHEMA = pa.schema([("query", pa.string()), ("part", pa.string()),
                          ("neighbours", pa.list_(pa.string())),
                          ("scores", pa.list_(pa.float32()))])


# -- one run ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class GroundTruthUpdate:
    """What a run found and did."""

    full: bool  # computed from scratch (why: ``reason``)
    reason: str
    corpus: int
    queries: int
    added: int  # train vectors new to the corpus
    removed: int  # train vectors gone from it
    new_queries: int
    lost_neighbour: int  # queries recomputed because a neighbour was removed
    dropped_queries: int  # no longer test queries
    merged: int  # queries updated by merging with the added vectors only
    rescanned: int  # queries scanned again to tell near-ties apart
    scored: int  # query-vector pairs scored

    @property
    def unchanged(self) -> bool:
        return not self.full and not (self.added or self.removed or self.new_queries
                                      or self.lost_neighbour or self.dropped_queries)

    def summary(self) -> str:
        if self.unchanged:
            return (f"unchanged: 0 added, 0 removed, 0 new queries; {self.queries:,} queries "
                    f"over {self.corpus:,} train vectors kept as they were")
        head = f"full recompute ({self.reason})" if self.full else "incremental"
        return (f"{head}: {self.added:,} added, {self.removed:,} removed, {self.new_queries:,} "
                f"new queries, {self.lost_neighbour:,} recomputed for a lost neighbour, "
                f"{self.dropped_queries:,} dropped, {self.merged:,} merged with the added "
                f"vectors only; {self.queries:,} queries over {self.corpus:,} train vectors")


def block_size(dim: int, part_rows: int, width: int, buffer_bytes: int) -> int:
    """Queries per block: their float32 scores against the largest part, their vectors and
    their running candidates fit in ``buffer_bytes`` (at least one query)."""
    per_query = 4 * part_rows + 4 * dim + 3 * 2 * width * 16
    return max(1, buffer_bytes // per_query)


_NEW, _LOST, _KEPT = 0, 1, 2


def _release_arrow_memory() -> None:
    """Hand back to the system what Arrow's allocator keeps of freed buffers. Hashing and
    sorting a million ids frees a few hundred MB that mimalloc would otherwise hold while
    the scan's buffers come on top (at 1M train vectors, the step's peak: +110 MB)."""
    pa.default_memory_pool().release_unused()


def update_ground_truth(
    stored: StoredRows,
    location: str,
    k: int,
    model_id: str,
    buffer_bytes: int,
    log: Callable[[str], None] = lambda line: None,
    on_scored: Callable[[int], None] = lambda n: None,
    on_plan: Callable[[int], None] = lambda n: None,
    spare: int | None = None,
) -> GroundTruthUpdate:
    """Bring the ground truth at ``location`` up to date with the ``stored`` vectors
    (``stored_rows``: train as corpus, test as queries; see the module's doc); writes nothing
    when nothing changed. ``on_plan(n)`` once the n query-vector pairs to score are known,
    then ``on_scored(n)`` as n of them are scored. ``spare``: candidates kept beyond k while
    scanning (default k), for telling near-ties apart. A caller that lets go of its uuid
    lists (and the posts table they came from) before this keeps no per-post state alive
    beside these rows while the corpus is read."""
    _release_arrow_memory()  # what finding the rows freed (a caller's posts table too)
    corpus, queries = stored.corpus, stored.queries
    names = stored.part_names
    previous, reason = read_previous(location, k, model_id)
    same = np.zeros(len(corpus), dtype=bool)
    removed = 0
    if previous is not None:
        now_ids, previous_ids = corpus.uuids, compact_uuids(previous.corpus)
        if now_ids.type != previous_ids.type:  # one side not all canonical uuids: as text
            now_ids, previous_ids = uuid_strings(now_ids), uuid_strings(previous_ids)
        before = pc.index_in(now_ids, value_set=previous_ids).fill_null(-1).to_numpy(
            zero_copy_only=False)
        del now_ids, previous_ids
        prev_parts = pc.dictionary_encode(previous.corpus_parts)
        index_of = {name: i for i, name in enumerate(names)}
        prev_part = np.array([index_of.get(n, -2) for n in prev_parts.dictionary.to_pylist()]
                             + [-2], dtype=np.int64)[prev_parts.indices.to_numpy(
                                 zero_copy_only=False)]
        # never empty (a previous corpus of no vectors): a new uuid (before -1) reads slot 0,
        # which ``before >= 0`` then masks
        prev_part = np.append(prev_part, -2)
        same = (before >= 0) & (prev_part[np.maximum(before, 0)] == corpus.part)
        removed = len(previous.corpus) - int(same.sum())
    incremental = previous is not None
    del previous  # its ids: not needed past the diff, not held through the scan

    spare = k if spare is None else spare
    dim = 0
    largest = max((parquet_metadata(p).num_rows for p in stored.parts), default=1)
    status = np.full(len(queries), _NEW, dtype=np.int8)
    with tempfile.TemporaryDirectory(prefix="ground-truth-") as scratch_dir:
        scratch = Path(scratch_dir)
        dropped = 0
        if incremental:
            dropped, ok = _read_kept(location, queries, stored, corpus, same, k, status,
                                     scratch)
            if not ok:
                incremental, reason = False, "the previous table is not in query order"
                status[:] = _NEW
                same[:] = False
                removed, dropped = 0, 0
        # the added positions themselves only when kept queries are merged with them: a full
        # computation holds no per-vector array for them
        added = len(corpus) - int(same.sum())
        full_queries = np.flatnonzero(status != _KEPT)
        kept_queries = np.flatnonzero(status == _KEPT)
        update = GroundTruthUpdate(
            full=not incremental, reason=reason, corpus=len(corpus), queries=len(queries),
            added=added, removed=removed,
            new_queries=int((status == _NEW).sum()) if incremental else 0,
            lost_neighbour=int((status == _LOST).sum()), dropped_queries=dropped,
            merged=len(kept_queries) if added else 0, rescanned=0,
            scored=len(full_queries) * len(corpus) + (
                len(kept_queries) * added if incremental else 0))
        if update.unchanged:
            log(update.summary())
            return update
        log(f"ground truth: {update.summary().split(';')[0]}; scoring {update.scored:,} "
            "query-vector pairs")
        on_plan(update.scored)
        stats = ScanStats()
        for positions, name in ((full_queries, "full"), (kept_queries, "kept")):
            if len(positions):
                dim = spill_rows(stored.parts, queries, positions, scratch / f"{name}.f32")
        _release_arrow_memory()  # the previous table's ids, before the scan's buffers
        width = k + spare
        block = block_size(dim or 1, largest, width, buffer_bytes)
        scores_buffer = np.empty(min(block, max(len(full_queries), len(kept_queries), 1))
                                 * largest, dtype=np.float32)

        def run(name: str, selection: np.ndarray, rows: np.ndarray | None,
                scores_buffer: np.ndarray) -> None:
            """Each block of the ``selection`` against the corpus ``rows`` (None: all),
            merged with the kept ones' previous top-k when given, to ``<name>.pos/.score``."""
            with open(scratch / f"{name}.pos", "wb") as pos_out, \
                    open(scratch / f"{name}.score", "wb") as score_out:
                for start in range(0, len(selection), block):
                    stop = min(start + block, len(selection))
                    vectors = read_spilled(scratch / f"{name}.f32", dim, start, stop)
                    pos, sc = _scan(vectors, lambda: iter_rows(stored.parts, corpus, rows), k,
                                    spare, scores_buffer, stats,
                                    lambda n, size=stop - start: on_scored(n * size))
                    if name == "kept":
                        old_pos = np.fromfile(scratch / "previous.pos", np.int64, (stop - start) * k,
                                              offset=start * k * 8).reshape(-1, k)
                        old_sc = np.fromfile(scratch / "previous.score", np.float32,
                                             (stop - start) * k, offset=start * k * 4).reshape(-1, k)
                        pos, sc = rank(np.concatenate([old_pos, pos], 1),
                                       np.concatenate([old_sc, sc], 1), k)
                    pos_out.write(np.ascontiguousarray(pos, np.int64).tobytes())
                    score_out.write(np.ascontiguousarray(sc, np.float32).tobytes())

        run("full", full_queries, None, scores_buffer)
        if len(kept_queries) and added:
            run("kept", kept_queries, np.flatnonzero(~same), scores_buffer)
        elif len(kept_queries):  # nothing added: their previous top-k stands
            os.replace(scratch / "previous.pos", scratch / "kept.pos")
            os.replace(scratch / "previous.score", scratch / "kept.score")
        update = replace(update, rescanned=stats.rescanned)
        del scores_buffer  # before the ids are written out as text
        _write(location, stored, status, k, model_id, scratch)
    log(update.summary())
    return update


def _read_kept(location: str, queries: Rows, stored: StoredRows, corpus: Rows, same: np.ndarray,
               k: int, status: np.ndarray, scratch: Path) -> tuple[int, bool]:
    """Mark the previous table's queries that are still test queries with the same vector
    ``_KEPT`` (``_LOST`` when a neighbour is gone or changed) and write the kept ones' top-k
    (current corpus positions) to ``previous.pos/.score``, in query order; the number of
    queries dropped, and False when the table is not in query order."""
    names = stored.part_names
    dropped, last = 0, -1
    # the table's ids are text: matched as text for this read only
    query_ids, corpus_ids = uuid_strings(queries.uuids), uuid_strings(corpus.uuids)
    filesystem, path = open_location(location)
    with filesystem.open_input_file(path) as source, \
            open(scratch / "previous.pos", "wb") as pos_out, \
            open(scratch / "previous.score", "wb") as score_out:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=8192):
            now = pc.index_in(batch.column("query"), value_set=query_ids).fill_null(-1) \
                .to_numpy(zero_copy_only=False)
            part = batch.column("part").to_pylist()
            present = now[now >= 0]
            # the kept rows are written in the current queries' order: the table's must match
            if len(present) and (present[0] <= last or np.any(np.diff(present) <= 0)):
                return 0, False
            dropped += int((now < 0).sum())
            lists = batch.column("neighbours")
            offsets = lists.offsets.to_numpy()
            neighbour = pc.index_in(lists.flatten(), value_set=corpus_ids).fill_null(-1) \
                .to_numpy(zero_copy_only=False)
            bad = ~np.append(same, False)[neighbour]  # -1 (not in the corpus): the False
            bad_count = np.concatenate([[0], np.cumsum(bad)])
            lost = bad_count[offsets[1:]] - bad_count[offsets[:-1]] > 0
            scores = batch.column("scores").flatten().to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(now >= 0):
                q = now[i]
                if names[queries.part[q]] != part[i]:  # re-embedded: a new query
                    continue
                if lost[i]:
                    status[q] = _LOST
                    continue
                status[q] = _KEPT
                pos = np.full(k, _EMPTY, np.int64)
                sc = np.full(k, -np.inf, np.float32)
                count = min(k, offsets[i + 1] - offsets[i])
                pos[:count] = neighbour[offsets[i]:offsets[i] + count]
                sc[:count] = scores[offsets[i]:offsets[i] + count]
                pos_out.write(pos.tobytes())
                score_out.write(sc.tobytes())
            if len(present):
                last = int(present[-1])
    return dropped, True


def _write(location: str, stored: StoredRows, status: np.ndarray, k: int, model_id: str,
           scratch: Path, rows_per_batch: int = 16384) -> None:
    """The corpus record, then the table (its metadata naming that record), each atomically;
    the table in query order, batch by batch from the scratch results."""
    corpus, queries = stored.corpus, stored.queries
    token = uuid.uuid4().hex
    part_names = stored.part_names
    names = pa.array(part_names, pa.string())
    record = pa.table({"uuid": uuid_strings(corpus.uuids),
                       "part": pa.DictionaryArray.from_arrays(pa.array(corpus.part, pa.int32()),
                                                              names)})
    write_table_atomic(record.replace_schema_metadata({META_KEY: token.encode()}),
                       corpus_location(location))
    del record
    meta = {"format": FORMAT, "k": k, "model_id": model_id, "corpus": len(corpus),
            "queries": len(queries), "corpus_token": token}
    schema = TABLE_SCHEMA.with_metadata({META_KEY: json.dumps(meta).encode()})
    with ExitStack() as files:
        sources = {name: (files.enter_context(open(scratch / f"{name}.pos", "rb")),
                          files.enter_context(open(scratch / f"{name}.score", "rb")))
                   for name in ("full", "kept") if (scratch / f"{name}.pos").exists()}
        with atomic_path(location) as temporary, pq.ParquetWriter(temporary, schema) as writer:
            for start in range(0, len(queries), rows_per_batch):
                stop = min(start + rows_per_batch, len(queries))
                kept = status[start:stop] == _KEPT
                pos = np.empty((stop - start, k), np.int64)
                sc = np.empty((stop - start, k), np.float32)
                for name, mask in (("full", ~kept), ("kept", kept)):
                    count = int(mask.sum())
                    if count:
                        pos_in, score_in = sources[name]
                        pos[mask] = np.frombuffer(pos_in.read(count * k * 8), np.int64).reshape(-1, k)
                        sc[mask] = np.frombuffer(score_in.read(count * k * 4), np.float32).reshape(-1, k)
                filled = pos != _EMPTY
                offsets = np.concatenate([[0], np.cumsum(filled.sum(axis=1))]).astype(np.int32)
                neighbours = pa.ListArray.from_arrays(
                    pa.array(offsets), uuid_strings(corpus.uuids.take(pa.array(pos[filled]))))
                scores = pa.ListArray.from_arrays(pa.array(offsets), pa.array(sc[filled], pa.float32()))
                writer.write_table(pa.table(
                    [uuid_strings(queries.uuids.slice(start, stop - start)),
                     pa.array([part_names[p] for p in queries.part[start:stop].tolist()],
                              pa.string()),
                     neighbours, scores], schema=schema))


def read_corpus(location: str) -> pa.Array:
    """The uuids of the corpus the ground truth at ``location`` was computed against."""
    return read_table(corpus_location(location), columns=["uuid"]).column("uuid").combine_chunks()
