"""The embedded index: coded graphs (8-bit, fp16) re-ranked on memory-mapped float vectors.

Answers are compared with a brute-force numpy reference (every score, every top k), not
with the index's own code path."""

import json
import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from imgsearch_pipeline.core import keywords as kw
from imgsearch_pipeline.core.integrity import IntegrityError
from imgsearch_pipeline.resources.vector_index import (
    KEYWORDS_FILE,
    VECTORS_FILE,
    FaissHnswIndex,
    IndexBatch,
    SearchFilter,
)

N, DIM, K = 1500, 32, 10


def _vectors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    points = centres[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, DIM))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


CORPUS = _vectors(N, 0)
QUERIES = _vectors(60, 1)
IDS = [f"doc-{i:05d}" for i in range(N)]
SPLITS = ["train" if i % 3 else "test" for i in range(N)]
CAPTIONS = [f"a {'red' if i % 2 else 'blue'} thing {i}" for i in range(N)]


def _build(root: Path, codes: str, version: str = "v1", batch: int = 400) -> FaissHnswIndex:
    index = FaissHnswIndex(root=str(root), codes=codes, m=16, ef_construction=100)
    batches = [IndexBatch(IDS[i:i + batch], CORPUS[i:i + batch], CAPTIONS[i:i + batch],
                          SPLITS[i:i + batch], [""] * len(IDS[i:i + batch]))
               for i in range(0, N, batch)]
    assert index.build(version, DIM, batches) == N
    return index


