"""The Elasticsearch index against a real server: the whole graph, aliases and pruning.

Runs when IMGSEARCH_ES_URL is set (optionally IMGSEARCH_ES_USERNAME, IMGSEARCH_ES_PASSWORD,
IMGSEARCH_ES_API_KEY, IMGSEARCH_ES_CA_CERTS), e.g. against `docker compose up -d
elasticsearch` or the service container of .github/workflows/elasticsearch.yml:

    IMGSEARCH_ES_URL=http://127.0.0.1:9200 IMGSEARCH_ES_PASSWORD=... \
        .venv/bin/pytest -m elasticsearch imgsearch_pipeline_tests/test_elasticsearch_integration.py

Every test works under its own randomly named alias and deletes its indices afterwards.
"""

import json
import os
import uuid

import numpy as np
import pytest

from imgsearch_pipeline.resources.elasticsearch_index import BulkIndexingError, ElasticsearchIndex
from imgsearch_pipeline.resources.vector_index import IndexBatch, SearchFilter

from .pipeline import materialize_all, pipeline_resources
from .test_api_paging import exact_ranking, service_over, walk_pages

ES_URL = os.environ.get("IMGSEARCH_ES_URL")

pytestmark = [
    pytest.mark.elasticsearch,
    pytest.mark.skipif(not ES_URL, reason="IMGSEARCH_ES_URL is not set: no Elasticsearch server "
                                          "to test against (docker compose up -d elasticsearch)"),
]


def make_index(**fields) -> ElasticsearchIndex:
    env = os.environ
    return ElasticsearchIndex(
        url=fields.pop("url", ES_URL),
        username=env.get("IMGSEARCH_ES_USERNAME") or None,
        password=env.get("IMGSEARCH_ES_PASSWORD") or None,
        api_key=env.get("IMGSEARCH_ES_API_KEY") or None,
        ca_certs=env.get("IMGSEARCH_ES_CA_CERTS") or None,
        **{"index_name": f"imgsearch-test-{uuid.uuid4().hex[:10]}", **fields},
    )


@pytest.fixture
def indices():
    """Makes indices under fresh names; deletes all they built when the test ends."""
    made: list[ElasticsearchIndex] = []

    def factory(**fields) -> ElasticsearchIndex:
        made.append(make_index(**fields))
        return made[-1]

    yield factory
    for index in made:
        client = index.client()
        for version in index.versions():  # by name: wildcard deletes may be disabled
            client.options(ignore_status=404).indices.delete(index=f"{index.index_name}-{version}")


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def batch(prefix: str, vectors: np.ndarray, captions=None, splits=None) -> IndexBatch:
    ids = [f"{prefix}-{i:04d}" for i in range(len(vectors))]
    return IndexBatch(ids=ids, vectors=vectors, captions=captions or [f"post {i}" for i in ids],
                      splits=splits or ["train"] * len(ids), shards=["s0"] * len(ids))


def test_whole_graph_publishes_through_the_alias(indices, sample_dataset, tmp_path):
    index = indices(keep_versions=2)
    resources = pipeline_resources(tmp_path / "var", sample_dataset, vector_index=index)
    first = materialize_all(resources)
    assert first.success
    report = first.output_for_node("recall_report")
    posts = first.output_for_node("posts")
    assert report.indexed == posts.train == index.count()
    assert index.live_version() == report.index_version
    assert report.mean_recall >= 0.9
    checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks
    # the version's search depth is in its mapping _meta, next to the owner marks
    record = index.recorded_search_depth(report.index_version)
    assert record["num_candidates"] == report.num_candidates == index.search_depth()
    assert record["target"] == report.target <= report.mean_recall

    second = materialize_all(resources)
    new_version = second.output_for_node("recall_report").index_version
    assert new_version != report.index_version
    assert index.live_version() == new_version
    assert index.versions() == sorted([report.index_version, new_version])  # keeps 2


