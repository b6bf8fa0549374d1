"""Stages 6-7: exact-KNN ground truth and the recall report of the built index."""

from collections.abc import Callable

import dagster as dg
import numpy as np

from ..artifacts import EmbeddingSet, GroundTruth, IndexBuild, PostsTable
from ..core.depth import evaluate_depths
from ..core.evaluation import (
    evaluation_queries,
    ground_truth_table,
    latency_sample,
    query_results,
    time_exact,
)
from ..core.knn import exact_neighbours
from ..core.progress import Progress
from ..core.recall import latency_summary
from ..core.report import RecallReport, report_documents
from ..core.tables import read_table, write_bytes_atomic, write_table_atomic
from ..core.vectors import read_vector_groups, vectors_in_order
from ..resources.storage import PipelineHome
from ..resources.vector_index import VectorIndex
from ..run_config import GroundTruthConfig, RecallReportConfig, k_error


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
    neighbours, scores = exact_neighbours(queries, corpus, corpus_ids, config.k,
                                          config.buffer_mb * 2**20, on_batch=progress.advance)
    context.log.info(progress.summary())
    # No corpus, nothing to time: every query's exact time stays None.
    positions = latency_sample(len(query_ids) if len(corpus_ids) else 0, config.latency_sample)
    timing = Progress("exact searches timed", len(positions), context.log.info)
    exact_s = time_exact(corpus, queries, config.k, positions, on_query=lambda: timing.advance(1))
    context.log.info(timing.summary())
    path = home.layout.ground_truth
    write_table_atomic(ground_truth_table(query_ids, neighbours, scores, exact_s), path)
    timed = [e for e in exact_s if e is not None]
    return dg.Output(GroundTruth(path, config.k, len(query_ids), len(corpus_ids)), metadata={
        "queries": len(query_ids),
        "corpus": len(corpus_ids),
        "k": config.k,
        "seconds": round(progress.elapsed_s(), 2),
        "exact_timed": len(timed),
        "exact_p50_ms": dg.MetadataValue.float(round(latency_summary(timed)["p50_ms"], 3)),
        "path": dg.MetadataValue.path(path),
    })


@dg.asset(group_name="evaluation", kinds={"json", "parquet"})
def recall_report(
    context: dg.AssetExecutionContext,
    config: RecallReportConfig,
    search_index: IndexBuild,
    ground_truth: GroundTruth,
    image_embeddings: EmbeddingSet,
    vector_index: VectorIndex,
    home: PipelineHome,
) -> dg.Output[RecallReport]:
    """Recall@k of the new index version against the exact answers, and both latencies.

    First a sweep finds the smallest search depth at which the version reaches the target
    recall and records it with the version (searches use it from then on); the report and
    the recall gate then judge the version at that depth. The exact latency was timed by
    ground_truth (the one step holding the corpus) on a sample of the queries; the ANN
    search is timed on the same ones.
    """
    if problem := k_error(config.k, ground_truth.k):  # the stored truth may be older
        raise dg.Failure(problem)
    try:
        queries = evaluation_queries(read_table(ground_truth.path).to_pydict(), config.k,
                                     config.max_queries)
    except ValueError as error:
        raise dg.Failure(str(error)) from None
    depths = config.depths()
    progress = Progress("searches (depth sweep, at most)",
                        len(depths) * (len(queries.ids) + len(queries.sample)), context.log.info)
    evaluation = evaluate_depths(
        *_searches(vector_index, config.k, search_index.version),
        vectors_in_order(image_embeddings.folder, queries.ids), queries.expected,
        queries.sample, depths, config.k, config.target, on_searched=progress.advance)
    sweep = evaluation.sweep
    context.log.info(f"{progress.summary()}; {sweep.verdict()}")
    if sweep.reached:  # the version's own search depth, used by searches from now on
        vector_index.record_search_depth(search_index.version, sweep.record())
    results = query_results(queries.expected, evaluation.answers, evaluation.ann_s,
                            queries.exact_s, config.k)
    report = RecallReport.of(results, sweep, indexed=search_index.count,
                             ground_truth_corpus=ground_truth.corpus,
                             index_version=search_index.version,
                             index_params=search_index.params, model_id=image_embeddings.model_id)
    documents = report_documents(report, queries, results, sweep)
    for name, data in documents.files.items():
        write_bytes_atomic(data, home.layout.report(name))
    path = home.layout.report("recall_report.md")
    context.log.info(report.summary_line(path))
    return dg.Output(report, metadata={**report.figures(),
                                       "report": dg.MetadataValue.md(documents.ui_markdown),
                                       "report_path": dg.MetadataValue.path(path)})


def _searches(vector_index: VectorIndex, k: int, version: str) -> tuple[Callable, Callable]:
    """The version's batch search (hit ids per query) and one-query search, by depth."""
    def search_many(batch: np.ndarray, depth: int) -> list[list[str]]:
        return [[hit.uuid for hit in row]
                for row in vector_index.search_many(batch, k, depth, version=version)]

    def search_one(vector: np.ndarray, depth: int) -> list[str]:
        return [hit.uuid for hit in vector_index.search(vector, k, depth, version=version)]

    return search_many, search_one
