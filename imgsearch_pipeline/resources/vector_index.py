"""Vector search index: an embedded HNSW (faiss) by default, Elasticsearch in production.

The embedded index keeps 8-bit codes in the HNSW graph (a quarter of the float vectors'
bytes) and re-ranks the graph's best candidates exactly on the float vectors, which stay
on disk memory-mapped (``vectors.f32``): in the index comparison (benchmarks/README.md,
section 2b) it reached Recall@10 >= 0.997 one depth step deeper than the float graph (128
against 96) at about the same p50, with about a third of its memory.

Both follow one model: each build writes a new *version*; ``publish`` makes a version
the live one atomically; searches go to the live version unless one is named.
"""

import functools
import json
import os
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.fusion import above_min_score
from ..core.ids import check_version
from ..core.integrity import IntegrityError, manifest_entries, verify_manifest, write_manifest
from ..core.keywords import (
    TOKENIZER_VERSION,
    TantivyKeywordIndex,
    extend_tantivy_index,
    write_tantivy_index,
)
from ..core.similarity import FAISS_METRIC, METRIC, similarities
from ..core.tables import atomic_path, write_bytes_atomic, write_table_atomic, write_text_atomic

# Searches' breadth for a version whose evaluation recorded no depth of its own (see
# ``VectorIndex.search_depth``): with m=32 and ef_construction=200 (VectorIndex's defaults)
# the smallest num_candidates reaching Recall@10 >= 0.997 at 27k x 768 (benchmarks/README.md).
DEFAULT_NUM_CANDIDATES = 128


@dataclass
class IndexBatch:
    """Documents to index: ids, their vectors and display fields (caption, split, shard)."""

    ids: list[str]
    vectors: np.ndarray
    captions: list[str | None] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SearchFilter:
    """Restricts a search inside the ANN traversal, not after it."""

    caption_words: tuple[str, ...] = ()
    split: str | None = None


class Hit(NamedTuple):  # a tuple: half the cost of a dataclass to make
    uuid: str
    score: float
    caption: str | None = None


class Ranking(Sequence[Hit]):
    """One search's best-first answer kept as columns, a ``Hit`` made only where one is read.

    ``keys`` name the documents alike on both sides of a hybrid search (a faiss row, an
    Elasticsearch uuid): fusion reads every key of two windows of 100 and shows a page of
    ten, and making (and fetching from memory) the other Hits cost more than the fusion."""

    __slots__ = ("keys", "scores", "_make")

    def __init__(self, keys: list, scores: list[float], make: Callable[[Any, float], Hit]):
        self.keys, self.scores, self._make = keys, scores, make

    @classmethod
    def of(cls, hits: Iterable[Hit]) -> "Ranking":
        hits = list(hits)
        captions = {hit.uuid: hit.caption for hit in hits}
        return cls([hit.uuid for hit in hits], [hit.score for hit in hits],
                   lambda uuid, score: Hit(uuid, score, captions[uuid]))

    def above(self, min_score: float | None) -> "Ranking":
        """The hits at least ``min_score`` similar, in their order."""
        if min_score is None:
            return self
        kept = above_min_score(range(len(self)), min_score, score=self.scores.__getitem__)
        return Ranking([self.keys[i] for i in kept], [self.scores[i] for i in kept], self._make)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        return self._make(self.keys[i], self.scores[i])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so unhashable like one

    def __repr__(self) -> str:
        return f"Ranking({list(self)!r})"