def test_publish_moves_the_alias_and_prune_keeps_the_live_version(indices):
    index = indices(keep_versions=2)
    for number in range(1, 5):
        count = index.build(f"v{number}", 16, [batch(f"v{number}", unit_vectors(20, 16, number))])
        assert count == 20
    assert index.versions() == ["v1", "v2", "v3", "v4"]
    assert index.live_version() is None
    with pytest.raises(LookupError, match="no live index"):
        index.search(unit_vectors(1, 16, 9)[0], 5, 20)

    index.publish("v1")
    index.publish("v3")
    on_alias = index.client().indices.get_alias(name=index.index_name).body
    assert list(on_alias) == [f"{index.index_name}-v3"]  # moved, never on two indices
    assert index.live_version() == "v3"
    query = unit_vectors(20, 16, 3)[7]
    assert index.search(query, 3, 20)[0].uuid == "v3-0007"  # the alias answers from v3
    assert index.search(query, 3, 20, version="v1")[0].uuid.startswith("v1-")

    assert index.prune() == ["v1", "v2"]  # keeps 2: the live v3 and the newest other
    assert index.versions() == ["v3", "v4"]
    assert index.live_version() == "v3"
    with pytest.raises(ValueError, match="is live"):
        index.delete_version("v3")
    with pytest.raises(LookupError, match="never built"):
        index.publish("v9")


def test_search_returns_cosine_scores_and_captions(indices):
    index = indices()
    vectors = unit_vectors(50, 32, 5)
    index.build("v1", 32, [batch("doc", vectors[:25]), batch("more", vectors[25:])])
    index.publish("v1")
    assert index.count() == index.count("v1") == 50
    hits = index.search(vectors[30], 5, 50)
    assert hits[0].uuid == "more-0005" and hits[0].caption == "post more-0005"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    exact = np.argsort(-(vectors @ vectors[30]))[:5]
    ids = [f"doc-{i:04d}" if i < 25 else f"more-{i - 25:04d}" for i in exact]
    assert [h.uuid for h in hits] == ids
    assert [h.score for h in hits] == pytest.approx(sorted(vectors[exact] @ vectors[30])[::-1],
                                                    abs=1e-3)


def test_filters_apply_inside_the_knn_search(indices):
    index = indices()
    vectors = unit_vectors(6, 8, 11)
    captions = ["a red cat", "a blue cat", "a red dog", "red cat sleeping", "green cat", "red car"]
    splits = ["train", "train", "train", "test", "train", "train"]
    index.build("v1", 8, [batch("p", vectors, captions, splits)])
    index.publish("v1")
    red_cats = index.search(vectors[1], 6, 50, search_filter=SearchFilter(("red", "cat")))
    assert sorted(h.uuid for h in red_cats) == ["p-0000", "p-0003"]
    train_red_cats = index.search(vectors[1], 6, 50,
                                  search_filter=SearchFilter(("red", "cat"), split="train"))
    assert [h.uuid for h in train_red_cats] == ["p-0000"]


@pytest.mark.parametrize("index_type", ["int8_hnsw", "bbq_hnsw"])
def test_quantised_types_rescore_to_the_exact_neighbour(indices, index_type):
    index = indices(index_type=index_type, oversample=3.0)
    vectors = unit_vectors(200, 64, 7)
    index.build("v1", 64, [batch("q", vectors)])
    index.publish("v1")
    for row in (0, 99, 199):
        top = index.search(vectors[row], 5, 100)[0]
        assert top.uuid == f"q-{row:04d}"
        assert top.score == pytest.approx(1.0, abs=1e-2)


def test_rejected_documents_fail_the_build_by_name(indices):
    index = indices()
    vectors = unit_vectors(10, 8, 13)
    vectors[4] = 0.0  # cosine cannot index a zero vector
    bad = batch("r", vectors)
    bad.ids[7] = bad.ids[6]  # and a repeated uuid is refused, not overwritten
    with pytest.raises(BulkIndexingError) as raised:
        index.build("v1", 8, [bad])
    failures = raised.value.failures
    assert len(failures) == 2
    assert any(f.startswith("r-0004 (index, status 400)") for f in failures)  # zero vector
    assert any(f.startswith("r-0006") and "repeated uuid" in f for f in failures)
    assert "2 of 10 documents rejected" in str(raised.value)
    assert index.versions() == []  # the half-built version is gone, nothing published
    assert index.live_version() is None


def test_api_pages_follow_the_exact_ranking(indices):
    """The API's paging (offset + k) on a real server, page after page to the end."""
    index = indices()
    vectors = unit_vectors(120, 16, 21)
    docs = batch("pg", vectors)
    index.build("v1", 16, [docs])
    index.publish("v1")
    corpus = (docs.ids, vectors)
    query = unit_vectors(1, 16, 22)[0]
    pages = walk_pages(service_over(index, corpus, version="v1"), query, 25)
    assert [len(page) for page in pages] == [25, 25, 25, 25, 20]
    assert sum(pages, []) == exact_ranking(corpus, query)


