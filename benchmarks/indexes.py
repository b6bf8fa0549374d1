"""Section: the embedded index candidates side by side at equal recall.

Each candidate is built once on the same vectors (all cores), then searched one query at a
time on one thread (faiss OpenMP, BLAS and the libraries' own pools limited to 1), swept
with ``core.depth`` over the same depths as ``recall_report``: the smallest depth reaching
mean Recall@10 >= 0.997 is the candidate's setting. The faiss candidates run through the
project's ``FaissHnswIndex`` resource (its build, its search, its Hit objects); hnswlib and
usearch through their own Python calls (no filters or versioned files: measured as bare
libraries, so their p50 is a lower bound of what a resource around them would give).

Memory: the bytes a process holds for the index (the faiss file read into RAM, the
library's own count for usearch, the saved file for hnswlib), and the same per vector
times 1M (a linear projection: codes and level-0 links are per vector). The re-rank
vectors of coded faiss graphs stay on disk, memory-mapped, and are shown apart.
"""

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgsearch_pipeline.core.depth import candidate_depths, measure_depth, sweep_depths
from imgsearch_pipeline.resources.vector_index import VECTORS_FILE, FaissHnswIndex, IndexBatch

from .common import RECALL_TARGET, K
from .search import truth_positions

M, EF_CONSTRUCTION, DEPTH_CAP = 32, 200, 384
PROJECTED_VECTORS = 1_000_000
# The default may use at most this share of the flat graph's memory (issue 14).
MEMORY_SHARE_OF_FLAT = 0.5


@dataclass
class Built:
    search: Callable[[np.ndarray, int], list[int]]
    build_s: float
    ram_bytes: int
    mapped_bytes: int = 0
    filters_and_versions: bool = False
    release: Callable[[], None] = lambda: None


def _faiss(codes: str) -> Callable[[Path, np.ndarray], Built]:
    def build(work: Path, corpus: np.ndarray) -> Built:
        index = FaissHnswIndex(root=str(work / f"faiss-{codes}"), codes=codes, m=M,
                               ef_construction=EF_CONSTRUCTION)
        ids = [f"{i:08d}" for i in range(len(corpus))]
        started = time.perf_counter()
        index.build("bench", corpus.shape[1],
                    [IndexBatch(ids[i:i + 4096], corpus[i:i + 4096])
                     for i in range(0, len(ids), 4096)])
        build_s = time.perf_counter() - started
        folder = Path(index.root) / "versions" / "bench"
        mapped = folder / VECTORS_FILE
        return Built(lambda v, depth: [int(h.uuid) for h in index.search(v, K, depth, "bench")],
                     build_s, (folder / "index.faiss").stat().st_size,
                     mapped.stat().st_size if mapped.is_file() else 0, True,
                     lambda: index.delete_version("bench"))  # drops the loaded graph too
    return build


def _hnswlib(work: Path, corpus: np.ndarray) -> Built:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=corpus.shape[1])
    started = time.perf_counter()
    index.init_index(max_elements=len(corpus), M=M, ef_construction=EF_CONSTRUCTION)
    index.add_items(corpus, np.arange(len(corpus)))
    build_s = time.perf_counter() - started
    path = work / "hnswlib.bin"
    index.save_index(str(path))
    index.set_num_threads(1)

    def search(vector: np.ndarray, depth: int) -> list[int]:
        index.set_ef(max(depth, K))
        return index.knn_query(vector, k=K)[0][0].tolist()
    return Built(search, build_s, path.stat().st_size)


def _usearch(dtype: str) -> Callable[[Path, np.ndarray], Built]:
    def build(work: Path, corpus: np.ndarray) -> Built:
        from usearch.index import Index

        index = Index(ndim=corpus.shape[1], metric="ip", dtype=dtype, connectivity=M,
                      expansion_add=EF_CONSTRUCTION)
        started = time.perf_counter()
        index.add(np.arange(len(corpus)), corpus)
        build_s = time.perf_counter() - started

        def search(vector: np.ndarray, depth: int) -> list[int]:
            index.expansion_search = max(depth, K)
            return index.search(vector, K, threads=1).keys.tolist()
        return Built(search, build_s, int(index.memory_usage))
    return build