class VectorIndex(dg.ConfigurableResource, ABC):
    """One small interface over the embedded and the Elasticsearch index."""

    # Smallest setting reaching Recall@10 >= 0.997 at 27k x 768 (benchmarks/README.md).
    m: int = 32
    ef_construction: int = 200
    keep_versions: int = 3

    @property
    @abstractmethod
    def backend(self) -> str: ...

    @abstractmethod
    def build(self, version: str, dim: int, batches: Iterable[IndexBatch],
              on_indexed: Callable[[int], None] | None = None, base: str | None = None,
              removed: Collection[str] = ()) -> int:
        """Write a new version from batches; return its document count. ``on_indexed(n)``
        is called as documents enter the index (which may be well after they are read).

        With ``base``, the new version starts as a copy of that version, minus the
        ``removed`` uuids (never answered again), plus the batches: an incremental version
        that costs what changed. ``base`` itself is left as it is, and stays searchable."""

    @abstractmethod
    def search(
        self,
        vector: np.ndarray,
        k: int,
        num_candidates: int,
        version: str | None = None,
        search_filter: SearchFilter | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """The ``k`` nearest documents, best first, ``Hit.score`` their cosine similarity;
        with ``min_score``, only those at least that similar (so possibly fewer than k)."""

    @abstractmethod
    def keyword_search(self, text: str, k: int, version: str | None = None,
                       search_filter: SearchFilter | None = None) -> list[Hit]:
        """The ``k`` captions that best match ``text`` by BM25 (``core/keywords.py``'s tokens),
        best first, ``Hit.score`` their BM25 score. A text without tokens finds nothing."""

    def search_both(self, vector: np.ndarray | None, text: str, k: int, num_candidates: int,
                    version: str | None = None, search_filter: SearchFilter | None = None,
                    min_score: float | None = None) -> tuple[Ranking, Ranking]:
        """The two rankings that hybrid search fuses: ``search`` of ``vector`` (none without
        one) and ``keyword_search`` of ``text``, ``k`` hits each, as one request where the
        backend can (Elasticsearch: one ``_msearch``)."""
        pictures = [] if vector is None else self.search(
            vector, k, num_candidates, version, search_filter, min_score)
        return Ranking.of(pictures), Ranking.of(self.keyword_search(text, k, version, search_filter))

    def search_many(self, vectors: np.ndarray, k: int, num_candidates: int,
                    version: str | None = None) -> list[list[Hit]]:
        """``search`` for each row of ``vectors``, unfiltered: the same answers, in a batch
        an index may spread over its cores (evaluation counts recall this way)."""
        return [self.search(vector, k, num_candidates, version) for vector in vectors]

    @abstractmethod
    def count(self, version: str | None = None) -> int:
        """Documents served by ``version`` (the live one by default), once it is loaded into
        this process (searches then start warm)."""

    def stored_count(self, version: str) -> int:
        """``count`` for a process that only counts (an asset check), from the version's
        verified files without loading it where the backend can."""
        return self.count(version)

    @abstractmethod
    def publish(self, version: str) -> None:
        """Make ``version`` the live one atomically."""

    @abstractmethod
    def live_version(self) -> str | None: ...

    @abstractmethod
    def versions(self) -> list[str]:
        """Built versions, oldest first."""

    @abstractmethod
    def delete_version(self, version: str) -> None: ...

    def release(self, version: str) -> None:
        """Free what this process holds in memory for ``version`` (nothing by default)."""

    def stored_vectors(self, version: str) -> tuple[list[np.ndarray], np.ndarray] | None:
        """The float vectors ``version`` stores, as read-only maps of consecutive blocks of
        rows, and the positions among them it no longer serves (removed since its last full
        build); None when this process cannot read them (the evaluation then maps the corpus
        from the embeddings)."""
        return None

    @abstractmethod
    def record_search_depth(self, version: str, record: dict) -> None:
        """Store with ``version`` the search depth its evaluation chose: ``record`` holds
        ``num_candidates`` and how it was found (k, target, recall, p50)."""

    @abstractmethod
    def recorded_search_depth(self, version: str | None = None) -> dict | None:
        """The record ``record_search_depth`` stored with ``version`` (default: the live one)."""

    def search_depth(self, version: str | None = None) -> int:
        """The depth searches of ``version`` use unless a request asks for another: the one
        its evaluation chose, else ``DEFAULT_NUM_CANDIDATES`` (versions built before tuning)."""
        record = self.recorded_search_depth(version)
        return int(record["num_candidates"]) if record else DEFAULT_NUM_CANDIDATES

    def params(self) -> dict[str, object]:
        # "keywords": the caption tokens' version; a version built with other tokens (or none,
        # before keyword search) differs in its build key, so the next build is a full one.
        return {"backend": self.backend, "m": self.m, "ef_construction": self.ef_construction,
                "similarity": METRIC, "keywords": TOKENIZER_VERSION}

    def prune(self) -> list[str]:
        """Delete versions beyond ``keep_versions``, never the live one."""
        live = self.live_version()
        old = [v for v in self.versions() if v != live]
        doomed = old[: max(0, len(old) - max(0, self.keep_versions - 1))]
        for version in doomed:
            self.delete_version(version)
        return doomed


# ---------------------------------------------------------------------------------------

# Loaded versions, shared by every resource instance of the process (the API searches a lot).
_LOADED: dict[tuple[str, str], "_LoadedVersion"] = {}
_LOADED_LOCK = threading.Lock()


# How the graph stores each vector: float32 (flat), 8-bit scalar codes, or float16; both
# coded forms re-rank on the float vectors (VECTORS_FILE), memory-mapped from disk.
INDEX_CODES = ("flat", "sq8", "fp16")
VECTORS_FILE = "vectors.f32"
# An incremental version's float vectors are its base's files, hard-linked (not copied: 2.9
# GB at 1M vectors took 13 s of disk writes here), then one file of its own new rows; at this
# many files the next version writes the rows after the first file into one again.
MAX_VECTOR_FILES = 8
# Positions of documents removed since the version's last full build (int64): they stay in
# the graph, which cannot delete, and every search keeps them out of its answers.
EXCLUDED_FILE = "removed.i64"
# The captions' BM25 index (core/keywords.py, tantivy), covered by the manifest like the rest.
KEYWORDS_FILE = "keywords.tar"
# The codes' training sample, read from VECTORS_FILE; and the vectors added to the graph at
# a time (a progress report each: every ~30 s at 1M vectors on 2 cores, measured).
_BUILD_CHUNK = 65_536
_ADD_CHUNK = 32_768


def _new_faiss_index(codes: str, dim: int, m: int, ef_construction: int):
    import faiss

    metric = getattr(faiss, FAISS_METRIC)
    if codes == "flat":
        index = faiss.IndexHNSWFlat(dim, m, metric)
    elif codes in ("sq8", "fp16"):
        kind = faiss.ScalarQuantizer.QT_8bit if codes == "sq8" else faiss.ScalarQuantizer.QT_fp16
        index = faiss.IndexHNSWSQ(dim, kind, m, metric)
    else:
        raise ValueError(f"unknown index codes {codes!r}: choose from {INDEX_CODES}")
    index.hnsw.efConstruction = ef_construction
    return index


def _link(source: Path, target: Path) -> None:
    """``target`` as a second name of ``source``'s bytes (a version never changes a file
    once written, and deleting one name leaves the other), or a copy where the file system
    has no hard links."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        with atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)


def _read_excluded(folder: Path) -> np.ndarray:
    path = folder / EXCLUDED_FILE
    if not path.is_file():
        return np.zeros(0, dtype=np.int64)
    return np.fromfile(path, dtype="<i8").astype(np.int64)


def _graph_size(path: Path) -> int:
    """The vector count of a faiss HNSW index file, from its header (faiss's
    write_index_header: a fourcc, d as int32, then ntotal as int64)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) < 16 or not head.startswith(b"IHN"):
        raise IntegrityError(path.name, "not an HNSW index file")
    return int(np.frombuffer(head, dtype="<i8", count=1, offset=8)[0])


