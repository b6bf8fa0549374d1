"""Paging (offset + k) and folded groups: on both index backends, against exact search."""

from types import SimpleNamespace

import numpy as np
import pytest

from imgsearch_pipeline.api.models import MAX_DEPTH
from imgsearch_pipeline.api.service import SearchService, StoredVectors, Timings
from imgsearch_pipeline.api.settings import ApiSettings
from imgsearch_pipeline.core.layout import Layout
from imgsearch_pipeline.core.vectors import read_vectors
from imgsearch_pipeline.resources.elasticsearch_index import ElasticsearchIndex
from imgsearch_pipeline.resources.embedders import ColorTextureModel
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex, IndexBatch

from . import test_api

DOCS, DIM = 300, 16


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class ExactElasticsearch:
    """Stands in for the Elasticsearch client: answers a kNN body by exact cosine search, as
    the server would with enough candidates, and records every body it was sent."""

    def __init__(self, ids: list[str], matrix: np.ndarray, keywords=None):
        self.ids, self.matrix, self.bodies = ids, matrix, []
        self.keywords = keywords  # a caption index answering match searches (BM25)

    def search(self, index: str, body: dict):
        self.bodies.append(body)
        knn = body["knn"]
        scores = self.matrix @ np.asarray(knn["query_vector"], dtype=np.float32)
        top = np.argsort(-scores, kind="stable")[: knn["k"]][: body["size"]]
        hits = [{"_id": self.ids[i], "_score": (1.0 + float(scores[i])) / 2.0,
                 "_source": {"caption": f"post {i}"}} for i in top]
        return SimpleNamespace(body={"hits": {"hits": hits}})

    def msearch(self, index: str, searches: list[dict]):
        """kNN bodies as ``search``; match bodies by the caption index, as BM25 hits."""
        answers = []
        for body in searches[1::2]:
            if "knn" in body:
                answers.append({**self.search(index, body).body, "status": 200})
                continue
            self.bodies.append(body)
            text = body["query"]["bool"]["must"][0]["match"]["caption_keywords"]["query"]
            hits = [{"_id": hit.uuid, "_score": hit.score,
                     "_source": {"caption": f"post {self.ids.index(hit.uuid)}"}}
                    for hit in self.keywords.search(text, body["size"])]
            answers.append({"hits": {"hits": hits}, "status": 200})
        return SimpleNamespace(body={"responses": answers})


@pytest.fixture(scope="module")
def corpus():
    ids = [f"{i:08x}-0000-5000-8000-000000000000" for i in range(DOCS)]
    return ids, unit_vectors(DOCS, DIM, seed=7)


def service_over(index, corpus, version: str = "v1") -> SearchService:
    """The API's search service over ``index``, for vector queries (no model, no images)."""
    ids, matrix = corpus
    vectors = StoredVectors(matrix, {u: i for i, u in enumerate(ids)})
    return SearchService(model=None, index=index, store=None, version=version,
                         documents=len(ids), posts={}, vectors=vectors, settings=ApiSettings())


@pytest.fixture(scope="module", params=["faiss", "elasticsearch"])
def service(request, corpus, tmp_path_factory):
    ids, matrix = corpus
    if request.param == "faiss":
        index = FaissHnswIndex(root=str(tmp_path_factory.mktemp("faiss")))
        index.build("v1", DIM, [IndexBatch(ids, matrix)])
        index.publish("v1")
    else:
        index = ElasticsearchIndex(url="http://127.0.0.1:9")
        index._client = ExactElasticsearch(ids, matrix)
    return service_over(index, corpus)


def exact_ranking(corpus, query: np.ndarray) -> list[str]:
    ids, matrix = corpus
    return [ids[i] for i in np.argsort(-(matrix @ query), kind="stable")]


def walk_pages(service: SearchService, query, k: int, **kwargs) -> list[list[str]]:
    pages, offset, more = [], 0, True
    while more:
        options = {"num_candidates": None, "search_filter": None, "collapse": None, **kwargs}
        page = service.search(query, k=k, timings=Timings(), offset=offset, **options)
        pages.append([r.hit.uuid for r in page.results])
        offset, more = offset + k, page.more
    return pages


