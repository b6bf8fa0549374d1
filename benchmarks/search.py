"""Sections 1 and 2: search at the prototype's scale, and the tuning sweep of the
``FaissHnswIndex`` resource at its default codes (benchmarks/indexes.py compares codes
and other libraries)."""

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from imgsearch_pipeline.core.evaluation import exact_search
from imgsearch_pipeline.core.knn import exact_knn
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex, IndexBatch

from .common import PROTOTYPE, RECALL_TARGET, K, percentiles_ms


def truth_positions(queries: np.ndarray, corpus: np.ndarray, k: int = K) -> np.ndarray:
    return np.concatenate([ix for _, ix, _ in exact_knn(queries, corpus, k)])


def recall(truth: np.ndarray, found: list[np.ndarray], k: int = K) -> float:
    return float(np.mean([len(set(t[:k]) & set(f[:k])) / k for t, f in zip(truth, found,
                                                                           strict=True)]))


def time_single(search, queries: np.ndarray, warmup: int = 20):
    """One query at a time, as a user's request would run: (found, latencies in s)."""
    for vector in queries[:warmup]:
        search(vector)
    found, seconds = [], []
    for vector in queries:
        started = time.perf_counter()
        result = search(vector)
        seconds.append(time.perf_counter() - started)
        found.append(result)
    return found, seconds


def row(name: str, found, seconds, truth, batch_qps: float | None, **extra) -> dict:
    return {"name": name, "recall": recall(truth, found), **percentiles_ms(seconds),
            "batch_qps": batch_qps, **extra}


# -- exact ----------------------------------------------------------------------------------

def exact_rows(corpus, queries, truth) -> list[dict]:
    found, seconds = time_single(lambda v: exact_search(corpus, v, K), queries)
    started = time.perf_counter()
    for _ in exact_knn(queries, corpus, K):
        pass
    qps = len(queries) / (time.perf_counter() - started)
    return [row("exact: core.evaluation.exact_search (1 query) / core.knn.exact_knn (batch)",
                found, seconds, truth, qps, kind="exact")]


# -- embedded HNSW, through the pipeline's resource ------------------------------------------

def build_hnsw(root: Path, corpus: np.ndarray, m: int, ef_construction: int):
    index = FaissHnswIndex(root=str(root / f"m{m}-efc{ef_construction}"), m=m,
                           ef_construction=ef_construction)
    ids = [f"{i:08d}" for i in range(len(corpus))]
    started = time.perf_counter()
    index.build("bench", corpus.shape[1], [IndexBatch(ids, corpus)])
    build_s = time.perf_counter() - started
    size = (Path(index.root) / "versions" / "bench" / "index.faiss").stat().st_size
    return index, build_s, size


def hnsw_rows(index: FaissHnswIndex, build_s: float, size: int, queries, truth,
              candidates: list[int], batch: bool) -> list[dict]:
    import faiss

    rows = []
    for nc in candidates:
        def search(vector, nc=nc):
            return np.array([int(h.uuid) for h in index.search(vector, K, nc, version="bench")])

        found, seconds = time_single(search, queries)
        qps = None
        loaded = index._load("bench")
        # The same graph, all queries in one faiss call (the API has no batch); coded graphs
        # re-rank per query, so only a flat graph's batch search is the same search.
        if batch and loaded.vectors is None:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(nc, K)
            started = time.perf_counter()
            loaded.index.search(queries, K, params=params)
            qps = len(queries) / (time.perf_counter() - started)
        rows.append(row(f"HNSW {index.codes} m={index.m} efC={index.ef_construction} nc={nc}",
                        found, seconds, truth, qps, kind="hnsw", m=index.m,
                        ef_construction=index.ef_construction, num_candidates=nc,
                        index_bytes=size, build_s=build_s))
    return rows


# -- Elasticsearch (only with IMGSEARCH_ES_URL) ----------------------------------------------

