"""Each index version's own search depth: the sweep, its record with the version, the gate
and the API using it."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from fastapi.testclient import TestClient

from imgsearch_pipeline.api.app import create_app
from imgsearch_pipeline.core import es_queries as q
from imgsearch_pipeline.core.depth import (
    DepthPoint,
    candidate_depths,
    depths_from,
    measure_depth,
    sweep_depths,
)
from imgsearch_pipeline.core.integrity import IntegrityError
from imgsearch_pipeline.core.layout import Layout
from imgsearch_pipeline.core.report import RecallReport, depth_figure_png, report_markdown
from imgsearch_pipeline.core.similarity import l2_normalise
from imgsearch_pipeline.core.vectors import read_vectors
from imgsearch_pipeline.resources.vector_index import (
    DEFAULT_NUM_CANDIDATES,
    FaissHnswIndex,
    IndexBatch,
)

from .pipeline import materialize_all, pipeline_resources


def reference_recall(found: list[str], exact: list[str], k: int) -> float:
    return len(set(found[:k]) & set(exact[:k])) / k


# -- the sweep ------------------------------------------------------------------------------


def test_candidate_depths_run_from_k_to_the_cap():
    assert candidate_depths(10, 1024) == [10, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024]
    assert candidate_depths(100, 300) == [100, 128, 192, 256, 300]
    assert candidate_depths(10, 10) == [10]
    with pytest.raises(ValueError, match="cap 5 is below k=10"):
        candidate_depths(10, 5)


def fake_measure(recalls: dict[int, float], calls: list[int]):
    def measure(depth: int) -> DepthPoint:
        calls.append(depth)
        return DepthPoint(depth, recalls[depth], recalls[depth] - 0.1, depth / 100, depth / 50)
    return measure


def test_sweep_stops_one_depth_past_the_first_that_reaches_the_target():
    depths = candidate_depths(10, 1024)
    recalls = {d: 1 - 1 / d for d in depths}  # reaches 0.997 first at 384
    first = next(d for d in depths if recalls[d] >= 0.997)
    calls: list[int] = []
    sweep = sweep_depths(fake_measure(recalls, calls), depths, 10, 0.997)
    assert sweep.reached and sweep.chosen == first == 384
    assert calls == depths[: depths.index(first) + 2]  # one beyond, for the curve
    calls.clear()
    alone = sweep_depths(fake_measure(recalls, calls), depths, 10, 0.997, beyond=0)
    assert calls == depths[: depths.index(first) + 1] and alone.chosen == first  # the same choice
    assert sweep.record() == {"num_candidates": 384, "k": 10, "target": 0.997,
                              "mean_recall": recalls[384], "p50_ms": 3.84}
    assert sweep.verdict() == ("search depth 384: mean recall@10 0.9974 >= target 0.997 "
                               "(ANN p50 3.840 ms)")


def test_sweep_that_never_reaches_the_target_says_so_and_records_nothing():
    depths = candidate_depths(10, 256)
    recalls = {d: 0.5 + d / 1000 for d in depths}
    calls: list[int] = []
    sweep = sweep_depths(fake_measure(recalls, calls), depths, 10, 0.99)
    assert not sweep.reached and calls == depths and sweep.cap == 256
    assert sweep.best.depth == 256
    assert sweep.verdict().startswith("no search depth up to 256 reaches mean recall@10 >= 0.99: "
                                      "the best was 0.7560 at depth 256")
    with pytest.raises(ValueError, match="no search depth"):
        sweep.record()
    with pytest.raises(ValueError, match="target recall"):
        sweep_depths(fake_measure(recalls, []), depths, 10, 1.5)


def hard_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Isotropic random directions: every neighbour nearly as far as the next, the hard case."""
    return l2_normalise(np.random.default_rng(seed).standard_normal((n, dim)))


