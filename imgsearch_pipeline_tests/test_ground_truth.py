"""The streamed, incremental ground truth (core.ground_truth) without Dagster.

Every table is checked against an independent numpy brute force over the vectors as written
(each pair's float64 dot product, rounded to float32, every row sorted by score then uuid),
and each incremental table against a full recompute of the same state in a fresh place."""

import tracemalloc
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.core.ground_truth import (
    block_size,
    compact_uuids,
    corpus_location,
    read_corpus,
    read_part_rows,
    stored_rows,
    update_ground_truth,
    uuid_strings,
)
from imgsearch_pipeline.core.integrity import write_checked_table
from imgsearch_pipeline.core.similarity import l2_normalise
from imgsearch_pipeline.core.vectors import embedding_parts, to_matrix, vectors_table

K = 10


class Store:
    """An embeddings folder written part by part, and the vectors it holds (uuid -> row)."""

    def __init__(self, folder: Path, dim: int = 16, seed: int = 0):
        self.folder, self.dim = folder, dim
        self.rng = np.random.default_rng(seed)
        self.vectors: dict[str, np.ndarray] = {}
        self.part_of: dict[str, str] = {}
        self.count = 0

    def add(self, uuids: list[str], vectors: np.ndarray | None = None) -> str:
        vectors = (l2_normalise(self.rng.standard_normal((len(uuids), self.dim)))
                   if vectors is None else vectors)
        name = f"part-{self.count:04d}.parquet"
        self.count += 1
        write_checked_table(vectors_table(uuids, ["train"] * len(uuids), "m", vectors),
                            self.folder / name)
        for u, v in zip(uuids, vectors, strict=True):
            self.vectors[u] = v
            self.part_of[u] = name
        return name

    def drop_part(self, name: str) -> None:
        (self.folder / name).unlink()
        (self.folder / f"{name}.manifest.json").unlink()
        for u in [u for u, p in self.part_of.items() if p == name]:
            del self.vectors[u], self.part_of[u]

    def parts(self) -> list[str]:
        return embedding_parts(self.folder)[0]


def brute_force(store: Store, train: set[str], test: set[str], k: int) -> dict:
    """query -> (neighbour ids, scores) by the definition: float64 dot products rounded to
    float32, highest first, ties to the smaller uuid; only uuids with a stored vector."""
    corpus = sorted(u for u in train if u in store.vectors)
    matrix = np.stack([store.vectors[u] for u in corpus]).astype(np.float64) if corpus else None
    truth = {}
    for q in sorted(u for u in test if u in store.vectors):
        if matrix is None:
            truth[q] = ([], [])
            continue
        # elementwise, then a sum along each row: the same arithmetic for equal rows
        scores = (matrix * store.vectors[q].astype(np.float64)).sum(axis=1).astype(np.float32)
        order = sorted(range(len(corpus)), key=lambda i: (-scores[i], corpus[i]))[:k]
        truth[q] = ([corpus[i] for i in order], [float(scores[i]) for i in order])
    return truth


def stored_table(location: Path) -> dict:
    table = pq.read_table(location).to_pydict()
    return {q: (n, s) for q, n, s in zip(table["query"], table["neighbours"], table["scores"],
                                         strict=True)}


def assert_same(table: dict, expected: dict) -> None:
    assert list(table) == list(expected)  # the same queries, in uuid order
    for query, (ids, scores) in expected.items():
        assert table[query][0] == ids, query
        np.testing.assert_allclose(table[query][1], scores, atol=1e-6)


def run(store: Store, train: set[str], test: set[str], location: Path, **kw):
    stored = stored_rows(store.parts(), pa.array(sorted(train)), pa.array(sorted(test)))
    return update_ground_truth(stored, str(location), kw.pop("k", K), kw.pop("model_id", "m"),
                               kw.pop("buffer_bytes", 20_000), **kw)


def check(store: Store, train: set[str], test: set[str], location: Path, tmp: Path, **kw):
    """The table at ``location`` equals the brute force and a full recompute elsewhere."""
    expected = brute_force(store, train, test, kw.get("k", K))
    table = stored_table(location)
    assert_same(table, expected)
    fresh = tmp / f"full-{len(list(tmp.iterdir()))}.parquet"
    update = run(store, train, test, fresh, **kw)
    assert update.full
    full = stored_table(fresh)
    assert list(full) == list(table)
    for query, (ids, scores) in full.items():
        assert table[query][0] == ids
        np.testing.assert_allclose(table[query][1], scores, atol=1e-6)


def _ids(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(start, start + n)]


_text_ids = _ids


def _uuid_ids(prefix: str, n: int, start: int = 0) -> list[str]:
    """Canonical uuids (a stable one per text id), in no particular order."""
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, i)) for i in _ids(prefix, n, start)]


