"""The Elasticsearch resource's client behaviour against a scripted HTTP stand-in on
127.0.0.1 (the real client, the real transport, no server): retries with backoff, the wait
for a healthy cluster, an index squatting the alias name, cleanup of a failed create, and
keyword and hybrid search (issue 22). Like a basic-licence cluster, the stand-in refuses
Elasticsearch's licensed fusion (a ``retriever`` or ``rank`` in a body) with 403, so any
request of the resource that used it would fail. The same paths run against a real server
in test_elasticsearch_integration.py."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import numpy as np
import pytest
from elasticsearch import ApiError

from imgsearch_pipeline.core import es_queries as q
from imgsearch_pipeline.core.retry import with_retries
from imgsearch_pipeline.resources.elasticsearch_index import (
    AliasTaken,
    ClusterNotReady,
    ElasticsearchIndex,
)
from imgsearch_pipeline.resources.vector_index import Hit, IndexBatch, SearchFilter

from .servers import LocalHTTPServer
from .test_es_queries import _check

HIT = {"hits": {"hits": [{"_id": "a", "_score": 0.9, "_source": {"caption": "one"}}]}}


class StandIn(LocalHTTPServer):
    """Answers by rules ``(method, path) -> list of (status, body)``, the last one repeated;
    records every request with the time it arrived."""

    def __init__(self, rules: dict[tuple[str, str], list[tuple[int, dict]]]):
        self.rules = {key: list(answers) for key, answers in rules.items()}
        self.requests: list[tuple[float, str, str]] = []
        self.bodies: list[tuple[str, bytes]] = []  # (path, request body)
        self.refused: list[str] = []  # paths of requests refused for want of a licence
        self.lock = threading.Lock()
        super().__init__(_Handler)

    def times(self, method: str, path: str) -> list[float]:
        return [t for t, m, p in self.requests if (m, p) == (method, path)]


# Search features a basic licence refuses: the fusion retrievers (``retriever.rrf``,
# ``retriever.linear``) and the older top-level ``rank.rrf``.
LICENSED_KEYS = frozenset({"retriever", "rank"})
# What such a cluster answers: ``LicenseUtils.newComplianceException(feature)`` (a 403
# ElasticsearchSecurityException; its metadata ``es.license.expired.feature`` is rendered
# without the ``es.`` prefix), as thrown by RRFRankBuilder.fromXContent.
_NON_COMPLIANT = {"type": "security_exception",
                  "reason": "current license is non-compliant for [Reciprocal Rank Fusion (RRF)]",
                  "license.expired.feature": "Reciprocal Rank Fusion (RRF)"}
LICENCE_REFUSAL = {"error": {"root_cause": [_NON_COMPLIANT], **_NON_COMPLIANT}, "status": 403}


def _needs_licence(body: bytes) -> bool:
    """Whether a JSON body, or any line of an NDJSON one (``_msearch``), has a licensed key."""
    try:
        documents = [json.loads(body)] if body.strip() else []
    except ValueError:
        documents = [json.loads(line) for line in body.splitlines() if line.strip()]
    return any(isinstance(d, dict) and LICENSED_KEYS & set(d) for d in documents)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server: StandIn = self.server
        path = urlsplit(self.path).path
        with server.lock:
            server.requests.append((time.monotonic(), self.command, path))
            server.bodies.append((path, body))
            if _needs_licence(body):
                server.refused.append(path)
                answers = [(403, LICENCE_REFUSAL)]
            else:
                answers = server.rules.get((self.command, path)) or [(404, {"error": "no rule"})]
            status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


GREEN = {("GET", "/_cluster/health"): [(200, {"status": "green", "timed_out": False})],
         ("GET", "/imgsearch"): [(404, {"error": "index_not_found_exception", "status": 404})]}


def index_at(url: str, **fields) -> ElasticsearchIndex:
    return ElasticsearchIndex(url=url, **{"retry_backoff_s": 0.2, "max_retries": 3, **fields})


def test_429_is_retried_after_growing_waits():
    busy = (429, {"error": {"type": "es_rejected_execution_exception"}, "status": 429})
    with StandIn({**GREEN, ("POST", "/imgsearch/_search"): [busy, busy, (200, HIT)]}) as server:
        hits = index_at(server.url).search(np.ones(4, dtype=np.float32), 1, 10)
        assert [h.uuid for h in hits] == ["a"]
        first, second, third = server.times("POST", "/imgsearch/_search")
    # 0.2 s, then 0.4 s: the transport alone would have retried at once
    assert second - first >= 0.2 and third - second >= 0.4


def test_gives_up_after_max_retries_with_the_servers_answer():
    unavailable = (503, {"error": {"type": "unavailable"}, "status": 503})
    with StandIn({**GREEN, ("POST", "/imgsearch/_search"): [unavailable]}) as server:
        with pytest.raises(ApiError) as raised:
            index_at(server.url, max_retries=2, retry_backoff_s=0.05).search(np.ones(4), 1, 10)
        assert raised.value.status_code == 503
        assert len(server.times("POST", "/imgsearch/_search")) == 3  # the first try and 2 retries


def test_a_bad_request_is_not_retried():
    bad = (400, {"error": {"type": "parsing_exception"}, "status": 400})
    with StandIn({**GREEN, ("POST", "/imgsearch/_search"): [bad]}) as server:
        with pytest.raises(ApiError):
            index_at(server.url).search(np.ones(4), 1, 10)
        assert len(server.times("POST", "/imgsearch/_search")) == 1


def test_first_request_waits_for_a_yellow_cluster():
    red = (200, {"status": "red", "timed_out": False})
    green = (200, {"status": "green", "timed_out": False})
    rules = {**GREEN, ("GET", "/_cluster/health"): [red, red, green],
             ("GET", "/imgsearch/_count"): [(200, {"count": 7})],
             ("POST", "/imgsearch/_count"): [(200, {"count": 7})]}
    with StandIn(rules) as server:
        assert index_at(server.url, ready_timeout_s=30).count() == 7
        assert len(server.times("GET", "/_cluster/health")) == 3


def test_a_cluster_that_never_gets_ready_fails_clearly():
    with StandIn({("GET", "/_cluster/health"): [(200, {"status": "red", "timed_out": False})]}) as server:
        started = time.monotonic()
        with pytest.raises(ClusterNotReady, match=r"was not ready \(yellow\) within 2 s: cluster status red"):
            index_at(server.url, ready_timeout_s=2).count()
        assert time.monotonic() - started >= 2
        assert not [p for _, _, p in server.requests if p != "/_cluster/health"]  # nothing else sent


def test_an_index_named_like_the_alias_is_refused():
    squatter = {"imgsearch": {"aliases": {}}}
    rules = {**GREEN, ("GET", "/imgsearch"): [(200, squatter)],
             ("HEAD", "/imgsearch-v1"): [(200, {})]}
    with StandIn(rules) as server:
        index = index_at(server.url)
        for attempt in (lambda: index.search(np.ones(4), 1, 10), lambda: index.publish("v1"),
                        index.live_version):
            with pytest.raises(AliasTaken, match="an index named 'imgsearch'.*IMGSEARCH_ES_INDEX"):
                attempt()
        assert server.times("POST", "/imgsearch/_search") == []  # that index is never read
        assert server.times("POST", "/_aliases") == []


def test_a_failed_create_leaves_no_index_behind():
    # e.g. the create timed out client-side after the server had made the index
    rules = {**GREEN, ("PUT", "/imgsearch-v1"): [(500, {"error": {"type": "timeout"}, "status": 500})],
             ("DELETE", "/imgsearch-v1"): [(200, {"acknowledged": True})]}
    with StandIn(rules) as server:
        batch = IndexBatch(ids=["a"], vectors=np.ones((1, 4), dtype=np.float32))
        with pytest.raises(ApiError):
            index_at(server.url).build("v1", 4, [batch])
        assert len(server.times("DELETE", "/imgsearch-v1")) == 1


def test_password_and_api_key_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        ElasticsearchIndex(url="http://127.0.0.1:9", password="pw", api_key="a2V5")


def test_with_retries_backs_off_up_to_the_cap_and_stops_on_other_errors():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 5:
            raise ConnectionError("busy")
        return "done"

    assert with_retries(flaky, 5, 1.0, lambda _: None, max_delay_s=3.0, sleep=waits.append) == "done"
    assert waits == [1.0, 2.0, 3.0, 3.0]
    with pytest.raises(KeyError):  # not retryable by default
        with_retries(lambda: {}["x"], 5, 1.0, lambda _: None, sleep=waits.append)
    with pytest.raises(ConnectionError):
        with_retries(lambda: (_ for _ in ()).throw(ConnectionError("x")), 3, 1.0, lambda _: None,
                     retryable=lambda e: False, sleep=waits.append)
    assert len(waits) == 4


def test_a_build_reports_each_acknowledged_document():
    items = [{"index": {"_index": "imgsearch-v1", "_id": i, "status": 201}} for i in "abc"]
    done = (200, {"acknowledged": True})
    rules = {**GREEN, ("PUT", "/imgsearch-v1"): [done],
             ("PUT", "/_bulk"): [(200, {"errors": False, "items": items})],
             ("POST", "/_bulk"): [(200, {"errors": False, "items": items})],
             ("PUT", "/imgsearch-v1/_settings"): [done],
             ("POST", "/imgsearch-v1/_refresh"): [done],
             ("POST", "/imgsearch-v1/_forcemerge"): [done],
             ("GET", "/imgsearch-v1/_count"): [(200, {"count": 3})],
             ("POST", "/imgsearch-v1/_count"): [(200, {"count": 3})]}
    with StandIn(rules) as server:
        batch = IndexBatch(ids=list("abc"), vectors=np.ones((3, 4), dtype=np.float32))
        indexed = []
        assert index_at(server.url).build("v1", 4, [batch], on_indexed=indexed.append) == 3
    assert indexed == [1, 1, 1]


def _hits(*ids: str) -> dict:
    return {"hits": {"hits": [{"_id": i, "_score": 0.9, "_source": {"caption": i}} for i in ids]},
            "status": 200}


def test_a_batch_of_searches_is_one_msearch_of_header_and_body_lines():
    answer = {"took": 3, "responses": [_hits("a", "b"), _hits("c")]}
    with StandIn({**GREEN, ("POST", "/imgsearch-v1/_msearch"): [(200, answer)]}) as server:
        vectors = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32)
        found = index_at(server.url).search_many(vectors, 2, 50, version="v1")
        (path, sent), = [(p, b) for p, b in server.bodies if p.endswith("_msearch")]
    assert [[h.uuid for h in hits] for hits in found] == [["a", "b"], ["c"]]
    assert found[0][0].score == pytest.approx(0.8) and found[0][0].caption == "a"
    # NDJSON: an empty header, then the same body a single search sends, per vector
    lines = sent.decode().splitlines()
    assert sent.endswith(b"\n") and len(lines) == 4
    assert [json.loads(lines[0]), json.loads(lines[2])] == [{}, {}]
    for line, vector in zip(lines[1::2], vectors, strict=True):
        body = json.loads(line)
        assert body == q.knn_body(vector.tolist(), 2, 50)
        # a SearchRequestBody with a top-level knn section (9.x spec), as one search sends
        assert body["knn"]["query_vector"] == vector.tolist()
        assert (body["knn"]["k"], body["knn"]["num_candidates"], body["size"]) == (2, 50, 2)


def test_a_failed_search_inside_an_msearch_is_an_error_not_an_empty_answer():
    failed = {"error": {"type": "search_phase_execution_exception", "reason": "all shards failed"},
              "status": 503}
    missing = {"error": {"type": "index_not_found_exception", "reason": "no such index"},
               "status": 404}
    rules = {**GREEN,
             ("POST", "/imgsearch-v1/_msearch"): [(200, {"responses": [_hits("a"), failed]})],
             ("POST", "/imgsearch-v2/_msearch"): [(200, {"responses": [missing, missing]})]}
    with StandIn(rules) as server:
        index = index_at(server.url)
        with pytest.raises(q.MultiSearchError, match="search 1 .* status 503: all shards failed"):
            index.search_many(np.ones((2, 4), dtype=np.float32), 1, 10, version="v1")
        with pytest.raises(LookupError, match="no index version"):
            index.search_many(np.ones((2, 4), dtype=np.float32), 1, 10, version="v2")
        # a 404 for the whole request (the stand-in knows no v3) reads the same
        with pytest.raises(LookupError, match="no index version"):
            index.search_many(np.ones((2, 4), dtype=np.float32), 1, 10, version="v3")


def _clone_rules(counts: list[int], bulk: dict) -> dict:
    """An Elasticsearch that clones imgsearch-v1 into imgsearch-v2, answers ``counts`` in
    turn and ``bulk`` to the bulk requests."""
    done = (200, {"acknowledged": True})
    count = [(200, {"count": n}) for n in counts]
    return {**GREEN,
            ("PUT", "/imgsearch-v1/_block/write"): [done],
            ("PUT", "/imgsearch-v1/_clone/imgsearch-v2"): [done],
            ("GET", "/_cluster/health/imgsearch-v2"): [(200, {"status": "green",
                                                             "timed_out": False})],
            ("PUT", "/imgsearch-v2/_mapping"): [done],
            ("POST", "/imgsearch-v2/_count"): count, ("GET", "/imgsearch-v2/_count"): count,
            ("PUT", "/_bulk"): [(200, bulk)], ("POST", "/_bulk"): [(200, bulk)],
            ("PUT", "/imgsearch-v2/_settings"): [done],
            ("POST", "/imgsearch-v2/_refresh"): [done],
            ("DELETE", "/imgsearch-v2"): [done]}


def test_an_incremental_version_clones_the_blocked_live_index_then_adds_and_deletes():
    """The live version v1 (3 documents) is write-blocked and cloned into v2, which gets a
    fresh _meta (no search depth of v1's), its two new documents and one delete, and is not
    force-merged; the count check expects 3 + 2 - 1."""
    items = [{"index": {"_index": "imgsearch-v2", "_id": i, "status": 201}} for i in "de"]
    items.append({"delete": {"_index": "imgsearch-v2", "_id": "a", "status": 200}})
    rules = _clone_rules([3, 4], {"errors": False, "items": items})
    with StandIn(rules) as server:
        batch = IndexBatch(ids=list("de"), vectors=np.ones((2, 4), dtype=np.float32))
        indexed = []
        count = index_at(server.url).build("v2", 4, [batch], on_indexed=indexed.append,
                                           base="v1", removed=["a"])
        sent = dict(server.bodies)
        paths = [p for _, _, p in server.requests]
    assert count == 4 and indexed == [1, 1]
    assert paths.index("/imgsearch-v1/_block/write") < paths.index("/imgsearch-v1/_clone/imgsearch-v2")
    assert not any(p.endswith("_forcemerge") for p in paths) and "/imgsearch-v2" not in paths
    clone = json.loads(sent["/imgsearch-v1/_clone/imgsearch-v2"])
    # the copied write block is cleared; replicas are not copied by a clone, so they are set
    assert clone == {"settings": {"index.number_of_replicas": 0, "index.blocks.write": None,
                                  "index.refresh_interval": "-1"}}
    assert json.loads(sent["/imgsearch-v2/_mapping"]) == {
        "_meta": {"index_name": "imgsearch", "version": "v2"}}
    lines = [json.loads(line) for line in sent["/_bulk"].decode().splitlines()]
    assert lines[-1] == {"delete": {"_index": "imgsearch-v2", "_id": "a"}}
    assert [line["index"]["_id"] for line in lines if "index" in line] == ["d", "e"]


def test_a_failed_incremental_build_deletes_the_clone_not_the_live_version():
    refused = {"errors": True, "items": [{"delete": {"_index": "imgsearch-v2", "_id": "zz",
                                                     "status": 404, "result": "not_found"}}]}
    rules = _clone_rules([3], refused)
    with StandIn(rules) as server:
        with pytest.raises(RuntimeError, match="zz"):
            index_at(server.url).build("v2", 4, [], base="v1", removed=["zz"])
        deleted = [p for _, m, p in server.requests if m == "DELETE"]
    assert deleted == ["/imgsearch-v2"]


# -- caption keywords, keyword search and hybrid search (issue 22) ---------------------------

def _build_rules(index: str, count: int) -> dict:
    done = (200, {"acknowledged": True})
    items = [{"index": {"_index": index, "_id": str(i), "status": 201}} for i in range(count)]
    bulk = (200, {"errors": False, "items": items})
    return {**GREEN, ("PUT", f"/{index}"): [done],
            ("PUT", "/_bulk"): [bulk], ("POST", "/_bulk"): [bulk],
            ("PUT", f"/{index}/_settings"): [done], ("POST", f"/{index}/_refresh"): [done],
            ("POST", f"/{index}/_forcemerge"): [done],
            ("GET", f"/{index}/_count"): [(200, {"count": count})],
            ("POST", f"/{index}/_count"): [(200, {"count": count})]}


def _bulk_sources(sent: bytes) -> dict[str, dict]:
    """The ``_source`` of each indexed document of a bulk request, by ``_id``."""
    lines = [json.loads(line) for line in sent.decode().splitlines()]
    return {action["index"]["_id"]: source
            for action, source in zip(lines, lines[1:], strict=False) if "index" in action}


CAPTIONS = ["Café #Sunset 🌅", None, "a red cat"]


def test_a_build_creates_the_caption_keywords_field_and_fills_it():
    with StandIn(_build_rules("imgsearch-v1", 3)) as server:
        batch = IndexBatch(ids=list("abc"), vectors=np.ones((3, 4), dtype=np.float32),
                           captions=CAPTIONS)
        assert index_at(server.url).build("v1", 4, [batch]) == 3
        sent = dict(server.bodies)
    create = json.loads(sent["/imgsearch-v1"])
    assert create == q.keyword_index_body(4, "hnsw", 32, 200, 1, 0,
                                          meta={"index_name": "imgsearch", "version": "v1"})
    analyzers = create["settings"]["analysis"]["analyzer"]
    keywords = create["mappings"]["properties"]["caption_keywords"]
    _check(analyzers["caption_keywords"], "CustomAnalyzer")
    _check(keywords, "TextProperty")
    assert keywords["analyzer"] in analyzers  # the analyzer the field names is defined
    sources = _bulk_sources(sent["/_bulk"])
    assert sources["a"]["caption_keywords"] == "cafe #sunset sunset 🌅"
    assert sources["a"]["caption"] == "Café #Sunset 🌅"
    assert "caption_keywords" not in sources["b"]  # no caption, no tokens
    assert sources["c"]["caption_keywords"] == "a red cat"


def test_an_incremental_version_sends_caption_keywords_for_its_new_documents():
    """The clone keeps v1's mapping and analysis (no create, no mapping but _meta is sent);
    the documents added to it carry their keywords as a full build's do."""
    items = [{"index": {"_index": "imgsearch-v2", "_id": i, "status": 201}} for i in "xyz"]
    with StandIn(_clone_rules([3, 6], {"errors": False, "items": items})) as server:
        batch = IndexBatch(ids=list("xyz"), vectors=np.ones((3, 4), dtype=np.float32),
                           captions=CAPTIONS)
        assert index_at(server.url).build("v2", 4, [batch], base="v1") == 6
        sent = dict(server.bodies)
        paths = [p for _, _, p in server.requests]
    assert "/imgsearch-v2" not in paths
    assert json.loads(sent["/imgsearch-v2/_mapping"]) == {
        "_meta": {"index_name": "imgsearch", "version": "v2"}}
    sources = _bulk_sources(sent["/_bulk"])
    assert sources["x"]["caption_keywords"] == "cafe #sunset sunset 🌅"
    assert "caption_keywords" not in sources["y"]
    assert sources["z"]["caption_keywords"] == "a red cat"


def test_the_stand_in_refuses_licensed_fusion_as_a_basic_licence_cluster_does():
    from elasticsearch import AuthorizationException, Elasticsearch

    rrf = {"retriever": {"rrf": {"retrievers": [
        {"standard": {"query": {"match": {"caption_keywords": "cat"}}}},
        {"knn": {"field": "vector", "query_vector": [1.0, 0.0], "k": 5, "num_candidates": 10}}]}}}
    rules = {**GREEN, ("POST", "/imgsearch-v1/_search"): [(200, _hits("a"))],
             ("POST", "/imgsearch-v1/_msearch"): [(200, {"responses": [_hits("a")]})]}
    with StandIn(rules) as server:
        client = Elasticsearch(server.url)
        with pytest.raises(AuthorizationException) as raised:
            client.search(index="imgsearch-v1", body=rrf)
        with pytest.raises(AuthorizationException):
            client.msearch(index="imgsearch-v1", searches=[{}, {"query": {"match_all": {}}},
                                                           {}, {"rank": {"rrf": {}}}])
        assert client.search(index="imgsearch-v1", body={"size": 1}).body == _hits("a")
        refused = list(server.refused)
    assert raised.value.status_code == 403
    assert raised.value.body == LICENCE_REFUSAL
    assert raised.value.body["error"]["license.expired.feature"] == "Reciprocal Rank Fusion (RRF)"
    assert refused == ["/imgsearch-v1/_search", "/imgsearch-v1/_msearch"]


def _bm25_hits(*scored: tuple[str, float]) -> dict:
    return {"hits": {"hits": [{"_id": i, "_score": s, "_source": {"caption": f"caption {i}"}}
                              for i, s in scored]}, "status": 200}


def test_keyword_search_is_one_bm25_match_search():
    answer = _bm25_hits(("b", 7.5), ("a", 2.25))
    words = SearchFilter(caption_words=("sleeping",), split="train")
    with StandIn({**GREEN, ("POST", "/imgsearch-v1/_search"): [(200, answer)]}) as server:
        index = index_at(server.url)
        hits = index.keyword_search("Red #Cat", 5, version="v1", search_filter=words)
        (body,) = [json.loads(b) for p, b in server.bodies if p == "/imgsearch-v1/_search"]
        with pytest.raises(LookupError, match=r"no index version \(imgsearch-v9\)"):
            index.keyword_search("cat", 5, version="v9")  # the stand-in knows no v9: 404
        refused = list(server.refused)
    assert body == q.match_body("Red #Cat", 5, caption_words=("sleeping",), split="train")
    _check(body, "SearchBody")
    # the query's tokens (a hashtag in a query asks for the tag only)
    assert body["query"]["bool"]["must"] == [{"match": {"caption_keywords": {"query": "red #cat"}}}]
    # BM25 scores as Elasticsearch gave them: not read as cosines
    assert hits == [Hit("b", 7.5, "caption b"), Hit("a", 2.25, "caption a")]
    assert refused == []


def test_keyword_search_of_a_text_without_tokens_asks_nothing():
    with StandIn(GREEN) as server:
        assert index_at(server.url).keyword_search(" ,.! ", 5) == []
        assert server.requests == []  # not even the health check: no client was needed


def _cosine_hits(*scored: tuple[str, float]) -> dict:
    """kNN hits whose ``_score`` is Elasticsearch's (1 + cos) / 2 for cosine ``cos``."""
    return {"hits": {"hits": [{"_id": i, "_score": (1 + c) / 2, "_source": {"caption": i}}
                              for i, c in scored]}, "status": 200}


def test_search_both_is_one_msearch_of_knn_then_match():
    answer = {"took": 2, "responses": [_cosine_hits(("a", 0.75), ("b", 0.5)),
                                       _bm25_hits(("c", 9.0), ("a", 1.5))]}
    vector = np.array([0.6, 0.8, 0.0, 0.0], dtype=np.float32)
    only_train = SearchFilter(split="train")
    with StandIn({**GREEN, ("POST", "/imgsearch-v1/_msearch"): [(200, answer)]}) as server:
        pictures, words = index_at(server.url).search_both(
            vector, "red cat", 3, 20, version="v1", search_filter=only_train, min_score=0.3)
        searches = [(p, b) for p, b in server.bodies if p.endswith(("_search", "_msearch"))]
        refused = list(server.refused)
    (path, sent), = searches  # one request for both rankings
    assert path == "/imgsearch-v1/_msearch"
    lines = [json.loads(line) for line in sent.decode().splitlines()]
    assert sent.endswith(b"\n") and len(lines) == 4
    for header, body in zip(lines[::2], lines[1::2], strict=True):
        assert header == {}
        _check(header, "MultisearchHeader")
        _check(body, "SearchBody")
        assert not LICENSED_KEYS & set(body)
    knn, match = lines[1], lines[3]
    assert knn == q.with_min_similarity(q.knn_body(vector.tolist(), 3, 20, split="train"), 0.3)
    assert knn["knn"]["similarity"] == 0.3  # the cosine cutoff itself, not a _score
    assert match == q.match_body("red cat", 3, split="train")
    assert [(h.uuid, h.score) for h in pictures] == [("a", pytest.approx(0.75)),
                                                     ("b", pytest.approx(0.5))]
    assert words == [Hit("c", 9.0, "caption c"), Hit("a", 1.5, "caption a")]
    assert refused == []  # Elasticsearch's licensed fusion is never asked for


def test_search_both_sends_one_search_when_one_side_has_nothing_to_ask():
    rules = {**GREEN, ("POST", "/imgsearch-v1/_msearch"): [
        (200, {"responses": [_bm25_hits(("c", 3.0))]}),
        (200, {"responses": [_cosine_hits(("a", 1.0))]})]}
    with StandIn(rules) as server:
        index = index_at(server.url)
        # no vector (a model without a text tower): the match alone
        assert index.search_both(None, "cat", 5, 20, version="v1") == (
            [], [Hit("c", 3.0, "caption c")])
        # no tokens: the kNN alone, and no keyword hits
        pictures, words = index.search_both(np.ones(4), " ,.! ", 5, 20, version="v1")
        assert [h.uuid for h in pictures] == ["a"] and words == []
        # neither: nothing to ask
        assert index.search_both(None, "...", 5, 20, version="v1") == ([], [])
        sent = [[json.loads(line) for line in b.decode().splitlines()]
                for p, b in server.bodies if p.endswith(("_search", "_msearch"))]
        refused = list(server.refused)
    assert len(sent) == 2
    assert sent[0] == [{}, q.match_body("cat", 5)]
    assert len(sent[1]) == 2 and "knn" in sent[1][1] and "query" not in sent[1][1]
    assert refused == []


def test_a_failed_half_of_search_both_raises():
    failed = {"error": {"type": "search_phase_execution_exception", "reason": "all shards failed"},
              "status": 400}
    missing = {"error": {"type": "index_not_found_exception", "reason": "no such index"},
               "status": 404}
    rules = {**GREEN,
             ("POST", "/imgsearch-v1/_msearch"): [(200, {"responses": [_cosine_hits(("a", 1.0)),
                                                                        failed]})],
             ("POST", "/imgsearch-v2/_msearch"): [(200, {"responses": [missing, missing]})]}
    with StandIn(rules) as server:
        index = index_at(server.url)
        with pytest.raises(q.MultiSearchError, match="search 1 .* status 400: all shards failed"):
            index.search_both(np.ones(4), "cat", 5, 20, version="v1")
        with pytest.raises(LookupError, match="no index version"):
            index.search_both(np.ones(4), "cat", 5, 20, version="v2")
        with pytest.raises(LookupError, match="no index version"):  # a 404 for the request
            index.search_both(np.ones(4), "cat", 5, 20, version="v3")
        assert server.refused == []


def test_search_passes_min_score_as_the_knn_similarity():
    with StandIn({**GREEN, ("POST", "/imgsearch-v1/_search"): [(200, _cosine_hits(("a", 0.5)))]}
                 ) as server:
        hits = index_at(server.url).search(np.ones(4), 5, 20, version="v1", min_score=0.4)
        (body,) = [json.loads(b) for p, b in server.bodies if p == "/imgsearch-v1/_search"]
    assert body["knn"]["similarity"] == 0.4
    _check(body, "SearchBody")
    assert [(h.uuid, h.score) for h in hits] == [("a", pytest.approx(0.5))]