def test_a_sparse_graph_needs_a_deeper_search_than_the_default(tmp_path):
    corpus, queries = hard_vectors(1500, 16, 0), hard_vectors(60, 16, 1)
    ids = [f"{i:05d}" for i in range(len(corpus))]
    index = FaissHnswIndex(root=str(tmp_path), m=4, ef_construction=8)
    index.build("v1", 16, [IndexBatch(ids, corpus)])
    exact = [[ids[i] for i in np.argsort(-(corpus @ v), kind="stable")[:10]] for v in queries]

    def search(vector: np.ndarray, depth: int) -> list[str]:
        return [h.uuid for h in index.search(vector, 10, depth, version="v1")]

    def recall_at(depth: int) -> float:  # the reference: no core.recall, no sweep
        return float(np.mean([reference_recall(search(v, depth), e, 10)
                              for v, e in zip(queries, exact, strict=True)]))

    target = 0.98
    sweep = sweep_depths(lambda d: measure_depth(search, queries, exact, 10, d, warmup=0),
                         candidate_depths(10, 2048), 10, target)
    assert sweep.chosen is not None and sweep.chosen > DEFAULT_NUM_CANDIDATES
    assert recall_at(DEFAULT_NUM_CANDIDATES) < target <= recall_at(sweep.chosen)
    shallower = candidate_depths(10, 2048)[candidate_depths(10, 2048).index(sweep.chosen) - 1]
    assert recall_at(shallower) < target  # the smallest depth that reaches it
    for point in sweep.points:
        assert point.mean_recall == pytest.approx(recall_at(point.depth))

    assert index.search_depth("v1") == DEFAULT_NUM_CANDIDATES  # nothing recorded yet
    index.record_search_depth("v1", sweep.record())
    assert index.recorded_search_depth("v1")["num_candidates"] == sweep.chosen
    assert index.search_depth("v1") == sweep.chosen
    index.publish("v1")
    assert index.search_depth() == sweep.chosen  # the live version's
    with pytest.raises(LookupError, match="never built"):
        index.record_search_depth("v2", sweep.record())
    (tmp_path / "versions" / "v1" / "search_depth.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="search_depth.json: unreadable"):
        index.search_depth("v1")


def test_elasticsearch_keeps_its_marks_when_the_depth_is_added():
    body = q.index_body(8, meta={"index_name": "imgsearch", "version": "v1"})
    response = {"imgsearch-v1": {"mappings": body["mappings"]}}
    meta = q.meta_with_search_depth(q.mapping_meta(response, "imgsearch-v1"),
                                    {"num_candidates": 384, "k": 10})
    assert meta == {"index_name": "imgsearch", "version": "v1",
                    "search_depth": {"num_candidates": 384, "k": 10}}
    updated = {"imgsearch-v1": {"mappings": {**body["mappings"], "_meta": meta}}}
    assert q.owned_versions("imgsearch", updated) == ["v1"]  # still ours, still listed
    assert q.mapping_meta(updated)[q.SEARCH_DEPTH_META]["num_candidates"] == 384
    assert q.mapping_meta({}) == {}
    with pytest.raises(ValueError, match="num_candidates >= 1"):
        q.meta_with_search_depth(meta, {"k": 10})


def test_report_shows_the_curve_and_the_choice():
    depths = candidate_depths(10, 1024)
    sweep = sweep_depths(fake_measure({d: 1 - 1 / d for d in depths}, []), depths, 10, 0.997)
    latency = {"mean_ms": 1.0, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0}
    report = RecallReport(k=10, mean_recall=0.998, min_recall=0.9, queries_below_1=3,
                          queries=100, indexed=1000, num_candidates=384, target=0.997,
                          depth_sweep=sweep.as_dict(), depth_verdict=sweep.verdict(),
                          speedup_p50=5.0, model_id="m", index_version="v1", index_params={},
                          ann_latency=latency, exact_latency=latency, ann_timed=100,
                          exact_timed=100, ground_truth_corpus=1000)
    text = report_markdown(report)
    assert "| **384** | 0.9974 |" in text and "| 256 | 0.9961 |" in text and "| 512 |" in text
    assert "| 768 |" not in text  # the sweep stopped one depth past the choice
    assert depth_figure_png(sweep).startswith(b"\x89PNG")


# -- the pipeline: a small index that needs a deep search -----------------------------------

# m=4, ef_construction=4: a sparse graph over the sample's ~260 train images, so that the
# target is reached only deeper than DEFAULT_NUM_CANDIDATES (checked below, not assumed).
SPARSE = {"m": 4, "ef_construction": 4}
TARGET = 0.99


@pytest.fixture(scope="module")
def deep(tmp_path_factory, sample_dataset):
    home = tmp_path_factory.mktemp("deep") / "var"
    index = FaissHnswIndex(root=Layout.at(home).index, **SPARSE)
    result = materialize_all(
        pipeline_resources(home, sample_dataset, vector_index=index),
        run_config={"ops": {"recall_report": {"config": {"target": TARGET}}}})
    return home, index, result


def test_the_version_records_the_depth_that_reaches_the_target(deep):
    home, index, result = deep
    report = result.output_for_node("recall_report")
    version, depth = report.index_version, report.num_candidates
    assert depth > DEFAULT_NUM_CANDIDATES

    # Reference: recall of the built version at each depth, from the stored vectors and
    # numpy's exact ranking (neither the ground truth asset nor the sweep's code).
    ids, vectors = read_vectors(result.output_for_node("image_embeddings").folder)
    posts = result.output_for_node("posts")
    train_uuids, test_uuids = posts.uuids("train"), posts.uuids("test")
    train = [i for i, u in enumerate(ids) if u in train_uuids]
    test = [i for i, u in enumerate(ids) if u in test_uuids]
    corpus = vectors[train]

    def recall_at(d: int) -> float:
        scores = []
        for row in test:
            exact = [ids[train[i]] for i in np.argsort(-(corpus @ vectors[row]), kind="stable")[:10]]
            found = [h.uuid for h in index.search(vectors[row], 10, d, version=version)]
            scores.append(reference_recall(found, exact, 10))
        return float(np.mean(scores))

    depths = candidate_depths(10, 1024)
    assert recall_at(DEFAULT_NUM_CANDIDATES) < TARGET <= recall_at(depth)
    assert recall_at(depths[depths.index(depth) - 1]) < TARGET
    assert report.mean_recall == pytest.approx(recall_at(depth))

    record = json.loads((Path(index.root) / "versions" / version / "search_depth.json").read_text())
    assert record["num_candidates"] == depth and record["target"] == TARGET
    assert index.search_depth(version) == depth

    metadata = result.asset_materializations_for_node("recall_report")[0].metadata
    assert metadata["num_candidates"] == dg.MetadataValue.int(depth)  # plotted across runs
    layout = Layout.at(home)
    assert Path(layout.report("search_depth.png")).read_bytes().startswith(b"\x89PNG")
    assert f"| **{depth}** |" in Path(layout.report("recall_report.md")).read_text()


def test_the_gate_passes_at_the_recorded_depth_and_publishes(deep):
    _, index, result = deep
    report = result.output_for_node("recall_report")
    gate = next(e for e in result.get_asset_check_evaluations()
                if e.check_name == "recall_meets_target")
    assert gate.passed
    assert f"at search depth {report.num_candidates}" in gate.description
    assert gate.metadata["num_candidates"].value == report.num_candidates
    assert index.live_version() == report.index_version


def test_the_api_searches_at_the_versions_depth_unless_asked_otherwise(deep):
    home, index, result = deep
    depth = result.output_for_node("recall_report").num_candidates
    ids, vectors = read_vectors(result.output_for_node("image_embeddings").folder)
    with TestClient(create_app({"IMGSEARCH_HOME": str(home),
                                "IMGSEARCH_EMBEDDER": "color-texture"})) as client:
        assert client.get("/health").json()["num_candidates"] == depth
        for uuid, vector in list(zip(ids, vectors, strict=True))[:20]:
            body = client.get(f"/images/{uuid}/similar?k=5").json()
            assert body["num_candidates"] == depth
            expected = [h.uuid for h in index.search(vector, 6, depth) if h.uuid != uuid][:5]
            assert [h["uuid"] for h in body["hits"]] == expected
        asked = client.get(f"/images/{ids[0]}/similar?k=5&num_candidates=16").json()
        assert asked["num_candidates"] == 16


def test_an_incremental_sweep_starts_just_below_the_previous_depth():
    depths = candidate_depths(10, 1024)
    assert depths_from(depths, 512) == [384, 512, 768, 1024]
    assert depths_from(depths, 400) == [384, 512, 768, 1024]
    assert depths_from(depths, 10) == depths  # nothing below: the whole sweep
    assert depths_from(depths, 5000) == [1024]


def test_a_grown_incremental_sweep_starts_at_the_previous_depth():
    # More added than removed: the graph is larger, no shallower depth is searched again.
    depths = candidate_depths(10, 1024)
    assert depths_from(depths, 512, grew=True) == [512, 768, 1024]
    assert depths_from(depths, 400, grew=True) == [512, 768, 1024]
    assert depths_from(depths, 10, grew=True) == depths
    assert depths_from(depths, 5000, grew=True) == [1024]