def _exact(query: np.ndarray, allowed: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    scores = CORPUS.astype(np.float64) @ query.astype(np.float64)
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    top = np.argsort(-scores)[:K]
    return [IDS[i] for i in top], scores[top]


@pytest.mark.parametrize("codes", ["sq8", "fp16", "flat"])
def test_results_match_exact_search(tmp_path, codes):
    index = _build(tmp_path / codes, codes)
    overlap = []
    for query in QUERIES:
        hits = index.search(query, K, num_candidates=N, version="v1")
        expected, _ = _exact(query)
        overlap.append(len({h.uuid for h in hits} & set(expected)) / K)
        # Scores are the exact cosines of the hit's float vector, sorted best first.
        reference = CORPUS[[IDS.index(h.uuid) for h in hits]] @ query
        np.testing.assert_allclose([h.score for h in hits], reference, rtol=0, atol=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert np.mean(overlap) >= 0.99, np.mean(overlap)


def test_default_is_8bit_codes_with_memory_mapped_rerank_vectors(tmp_path):
    index = FaissHnswIndex(root=str(tmp_path / "sq8"), m=16, ef_construction=100)
    assert index.codes == "sq8"
    sq8 = _build(tmp_path / "sq8", index.codes)
    flat = _build(tmp_path / "flat", "flat")
    sq8.search(QUERIES[0], K, 64, version="v1")
    loaded = sq8._load("v1")
    folder = tmp_path / "sq8" / "versions" / "v1"
    # The float vectors are a read-only map of the version's file, identical to the input.
    (block,) = loaded.vectors.blocks  # a full build: one file
    mapped = block.base  # the array's memory is the file's read-only map
    assert isinstance(mapped, np.memmap) and mapped.mode == "r"
    assert isinstance(mapped.base, mmap.mmap)
    assert Path(mapped.filename) == (folder / VECTORS_FILE).resolve()
    assert not block.flags.writeable and not block.flags.owndata
    np.testing.assert_array_equal(block, CORPUS)
    # The graph in RAM holds one byte per dimension where the flat graph holds four.
    sq8_bytes = (folder / "index.faiss").stat().st_size
    flat_bytes = (tmp_path / "flat" / "versions" / "v1" / "index.faiss").stat().st_size
    assert flat_bytes - sq8_bytes == pytest.approx(3 * N * DIM, rel=0.01)
    assert flat._load("v1").vectors is None
    params = json.loads((folder / "params.json").read_text())
    assert params["codes"] == "sq8" and params["count"] == N and params["dim"] == DIM


@pytest.mark.parametrize("codes", ["sq8", "flat"])
def test_filters_apply_inside_the_search(tmp_path, codes):
    index = _build(tmp_path, codes)
    for search_filter in (SearchFilter(split="test"), SearchFilter(caption_words=("RED",)),
                          SearchFilter(caption_words=("red",), split="test")):
        allowed = np.array([
            (search_filter.split is None or s == search_filter.split)
            and all(w.lower() in c for w in search_filter.caption_words)
            for s, c in zip(SPLITS, CAPTIONS, strict=True)])
        for query in QUERIES[:20]:
            hits = index.search(query, K, N, version="v1", search_filter=search_filter)
            assert len(hits) == K
            assert all(allowed[IDS.index(h.uuid)] for h in hits)
            expected, _ = _exact(query, allowed)
            assert len({h.uuid for h in hits} & set(expected)) >= K - 1


def test_reload_from_disk_gives_the_same_answers(tmp_path):
    index = _build(tmp_path, "sq8")
    before = [index.search(q, K, 64, version="v1") for q in QUERIES[:20]]
    index.publish("v1")
    index.release("v1")
    again = FaissHnswIndex(root=str(tmp_path))  # a new process's resource: reads the files
    assert again.count() == N
    assert [again.search(q, K, 64) for q in QUERIES[:20]] == before


def test_versions_built_with_float_codes_still_load(tmp_path):
    _build(tmp_path, "flat")
    reader = FaissHnswIndex(root=str(tmp_path))  # the default (sq8) reads an older flat one
    hits = reader.search(QUERIES[0], K, N, version="v1")
    assert [h.uuid for h in hits] == _exact(QUERIES[0])[0]


@pytest.mark.parametrize("damage", ["overwrite", "truncate"])
def test_damaged_rerank_vectors_are_detected(tmp_path, damage):
    index = _build(tmp_path, "sq8")
    path = tmp_path / "versions" / "v1" / VECTORS_FILE
    data = bytearray(path.read_bytes())
    if damage == "overwrite":
        data[1000:1004] = b"\x00\x00\x80\x7f"  # one float becomes +inf
    else:
        data = data[:-DIM * 4]
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=VECTORS_FILE):
        index.search(QUERIES[0], K, 64, version="v1")
    with pytest.raises(IntegrityError, match=VECTORS_FILE):
        index.publish("v1")


def test_vectors_file_must_match_the_graph(tmp_path):
    """A vectors file of the wrong size (e.g. rewritten with its manifest) is refused."""
    from imgsearch_pipeline.core.integrity import write_manifest

    index = _build(tmp_path, "sq8")
    folder = tmp_path / "versions" / "v1"
    path = folder / VECTORS_FILE
    path.write_bytes(path.read_bytes()[:-DIM * 4])
    write_manifest(folder, ["index.faiss", "docs.parquet", "params.json", VECTORS_FILE])
    with pytest.raises(IntegrityError, match=f"{VECTORS_FILE}: .* in the graph"):
        index.search(QUERIES[0], K, 64, version="v1")


@pytest.mark.parametrize("codes", ["sq8", "flat"])
def test_bad_batch_shape_is_refused(tmp_path, codes):
    index = FaissHnswIndex(root=str(tmp_path), codes=codes)
    with pytest.raises(ValueError, match="expected"):
        index.build("v1", DIM, [IndexBatch(IDS[:5], CORPUS[:4])])
    # nothing left behind: no vectors file, no temporary (``.vectors.f32.<hex>.tmp``)
    assert not list((tmp_path / "versions" / "v1").iterdir())


def test_a_version_searches_with_the_rerank_width_it_was_built_with(tmp_path):
    built = FaissHnswIndex(root=str(tmp_path), m=16, ef_construction=100, rerank_factor=3)
    built.build("v1", DIM, [IndexBatch(IDS, CORPUS, CAPTIONS, SPLITS, [""] * N)])
    # Another process, configured otherwise, serves the same version.
    serving = FaissHnswIndex(root=str(tmp_path), m=16, ef_construction=100, rerank_factor=1)
    loaded = serving._load("v1")
    asked: list[int] = []

    class Spy:
        def __init__(self, index):
            self._index = index

        def search(self, query, k, params=None):
            asked.append(k)
            return self._index.search(query, k, params=params)

        def __getattr__(self, name):
            return getattr(self._index, name)

    loaded.index = Spy(loaded.index)
    try:
        hits = serving.search(QUERIES[0], K, num_candidates=200, version="v1")
    finally:
        serving.release("v1")
    assert asked == [3 * K] and len(hits) == K


@pytest.mark.parametrize("codes", ["sq8", "flat"])
def test_build_reports_vectors_as_they_enter_the_graph(tmp_path, monkeypatch, codes):
    """Progress counts graph adds, not reads: a coded graph reads (spills) every batch
    first and adds them afterwards, chunk by chunk; a flat graph adds each batch as read."""
    from imgsearch_pipeline.resources import vector_index

    monkeypatch.setattr(vector_index, "_ADD_CHUNK", 256)
    events: list[tuple[str, int]] = []

    def batches():
        for i in range(0, N, 400):
            events.append(("read", len(IDS[i:i + 400])))
            yield IndexBatch(IDS[i:i + 400], CORPUS[i:i + 400])

    index = FaissHnswIndex(root=str(tmp_path), codes=codes, m=16, ef_construction=100)
    assert index.build("v1", DIM, batches(), on_indexed=lambda n: events.append(("added", n))) == N
    added = [n for kind, n in events if kind == "added"]
    assert sum(added) == N
    last_read = max(i for i, (kind, _) in enumerate(events) if kind == "read")
    if codes == "sq8":
        assert added == [256] * (N // 256) + [N % 256]
        assert all(kind == "read" for kind, _ in events[: last_read + 1])
    else:
        assert added == [400, 400, 400, 300]
        assert events[1] == ("added", 400)  # the first batch is in the graph before the second is read


@pytest.mark.parametrize("codes", ["sq8", "flat"])
def test_a_batch_gets_the_answers_of_one_query_at_a_time(tmp_path, codes):
    """``search_many`` (the recall count's batches, spread over faiss's threads) returns,
    row by row, exactly what ``search`` returns for that row alone."""
    index = _build(tmp_path / codes, codes)
    # at full depth the batch is exact: numpy's brute force is the reference
    full = index.search_many(QUERIES, K, N, version="v1")
    assert [[h.uuid for h in row] for row in full] == [_exact(q)[0] for q in QUERIES]
    for depth in (10, 40):
        batch = index.search_many(QUERIES, K, depth, version="v1")
        alone = [index.search(q, K, depth, version="v1") for q in QUERIES]
        assert [[h.uuid for h in row] for row in batch] == [[h.uuid for h in row] for row in alone]
        np.testing.assert_allclose([[h.score for h in row] for row in batch],
                                   [[h.score for h in row] for row in alone], atol=1e-6)


@pytest.mark.parametrize("codes", ["sq8", "flat"])
def test_an_incremental_version_is_its_base_plus_added_minus_removed(tmp_path, codes):
    """v1 holds the first 1,200 documents; v2 = v1 + the last 300 - 150 removed; v3 removes
    more and adds nothing. Each answers like numpy's exact search over exactly its own
    documents, never returns a removed one (unfiltered, filtered, batched, after a reload),
    and v1 still answers as before."""
    index = FaissHnswIndex(root=str(tmp_path), codes=codes, m=16, ef_construction=100)

    def batch(rows: range) -> IndexBatch:
        return IndexBatch([IDS[i] for i in rows], CORPUS[list(rows)], [CAPTIONS[i] for i in rows],
                          [SPLITS[i] for i in rows], [""] * len(rows))

    assert index.build("v1", DIM, [batch(range(0, 1200))]) == 1200
    removed = [IDS[i] for i in range(0, 1200, 8)]
    assert index.build("v2", DIM, [batch(range(1200, 1500))], base="v1", removed=removed) == 1350
    more = [IDS[i] for i in range(1, 1200, 8)] + [IDS[1201]]
    assert index.build("v3", DIM, [], base="v2", removed=more) == 1350 - len(more)
    # v4 takes back some of v2's removed: new rows; their old ones stay excluded
    back = removed[:20]
    assert index.build("v4", DIM, [batch(range(0, 160, 8))], base="v3") == 1350 - len(more) + 20
    kept = {"v1": np.arange(N) < 1200}
    kept["v2"] = ~np.isin(IDS, removed)
    kept["v3"] = kept["v2"] & ~np.isin(IDS, more)
    kept["v4"] = kept["v3"] | np.isin(IDS, back)
    for version in ("v1", "v2", "v3", "v4"):
        assert index.count(version) == int(kept[version].sum())
        overlap = []
        for reloaded in (False, True):
            if reloaded:
                index.release(version)
            batched = index.search_many(QUERIES, K, N, version=version)
            for query, many in zip(QUERIES, batched, strict=True):
                hits = index.search(query, K, num_candidates=N, version=version)
                expected, _ = _exact(query, kept[version])
                overlap.append(len({h.uuid for h in hits} & set(expected)) / K)
                assert [h.uuid for h in many] == [h.uuid for h in hits]
                assert all(kept[version][IDS.index(h.uuid)] for h in hits)
                red = index.search(query, K, N, version=version,
                                   search_filter=SearchFilter(caption_words=("red",)))
                assert all(kept[version][IDS.index(h.uuid)] and "red" in h.caption for h in red)
        assert np.mean(overlap) >= 0.99, (version, np.mean(overlap))


def _rows(rows: range | list[int]) -> IndexBatch:
    rows = list(rows)
    return IndexBatch([IDS[i] for i in rows], CORPUS[rows], [CAPTIONS[i] for i in rows],
                      [SPLITS[i] for i in rows], [""] * len(rows))


def _assert_answers(index: FaissHnswIndex, version: str, kept: np.ndarray) -> None:
    """Each hit is a kept document scored with its own vector (the re-rank read the right
    row), and the hits are numpy's exact top k over ``kept`` (HNSW: 99% of them)."""
    overlap = []
    for query in QUERIES:
        hits = index.search(query, K, num_candidates=N, version=version)
        rows = [IDS.index(h.uuid) for h in hits]
        assert all(kept[rows])
        np.testing.assert_allclose([h.score for h in hits], CORPUS[rows] @ query, atol=1e-5)
        overlap.append(len(set(_exact(query, kept)[0]) & {h.uuid for h in hits}) / K)
    assert np.mean(overlap) >= 0.99, np.mean(overlap)


def test_an_incremental_version_shares_its_bases_vectors(tmp_path, monkeypatch):
    """An incremental version's float vectors are its base's files, hard-linked, plus a file
    of the new rows only: nothing is copied, the base can be deleted, and damage to a
    shared file is found by every version that holds it."""
    index = FaissHnswIndex(root=str(tmp_path), m=16, ef_construction=100)
    index.build("v1", DIM, [_rows(range(0, 1200))])
    index.build("v2", DIM, [_rows(range(1200, 1500))], base="v1", removed=IDS[:10])
    v1, v2 = tmp_path / "versions" / "v1", tmp_path / "versions" / "v2"
    assert os.path.samefile(v1 / VECTORS_FILE, v2 / VECTORS_FILE)
    assert (v2 / "vectors-1.f32").read_bytes() == CORPUS[1200:].tobytes()
    index.delete_version("v1")
    index.release("v2")  # as a new process would
    _assert_answers(index, "v2", ~np.isin(IDS, IDS[:10]))
    # Where the file system has no hard links, the base's files are copied.
    def no_links(*args, **kwargs):
        raise OSError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    index.build("v3", DIM, [], base="v2", removed=IDS[10:20])
    v3 = tmp_path / "versions" / "v3"
    assert not os.path.samefile(v2 / VECTORS_FILE, v3 / VECTORS_FILE)
    _assert_answers(index, "v3", ~np.isin(IDS, IDS[:20]))
    monkeypatch.undo()
    index.build("v4", DIM, [], base="v2")
    data = bytearray((v2 / VECTORS_FILE).read_bytes())
    data[1000:1004] = b"\x00\x00\x80\x7f"
    (v2 / VECTORS_FILE).write_bytes(bytes(data))  # in place: v2's and v4's bytes
    for version in ("v2", "v4"):
        index.release(version)
        with pytest.raises(IntegrityError, match=VECTORS_FILE):
            index.search(QUERIES[0], K, 64, version=version)
    index.search(QUERIES[0], K, 64, version="v3")  # its own copy


def test_a_long_chain_of_versions_merges_its_vector_files(tmp_path, monkeypatch):
    """At ``MAX_VECTOR_FILES`` files, the next version keeps its base's first file and
    writes the rest, with its new rows, into one; every version's answers pass `_assert_answers`."""
    from imgsearch_pipeline.resources import vector_index

    monkeypatch.setattr(vector_index, "MAX_VECTOR_FILES", 3)
    index = FaissHnswIndex(root=str(tmp_path), m=16, ef_construction=100)
    index.build("v0", DIM, [_rows(range(0, 1000))])
    files = []
    for step in range(1, 6):
        rows = range(900 + 100 * step, 1000 + 100 * step)
        index.build(f"v{step}", DIM, [_rows(rows)], base=f"v{step - 1}", removed=[IDS[step]])
        folder = tmp_path / "versions" / f"v{step}"
        files.append(len(list(folder.glob("vectors*.f32"))))
        assert os.path.samefile(folder / VECTORS_FILE, tmp_path / "versions" / "v0" / VECTORS_FILE)
        kept = (np.arange(N) < 1000 + 100 * step) & ~np.isin(IDS, IDS[1:step + 1])
        assert index.count(f"v{step}") == int(kept.sum())
        _assert_answers(index, f"v{step}", kept)
    assert files == [2, 3, 2, 3, 2]


def test_an_incremental_version_refuses_what_its_base_cannot_hold(tmp_path):
    index = _build(tmp_path, "sq8")
    with pytest.raises(ValueError, match="not in version v1"):
        index.build("v2", DIM, [], base="v1", removed=["no-such-doc"])
    again = IndexBatch(IDS[:2], CORPUS[:2])
    with pytest.raises(ValueError, match="already in version v1"):
        index.build("v3", DIM, [again], base="v1")
    with pytest.raises(ValueError, match="build in full"):
        FaissHnswIndex(root=str(tmp_path), codes="fp16").build("v4", DIM, [], base="v1")


# -- caption keyword search and the similarity cutoff (issue 22) -------------------------

def test_keyword_search_ranks_a_versions_captions_as_the_reference_bm25(tmp_path):
    from .test_keywords import generated_captions, lucene_reference_ranking

    generated = generated_captions(N, seed=3)
    captions = [generated[f"u{i:05d}"] for i in range(N)]
    index = FaissHnswIndex(root=str(tmp_path), m=16, ef_construction=100)
    index.build("v1", DIM, [IndexBatch(IDS, CORPUS, captions, SPLITS, [""] * N)])
    index.publish("v1")
    order = sorted(range(N), key=lambda i: IDS[i])
    corpus = [kw.caption_tokens(captions[i]) for i in order]
    for query in ("sunset", "#sunset", "東京 夜景", "dog cat sea", "Zürich ☕"):
        expected = lucene_reference_ranking(corpus, [IDS[i] for i in order], kw.query_tokens(query))
        hits = index.keyword_search(query, 50)
        assert [h.uuid for h in hits] == [u for u, _ in expected[:50]], query
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected[:50]], rel=1e-6)
        assert all(h.caption == captions[IDS.index(h.uuid)] for h in hits)
    # The caption filter and the split keep their posts without changing their scores.
    train = index.keyword_search("sunset", 20, search_filter=SearchFilter(split="train"))
    assert train and all(SPLITS[IDS.index(h.uuid)] == "train" for h in train)
    assert index.keyword_search(" ;; ", 5) == []