def test_pages_follow_the_exact_ranking_to_its_end(service, corpus):
    query = unit_vectors(1, DIM, seed=11)[0]
    pages = walk_pages(service, query, 40)
    assert [len(p) for p in pages] == [40] * 7 + [20]  # 300 documents, the last page short
    assert sum(pages, []) == exact_ranking(corpus, query)


def test_more_like_this_pages_leave_the_post_out(service, corpus):
    ids, matrix = corpus
    post = ids[5]
    pages = walk_pages(service, matrix[5], 64, exclude=post)
    assert sum(pages, []) == [u for u in exact_ranking(corpus, matrix[5]) if u != post]


def test_a_page_asks_the_backend_for_offset_plus_k_plus_one(corpus):
    fake_index = ElasticsearchIndex(url="http://127.0.0.1:9")
    fake_index._client = fake = ExactElasticsearch(*corpus)
    query = unit_vectors(1, DIM, seed=3)[0]
    service_over(fake_index, corpus).search(query, k=10, num_candidates=None, search_filter=None,
                                            collapse=None, timings=Timings(), offset=30)
    knn = fake.bodies[-1]["knn"]
    assert knn["k"] == 41 and fake.bodies[-1]["size"] == 41  # one more: is there a next page?
    assert knn["num_candidates"] >= 41


def test_collapsed_pages_fold_each_twin_once(service, corpus):
    ids, matrix = corpus
    # Near-identical pairs: fold well above the random vectors' similarities.
    threshold = 0.5
    query = matrix[0]
    pages = []
    for offset in (0, 5, 10):
        page = service.search(query, k=5, num_candidates=None, search_filter=None, collapse=threshold,
                              timings=Timings(), offset=offset)
        pages.append(page.results)
    results = sum(pages, [])
    kept = [r.hit.uuid for r in results]
    folded = [f.uuid for r in results for f in r.folded]
    assert len(set(kept)) == len(kept) and not set(kept) & set(folded)
    vector = dict(zip(ids, matrix, strict=True))
    for result in results:
        assert result.duplicates == len(result.folded)
        for twin in result.folded:
            assert float(vector[twin.uuid] @ vector[result.hit.uuid]) > threshold
            assert twin.score <= result.hit.score
    for i, a in enumerate(kept):
        for b in kept[:i]:
            assert float(vector[a] @ vector[b]) <= threshold


# -- through the HTTP API, on the demo index --------------------------------------------

demo, client = test_api.demo, test_api.client  # the same fixtures as test_api.py


