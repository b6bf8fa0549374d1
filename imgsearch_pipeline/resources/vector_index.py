"""Vector search index: an embedded HNSW (faiss) by default, Elasticsearch in production.

Both follow one model: each build writes a new *version*; ``publish`` makes a version
the live one atomically; searches go to the live version unless one is named.
"""

import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.ids import check_version
from ..core.integrity import IntegrityError, verify_manifest, write_manifest
from ..core.similarity import FAISS_METRIC, METRIC
from ..core.tables import atomic_path, write_table_atomic, write_text_atomic

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


@dataclass(frozen=True)
class Hit:
    uuid: str
    score: float
    caption: str | None = None


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
    def build(self, version: str, dim: int, batches: Iterable[IndexBatch]) -> int:
        """Write a new version from batches; return its document count."""

    @abstractmethod
    def search(
        self,
        vector: np.ndarray,
        k: int,
        num_candidates: int,
        version: str | None = None,
        search_filter: SearchFilter | None = None,
    ) -> list[Hit]: ...

    @abstractmethod
    def count(self, version: str | None = None) -> int: ...

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
        return {"backend": self.backend, "m": self.m, "ef_construction": self.ef_construction,
                "similarity": METRIC}

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


class _LoadedVersion:
    def __init__(self, folder: Path):
        import faiss

        # Checksums first: faiss must never parse bytes that are not the ones it wrote.
        verify_manifest(folder)
        self.index = faiss.read_index(str(folder / "index.faiss"))
        docs = pq.read_table(folder / "docs.parquet")
        self.ids: list[str] = docs.column("uuid").to_pylist()
        self.captions: list[str | None] = docs.column("caption").to_pylist()
        self.splits: list[str] = docs.column("split").to_pylist()
        if self.index.ntotal != len(self.ids):
            raise IntegrityError("docs.parquet", f"{len(self.ids):,} rows for "
                                                 f"{self.index.ntotal:,} vectors in index.faiss")
        self.position = {uuid: i for i, uuid in enumerate(self.ids)}
        self._lower_captions = [(c or "").lower() for c in self.captions]

    def selector(self, search_filter: SearchFilter):
        import faiss

        words = [w.lower() for w in search_filter.caption_words]
        chosen = [
            i for i in range(len(self.ids))
            if (search_filter.split is None or self.splits[i] == search_filter.split)
            and all(w in self._lower_captions[i] for w in words)
        ]
        return faiss.IDSelectorBatch(np.asarray(chosen, dtype=np.int64))


SEARCH_DEPTH_FILE = "search_depth.json"


class FaissHnswIndex(VectorIndex):
    """Embedded HNSW index on disk: ``versions/<v>/`` folders and an atomic ``LIVE`` pointer.

    A version folder holds ``index.faiss``, ``docs.parquet``, ``params.json`` (build
    settings) and, once evaluated, ``search_depth.json`` (the efSearch its evaluation chose).
    """

    root: str = "var/index"

    @property
    def backend(self) -> str:
        return "faiss-hnsw"

    def _folder(self, version: str) -> Path:
        return Path(self.root) / "versions" / check_version(version)

    def build(self, version: str, dim: int, batches: Iterable[IndexBatch]) -> int:
        import faiss

        index = faiss.IndexHNSWFlat(dim, self.m, getattr(faiss, FAISS_METRIC))
        index.hnsw.efConstruction = self.ef_construction
        ids: list[str] = []
        captions: list[str | None] = []
        splits: list[str] = []
        shards: list[str] = []
        for batch in batches:
            index.add(np.ascontiguousarray(batch.vectors, dtype=np.float32))
            ids += batch.ids
            captions += batch.captions or [None] * len(batch.ids)
            splits += batch.splits or ["train"] * len(batch.ids)
            shards += batch.shards or [""] * len(batch.ids)
        folder = self._folder(version)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "index.faiss") as temporary:
            faiss.write_index(index, str(temporary))
        docs = pa.table({"uuid": ids, "caption": pa.array(captions, pa.string()),
                         "split": splits, "shard": shards})
        write_table_atomic(docs, folder / "docs.parquet")
        write_text_atomic(json.dumps({**self.params(), "dim": dim, "count": len(ids)}),
                          folder / "params.json")
        write_manifest(folder, ["index.faiss", "docs.parquet", "params.json"])
        return len(ids)

    def _load(self, version: str | None) -> _LoadedVersion:
        version = version or self.live_version()
        if version is None:
            raise LookupError("no live index: build and publish one first")
        if not self._folder(version).is_dir():
            raise IntegrityError(f"versions/{version}", "not on disk (deleted, or never built)")
        # A version folder is never rewritten once built, so (root, version) names it for good.
        key = (os.path.abspath(self.root), version)
        loaded = _LOADED.get(key)
        if loaded is None:
            with _LOADED_LOCK:
                loaded = _LOADED.get(key) or _LoadedVersion(self._folder(version))
                _LOADED[key] = loaded
        return loaded

    def search(self, vector, k, num_candidates, version=None, search_filter=None) -> list[Hit]:
        import faiss

        loaded = self._load(version)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(num_candidates, k)
        if search_filter is not None:
            params.sel = loaded.selector(search_filter)
        query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        scores, positions = loaded.index.search(query, k, params=params)
        return [
            Hit(loaded.ids[p], float(s), loaded.captions[p])
            for s, p in zip(scores[0], positions[0], strict=True)
            if p >= 0
        ]

    def count(self, version: str | None = None) -> int:
        return int(self._load(version).index.ntotal)

    def publish(self, version: str) -> None:
        if not (self._folder(version) / "index.faiss").is_file():
            raise LookupError(f"index version {version} was never built")
        verify_manifest(self._folder(version))  # never point LIVE at damaged files
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
        import shutil

        self.release(version)
        shutil.rmtree(self._folder(version), ignore_errors=True)