def test_an_incremental_version_never_finds_a_removed_caption(tmp_path):
    captions = [f"post {i} #tag{i % 7} {'sunset' if i % 5 == 0 else 'beach'}" for i in range(N)]
    index = FaissHnswIndex(root=str(tmp_path), m=16, ef_construction=100)

    def batch(rows: range) -> IndexBatch:
        return IndexBatch([IDS[i] for i in rows], CORPUS[list(rows)], [captions[i] for i in rows],
                          [SPLITS[i] for i in rows], [""] * len(rows))

    index.build("v1", DIM, [batch(range(0, 1200))])
    removed = [IDS[i] for i in range(0, 1200, 10)]  # every one of them says "sunset"
    index.build("v2", DIM, [batch(range(1200, 1500))], base="v1", removed=removed)
    index.build("v3", DIM, [batch(range(0, 100, 10))], base="v2")  # ten come back
    for version, present in (("v1", range(0, 1200)), ("v2", [i for i in range(1500) if i % 10 or i >= 1200]),
                             ("v3", [i for i in range(1500) if i % 10 or i >= 1200 or i < 100])):
        index.release(version)
        found = {h.uuid for h in index.keyword_search("sunset", N, version=version)}
        assert found == {IDS[i] for i in present if i % 5 == 0}, version
        assert len(index.keyword_search("#tag3", N, version=version)) == sum(
            1 for i in present if i % 7 == 3)