CANDIDATES: dict[str, Callable[[Path, np.ndarray], Built]] = {
    "faiss HNSW flat (FaissHnswIndex codes=flat)": _faiss("flat"),
    "faiss HNSW SQ8 + exact re-rank, mmap floats (codes=sq8)": _faiss("sq8"),
    "faiss HNSW fp16 + exact re-rank, mmap floats (codes=fp16)": _faiss("fp16"),
    "hnswlib": _hnswlib,
    "usearch f32": _usearch("f32"),
    "usearch f16": _usearch("f16"),
    "usearch i8": _usearch("i8"),
}


def _one_thread():
    """Searches on one thread: faiss's OpenMP pool and every BLAS pool."""
    import faiss
    from threadpoolctl import threadpool_limits

    class Limit:
        def __enter__(self):
            self.threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            self.blas = threadpool_limits(1)
            return self

        def __exit__(self, *exc):
            self.blas.unregister()
            faiss.omp_set_num_threads(self.threads)
    return Limit()


def run(corpus: np.ndarray, queries: np.ndarray, quick: bool, log) -> dict:
    if quick:  # a smoke run of the same code: a fifth of the set
        corpus, queries = corpus[: len(corpus) // 5], queries[: len(queries) // 5]
    truth = [t.tolist() for t in truth_positions(queries, corpus)]
    depths = candidate_depths(K, DEPTH_CAP)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imgsearch-indexes-") as tmp:
        for name, build in CANDIDATES.items():
            try:
                built = build(Path(tmp), corpus)
            except ImportError as exc:
                log(f"{name}: skipped ({exc})")
                continue
            with _one_thread():
                sweep = sweep_depths(lambda d, b=built: measure_depth(b.search, queries, truth,
                                                                      K, d, warmup=20),
                                     depths, K, RECALL_TARGET)
            built.release()
            best = sweep.best
            per_vector = built.ram_bytes / len(corpus)
            rows.append({
                "name": name, "reached": sweep.reached, "depth": best.depth,
                "recall": best.mean_recall, "p50_ms": best.p50_ms, "p95_ms": best.p95_ms,
                "build_s": built.build_s, "index_bytes": built.ram_bytes,
                "projected_1m_bytes": per_vector * PROJECTED_VECTORS,
                "mapped_bytes": built.mapped_bytes,
                "projected_1m_mapped_bytes": built.mapped_bytes / len(corpus) * PROJECTED_VECTORS,
                "filters_and_versions": built.filters_and_versions,
                "sweep": sweep.as_dict()})
            log(f"{name}: {sweep.verdict()}; build {built.build_s:.1f} s, "
                f"{built.ram_bytes / 2**20:.0f} MB in RAM")
    return {"rows": rows, "indexed": len(corpus), "queries": len(queries), "m": M,
            "ef_construction": EF_CONSTRUCTION, "target": RECALL_TARGET,
            "memory_share_of_flat": MEMORY_SHARE_OF_FLAT, "choice": choose(rows)}


def choose(rows: list[dict]) -> dict:
    """The lowest p50 among candidates that reach the target, keep filters and versioned
    files, and hold at most MEMORY_SHARE_OF_FLAT of the flat graph's memory."""
    flat = next((r for r in rows if "codes=flat" in r["name"]), None)
    limit = flat["index_bytes"] * MEMORY_SHARE_OF_FLAT if flat else float("inf")
    eligible = [r for r in rows if r["reached"] and r["filters_and_versions"]
                and r["index_bytes"] <= limit]
    fastest = min((r for r in rows if r["reached"]), key=lambda r: r["p50_ms"], default=None)
    chosen = min(eligible, key=lambda r: r["p50_ms"], default=None)
    default = FaissHnswIndex().codes
    return {"chosen": chosen["name"] if chosen else None,
            "fastest_overall": fastest["name"] if fastest else None,
            "default_codes": default,
            "default_matches": bool(chosen) and f"codes={default})" in chosen["name"]}
