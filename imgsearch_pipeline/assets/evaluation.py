"""Stages 6-7: exact-KNN ground truth and the recall report of the built index."""

import json

import dagster as dg
import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from ..artifacts import EmbeddingSet, GroundTruth, IndexBuild, PostsTable
from ..core.depth import DepthPoint, candidate_depths, depth_point, sweep_depths
from ..core.es_queries import MAX_NUM_CANDIDATES
from ..core.evaluation import latency_sample, query_results, summarise, time_at, time_exact
from ..core.knn import DEFAULT_BUFFER_BYTES, exact_knn
from ..core.progress import Progress
from ..core.recall import latency_summary
from ..core.report import depth_figure_png, latency_figure_png, png_markdown, report_markdown
from ..core.tables import atomic_path, read_table, write_table_atomic, write_text_atomic
from ..core.vectors import read_vector_groups, read_vectors
from ..resources.storage import PipelineHome
from ..resources.vector_index import VectorIndex
from ..run_config import k_error


class GroundTruthConfig(dg.Config):
    # 10 = the report's k. Top-k selection is the cost beyond the matrix product: k=100
    # measured 1.37x the bare matmul, k=10 1.21x-1.32x (benchmarks/README.md). Raise it together
    # with recall_report's k for recall@k beyond 10.
    k: int = Field(10, gt=0, description="Neighbours kept per query (reports use up to k).")
    buffer_mb: int = Field(
        DEFAULT_BUFFER_BYTES // 2**20, gt=0,
        description="Memory of the score buffer in MiB: each matrix product scores as many "
                    "queries as fit against the whole train split (2,469 queries at 27k "
                    "vectors, 67 at 1M), so memory stays flat as the corpus grows.")
    latency_sample: int | None = Field(
        200, gt=0,
        description="Time the exact search one query at a time on this many test queries, "
                    "spread evenly (all when unset); recall_report times the ANN search on "
                    "the same queries. One exact scan over 1M vectors takes ~0.1-0.2 s on "
                    "2 cores.")


@dg.asset(group_name="evaluation", kinds={"numpy", "parquet"})
def ground_truth(
    context: dg.AssetExecutionContext,
    config: GroundTruthConfig,
    image_embeddings: EmbeddingSet,
    posts: PostsTable,
    home: PipelineHome,
) -> dg.Output[GroundTruth]:
    """Exact top-k train neighbours of every test query, by batched matrix products; and
    the exact search's latency, one query at a time, on a sample of them (the recall report
    sets it beside the ANN latency: the corpus is in memory here, and only here)."""
    (corpus_ids, corpus), (query_ids, queries) = read_vector_groups(
        image_embeddings.folder, [posts.uuids("train"), posts.uuids("test")])
    progress = Progress("queries answered exactly", len(query_ids), context.log.info)
    neighbours: list[list[str]] = []
    scores: list[list[float]] = []
    ids = np.asarray(corpus_ids, dtype=object)
    if len(query_ids) and len(corpus_ids):
        for _, indices, block_scores in exact_knn(queries, corpus, config.k,
                                                          config.buffer_mb * 2**20):
            neighbours += [list(ids[row]) for row in indices]
            scores += block_scores.tolist()
            progress.advance(len(indices))
    else:
        neighbours = [[] for _ in query_ids]
        scores = [[] for _ in query_ids]
    context.log.info(progress.summary())
    exact_s: list[float | None] = [None] * len(query_ids)
    if len(query_ids) and len(corpus_ids):
        positions = latency_sample(len(query_ids), config.latency_sample)
        timing = Progress("exact searches timed", len(positions), context.log.info)
        exact_s = time_exact(corpus, queries, config.k, positions,
                             on_query=lambda: timing.advance(1))
        context.log.info(timing.summary())
    table = pa.table({"query": query_ids, "neighbours": neighbours,
                      "scores": pa.array(scores, pa.list_(pa.float32())),
                      "exact_ms": pa.array([None if e is None else e * 1000 for e in exact_s],
                                           pa.float64())})
    path = home.layout.ground_truth
    write_table_atomic(table, path)
    value = GroundTruth(path, config.k, len(query_ids), len(corpus_ids))
    exact = latency_summary([e for e in exact_s if e is not None])
    return dg.Output(value, metadata={
        "queries": len(query_ids),
        "corpus": len(corpus_ids),
        "k": config.k,
        "seconds": round(progress.elapsed_s(), 2),
        "exact_timed": sum(e is not None for e in exact_s),
        "exact_p50_ms": dg.MetadataValue.float(round(exact["p50_ms"], 3)),
        "path": dg.MetadataValue.path(path),
    })