def test_damaged_keyword_index_is_detected(tmp_path):
    index = _build(tmp_path, "sq8")
    index.release("v1")
    path = tmp_path / "versions" / "v1" / KEYWORDS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        index.keyword_search("red", 5, version="v1")


def test_min_score_keeps_only_hits_at_least_that_similar(tmp_path):
    index = _build(tmp_path, "sq8")
    query = QUERIES[0]
    ids, scores = _exact(query)
    cutoff = float((scores[3] + scores[4]) / 2)
    hits = index.search(query, K, 200, version="v1", min_score=cutoff)
    assert [h.uuid for h in hits] == ids[:4]
    assert all(h.score >= cutoff for h in hits)
    assert index.search(query, K, 200, version="v1", min_score=1.0) == []


def test_stored_vectors_are_what_the_exact_timing_scans(tmp_path):
    """The report times the exact search on a version's own float vectors: every row it
    holds, the removed ones kept out of the answers (as numpy's search over its documents)."""
    from imgsearch_pipeline.core.evaluation import exact_search

    index = FaissHnswIndex(root=str(tmp_path), m=16, ef_construction=100)
    rows = range(0, 1200)
    index.build("v1", DIM, [IndexBatch(IDS[:1200], CORPUS[:1200], CAPTIONS[:1200])])
    removed = [IDS[i] for i in rows[::5]]
    index.build("v2", DIM, [], base="v1", removed=removed)
    index.build("v3", DIM, [IndexBatch(IDS[1200:], CORPUS[1200:], CAPTIONS[1200:])], base="v2")
    blocks, excluded = index.stored_vectors("v2")
    assert [len(b) for b in blocks] == [1200, 0]  # v1's file, then v2's (it added nothing)
    assert not any(b.flags.writeable for b in blocks)
    assert sorted(excluded.tolist()) == list(rows[::5])
    kept = (np.arange(N) < 1200) & ~np.isin(IDS, removed)
    for query in QUERIES[:10]:
        assert [IDS[i] for i in exact_search(blocks, query, K, excluded)] == _exact(query, kept)[0]
    blocks, excluded = index.stored_vectors("v3")
    assert [len(b) for b in blocks] == [1200, 0, 300]
    kept = ~np.isin(IDS, removed)
    for query in QUERIES[:10]:
        assert [IDS[i] for i in exact_search(blocks, query, K, excluded)] == _exact(query, kept)[0]
    flat = _build(tmp_path / "flat", "flat")
    assert flat.stored_vectors("v1") is None  # nothing stored apart: the corpus is mapped