def elasticsearch_rows(corpus, queries, truth, candidates: list[int]) -> tuple[list[dict], str]:
    url = os.environ.get("IMGSEARCH_ES_URL")
    if not url:
        return [], "Elasticsearch skipped: IMGSEARCH_ES_URL is not set."
    try:
        from imgsearch_pipeline.resources.elasticsearch_index import ElasticsearchIndex
    except ImportError as exc:
        return [], f"Elasticsearch skipped: no ElasticsearchIndex resource ({exc})."
    index = ElasticsearchIndex(
        url=url, index_name="imgsearch-bench",
        username=os.environ.get("IMGSEARCH_ES_USERNAME") or None,
        password=os.environ.get("IMGSEARCH_ES_PASSWORD") or None,
        api_key=os.environ.get("IMGSEARCH_ES_API_KEY") or None,
        ca_certs=os.environ.get("IMGSEARCH_ES_CA_CERTS") or None)
    ids = [f"{i:08d}" for i in range(len(corpus))]
    started = time.perf_counter()
    batches = [IndexBatch(ids[i:i + 2000], corpus[i:i + 2000]) for i in range(0, len(ids), 2000)]
    version = f"bench{int(time.time())}"
    index.build(version, corpus.shape[1], batches)
    build_s = time.perf_counter() - started
    rows = []
    try:
        for nc in candidates:
            found, seconds = time_single(
                lambda v, nc=nc: np.array([int(h.uuid) for h in index.search(v, K, nc, version)]),
                queries)
            rows.append(row(f"Elasticsearch {index.index_type} nc={nc}", found, seconds, truth,
                            None, kind="elasticsearch", num_candidates=nc, build_s=build_s))
    finally:
        index.delete_version(version)
    return rows, f"Elasticsearch at {url}, index type {index.index_type}."


# -- the sweep and the choice ---------------------------------------------------------------

def smallest_meeting_target(rows: list[dict]) -> dict | None:
    """Per config the smallest num_candidates reaching the target; then the fastest of those."""
    per_config: dict[tuple, dict] = {}
    for r in sorted(rows, key=lambda r: r["num_candidates"]):
        key = (r["kind"], r["m"], r["ef_construction"])
        if r["recall"] >= RECALL_TARGET and key not in per_config:
            per_config[key] = r
    if not per_config:
        return None
    return min(per_config.values(), key=lambda r: (r["p50_ms"], r["index_bytes"]))


def run(corpus, queries, quick: bool, log) -> dict:
    truth = truth_positions(queries, corpus)
    results: dict = {"exact": exact_rows(corpus, queries, truth)}
    log(f"exact: p50 {results['exact'][0]['p50_ms']:.2f} ms")
    configs = [(16, 100), (32, 100), (32, 200)] if quick else \
        [(16, 100), (16, 200), (24, 200), (32, 100), (32, 200), (48, 200)]
    candidates = [16, 32, 64, 96, 128, 192, 256, 384] if not quick else [32, 64, 128, 256]
    sweep = []
    with tempfile.TemporaryDirectory(prefix="imgsearch-bench-") as tmp:
        for m, efc in configs:
            index, build_s, size = build_hnsw(Path(tmp), corpus, m, efc)
            rows = hnsw_rows(index, build_s, size, queries, truth, candidates, batch=True)
            index.delete_version("bench")
            sweep += rows
            log(f"HNSW m={m} efC={efc}: built in {build_s:.1f} s; " + ", ".join(
                f"nc={r['num_candidates']} R={r['recall']:.4f} p50={r['p50_ms']:.3f}ms"
                for r in rows))
    results["sweep"] = sweep
    results["chosen"] = smallest_meeting_target([r for r in sweep if r["kind"] == "hnsw"])
    es_rows, es_note = elasticsearch_rows(corpus, queries, truth, [64, 128, 256])
    results["elasticsearch"], results["elasticsearch_note"] = es_rows, es_note
    log(es_note)
    results["prototype"] = PROTOTYPE
    return results


def sweep_png(sweep: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), dpi=110)
    configs: dict[str, list[dict]] = {}
    for r in sweep:
        label = f"{r['name'].split(' m=')[0]} m={r['m']} efC={r['ef_construction']}"
        configs.setdefault(label, []).append(r)
    # Left: recall; right: the missed fraction on a log scale, where the configs separate.
    for ax, miss in zip(axes, (False, True), strict=True):
        for label, rows in configs.items():
            rows = sorted(rows, key=lambda r: r["num_candidates"])
            ys = [1 - r["recall"] if miss else r["recall"] for r in rows]
            ax.plot([r["p50_ms"] for r in rows], ys, marker="o", markersize=3, label=label)
            for r, y in zip(rows, ys, strict=True):
                ax.annotate(str(r["num_candidates"]), (r["p50_ms"], y), fontsize=6,
                            xytext=(3, -8), textcoords="offset points")
        target = 1 - RECALL_TARGET if miss else RECALL_TARGET
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label="target 0.997")
        ax.set_xlabel("p50 latency per query (ms), one query at a time")
        ax.grid(alpha=0.3)
        if miss:
            ax.set_yscale("log")
            ax.set_ylabel(f"1 - Recall@{K} (log)")
        else:
            ax.set_ylabel(f"Recall@{K}")
            ax.set_ylim(max(0.8, min(r["recall"] for r in sweep) - 0.01), 1.001)
            ax.legend(fontsize=7)
    fig.suptitle("Embedded HNSW: recall vs latency (point labels: num_candidates)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