# Queries per batch of the recall count (answers held per batch: k hits each).
_SEARCH_BATCH = 1024


class RecallReportConfig(dg.Config):
    k: int = Field(10, gt=0, description="Recall@k and the number of hits asked for.")
    target: float = Field(
        0.997, gt=0.0, le=1.0,
        description="Mean recall@k the version must reach: the search depth chosen is the "
                    "smallest that reaches it, and the recall gate publishes only if one does.")
    max_num_candidates: int = Field(
        1024, gt=0, le=MAX_NUM_CANDIDATES,
        description="Cap of the search-depth sweep (HNSW efSearch / ES num_candidates).")
    num_candidates: int | None = Field(
        None, gt=0, description="Evaluate at this depth instead of sweeping for the smallest "
                                "one that reaches the target.")
    max_queries: int | None = Field(None, gt=0, description="Evaluate only the first N queries.")

    @model_validator(mode="after")
    def _enough_candidates(self) -> "RecallReportConfig":
        if self.num_candidates is not None and self.num_candidates < self.k:
            raise ValueError(f"num_candidates={self.num_candidates} must be >= k={self.k}")
        if self.max_num_candidates < self.k:
            raise ValueError(f"max_num_candidates={self.max_num_candidates} must be >= k={self.k}")
        return self

    def depths(self) -> list[int]:
        """The depths the evaluation tries, shallowest first."""
        if self.num_candidates is not None:
            return [self.num_candidates]
        return candidate_depths(self.k, self.max_num_candidates)


