"""Stages 6-7: exact-KNN ground truth and the recall report of the built index."""

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from ..artifacts import EmbeddingSet, GroundTruth, IndexBuild, PostsTable
from ..core.cpu_load import OthersCpuShare, load_now
from ..core.depth import depths_from, evaluate_depths
from ..core.evaluation import (
    MIN_TIMED,
    evaluation_queries,
    exact_search,
    latency_sample,
    query_results,
    time_interleaved,
    timing_order,
)
from ..core.ground_truth import (
    StoredRows,
    corpus_location,
    map_rows,
    read_corpus,
    split_uuids,
    stored_rows,
    update_ground_truth,
)
from ..core.integrity import IntegrityError
from ..core.progress import Progress
from ..core.report import RecallReport, report_documents
from ..core.tables import read_table, write_bytes_atomic
from ..core.vectors import embedding_parts, vectors_in_order
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
    """Exact top-k train neighbours of every test query, brought up to date from the last
    run: the kept queries merged with the added train vectors only; new queries and those
    that lost a neighbour computed against the whole corpus, read part by part in blocks of
    queries that fit ``buffer_mb``. Nothing changed: nothing is computed or written."""
    path = home.layout.ground_truth
    progress = Progress("query-vector pairs scored", 0, context.log.info, every_s=15)

    def plan(total: int) -> None:
        progress.total = total

    update = update_ground_truth(
        _stored_rows(posts, embedding_parts(image_embeddings.folder)[0]), path, config.k,
        image_embeddings.model_id, config.buffer_mb * 2**20, log=context.log.info,
        on_scored=progress.advance, on_plan=plan)
    if not update.unchanged:
        context.log.info(progress.summary())
    value = GroundTruth(path, config.k, update.queries, update.corpus, corpus_location(path),
                        image_embeddings.model_id)
    return dg.Output(value, metadata={
        "change": update.summary(),
        "queries": update.queries,
        "corpus": update.corpus,
        "k": config.k,
        "full_recompute": update.full,
        "added": update.added,
        "removed": update.removed,
        "new_queries": update.new_queries,
        "lost_neighbour": update.lost_neighbour,
        "dropped_queries": update.dropped_queries,
        "merged": update.merged,
        "pairs_scored": update.scored,
        "seconds": round(progress.elapsed_s(), 2),
        "path": dg.MetadataValue.path(path),
        "corpus_path": dg.MetadataValue.path(corpus_location(path)),
    })