def test_a_remembered_check_still_finds_later_damage(tmp_path, monkeypatch):
    """A version verified once in full is not hashed again by the next process while its
    files are as they were; damaged afterwards, it is refused all the same."""
    import time

    from imgsearch_pipeline.core import integrity

    index = _build(tmp_path, "sq8")
    monkeypatch.setattr(integrity, "RACY_NS", 0)  # files written just now count as settled
    time.sleep(0.05)
    index.search(QUERIES[0], K, 64, version="v1")
    folder = tmp_path / "versions" / "v1"
    assert (folder / integrity.verified_marker_name()).is_file()
    index.release("v1")  # as a new process would
    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda p: hashed.append(p) or real(p))
    index.publish("v1")
    assert index.search(QUERIES[0], K, 64, version="v1") and hashed == []
    index.release("v1")
    time.sleep(0.05)  # the coarse clock that stamps ctime moves on
    path = folder / VECTORS_FILE
    data = bytearray(path.read_bytes())
    data[1000:1004] = b"\x00\x00\x80\x7f"  # same size
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=VECTORS_FILE):
        index.search(QUERIES[0], K, 64, version="v1")
    with pytest.raises(IntegrityError, match=VECTORS_FILE):
        index.publish("v1")


@pytest.mark.parametrize("codes", ["sq8", "fp16", "flat"])
def test_a_stored_count_without_loading_is_the_loaded_count(tmp_path, codes):
    """A check's process counts a version from its verified files' headers; the same number
    as the loaded version's, removed documents left out, damage refused."""
    import faiss

    from imgsearch_pipeline.resources import vector_index as module

    index = _build(tmp_path, codes)
    index.build("v2", DIM, [], base="v1", removed=IDS[:7])
    for version, expected in (("v1", N), ("v2", N - 7)):
        folder = tmp_path / "versions" / version
        assert module._graph_size(folder / "index.faiss") == faiss.read_index(
            str(folder / "index.faiss")).ntotal == N
        assert index.stored_count(version) == expected
        assert (tmp_path.resolve().as_posix(), version) not in {
            (Path(r).as_posix(), v) for r, v in module._LOADED}  # counted, not loaded
        assert index.count(version) == expected  # loads it (the API's warm start)
        assert index.stored_count(version) == expected  # now from the loaded version
        index.release(version)
    path = tmp_path / "versions" / "v1" / "docs.parquet"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IntegrityError, match="docs.parquet"):
        index.stored_count("v1")


@pytest.mark.parametrize("codes", ["sq8", "flat"])
def test_search_both_gives_the_two_searches_answers(tmp_path, codes):
    index = _build(tmp_path, codes)
    for query in QUERIES[:10]:
        pictures, words = index.search_both(query, "red thing", 30, 200, version="v1")
        assert pictures == index.search(query, 30, 200, version="v1")
        assert words == index.keyword_search("red thing", 30, version="v1")
    cutoff = index.search(QUERIES[0], 30, 200, version="v1")[9].score
    pictures, _ = index.search_both(QUERIES[0], "red", 30, 200, version="v1", min_score=cutoff)
    assert len(pictures) == 10 and min(h.score for h in pictures) >= cutoff
    assert index.search_both(None, "blue", 5, 200, version="v1")[0] == []