# -- the HNSW graph at a size where Elasticsearch builds one --------------------------------

def clustered_unit_vectors(count: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Embedding-like data: points around a few dozen directions, not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, count)] + 0.6 * rng.normal(size=(count, dim))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_recall_at_10_of_the_hnsw_graph_against_exact_search(indices):
    index = indices()
    data = clustered_unit_vectors(2_600, 64, clusters=40, seed=17)
    documents, queries = data[:2_500], data[2_500:]
    ids = [f"g-{i:05d}" for i in range(len(documents))]
    chunks = [IndexBatch(ids=ids[i:i + 500], vectors=documents[i:i + 500])
              for i in range(0, len(ids), 500)]
    indexed = []
    assert index.build("v1", 64, chunks, on_indexed=indexed.append) == 2_500
    assert sum(indexed) == 2_500  # every acknowledged document reported
    index.publish("v1")
    exact = np.argsort(-(queries @ documents.T), axis=1)[:, :10]  # the reference: brute force
    recalls = []
    for query, truth in zip(queries, exact, strict=True):
        found = {hit.uuid for hit in index.search(query, 10, 128)}
        recalls.append(len(found & {ids[i] for i in truth}) / 10)
    assert np.mean(recalls) >= 0.99, f"mean recall@10 {np.mean(recalls):.4f} over {len(queries)} queries"
    # the recall report's batches (one _msearch) answer as the searches one by one do
    batch = index.search_many(queries[:20], 10, 128, version="v1")
    alone = [index.search(query, 10, 128, version="v1") for query in queries[:20]]
    assert [[h.uuid for h in hits] for hits in batch] == [[h.uuid for h in hits] for hits in alone]


def test_mapping_and_settings_read_back_and_vectors_survive_outside_source(indices):
    index = indices(m=24, ef_construction=150)
    vectors = unit_vectors(30, 16, 23)
    index.build("v1", 16, [batch("m", vectors)])
    name = f"{index.index_name}-v1"
    client = index.client()
    mapping = client.indices.get_mapping(index=name).body[name]["mappings"]
    assert mapping["properties"]["vector"]["index_options"] == {
        "type": "hnsw", "m": 24, "ef_construction": 150}
    assert mapping["properties"]["vector"]["similarity"] == "cosine"
    assert "_source" not in mapping  # no _source.excludes: vectors are rehydrated, not lost
    settings = client.indices.get_settings(index=name, flat_settings=True).body[name]["settings"]
    assert settings["index.mapping.exclude_source_vectors"] == "true"
    stored = client.get(index=name, id="m-0003").body["_source"]
    assert "vector" not in stored and stored["caption"] == "post m-0003"
    # Asked for explicitly (as reindex and recovery do), the vector comes back from the field.
    found = client.search(index=name, query={"ids": {"values": ["m-0003"]}},
                          source={"exclude_vectors": False}).body["hits"]["hits"][0]["_source"]
    assert np.allclose(found["vector"], vectors[3], atol=1e-5)


def test_num_candidates_is_kept_within_what_elasticsearch_accepts(indices):
    index = indices()
    vectors = unit_vectors(40, 8, 29)
    index.build("v1", 8, [batch("n", vectors)])
    index.publish("v1")
    for num_candidates in (3, 50_000):  # below k, above Elasticsearch's 10,000
        hits = index.search(vectors[5], 10, num_candidates)
        assert len(hits) == 10 and hits[0].uuid == "n-0005"


def test_429_from_the_server_is_retried_with_backoff(indices):
    from urllib.parse import urlsplit

    from .servers import FlakyProxy

    direct = indices()
    vectors = unit_vectors(20, 8, 31)
    direct.build("v1", 8, [batch("t", vectors)])
    direct.publish("v1")
    target = urlsplit(ES_URL)
    if target.scheme != "http" or target.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the injecting proxy forwards plain HTTP to a local server only")

    def too_many(status: int):
        body = {"error": {"type": "es_rejected_execution_exception", "reason": "injected"},
                "status": status}
        return ([("Content-Type", "application/json"), ("X-Elastic-Product", "Elasticsearch")],
                json.dumps(body).encode())

    with FlakyProxy(target.port or 9200, failures=2, statuses=(429,), error=too_many,
                    injects=lambda method, path: "/_search" in path) as proxy:
        through = make_index(url=proxy.url, index_name=direct.index_name, retry_backoff_s=0.3)
        assert through.search(vectors[4], 3, 20)[0].uuid == "t-0004"
        assert proxy.failed == [429, 429]
        assert proxy.failed_at[1] - proxy.failed_at[0] >= 0.3  # waited before retrying