@pytest.mark.parametrize("spare", [None, 1])  # 1: near-ties often need the rescan
@pytest.mark.parametrize("form", ["text", "uuid"])  # uuid: ids held as 16-byte binary
def test_incremental_runs_equal_a_full_recompute_and_the_brute_force(tmp_path, spare, form):
    _ids = _uuid_ids if form == "uuid" else _text_ids
    store = Store(tmp_path / "embeddings")
    location = tmp_path / "truth" / "ground_truth.parquet"
    kw = {} if spare is None else {"spare": spare}
    train, test = set(_ids("t", 240)), set(_ids("q", 30))
    store.add(_ids("t", 120) + _ids("q", 15))
    # exact copies: scores tie exactly, and the tie goes to the smaller uuid in every run
    base = store.add(_ids("t", 120, 120) + _ids("q", 15, 15))
    copies = np.stack([store.vectors[u] for u in _ids("t", 40)])
    store.add(_ids("c", 40), copies)  # c... sort after t...: they lose their ties
    store.add(_ids("a", 40), copies)  # a... sort first: they win them
    train |= set(_ids("c", 40)) | set(_ids("a", 40))
    rescanned = 0

    first = run(store, train, test, location, **kw)
    assert first.full and first.reason.startswith("no previous table")
    assert (first.corpus, first.queries) == (320, 30)
    check(store, train, test, location, tmp_path, **kw)

    # 1. posts added: new train vectors (some copies again) and new test queries
    more = _ids("t", 60, 240)
    store.add(more + _ids("q", 5, 30), np.concatenate([
        l2_normalise(store.rng.standard_normal((50, store.dim))),
        np.stack([store.vectors[u] for u in _ids("t", 10, 40)]),
        l2_normalise(store.rng.standard_normal((5, store.dim)))]))
    train |= set(more)
    test |= set(_ids("q", 5, 30))
    update = run(store, train, test, location, **kw)
    assert not update.full
    assert (update.added, update.removed, update.new_queries, update.lost_neighbour) == (60, 0, 5, 0)
    assert update.merged == 30 and update.scored == 5 * 380 + 30 * 60
    rescanned += update.rescanned
    check(store, train, test, location, tmp_path, **kw)

    # 2. posts removed: train posts that are some queries' neighbours, and test posts
    table = stored_table(location)
    neighbours = sorted({n for ids, _ in table.values() for n in ids[:3]})[:8]
    gone = set(neighbours) | set(_ids("t", 5, 200))
    train -= gone
    test -= set(_ids("q", 3))
    lost = sum(1 for q, (ids, _) in table.items() if q in test and set(ids) & gone)
    update = run(store, train, test, location, **kw)
    assert (update.added, update.removed, update.new_queries) == (0, len(gone), 0)
    assert update.lost_neighbour == lost > 0 and update.dropped_queries == 3
    assert update.merged == 0  # nothing added: the others are kept as they were
    rescanned += update.rescanned
    check(store, train, test, location, tmp_path, **kw)

    # 3. a part re-embedded (set aside, written again with other vectors) and added to
    store.drop_part(base)
    store.add(_ids("t", 120, 120) + _ids("q", 15, 15))
    store.add(_ids("t", 30, 300))
    train |= set(_ids("t", 30, 300))
    update = run(store, train, test, location, **kw)
    assert not update.full and update.added == 150 - len(gone & set(_ids("t", 120, 120)))
    assert update.new_queries == 15  # the re-embedded queries count as new
    rescanned += update.rescanned
    check(store, train, test, location, tmp_path, **kw)

    # 4. nothing changed: nothing computed, nothing written
    record = Path(corpus_location(str(location)))
    written = location.stat().st_mtime_ns, record.stat().st_mtime_ns
    update = run(store, train, test, location, **kw)
    assert update.unchanged and update.scored == 0
    assert update.summary().startswith("unchanged: 0 added, 0 removed, 0 new queries")
    assert (location.stat().st_mtime_ns, record.stat().st_mtime_ns) == written
    assert sorted(read_corpus(str(location)).to_pylist()) == sorted(
        u for u in train if u in store.vectors)
    if spare == 1:
        assert rescanned > 0  # the rescan path was taken and still matched


def test_another_k_or_model_or_a_damaged_record_recomputes_everything(tmp_path):
    store = Store(tmp_path / "embeddings")
    location = tmp_path / "ground_truth.parquet"
    train, test = set(_ids("t", 80)), set(_ids("q", 8))
    store.add(sorted(train | test))
    assert run(store, train, test, location).full
    assert run(store, train, test, location).unchanged
    update = run(store, train, test, location, k=5)
    assert update.full and "k=10" in update.reason
    assert_same(stored_table(location), brute_force(store, train, test, 5))
    update = run(store, train, test, location, k=5, model_id="other")
    assert update.full and "'m'" in update.reason
    # a corpus record that is not the table's (a write interrupted between the two)
    Path(corpus_location(str(location))).write_bytes(b"not parquet")
    update = run(store, train, test, location, k=5, model_id="other")
    assert update.full and "unreadable" in update.reason
    assert_same(stored_table(location), brute_force(store, train, test, 5))