def _stored_rows(posts: PostsTable, parts: list[str]) -> StoredRows:
    """Where the train and test posts' vectors are stored. The posts table and its uuid
    lists go when this returns: held through the scan, they were most of the step's
    growth with the corpus."""
    split = posts.read(["uuid", "split"])
    return stored_rows(parts, split_uuids(split, "train"), split_uuids(split, "test"))


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
    the recall gate then judge the version at that depth. Then the ANN search at that depth
    and the exact search (over the version's stored float vectors, or the ground truth's
    corpus: ``_time_both``) are timed here, after search_index and ground_truth, interleaved
    query by query on the same sample, with the share of the CPU other processes used
    meanwhile.
    """
    if problem := k_error(config.k, ground_truth.k):  # the stored truth may be older
        raise dg.Failure(problem)
    try:
        queries = evaluation_queries(
            read_table(ground_truth.path, columns=["query", "neighbours"]).to_pydict(),
            config.k, config.max_queries)
    except (ValueError, KeyError, pa.ArrowException) as error:
        raise dg.Failure(f"the ground truth is unreadable ({error}): materialize "
                         "ground_truth again") from None
    depths = _depths(context, config, search_index, vector_index)
    parts = embedding_parts(image_embeddings.folder)[0]  # verified once: queries and corpus
    vectors = vectors_in_order(image_embeddings.folder, queries.ids, parts)
    # No corpus, nothing to time: every query's times stay None.
    sample = latency_sample(len(queries.ids) if ground_truth.corpus else 0,
                            config.latency_sample)
    progress = Progress("searches (depth sweep, at most)",
                        len(depths) * (len(queries.ids) + len(sample)), context.log.info)
    search_many, search_one = _searches(vector_index, config.k, search_index.version)
    # An incremental version's sweep stops at the depth it chooses: the point past it only
    # draws the curve (a whole pass over the queries, a third of its sweep), and the full
    # build it extends drew it.
    evaluation = evaluate_depths(search_many, search_one, vectors, queries.expected, sample,
                                 depths, config.k, config.target, on_searched=progress.advance,
                                 beyond=0 if search_index.action == "incremental" else 1)
    sweep = evaluation.sweep
    context.log.info(f"{progress.summary()}; {sweep.verdict()}")
    if sweep.reached:  # the version's own search depth, used by searches from now on
        vector_index.record_search_depth(search_index.version, sweep.record())
    depth = sweep.best.depth
    timed = timing_order(len(queries.ids) if ground_truth.corpus else 0)
    ann_s, exact_s, load = _time_both(context, parts, ground_truth,
                                      vectors, timed, config.timing_budget_s, config.k,
                                      lambda vector: search_one(vector, depth),
                                      vector_index, search_index.version)
    results = query_results(queries.expected, evaluation.answers, ann_s, exact_s, config.k)
    report = RecallReport.of(results, sweep, indexed=search_index.count,
                             ground_truth_corpus=ground_truth.corpus,
                             index_version=search_index.version,
                             index_params=search_index.params, model_id=image_embeddings.model_id,
                             timing_load=load)
    documents = report_documents(report, queries, results, sweep)
    for name, data in documents.files.items():
        write_bytes_atomic(data, home.layout.report(name))
    path = home.layout.report("recall_report.md")
    context.log.info(report.summary_line(path))
    return dg.Output(report, metadata={**report.figures(),
                                       "report": dg.MetadataValue.md(documents.ui_markdown),
                                       "report_path": dg.MetadataValue.path(path)})


def _depths(context: dg.AssetExecutionContext, config: RecallReportConfig,
            search_index: IndexBuild, vector_index: VectorIndex) -> list[int]:
    """The config's depths; for an incremental version, from its base's depth (from just
    below it when more were removed than added)."""
    depths = config.depths()
    if search_index.action != "incremental" or config.num_candidates is not None:
        return depths
    try:
        record = vector_index.recorded_search_depth(search_index.base)
    except (IntegrityError, LookupError):
        record = None
    if record is None:
        return depths
    swept = depths_from(depths, int(record["num_candidates"]),
                        grew=search_index.added > search_index.removed)
    context.log.info(f"incremental version of {search_index.base} (depth "
                     f"{record['num_candidates']}): the sweep starts at depth {swept[0]}")
    return swept


def _time_both(context: dg.AssetExecutionContext, parts: list[str], truth: GroundTruth,
               vectors: np.ndarray, order: np.ndarray, budget_s: float, k: int,
               ann: Callable[[np.ndarray], object], vector_index: VectorIndex, version: str
               ) -> tuple[list[float | None], list[float | None], dict]:
    """ANN and exact seconds of the queries in ``order`` (``timing_order``) until the budget
    is spent, interleaved, and the load meanwhile. The
    exact side scans the version's own float vectors where the index keeps them (the map the
    ANN re-rank reads; rows removed since its last full build masked out of its answers),
    else the ground truth's corpus copied part by part into a memory map of a local scratch
    file (at 1M vectors, ~30 s of reading the parts). Page cache either way, not the heap:
    flat memory whatever the corpus size."""
    if not len(order):
        return [None] * len(vectors), [None] * len(vectors), {}
    with ExitStack() as stack:
        stored = vector_index.stored_vectors(version)
        if stored is not None:
            corpus, excluded = stored
        else:
            corpus_rows = stored_rows(parts, read_corpus(truth.path),
                                      pa.array([], pa.string())).corpus
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="recall-report-"))
            corpus, excluded = map_rows(parts, corpus_rows, Path(scratch) / "corpus.f32"), None
        timing = Progress(f"queries timed (ANN and exact, interleaved, for {budget_s:g} s and "
                          f"at least {min(MIN_TIMED, len(order))} queries, at most)", len(order),
                          context.log.info)
        exact = partial(exact_search, corpus, k=k, excluded=excluded)
        watch = OthersCpuShare()
        ann_s, exact_s = time_interleaved(ann, exact, vectors, order, budget_s=budget_s,
                                          on_query=lambda: timing.advance(1))
        load = load_now(watch.share())
        del corpus, exact  # let go of the map before its file goes
    context.log.info(f"{timing.summary()}; other processes used "
                     f"{load['others_cpu_share']:.1%} of the CPU meanwhile")
    return ann_s, exact_s, load


def _searches(vector_index: VectorIndex, k: int, version: str) -> tuple[Callable, Callable]:
    """The version's batch search (hit ids per query) and one-query search, by depth."""
    def search_many(batch: np.ndarray, depth: int) -> list[list[str]]:
        return [[hit.uuid for hit in row]
                for row in vector_index.search_many(batch, k, depth, version=version)]

    def search_one(vector: np.ndarray, depth: int) -> list[str]:
        return [hit.uuid for hit in vector_index.search(vector, k, depth, version=version)]

    return search_many, search_one