def test_an_incremental_version_is_a_clone_plus_added_minus_removed(indices):
    """v2 = clone of the published v1 + 20 new - 10 removed: it answers like an exact search
    over exactly its documents, never returns a removed one, carries no search depth of
    v1's, and v1 (write-blocked) still answers as before."""
    index = indices()
    first, added = unit_vectors(200, 16, 1), unit_vectors(20, 16, 2)
    assert index.build("v1", 16, [batch("a", first)]) == 200
    index.publish("v1")
    index.record_search_depth("v1", {"num_candidates": 50})
    removed = [f"a-{i:04d}" for i in range(0, 200, 20)]
    assert index.build("v2", 16, [batch("b", added)], base="v1", removed=removed) == 210
    assert index.versions() == ["v1", "v2"] and index.recorded_search_depth("v2") is None
    assert index.count("v1") == 200
    ids = [f"a-{i:04d}" for i in range(200)] + [f"b-{i:04d}" for i in range(20)]
    corpus = np.vstack([first, added])
    keep = np.array([u not in removed for u in ids])
    for query in np.vstack([first[::20], added[:5]]):
        hits = index.search(query, 10, num_candidates=500, version="v2")
        scores = np.where(keep, corpus @ query, -np.inf)
        expected = [ids[i] for i in np.argsort(-scores)[:10]]
        assert {h.uuid for h in hits} == set(expected)
        assert not set(removed) & {h.uuid for h in hits}


def test_keyword_search_hybrid_search_and_min_score(indices):
    """Captions are BM25-searchable through their keyword tokens: a caption with more of the
    query's words ranks above those with fewer, one without any is not found; search_both
    answers both rankings (one _msearch, no licensed retriever); min_score drops the hits
    less similar than the cutoff."""
    index = indices()
    vectors = unit_vectors(6, 8, 37)
    captions = ["a red cat", "a blue cat", "a red dog", "#Sunset over the sea", "green cat",
                "Café at sunset 🌅"]
    splits = ["train", "train", "train", "train", "test", "train"]
    index.build("v1", 8, [batch("w", vectors, captions, splits)])
    index.publish("v1")
    name = f"{index.index_name}-v1"
    mapping = index.client().indices.get_mapping(index=name).body[name]["mappings"]
    assert mapping["properties"]["caption_keywords"]["analyzer"] == "caption_keywords"

    words = index.keyword_search("Red cat", 6)
    assert words[0].uuid == "w-0000"  # both words, above the captions with one
    assert {h.uuid for h in words} == {"w-0000", "w-0001", "w-0002", "w-0004"}
    assert words[0].score > words[1].score >= words[-1].score > 0
    assert words[0].caption == "a red cat"
    # the project's tokens: a hashtag query finds the tag only, a word finds word and tag
    assert [h.uuid for h in index.keyword_search("#sunset", 6)] == ["w-0003"]
    assert {h.uuid for h in index.keyword_search("SUNSET", 6)} == {"w-0003", "w-0005"}
    assert {h.uuid for h in index.keyword_search("cat", 6, search_filter=SearchFilter(
        split="train"))} == {"w-0000", "w-0001"}
    assert index.keyword_search(" ,.! ", 6) == []

    pictures, found = index.search_both(vectors[1], "red cat", 3, 50)
    assert pictures[0].uuid == "w-0001" and pictures[0].score == pytest.approx(1.0, abs=1e-3)
    assert len(pictures) == 3 and len(found) == 3 and found[0].uuid == "w-0000"
    assert found[0].score == pytest.approx(words[0].score, rel=1e-5)  # BM25, as alone
    assert index.search_both(None, "red cat", 3, 50) == ([], found)

    similarity = vectors @ vectors[1]
    order = np.argsort(-similarity)
    cutoff = float(similarity[order[2]] + similarity[order[3]]) / 2  # between 3rd and 4th
    expected = [f"w-{i:04d}" for i in order[:3]]
    close = index.search(vectors[1], 6, 50, min_score=cutoff)
    assert [h.uuid for h in close] == expected
    assert all(h.score >= cutoff - 1e-3 for h in close)
    assert len(index.search(vectors[1], 6, 50)) == 6  # without the cutoff: all of them
    pictures, found = index.search_both(vectors[1], "red cat", 6, 50, min_score=cutoff)
    assert [h.uuid for h in pictures] == expected and len(found) == 4