def test_a_corpus_smaller_than_k_and_an_empty_one(tmp_path):
    store = Store(tmp_path / "embeddings")
    location = tmp_path / "ground_truth.parquet"
    store.add(_ids("t", 4) + _ids("q", 3))
    train, test = set(_ids("t", 4)), set(_ids("q", 3))
    run(store, train, test, location)
    assert_same(stored_table(location), brute_force(store, train, test, K))
    store.add(_ids("t", 3, 4))
    train |= set(_ids("t", 3, 4))
    assert not run(store, train, test, location).full  # 4 kept, merged with 3 added
    assert_same(stored_table(location), brute_force(store, train, test, K))
    run(store, set(), test, location)
    assert all(ids == [] for ids, _ in stored_table(location).values())


def test_blocks_follow_from_the_buffer():
    # 2048-row parts of 768-d vectors: 256 MiB holds ~23k queries' scores and vectors
    assert block_size(768, 2048, 20, 256 * 2**20) == 256 * 2**20 // (4 * 2048 + 4 * 768 + 1920)
    assert block_size(768, 2048, 20, 1) == 1


def _peak_bytes(tmp: Path, corpus: int, dim: int, buffer_bytes: int) -> int:
    store = Store(tmp, dim=dim, seed=corpus)
    queries = _ids("q", 40)
    for start in range(0, corpus, 500):
        store.add(_ids("t", 500, start) + (queries if start == 0 else []))
    train, test = set(_ids("t", corpus)), set(queries)
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        run(store, train, test, tmp / "ground_truth.parquet", buffer_bytes=buffer_bytes)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_corpus(tmp_path):
    """numpy's allocations (traced by tracemalloc) peak at the buffer and one part: 4x the
    corpus, not 4x the memory. (Arrow's id arrays are not traced; they are ids, not vectors.)"""
    dim, buffer_bytes = 256, 1 << 20
    _peak_bytes(tmp_path / "warm-up", 500, dim, buffer_bytes)  # imports, caches: not counted
    small = _peak_bytes(tmp_path / "small", 2_000, dim, buffer_bytes)
    large = _peak_bytes(tmp_path / "large", 8_000, dim, buffer_bytes)
    assert large < 1.2 * small, (small, large)
    assert large < 8_000 * dim * 4 / 2  # well below the corpus's vectors held at once


def test_a_truth_first_computed_over_no_corpus_is_brought_up_to_date(tmp_path):
    """The first run found test queries but no train vector yet; the next, with some, must
    not trip over the empty record of the previous corpus."""
    store = Store(tmp_path / "embeddings")
    location = tmp_path / "truth" / "ground_truth.parquet"
    store.add(_ids("q", 5))
    first = run(store, set(), set(_ids("q", 5)), location)
    assert first.corpus == 0 and first.queries == 5
    store.add(_ids("t", 30))
    second = run(store, set(_ids("t", 30)), set(_ids("q", 5)), location)
    assert second.added == 30 and not second.full
    check(store, set(_ids("t", 30)), set(_ids("q", 5)), location, tmp_path)


def test_canonical_uuids_are_held_as_16_bytes_in_the_same_order():
    ids = sorted(str(uuid.UUID(int=i * 2**100 + 7 * i)) for i in range(1, 300))
    compact = compact_uuids(pa.array(ids))
    assert compact.type == pa.binary(16)
    assert compact.to_pylist() == [uuid.UUID(u).bytes for u in ids]
    assert compact.to_pylist() == sorted(compact.to_pylist())  # byte order: string order
    assert uuid_strings(compact).to_pylist() == ids
    assert uuid_strings(compact.slice(5, 10)).to_pylist() == ids[5:15]
    assert compact_uuids(pa.array(ids).slice(3, 4)).to_pylist() == [
        uuid.UUID(u).bytes for u in ids[3:7]]
    # anything else stays text, as it was
    lettered = "0f1e2d3c-4b5a-6978-8a9b-acbdcedfe0f1"
    assert compact_uuids(pa.array([lettered])).type == pa.binary(16)
    assert uuid_strings(compact_uuids(pa.array([lettered]))).to_pylist() == [lettered]
    for other in (ids[:3] + ["t00001"], [lettered.upper()], [lettered.replace("-", "")],
                  [lettered[:8] + "x" + lettered[9:]], [lettered[:-1] + "g"], [lettered, None],
                  []):
        array = pa.array(other, pa.string())
        assert compact_uuids(array).equals(array)
        assert uuid_strings(array).equals(array)


def test_a_parts_rows_are_read_in_the_order_asked_batch_by_batch(tmp_path):
    rng = np.random.default_rng(3)
    vectors = l2_normalise(rng.standard_normal((50, 8))).astype(np.float32)
    table = vectors_table(_ids("t", 50), ["train"] * 50, "m", vectors)
    path = tmp_path / "part-0000.parquet"
    pq.write_table(table, path, row_group_size=12)  # several row groups, batches across them
    wanted = rng.permutation(50)[:23]
    for batch_rows in (1, 7, 4096):
        got = read_part_rows(str(path), wanted, batch_rows=batch_rows)
        np.testing.assert_array_equal(got, to_matrix(table.column("vector"))[wanted])
    np.testing.assert_array_equal(read_part_rows(str(path), np.arange(50)), vectors)
    assert read_part_rows(str(path), np.arange(0)).shape[0] == 0
    with pytest.raises(IndexError):
        read_part_rows(str(path), np.array([3, 50]))
