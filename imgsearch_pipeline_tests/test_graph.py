"""The whole asset graph, materialised in-process on a generated dataset."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.resources.vector_index import FaissHnswIndex

from .pipeline import materialize_all, pipeline_resources


def _recomputed_recall(home, k: int) -> float:
    """Recall of the index's answers against numpy's exact ranking of the stored vectors
    (not the pipeline's ground truth): every train vector scored by its dot product with
    the query, sorted, the first k kept."""
    posts = pq.read_table(home / "tables" / "posts.parquet", columns=["uuid", "split"]).to_pydict()
    split = dict(zip(posts["uuid"], posts["split"], strict=True))
    vector_of = {row["uuid"]: np.asarray(row["vector"], dtype=np.float64)
                 for part in (home / "tables" / "embeddings").glob("*/part-*.parquet")
                 for row in pq.read_table(part, columns=["uuid", "vector"]).to_pylist()}
    train = sorted(u for u in vector_of if split[u] == "train")
    corpus = np.stack([vector_of[u] for u in train])
    per_query = pq.read_table(home / "tables" / "reports" / "recall_per_query.parquet").to_pydict()
    recalls = []
    for query, ann in zip(per_query["query"], per_query["ann"], strict=True):
        exact = {train[i] for i in np.argsort(-(corpus @ vector_of[query]), kind="stable")[:k]}
        recalls.append(len(exact & set(ann[:k])) / min(k, len(train)))
    return float(np.mean(recalls))


@pytest.mark.parametrize("embedder", ["color-texture", "siglip"])
def test_whole_graph(embedder, sample_dataset, tiny_siglip, tmp_path):
    home = tmp_path / "var"
    resources = pipeline_resources(home, sample_dataset, embedder,
                               model=str(tiny_siglip) if embedder == "siglip" else None)
    result = materialize_all(resources)
    assert result.success
    report = result.output_for_node("recall_report")
    posts = result.output_for_node("posts")
    embeddings = result.output_for_node("image_embeddings")

    assert posts.duplicates > 0  # the dataset holds exact copies: they collapse
    assert posts.posts + posts.duplicates + posts.rejected == 300
    assert embeddings.count == posts.posts
    # the parts record what computed their vectors: OpenVINO for SigLIP on this CPU
    numerics = resources["embedder"].load().numerics
    assert numerics.startswith("openvino-" if embedder == "siglip" else "numpy-")
    metadata = result.asset_materializations_for_node("image_embeddings")[0].metadata
    assert metadata["numerics"].value == f"{numerics}: {posts.posts:,} rows"
    assert report.queries == posts.test
    assert report.indexed == posts.train
    assert report.mean_recall == pytest.approx(_recomputed_recall(home, report.k))
    # the report timed exact and ANN search on the same sample of queries, in one step
    per_query = pq.read_table(home / "tables" / "reports" / "recall_per_query.parquet")
    timed = [ms is not None for ms in per_query.column("exact_ms").to_pylist()]
    assert sum(timed) == min(200, posts.test) == report.exact_timed == report.ann_timed
    assert [ms is not None for ms in per_query.column("ann_ms").to_pylist()] == timed
    assert report.timing_load["cores"] >= 1
    assert report.mean_recall >= 0.9
    assert json.loads((home / "tables/reports/recall_report.json").read_text()) == report.as_dict()
    index = FaissHnswIndex(root=str(home / "index"))
    assert index.live_version() == report.index_version
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks


def test_rerun_reuses_objects_and_embeddings(sample_dataset, tmp_path):
    home = tmp_path / "var"
    resources = pipeline_resources(home, sample_dataset)
    materialize_all(resources)
    again = materialize_all(resources)
    objects = again.output_for_node("image_objects")
    assert objects.uploaded == 0 and objects.already_there == objects.stored
    embeddings = again.asset_materializations_for_node("image_embeddings")[0].metadata
    assert embeddings["embedded_now"].value == 0
    assert embeddings["reused"].value == again.output_for_node("posts").posts
    truth = again.asset_materializations_for_node("ground_truth")
    changes = [m.metadata["change"].value for m in truth]
    assert all(c.startswith("unchanged: 0 added, 0 removed, 0 new queries") for c in changes)