def _vector_file(position: int) -> str:
    """The name of a version's ``position``-th float-vector file (rows in file order)."""
    return VECTORS_FILE if position == 0 else f"vectors-{position}.f32"


def _vector_files(params: dict) -> list[str]:
    """The float-vector files a version's ``params.json`` says it has, in row order (one in
    versions built before they were shared)."""
    return [_vector_file(i) for i in range(params.get("vector_files", 1))]


def _map_vectors(path: Path, dim: int) -> np.ndarray:
    """One float-vector file, memory-mapped read-only (pages come from disk)."""
    size = path.stat().st_size
    if size % (dim * 4):
        raise IntegrityError(path.name, f"{size:,} bytes: not whole {dim}-d float32 vectors")
    if size == 0:  # a version that only removed
        empty = np.zeros((0, dim), np.float32)
        empty.flags.writeable = False
        return empty
    # A plain ndarray over the map: np.memmap's own indexing adds Python work to each search.
    return np.asarray(np.memmap(path, dtype=np.float32, mode="r", shape=(size // (dim * 4), dim)))


class VersionVectors:
    """A version's float vectors: blocks of rows in order, one per file (``_vector_files``),
    each memory-mapped; rows are read by position across them."""

    def __init__(self, blocks: list[np.ndarray]):
        self.blocks = blocks
        self._starts = np.cumsum([0] + [len(block) for block in blocks])

    @classmethod
    def open(cls, folder: Path, names: list[str], count: int, dim: int) -> "VersionVectors":
        blocks = [_map_vectors(folder / name, dim) for name in names]
        if (held := sum(len(block) for block in blocks)) != count:
            raise IntegrityError(VECTORS_FILE, f"{held:,} float vectors for {count:,} in the graph")
        return cls(blocks)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """The vectors at ``positions`` (ascending), in that order."""
        if len(self.blocks) == 1:
            return self.blocks[0][positions]
        cuts = np.searchsorted(positions, self._starts)
        return np.concatenate([block[positions[a:b] - start] for block, start, a, b in zip(
            self.blocks, self._starts[:-1], cuts[:-1], cuts[1:], strict=True)])


class _LoadedVersion:
    def __init__(self, folder: Path):
        import faiss

        # Checksums first: faiss must never parse bytes that are not the ones it wrote (each
        # process loads the version: the first full check is remembered, integrity.py).
        verify_manifest(folder, remember=True)
        self.index = faiss.read_index(str(folder / "index.faiss"))
        # Versions built before coded graphs have no vectors file: they search the graph only.
        params = json.loads((folder / "params.json").read_text())
        self.vectors: VersionVectors | None = None
        if (folder / VECTORS_FILE).is_file():
            self.vectors = VersionVectors.open(folder, _vector_files(params),
                                               int(self.index.ntotal), int(self.index.d))
        # The re-rank width the version was built (and so evaluated) with.
        self.rerank_factor: int | None = params.get("rerank_factor")
        docs = pq.read_table(folder / "docs.parquet")
        self.ids: list[str] = docs.column("uuid").to_pylist()
        self.captions: list[str | None] = docs.column("caption").to_pylist()
        self.splits: list[str] = docs.column("split").to_pylist()
        if self.index.ntotal != len(self.ids):
            raise IntegrityError("docs.parquet", f"{len(self.ids):,} rows for "
                                                 f"{self.index.ntotal:,} vectors in index.faiss")
        # Removed since the last full build: in the graph, never in an answer.
        self.excluded = _read_excluded(folder)
        self._excluded_set = set(self.excluded.tolist())
        self._kept = None  # a selector of every position but the excluded (faiss keeps a
        if len(self.excluded):  # pointer to the inner one: both are held here)
            self._inner = faiss.IDSelectorBatch(self.excluded)
            self._kept = faiss.IDSelectorNot(self._inner)
        self._params: dict[int, object] = {}
        self._lower_captions = [(c or "").lower() for c in self.captions]
        self._folder = folder
        self._keywords: TantivyKeywordIndex | None = None
        self._rows = np.zeros(0, np.int64)
        self._lock = threading.Lock()

    def keywords(self) -> tuple[TantivyKeywordIndex, np.ndarray]:
        """The captions' BM25 index and each of its documents' row here, by its ordinal
        (``TantivyKeywordIndex.search_ordinals``), opened at the first keyword query (the file
        was verified with the rest when the version was loaded)."""
        with self._lock:
            if self._keywords is None:
                if not (self._folder / KEYWORDS_FILE).is_file():
                    raise IntegrityError(KEYWORDS_FILE, "missing: the version was built before "
                                                        "keyword search; build it again in full")
                keywords = TantivyKeywordIndex(self._folder / KEYWORDS_FILE)
                row = {uuid: i for i, uuid in enumerate(self.ids)}
                # A deleted document (never a hit) has no uuid: -1.
                self._rows = np.array([row.get(uuid, -1) for uuid in keywords.uuids_by_ordinal()],
                                      dtype=np.int64)
                self._keywords = keywords
            return self._keywords, self._rows

    def ranking(self, rows: np.ndarray, scores: list[float]) -> Ranking:
        """Hits at these rows, best first, made only where read."""
        ids, captions = self.ids, self.captions
        return Ranking(rows.tolist(), scores, lambda row, score: Hit(ids[row], score, captions[row]))

    @property
    def count(self) -> int:
        return int(self.index.ntotal) - len(self.excluded)

    def search_params(self, depth: int):
        """Unfiltered search parameters for ``depth``, made once (faiss only reads them)."""
        params = self._params.get(depth)
        if params is None:
            import faiss

            params = faiss.SearchParametersHNSW()
            params.efSearch = depth
            if self._kept is not None:
                params.sel = self._kept
            self._params[depth] = params
        return params

    def selector(self, search_filter: SearchFilter):
        import faiss

        words = [w.lower() for w in search_filter.caption_words]
        chosen = [
            i for i in range(len(self.ids))
            if i not in self._excluded_set
            and (search_filter.split is None or self.splits[i] == search_filter.split)
            and all(w in self._lower_captions[i] for w in words)
        ]
        return faiss.IDSelectorBatch(np.asarray(chosen, dtype=np.int64))


SEARCH_DEPTH_FILE = "search_depth.json"


@functools.cache
def _helper() -> ThreadPoolExecutor:
    """The threads hybrid searches run their keyword half on, made at the first one."""
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="keyword-search")


class FaissHnswIndex(VectorIndex):
    """Embedded HNSW index on disk: ``versions/<v>/`` folders and an atomic ``LIVE`` pointer.

    A version folder holds ``index.faiss``, ``docs.parquet``, ``params.json`` (build
    settings), with coded graphs ``vectors.f32`` and, in an incremental version,
    ``vectors-1.f32`` ... (the float vectors, row-major, for the exact re-rank; see
    ``_write_vectors``) and, once evaluated, ``search_depth.json`` (the efSearch its
    evaluation chose).
    """

    root: str = "var/index"
    # "sq8": 8-bit codes in the graph + exact re-rank on memory-mapped float vectors (the
    # fastest at R@10 >= 0.997 in the index comparison that keeps memory at half or less);
    # "flat": float32 in the graph (the previous default); "fp16": float16 codes + re-rank.
    codes: str = "sq8"
    # A coded graph returns min(depth, rerank_factor * k) candidates, re-ranked exactly;
    # recorded with each version at its build, and its searches use the recorded one.
    rerank_factor: int = 2

    @property
    def backend(self) -> str:
        return "faiss-hnsw"

    def _folder(self, version: str) -> Path:
        return Path(self.root) / "versions" / check_version(version)

    def params(self) -> dict[str, object]:
        return {**super().params(), "codes": self.codes, "rerank_factor": self.rerank_factor}

    def build(self, version: str, dim: int, batches: Iterable[IndexBatch],
              on_indexed: Callable[[int], None] | None = None, base: str | None = None,
              removed: Collection[str] = ()) -> int:
        import faiss

        if self.rerank_factor < 1:
            raise ValueError(f"rerank_factor must be >= 1, got {self.rerank_factor}")
        if base is None:
            index = _new_faiss_index(self.codes, dim, self.m, self.ef_construction)
            docs: dict[str, list] = {"uuid": [], "caption": [], "split": [], "shard": []}
            excluded = np.zeros(0, dtype=np.int64)
            serving: set[str] = set()
        else:  # the base's graph, documents and exclusions, read from its verified files
            index, docs, excluded, serving = self._extendable(base, dim, removed)
        held = len(docs["uuid"])  # rows already in the graph (and in the vectors file)
        folder = self._folder(version)
        folder.mkdir(parents=True, exist_ok=True)
        files = ["index.faiss", "docs.parquet", "params.json"]

        def accepted() -> Iterable[np.ndarray]:
            """Each batch's vectors, checked, with its documents' fields recorded."""
            for batch in batches:
                vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
                if vectors.ndim != 2 or vectors.shape[1] != dim or len(vectors) != len(batch.ids):
                    raise ValueError(f"batch of {len(batch.ids)} ids has vectors of shape "
                                     f"{vectors.shape}, expected (n, {dim})")
                if again := serving.intersection(batch.ids):
                    raise ValueError(f"{len(again)} added documents are already in version "
                                     f"{base} (e.g. {sorted(again)[0]})")
                docs["uuid"].extend(batch.ids)
                docs["caption"].extend(batch.captions or [None] * len(batch.ids))
                docs["split"].extend(batch.splits or ["train"] * len(batch.ids))
                docs["shard"].extend(batch.shards or [""] * len(batch.ids))
                yield vectors

        def add(vectors: np.ndarray) -> None:
            index.add(vectors)
            if on_indexed:
                on_indexed(len(vectors))

        vector_files: list[str] = []
        if self.codes == "flat":
            for vectors in accepted():
                add(vectors)
        else:
            # The float vectors go to disk first (the re-rank reads them there); a new graph's
            # code ranges are trained on a sample of them, then the new rows (the last file's
            # last rows) are added in chunks, so the build never holds all of them in RAM.
            vector_files = self._write_vectors(folder, base, accepted())
            new = len(docs["uuid"]) - held
            vectors = _map_vectors(folder / vector_files[-1], dim)
            if not index.is_trained and len(vectors):
                step = max(1, len(vectors) // _BUILD_CHUNK)
                index.train(np.ascontiguousarray(vectors[::step][:_BUILD_CHUNK]))
            for start in range(len(vectors) - new, len(vectors), _ADD_CHUNK):
                add(np.ascontiguousarray(vectors[start:start + _ADD_CHUNK]))
            del vectors
        with atomic_path(folder / "index.faiss") as temporary:
            faiss.write_index(index, str(temporary))
        self._write_keywords(folder, base, docs, held, removed)
        files.append(KEYWORDS_FILE)
        docs_table = pa.table({"uuid": docs["uuid"], "caption": pa.array(docs["caption"], pa.string()),
                               "split": docs["split"], "shard": docs["shard"]})
        write_table_atomic(docs_table, folder / "docs.parquet")
        if len(excluded):
            write_bytes_atomic(excluded.astype("<i8").tobytes(), folder / EXCLUDED_FILE)
            files.append(EXCLUDED_FILE)
        count = len(docs["uuid"]) - len(excluded)
        write_text_atomic(json.dumps({**self.params(), "dim": dim, "count": count, "base": base,
                                      "removed_held": len(excluded),
                                      "vector_files": len(vector_files)}), folder / "params.json")
        # Vector files are checksummed chunk by chunk: one that starts with its base's file of
        # the same name (linked, or merged into; verified in _extendable) reuses its hashes.
        known = manifest_entries(self._folder(base)) if base is not None else {}
        write_manifest(folder, files + vector_files,
                       chunked={name: known.get(name) for name in vector_files})
        return count

    def _write_vectors(self, folder: Path, base: str | None, batches: Iterable[np.ndarray]
                       ) -> list[str]:
        """The version's float-vector files, in row order: its base's, hard-linked, then one
        of the new rows; a base with ``MAX_VECTOR_FILES`` gives its first file only, the
        rows of the others going first into the new one; a new graph's all in one file."""
        names: list[str] = []
        if base is not None:
            names = _vector_files(json.loads((self._folder(base) / "params.json").read_text()))
        linked = names if len(names) < MAX_VECTOR_FILES else names[:1]
        for name in linked:
            _link(self._folder(base) / name, folder / name)
        own = _vector_file(len(linked))
        with atomic_path(folder / own) as temporary, open(temporary, "wb") as out:
            for name in names[len(linked):]:
                with open(self._folder(base) / name, "rb") as merged:
                    shutil.copyfileobj(merged, out, 1 << 20)
            for vectors in batches:
                out.write(vectors.tobytes())
        return [*linked, own]

    def _write_keywords(self, folder: Path, base: str | None, docs: dict[str, list], held: int,
                        removed: Collection[str]) -> None:
        """The version's caption index: the base's plus the rows from ``held`` on, minus the
        removed (only the new captions are tokenised), or all rows for a new graph."""
        new = slice(held, None)
        if base is None:
            write_tantivy_index(folder / KEYWORDS_FILE, docs["uuid"], docs["caption"], docs["split"])
        else:
            extend_tantivy_index(self._folder(base) / KEYWORDS_FILE, folder / KEYWORDS_FILE,
                                 docs["uuid"][new], docs["caption"][new], docs["split"][new], removed)

    def _extendable(self, base: str, dim: int, removed: Collection[str]
                    ) -> tuple[object, dict[str, list], np.ndarray, set[str]]:
        """The graph, the documents and the excluded positions of ``base``, with those of
        ``removed`` added, and the uuids it still serves: what an incremental version starts
        from (a uuid removed earlier may come back: as a new row)."""
        import faiss

        folder = self._folder(base)
        # faiss must never parse bytes that are not the ones it wrote
        verify_manifest(folder, remember=True)
        params = json.loads((folder / "params.json").read_text())
        if params.get("dim") != dim or params.get("codes", "flat") != self.codes:
            raise ValueError(f"version {base} was built with dim {params.get('dim')} and codes "
                             f"{params.get('codes')}, not {dim} and {self.codes}: build in full")
        for needed in ([VECTORS_FILE] if self.codes != "flat" else []) + [KEYWORDS_FILE]:
            if not (folder / needed).is_file():
                raise ValueError(f"version {base} has no {needed} to extend: build in full")
        index = faiss.read_index(str(folder / "index.faiss"))
        docs = pq.read_table(folder / "docs.parquet").to_pydict()
        excluded = _read_excluded(folder)
        out = set(excluded.tolist())
        live = {uuid: i for i, uuid in enumerate(docs["uuid"]) if i not in out}
        if missing := [uuid for uuid in removed if uuid not in live]:
            raise ValueError(f"{len(missing)} removed documents are not in version {base} "
                             f"(e.g. {sorted(missing)[0]})")
        gone = np.fromiter((live[uuid] for uuid in removed), dtype=np.int64, count=len(removed))
        return index, docs, np.union1d(excluded, gone), live.keys() - set(removed)

    def _load(self, version: str | None) -> _LoadedVersion:
        version = version or self.live_version()
        if version is None:
            raise LookupError("no live index: build and publish one first")
        # A version folder is never rewritten once built, so (root, version) names it for good;
        # a loaded one is served from memory without touching the disk (a search's hot path).
        key = (os.path.abspath(self.root), version)
        loaded = _LOADED.get(key)
        if loaded is None:
            if not self._folder(version).is_dir():
                raise IntegrityError(f"versions/{version}",
                                     "not on disk (deleted, or never built)")
            with _LOADED_LOCK:
                loaded = _LOADED.get(key) or _LoadedVersion(self._folder(version))
                _LOADED[key] = loaded
        return loaded

    def search(self, vector, k, num_candidates, version=None, search_filter=None,
               min_score=None) -> list[Hit]:
        ranking = self._search_ranking(self._load(version), vector, k, num_candidates, search_filter)
        # On the exact (re-ranked) cosine, as Elasticsearch's kNN ``similarity`` does.
        return list(ranking.above(min_score))

    def _search_ranking(self, loaded: _LoadedVersion, vector, k: int, num_candidates: int,
                       search_filter: SearchFilter | None) -> Ranking:
        params = self._search_params(loaded, max(num_candidates, k), search_filter)
        return self._answers(loaded, np.asarray(vector).reshape(1, -1), k, params)[0]

    def search_both(self, vector, text, k, num_candidates, version=None, search_filter=None,
                    min_score=None) -> tuple[Ranking, Ranking]:
        """The keyword search on a helper thread while the graph search runs here: faiss
        lets go of the GIL while it searches, and the keyword side's Python is short (numbers
        until a hit is shown), so it fits in that wait. Measured side by side at 27k, the
        other ways took longer: the graph on the helper ~30% (its start and its answer each
        wait for a thread to wake), one after the other ~15%."""
        loaded = self._load(version)
        if vector is None:
            return loaded.ranking(np.zeros(0, np.int64), []), self._keyword_ranking(
                loaded, text, k, search_filter)
        words = _helper().submit(self._keyword_ranking, loaded, text, k, search_filter)
        try:
            pictures = self._search_ranking(loaded, vector, k, num_candidates, search_filter)
        finally:
            found = words.result()  # never leave the keyword search running unseen
        return pictures.above(min_score), found

    def keyword_search(self, text, k, version=None, search_filter=None) -> list[Hit]:
        return list(self._keyword_ranking(self._load(version), text, k, search_filter))

    @staticmethod
    def _keyword_ranking(loaded: _LoadedVersion, text: str, k: int,
                         search_filter: SearchFilter | None) -> Ranking:
        keywords, row_of = loaded.keywords()
        search_filter = search_filter or SearchFilter()
        ordinals, scores = keywords.search_ordinals(text, k, split=search_filter.split,
                                                    require=search_filter.caption_words)
        return loaded.ranking(row_of[ordinals], scores)

    def search_many(self, vectors, k, num_candidates, version=None) -> list[list[Hit]]:
        loaded = self._load(version)
        return [list(ranking) for ranking in self._answers(
            loaded, np.asarray(vectors).reshape(-1, loaded.index.d), k,
            loaded.search_params(max(num_candidates, k)))]

    @staticmethod
    def _search_params(loaded: _LoadedVersion, depth: int, search_filter: SearchFilter | None):
        if search_filter is None:
            return loaded.search_params(depth)
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = depth
        params.sel = loaded.selector(search_filter)
        return params

    def _answers(self, loaded: _LoadedVersion, queries: np.ndarray, k: int, params
                 ) -> list[Ranking]:
        """The hits of each query row; faiss spreads a batch of rows over its threads."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if loaded.vectors is None:
            scores, positions = loaded.index.search(queries, k, params=params)
            found = positions >= 0  # faiss pads a short answer with -1
            return [loaded.ranking(p[f], s[f].tolist())
                    for s, p, f in zip(scores, positions, found, strict=True)]
        # The graph's best candidates by their codes, then exact scores on the floats.
        factor = loaded.rerank_factor or self.rerank_factor
        wanted = min(params.efSearch, max(k, factor * k))
        _, candidates = loaded.index.search(queries, wanted, params=params)
        answers = []
        for query, row in zip(queries, candidates, strict=True):
            chosen = np.sort(row[row >= 0])  # in file order: fewer seeks
            exact = similarities(query.reshape(1, -1), loaded.vectors.rows(chosen))[0]
            order = np.argsort(-exact, kind="stable")[:k]
            answers.append(loaded.ranking(chosen[order], exact[order].tolist()))
        return answers

    def count(self, version: str | None = None) -> int:
        return self._load(version).count

    def stored_count(self, version: str) -> int:
        loaded = _LOADED.get((os.path.abspath(self.root), version))
        if loaded is not None:
            return loaded.count
        # From the verified files' own headers (the graph's vector count, the documents'
        # rows), not by loading the graph and every document (~1 GB and 1M uuids at 1M).
        folder = self._folder(version)
        if not folder.is_dir():
            raise IntegrityError(f"versions/{version}", "not on disk (deleted, or never built)")
        verify_manifest(folder, remember=True)
        held = _graph_size(folder / "index.faiss")
        rows = pq.read_metadata(folder / "docs.parquet").num_rows
        if held != rows:
            raise IntegrityError("docs.parquet", f"{rows:,} rows for {held:,} vectors in index.faiss")
        return held - len(_read_excluded(folder))

    def publish(self, version: str) -> None:
        if not (self._folder(version) / "index.faiss").is_file():
            raise LookupError(f"index version {version} was never built")
        verify_manifest(self._folder(version), remember=True)  # never point LIVE at damaged files
        write_text_atomic(version, Path(self.root) / "LIVE")

    def live_version(self) -> str | None:
        """The version ``LIVE`` names; IntegrityError when it names no valid version."""
        pointer = Path(self.root) / "LIVE"
        if not pointer.is_file():
            return None
        text = pointer.read_bytes()[:200].decode("utf-8", "replace").strip()
        try:
            return check_version(text)
        except ValueError:
            raise IntegrityError("LIVE", "does not name a valid index version") from None

    def release(self, version: str) -> None:
        _LOADED.pop((os.path.abspath(self.root), version), None)

    def stored_vectors(self, version: str) -> tuple[list[np.ndarray], np.ndarray] | None:
        loaded = self._load(version)  # verified, and already loaded by the searches
        return None if loaded.vectors is None else (loaded.vectors.blocks, loaded.excluded)

    def versions(self) -> list[str]:
        folder = Path(self.root) / "versions"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "params.json").is_file())

    def record_search_depth(self, version: str, record: dict) -> None:
        if not (self._folder(version) / "index.faiss").is_file():
            raise LookupError(f"index version {version} was never built")
        write_text_atomic(json.dumps(record), self._folder(version) / SEARCH_DEPTH_FILE)

    def recorded_search_depth(self, version: str | None = None) -> dict | None:
        version = version or self.live_version()
        path = self._folder(version) / SEARCH_DEPTH_FILE if version else None
        if path is None or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            if int(record["num_candidates"]) < 1:
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise IntegrityError(SEARCH_DEPTH_FILE, "unreadable: re-run recall_report to "
                                                    "record the version's depth again") from None
        return record

    def delete_version(self, version: str) -> None:
        self.release(version)
        shutil.rmtree(self._folder(version), ignore_errors=True)