@dg.asset(group_name="evaluation", kinds={"json", "parquet"})
def recall_report(
    context: dg.AssetExecutionContext,
    config: RecallReportConfig,
    search_index: IndexBuild,
    ground_truth: GroundTruth,
    image_embeddings: EmbeddingSet,
    vector_index: VectorIndex,
    home: PipelineHome,
) -> dg.Output[dict]:
    """Recall@k of the new index version against the exact answers, and both latencies.

    First a sweep finds the smallest search depth at which the version reaches the target
    recall and records it with the version (searches use it from then on); the report and
    the recall gate then judge the version at that depth.
    """
    if problem := k_error(config.k, ground_truth.k):  # the stored truth may be older
        raise dg.Failure(problem)
    truth = read_table(ground_truth.path).to_pydict()
    if "exact_ms" not in truth:
        raise dg.Failure("the ground truth holds no exact-search timings (written by an older "
                         "version): materialize ground_truth again")
    query_ids = truth["query"][: config.max_queries]
    expected = [n[: config.k] for n in truth["neighbours"][: config.max_queries]]
    # The exact latency was timed by ground_truth (the one step holding the corpus) on a
    # sample of the queries; the ANN search is timed on the same ones.
    exact_s = [None if ms is None else ms / 1000 for ms in truth["exact_ms"][: config.max_queries]]
    sample = np.flatnonzero([e is not None for e in exact_s])
    found_ids, queries = read_vectors(image_embeddings.folder, set(query_ids))
    order = {u: i for i, u in enumerate(found_ids)}
    queries = queries[[order[u] for u in query_ids]] if query_ids else queries

    def ann_at(vector: np.ndarray, depth: int) -> list[str]:
        return [h.uuid for h in vector_index.search(vector, config.k, depth,
                                                    version=search_index.version)]

    # The version's own search depth: the smallest that reaches the target on these queries.
    # Each depth: recall on every query (in batches, on all cores), latency on the sample.
    depths = config.depths()
    progress = Progress("searches (depth sweep, at most)",
                        len(depths) * (len(query_ids) + len(sample)), context.log.info)
    passes: dict[int, tuple[list[list[str]], list[float | None]]] = {}

    def measure(depth: int) -> DepthPoint:
        answers = []
        for start in range(0, len(queries), _SEARCH_BATCH):
            hits = vector_index.search_many(queries[start:start + _SEARCH_BATCH], config.k,
                                            depth, version=search_index.version)
            answers += [[h.uuid for h in row] for row in hits]
            progress.advance(len(hits))
        seconds = time_at(lambda vector: ann_at(vector, depth), queries, sample,
                          on_query=lambda: progress.advance(1))
        passes[depth] = (answers, seconds)
        return depth_point(depth, expected, answers, seconds, config.k)

    sweep = sweep_depths(measure, depths, config.k, config.target)
    context.log.info(f"{progress.summary()}; {sweep.verdict()}")
    depth = sweep.best.depth
    if sweep.reached:
        vector_index.record_search_depth(search_index.version, sweep.record())
    answers, ann_s = passes[depth]
    results = query_results(expected, answers, ann_s, exact_s, config.k)

    report = {
        **summarise(results, config.k),
        "num_candidates": depth,
        "target": config.target,
        "depth_sweep": sweep.as_dict(),
        "depth_verdict": sweep.verdict(),
        "indexed": search_index.count,
        "ground_truth_corpus": ground_truth.corpus,
        "index_version": search_index.version,
        "index_params": search_index.params,
        "model_id": image_embeddings.model_id,
    }
    layout = home.layout
    per_query = pa.table({
        "query": query_ids,
        "recall": [r.recall for r in results],
        "ann_ms": pa.array([None if r.ann_s is None else r.ann_s * 1000 for r in results],
                           pa.float64()),
        "exact_ms": pa.array([None if r.exact_s is None else r.exact_s * 1000 for r in results],
                             pa.float64()),
        "exact": expected,
        "ann": [r.found for r in results],
    })
    write_table_atomic(per_query, layout.report("recall_per_query.parquet"))
    write_text_atomic(json.dumps(report, indent=2), layout.report("recall_report.json"))
    markdown = report_markdown(report)
    png, depth_png = b"", b""
    if results:
        png = latency_figure_png(np.array([r.ann_s * 1000 for r in results
                                           if r.ann_s is not None]),
                                 np.array([r.exact_s * 1000 for r in results
                                           if r.exact_s is not None]))
        with atomic_path(layout.report("latency.png")) as temporary:
            temporary.write_bytes(png)
        depth_png = depth_figure_png(sweep)
        with atomic_path(layout.report("search_depth.png")) as temporary:
            temporary.write_bytes(depth_png)
    write_text_atomic(markdown + "\n![latency](latency.png)\n"
                      + ("\n![search depth](search_depth.png)\n" if depth_png else ""),
                      layout.report("recall_report.md"))
    context.log.info(f"mean recall@{config.k} = {report['mean_recall']:.4f} over "
                     f"{report['queries']} queries; report at {layout.report('recall_report.md')}")
    ann_lat, exact_lat = report["ann_latency"], report["exact_latency"]
    return dg.Output(report, metadata={
        "mean_recall": dg.MetadataValue.float(round(report["mean_recall"], 4)),
        "min_recall": dg.MetadataValue.float(round(report["min_recall"], 4)),
        "k": config.k,
        "num_candidates": dg.MetadataValue.int(depth),
        "target": dg.MetadataValue.float(config.target),
        "search_depth": sweep.verdict(),
        "queries": report["queries"],
        "indexed": report["indexed"],
        "ann_p50_ms": dg.MetadataValue.float(round(ann_lat["p50_ms"], 3)),
        "ann_p95_ms": dg.MetadataValue.float(round(ann_lat["p95_ms"], 3)),
        "exact_p50_ms": dg.MetadataValue.float(round(exact_lat["p50_ms"], 3)),
        "exact_p95_ms": dg.MetadataValue.float(round(exact_lat["p95_ms"], 3)),
        "exact_timed": report["exact_timed"],
        "speedup_p50": dg.MetadataValue.float(round(report["speedup_p50"], 2)),
        "index_version": search_index.version,
        "report": dg.MetadataValue.md(
            markdown + (png_markdown(png, "latency") + "\n\n" + png_markdown(depth_png, "search depth")
                        if png else "")),
        "report_path": dg.MetadataValue.path(layout.report("recall_report.md")),
    })