def test_paging_through_similar_reaches_every_indexed_post(client, demo):
    post = sorted(demo.indexed)[0]
    seen, offset, answers = [], 0, 0
    while offset is not None:
        body = client.get(f"/images/{post}/similar", params={"k": 50, "offset": offset}).json()
        assert body["offset"] == offset
        seen += [h["uuid"] for h in body["hits"]]
        offset, answers = body["next_offset"], answers + 1
    assert answers == -(-(len(demo.indexed) - 1) // 50)
    assert len(seen) == len(set(seen)) == len(demo.indexed) - 1
    assert set(seen) == demo.indexed - {post}


def test_second_page_continues_the_first(client, demo):
    post = sorted(demo.indexed)[1]
    whole = client.get(f"/images/{post}/similar", params={"k": 20}).json()["hits"]
    first = client.get(f"/images/{post}/similar", params={"k": 10}).json()
    second = client.get(f"/images/{post}/similar", params={"k": 10, "offset": 10}).json()
    assert first["next_offset"] == 10 and second["next_offset"] == 20
    assert [h["uuid"] for h in first["hits"] + second["hits"]] == [h["uuid"] for h in whole]


def test_paging_stops_at_the_depth_cap(client, demo):
    post = sorted(demo.indexed)[2]
    assert client.get(f"/images/{post}/similar", params={"offset": MAX_DEPTH}).status_code == 422
    last = client.get(f"/images/{post}/similar", params={"k": 100, "offset": MAX_DEPTH - 5})
    assert last.status_code == 200 and last.json()["next_offset"] is None


def test_folded_hits_come_with_their_group(client, demo):
    ids, matrix = read_vectors(Layout.at(demo.home).embeddings(ColorTextureModel.model_id))
    vector = dict(zip(ids, matrix, strict=True))
    query = demo.held_out_with_twins()[0]
    body = client.get(f"/images/{query}/similar", params={"k": 10, "collapse": 0.95}).json()
    groups = [h for h in body["hits"] if h["folded"]]
    assert groups, "the demo data has near-identical copies to fold"
    for hit in body["hits"]:
        assert hit["duplicates"] == len(hit["folded"])
        for twin in hit["folded"]:
            assert float(vector[twin["uuid"]] @ vector[hit["uuid"]]) > 0.95
            assert twin["image_url"].endswith(f"/images/{twin['uuid']}")


def test_openapi_declares_paging(client):
    schema = client.get("/openapi.json").json()
    parameters = {p["name"]: p for p in schema["paths"]["/search"]["post"]["parameters"]}
    offset = parameters["offset"]["schema"]
    assert offset["minimum"] == 0 and offset["exclusiveMaximum"] == MAX_DEPTH
    response = schema["components"]["schemas"]["SearchResponse"]["properties"]
    assert {"offset", "next_offset"} <= set(response)
    assert "folded" in schema["components"]["schemas"]["SearchHit"]["properties"]


# -- hybrid search: one fusion on both backends (issue 22) --------------------------------

def _captions(count: int) -> list[str]:
    words = ["sunset", "beach", "cat", "dog", "#travel", "café", "東京"]
    return [f"post {i} " + " ".join(words[(i * j) % len(words)] for j in (1, 2, 3) if (i + j) % 4)
            for i in range(count)]


def test_hybrid_pages_are_the_reference_fusion_on_both_backends(corpus, tmp_path):
    """The same query on the embedded index and on Elasticsearch (its answers stood in for by
    exact search and a BM25 index of the same tokens) pages through the same fused list: RRF
    written out here from the exact vector ranking and the keyword ranking."""
    from imgsearch_pipeline.core.keywords import TantivyKeywordIndex, write_tantivy_index

    ids, matrix = corpus
    captions = _captions(DOCS)
    write_tantivy_index(tmp_path / "keywords.tar", ids, captions)
    keywords = TantivyKeywordIndex(tmp_path / "keywords.tar")
    faiss_index = FaissHnswIndex(root=str(tmp_path / "faiss"))
    faiss_index.build("v1", DIM, [IndexBatch(ids, matrix, captions)])
    es_index = ElasticsearchIndex(url="http://127.0.0.1:9")
    es_index._client = ExactElasticsearch(ids, matrix, keywords)
    query, text = unit_vectors(1, DIM, seed=5)[0], "sunset #travel"
    pictures = exact_ranking(corpus, query)[:100]
    words = [hit.uuid for hit in keywords.search(text, 100)]
    assert len(words) > 20  # both rankings are long enough to matter
    fused = {}
    for ranking in (pictures, words):
        for rank, uuid in enumerate(ranking, start=1):
            fused[uuid] = fused.get(uuid, 0.0) + 1.0 / (60 + rank)
    reference = sorted(fused, key=lambda u: -fused[u])[:100]  # the list ends at the window
    for index in (faiss_index, es_index):
        service = service_over(index, corpus)
        pages = walk_pages(service, query, 7, text=text, mode="hybrid", num_candidates=DOCS)
        got = [uuid for page in pages for uuid in page]
        assert len(got) == 100 and len(set(got)) == 100
        # In the reference's order, up to hits of equal fused score.
        assert [round(fused[u], 12) for u in got] == [round(fused[u], 12) for u in reference]
        assert set(got) == set(reference) or min(fused[u] for u in got) == min(fused[u] for u in reference)

