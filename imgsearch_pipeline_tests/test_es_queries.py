"""Elasticsearch request bodies and the production wiring, without a server."""

import json

import dagster as dg
import pytest

from imgsearch_pipeline.core import es_queries as q
from imgsearch_pipeline.resources.elasticsearch_index import BulkIndexingError, ElasticsearchIndex
from imgsearch_pipeline.resources.production import production_backends
from imgsearch_pipeline.resources.profiles import resources_for
from imgsearch_pipeline.resources.s3_store import S3ObjectStore
from imgsearch_pipeline.settings import ConfigurationError, Settings


def test_index_body_maps_every_field():
    body = q.index_body(768, "int8_hnsw", m=32, ef_construction=200, shards=2, replicas=1,
                        meta={"index_name": "imgsearch", "version": "v1"})
    mappings = body["mappings"]
    assert mappings["properties"]["vector"] == {
        "type": "dense_vector", "dims": 768, "index": True, "similarity": "cosine",
        "index_options": {"type": "int8_hnsw", "m": 32, "ef_construction": 200},
    }
    # Vectors leave the stored _source through the 9.2+ index setting (rehydrated for
    # reindex and recovery), not the mapping's _source.excludes (lost for good).
    assert "_source" not in mappings
    assert mappings["properties"]["uuid"] == {"type": "keyword"}
    assert mappings["properties"]["caption"] == {"type": "text"}
    assert mappings["properties"]["split"] == mappings["properties"]["shard"] == {"type": "keyword"}
    assert mappings["dynamic"] == "strict"
    assert mappings["_meta"] == {"index_name": "imgsearch", "version": "v1"}
    assert body["settings"] == {"number_of_shards": 2, "number_of_replicas": 1,
                                "refresh_interval": "-1",
                                "index.mapping.exclude_source_vectors": True}
    assert q.finish_settings() == {"index": {"refresh_interval": None}}
    json.dumps(body)  # a request body, so it must serialise


@pytest.mark.parametrize(("index_type", "dim", "message"), [
    ("flat_hnsw", 64, "unknown index type"),
    ("bbq_hnsw", 63, "at least 64"),
    ("hnsw", 0, "dimension"),
    ("hnsw", 4097, "dimension"),
])
def test_index_body_refuses_what_elasticsearch_would(index_type, dim, message):
    with pytest.raises(ValueError, match=message):
        q.index_body(dim, index_type)


def test_index_body_accepts_each_type_and_checks_hnsw_parameters():
    for index_type in q.INDEX_TYPES:
        options = q.index_body(64, index_type)["mappings"]["properties"]["vector"]["index_options"]
        assert options["type"] == index_type
    with pytest.raises(ValueError, match="ef_construction"):
        q.index_body(64, "hnsw", m=32, ef_construction=16)


def test_knn_body_plain():
    body = q.knn_body([0.5, -0.25, 1], k=10, num_candidates=64)
    assert body == {
        "knn": {"field": "vector", "query_vector": [0.5, -0.25, 1.0], "k": 10, "num_candidates": 64},
        "size": 10, "_source": ["caption"], "track_total_hits": False,
    }
    json.dumps(body)


def test_knn_body_keeps_num_candidates_in_elasticsearch_bounds():
    assert q.knn_body([1.0], k=50, num_candidates=10)["knn"]["num_candidates"] == 50
    assert q.knn_body([1.0], k=10, num_candidates=50_000)["knn"]["num_candidates"] == 10_000


def test_knn_body_filter_runs_inside_the_search():
    knn = q.knn_body([1.0, 0.0], 5, 20, caption_words=("red", "cat"), split="train")["knn"]
    assert knn["filter"] == {"bool": {"filter": [
        {"match": {"caption": {"query": "red cat", "operator": "and"}}},
        {"term": {"split": "train"}},
    ]}}
    only_split = q.knn_body([1.0, 0.0], 5, 20, split="test")["knn"]["filter"]
    assert only_split == {"bool": {"filter": [{"term": {"split": "test"}}]}}
    assert "filter" not in q.knn_body([1.0], 5, 20, caption_words=("  ",))["knn"]


def test_knn_body_rescores_only_quantised_types():
    assert "rescore_vector" not in q.knn_body([1.0], 5, 20, index_type="hnsw")["knn"]
    for index_type in q.QUANTISED_TYPES:
        knn = q.knn_body([1.0], 5, 20, index_type=index_type, oversample=2.5)["knn"]
        assert knn["rescore_vector"] == {"oversample": 2.5}
    assert "rescore_vector" not in q.knn_body([1.0], 5, 20, index_type="int8_hnsw", oversample=0)["knn"]
    with pytest.raises(ValueError, match="oversample"):
        q.knn_body([1.0], 5, 20, index_type="bbq_hnsw", oversample=11)


@pytest.mark.parametrize("vector", [[], [float("nan"), 1.0], [float("inf")]])
def test_knn_body_refuses_unusable_vectors(vector):
    with pytest.raises(ValueError, match="finite"):
        q.knn_body(vector, 5, 20)


def test_bulk_actions_index_one_document_per_uuid():
    actions = list(q.bulk_actions("imgsearch-v1", ["a", "b"], [[1, 0], [0.5, 0.5]],
                                  ["a red cat", None], ["train", "train"], ["s0", "s1"]))
    assert actions[0] == {"_op_type": "index", "_index": "imgsearch-v1", "_id": "a", "_source": {
        "uuid": "a", "vector": [1.0, 0.0], "split": "train", "shard": "s0", "caption": "a red cat"}}
    assert "caption" not in actions[1]["_source"]
    with pytest.raises(ValueError):
        list(q.bulk_actions("i", ["a", "b"], [[1.0]], [None], ["train"], [""]))


def test_alias_actions_move_the_alias_in_one_request():
    actions = q.alias_actions("imgsearch", "imgsearch-v3", ["imgsearch-v2", "imgsearch-v1"])
    assert actions == [
        {"remove": {"index": "imgsearch-v1", "alias": "imgsearch"}},
        {"remove": {"index": "imgsearch-v2", "alias": "imgsearch"}},
        {"add": {"index": "imgsearch-v3", "alias": "imgsearch"}},
    ]
    assert q.alias_actions("imgsearch", "imgsearch-v1", []) == [
        {"add": {"index": "imgsearch-v1", "alias": "imgsearch"}}]
    republish = q.alias_actions("imgsearch", "imgsearch-v1", ["imgsearch-v1"])
    assert republish == [{"add": {"index": "imgsearch-v1", "alias": "imgsearch"}}]


def test_owned_versions_ignore_other_deployments_with_the_same_prefix():
    def info(name, version):
        return {"mappings": {"_meta": {"index_name": name, "version": version}}}

    indices = {
        "imgsearch-20261124t101500-1a2b3c4d": info("imgsearch", "20261124t101500-1a2b3c4d"),
        "imgsearch-20261123t090000-00000000": info("imgsearch", "20261123t090000-00000000"),
        "imgsearch-test-v1": info("imgsearch-test", "v1"),  # another deployment's index
        "imgsearch-manual": {"mappings": {}},  # made by hand: not ours to prune
    }
    assert q.owned_versions("imgsearch", indices) == ["20261123t090000-00000000",
                                                      "20261124t101500-1a2b3c4d"]
    assert q.owned_versions("imgsearch-test", indices) == ["v1"]


def test_index_names_are_checked():
    assert q.index_name("imgsearch", "20261124t101500-1a2b3c4d") == "imgsearch-20261124t101500-1a2b3c4d"
    for name, version in [("imgsearch", "V1"), ("imgsearch", "a/b"), ("imgsearch", ""),
                          ("ImgSearch", "v1"), ("_hidden", "v1"), ("a,b", "v1")]:
        with pytest.raises(ValueError, match="invalid"):
            q.index_name(name, version)


def test_parse_hits_reports_cosine_similarity():
    response = {"hits": {"hits": [
        {"_id": "a", "_score": 1.0, "_source": {"caption": "a red cat"}},
        {"_id": "b", "_score": 0.75, "_source": {}},
        {"_id": "c", "_score": 0.25},
    ]}}
    assert q.parse_hits(response) == [("a", 1.0, "a red cat"), ("b", 0.5, None), ("c", -0.5, None)]


def test_bulk_failure_names_the_document_and_the_reason():
    # The shape of a rejected item in a bulk response.
    item = {"create": {"_index": "imgsearch-v1", "_id": "3f2a", "status": 400, "error": {
        "type": "document_parsing_exception", "reason": "[1:40] failed to parse field [vector]",
        "caused_by": {"type": "illegal_argument_exception",
                      "reason": "The [cosine] similarity does not support vectors with zero magnitude"},
    }}}
    line = q.bulk_failure(item)
    assert line.startswith("3f2a (create, status 400): document_parsing_exception")
    assert "zero magnitude" in line
    conflict = {"create": {"_id": "9c", "status": 409,
                           "error": {"type": "version_conflict_engine_exception",
                                     "reason": "[9c]: version conflict, document already exists"}}}
    assert "document already exists" in q.bulk_failure(conflict)
    error = BulkIndexingError("imgsearch-v1", [line] * 25, 100)
    assert "25 of 100 documents rejected" in str(error) and "and 5 more" in str(error)


# -- the production profile's wiring ---------------------------------------------------

PRODUCTION = {"IMGSEARCH_PROFILE": "production", "IMGSEARCH_EMBEDDER": "color-texture",
              "IMGSEARCH_ES_URL": "http://127.0.0.1:9200", "IMGSEARCH_ES_PASSWORD": "s3cret-pw",
              "IMGSEARCH_S3_BUCKET": "imgsearch", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
              "AWS_ACCESS_KEY_ID": "minio-user", "AWS_SECRET_ACCESS_KEY": "minio-pw",
              "IMGSEARCH_ES_INDEX_TYPE": "int8_hnsw"}


def test_production_profile_builds_both_backends_with_deferred_secrets():
    resources = resources_for(Settings.read(PRODUCTION))
    index, store = resources["vector_index"], resources["object_store"]
    assert isinstance(index, ElasticsearchIndex) and isinstance(store, S3ObjectStore)
    assert index.url == "http://127.0.0.1:9200" and index.index_type == "int8_hnsw"
    assert isinstance(index.password, dg.EnvVar) and index.password.env_var_name == "IMGSEARCH_ES_PASSWORD"
    assert index.api_key is None  # unset optional secrets stay unset
    # The store holds no S3 credentials at all: pyarrow and boto3 read the AWS environment.
    assert store.bucket == "imgsearch" and store.prefix == "imgsearch"
    shown = json.dumps(index.params()) + json.dumps(store.model_dump())
    assert "s3cret-pw" not in shown and "minio-pw" not in shown


@pytest.mark.parametrize(("change", "message"), [
    ({"IMGSEARCH_ES_URL": ""}, "needs IMGSEARCH_ES_URL"),
    ({"IMGSEARCH_S3_BUCKET": ""}, "needs IMGSEARCH_S3_BUCKET"),
    ({"IMGSEARCH_ES_INDEX_TYPE": "ivf"},
     r"'ivf' \(IMGSEARCH_ES_INDEX_TYPE\): choose one of hnsw, int8_hnsw, bbq_hnsw"),
    ({"IMGSEARCH_ES_INDEX": "Bad Name"}, "invalid Elasticsearch index name"),
    ({"IMGSEARCH_ES_REPLICAS": "two"},
     "IMGSEARCH_ES_REPLICAS='two' is not allowed: Input should be a valid integer"),
    ({"IMGSEARCH_ES_API_KEY": "a2V5"}, "IMGSEARCH_ES_PASSWORD and IMGSEARCH_ES_API_KEY are both set"),
    ({"IMGSEARCH_ES_READY_TIMEOUT_S": "soon"},
     "IMGSEARCH_ES_READY_TIMEOUT_S='soon' is not allowed: Input should be a valid integer"),
])
def test_production_settings_fail_when_the_definitions_load(change, message):
    with pytest.raises(ConfigurationError, match=message):
        production_backends(Settings.read({**PRODUCTION, **change}))


# -- keyword and hybrid search bodies (issue 22) -----------------------------------------
#
# The shapes below are transcribed from the elasticsearch-specification (9.x):
# _types/Knn.ts (KnnSearch), query_dsl/fulltext.ts (MatchQuery), query_dsl/compound.ts
# (BoolQuery), query_dsl/term.ts (TermQuery), _global/search/SearchRequest.ts (the body
# fields used here), _global/msearch/types.ts (MultisearchHeader), _types/analysis
# (CustomAnalyzer) and _types/mapping (TextProperty, its index_options). Only the fields the
# project sends are listed, each object closed: an unknown or misspelt field fails.

def _spec_schema():
    container = {"$ref": "#/$defs/QueryContainer"}
    one_or_many = {"anyOf": [container, {"type": "array", "items": container}]}
    return {
        "$defs": {
            "QueryContainer": {"type": "object", "minProperties": 1, "maxProperties": 1,
                               "additionalProperties": False, "properties": {
                                   "bool": {"$ref": "#/$defs/BoolQuery"},
                                   "match": {"$ref": "#/$defs/FieldMatch"},
                                   "term": {"type": "object", "minProperties": 1, "maxProperties": 1}}},
            "BoolQuery": {"type": "object", "additionalProperties": False, "properties": {
                "must": one_or_many, "filter": one_or_many, "should": one_or_many,
                "must_not": one_or_many, "minimum_should_match": {}, "boost": {"type": "number"},
                "_name": {"type": "string"}}},
            "FieldMatch": {"type": "object", "minProperties": 1, "maxProperties": 1,
                           "additionalProperties": {"anyOf": [{"type": "string"}, {
                               "type": "object", "required": ["query"], "additionalProperties": False,
                               "properties": {p: {} for p in (
                                   "analyzer", "auto_generate_synonyms_phrase_query", "fuzziness",
                                   "fuzzy_rewrite", "fuzzy_transpositions", "lenient", "max_expansions",
                                   "minimum_should_match", "prefix_length", "zero_terms_query", "boost",
                                   "_name")} | {"query": {"type": ["string", "number", "boolean"]},
                                                "operator": {"enum": ["and", "or", "AND", "OR"]}}}]}},
            "KnnSearch": {"type": "object", "required": ["field"], "additionalProperties": False,
                          "properties": {
                              "field": {"type": "string"},
                              "query_vector": {"type": "array", "items": {"type": "number"}},
                              "k": {"type": "integer", "minimum": 1},
                              "num_candidates": {"type": "integer", "minimum": 1},
                              "boost": {"type": "number"}, "filter": one_or_many,
                              "similarity": {"type": "number"},
                              "rescore_vector": {"type": "object", "required": ["oversample"],
                                                 "additionalProperties": False,
                                                 "properties": {"oversample": {"type": "number"}}}}},
            "SearchBody": {"type": "object", "additionalProperties": False, "properties": {
                "query": container, "knn": {"$ref": "#/$defs/KnnSearch"},
                "size": {"type": "integer", "minimum": 0}, "from": {"type": "integer", "minimum": 0},
                "_source": {"anyOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "string"}}]},
                "track_total_hits": {"type": ["boolean", "integer"]}}},
            "MultisearchHeader": {"type": "object", "additionalProperties": False, "properties": {
                p: {} for p in ("allow_no_indices", "expand_wildcards", "ignore_unavailable", "index",
                                "preference", "request_cache", "routing", "search_type",
                                "ccs_minimize_roundtrips", "allow_partial_search_results",
                                "ignore_throttled")}},
            "CustomAnalyzer": {"type": "object", "required": ["type", "tokenizer"],
                               "additionalProperties": False, "properties": {
                                   "type": {"const": "custom"}, "tokenizer": {"type": "string"},
                                   "filter": {"type": "array"}, "char_filter": {"type": "array"},
                                   "position_increment_gap": {"type": "integer"},
                                   "position_offset_gap": {"type": "integer"}}},
            "TextProperty": {"type": "object", "required": ["type"], "additionalProperties": False,
                             "properties": {
                                 "type": {"const": "text"}, "analyzer": {"type": "string"},
                                 "search_analyzer": {"type": "string"}, "norms": {"type": "boolean"},
                                 "index_options": {"enum": ["docs", "freqs", "positions", "offsets"]}}},
        },
    }


def _check(instance, definition: str):
    import jsonschema

    schema = {**_spec_schema(), "$ref": f"#/$defs/{definition}"}
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)
    json.dumps(instance)  # a request body, so it must serialise


def test_spec_schema_refuses_what_the_specification_does_not_have():
    import jsonschema

    _check(q.knn_body([1.0, 0.0], 5, 20, split="train"), "SearchBody")
    for bad in ({"knn": {"field": "vector", "min_score": 0.5}}, {"query": {"match": {"caption": {}}}},
                {"query": {"bool": {"filters": []}}}, {"size": 5, "form": 10}):
        with pytest.raises(jsonschema.ValidationError):
            _check(bad, "SearchBody")


def test_match_body_is_a_bm25_match_on_the_caption_keywords():
    body = q.match_body("Café #Sunset sunset 🌅", 100)
    assert body == {
        "query": {"bool": {"must": [{"match": {"caption_keywords": {"query": "cafe #sunset sunset 🌅"}}}]}},
        "size": 100, "_source": ["caption"], "track_total_hits": False,
    }
    _check(body, "SearchBody")
    filtered = q.match_body("sunset", 10, offset=20, caption_words=("red", "cat"), split="train")
    # The caption filter and the split are the kNN search's own filter clauses, not scored.
    own_filter = q.search_filter_query(("red", "cat"), "train")["bool"]["filter"]
    assert filtered["query"]["bool"]["filter"] == own_filter
    assert filtered["from"] == 20
    _check(filtered, "SearchBody")
    assert q.match_body(" ,.! ", 10) is None  # no tokens: nothing to ask
    with pytest.raises(ValueError):
        q.match_body("sunset", 0)


def test_min_similarity_is_the_raw_cosine_not_the_score():
    # kNN similarity is compared with the vector similarity itself; Elasticsearch maps it to
    # the score bound (1 + s) / 2 for cosine (DenseVectorFieldMapper, VectorSimilarity.COSINE).
    body = q.with_min_similarity(q.knn_body([0.6, 0.8], 10, 50, split="train"), 0.25)
    assert body["knn"]["similarity"] == 0.25
    assert body["knn"]["filter"] == {"bool": {"filter": [{"term": {"split": "train"}}]}}
    _check(body, "SearchBody")
    # A hit at exactly the cutoff scores (1 + 0.25) / 2, and reads back as the cutoff.
    assert q.parse_hits({"hits": {"hits": [{"_id": "a", "_score": 0.625}]}})[0][1] == 0.25
    plain = q.knn_body([1.0], 5, 20)
    assert q.with_min_similarity(plain, None) is plain and "similarity" not in plain["knn"]
    for bad in (1.01, -1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            q.with_min_similarity(plain, bad)


def test_hybrid_msearch_pairs_knn_and_match_in_one_request():
    knn = q.with_min_similarity(q.knn_body([1.0, 0.0], 100, 200), 0.1)
    match = q.match_body("sunset", 100)
    items = q.hybrid_msearch_items(knn, match)
    assert items == [{}, knn, {}, match]
    for header, body in zip(items[::2], items[1::2], strict=True):
        _check(header, "MultisearchHeader")
        _check(body, "SearchBody")
    assert q.hybrid_msearch_items(knn, None) == [{}, knn]


def test_hybrid_msearch_goes_through_the_client_as_ndjson_and_reads_both_scores():
    from elasticsearch import Elasticsearch

    from .test_es_client import GREEN, StandIn

    knn_answer = {"hits": {"hits": [{"_id": "a", "_score": 0.9, "_source": {"caption": "a"}},
                                    {"_id": "b", "_score": 0.8}]}, "status": 200}
    match_answer = {"hits": {"hits": [{"_id": "b", "_score": 7.5, "_source": {"caption": "b"}}]},
                    "status": 200}
    items = q.hybrid_msearch_items(q.knn_body([1.0, 0.0], 2, 10), q.match_body("b", 2))
    with StandIn({**GREEN, ("POST", "/imgsearch-v1/_msearch"): [
            (200, {"took": 1, "responses": [knn_answer, match_answer]})]}) as server:
        client = Elasticsearch(server.url)
        response = client.msearch(index="imgsearch-v1", searches=items)
        (sent,) = [b for p, b in server.bodies if p.endswith("_msearch")]
    lines = sent.decode().splitlines()
    assert sent.endswith(b"\n") and [json.loads(line) for line in lines] == items
    knn_hits, match_hits = q.parse_hybrid_msearch(response.body, ["knn", "match"])
    assert knn_hits == [("a", pytest.approx(0.8), "a"), ("b", pytest.approx(0.6), None)]
    assert match_hits == [("b", 7.5, "b")]  # BM25 scores are not cosines


def test_a_failed_half_of_a_hybrid_msearch_is_an_error():
    failed = {"error": {"type": "search_phase_execution_exception", "reason": "all shards failed"},
              "status": 400}
    ok = {"hits": {"hits": []}, "status": 200}
    with pytest.raises(q.MultiSearchError, match="search 1 .* status 400: all shards failed"):
        q.parse_hybrid_msearch({"responses": [ok, failed]}, ["knn", "match"])
    with pytest.raises(ValueError, match="1 answers to 2 searches"):
        q.parse_hybrid_msearch({"responses": [ok]}, ["knn", "match"])


def test_keyword_index_body_analyses_caption_keywords_for_bm25():
    body = q.keyword_index_body(64, "hnsw", meta={"index_name": "imgsearch", "version": "v1"})
    assert body["settings"]["analysis"] == {
        "analyzer": {"caption_keywords": {"type": "custom", "tokenizer": "whitespace"}}}
    _check(body["settings"]["analysis"]["analyzer"]["caption_keywords"], "CustomAnalyzer")
    prop = body["mappings"]["properties"]["caption_keywords"]
    assert prop == {"type": "text", "analyzer": "caption_keywords", "index_options": "freqs"}
    _check(prop, "TextProperty")
    # Everything else is index_body's, unchanged (the caption field and its filter stay).
    plain = q.index_body(64, "hnsw", meta={"index_name": "imgsearch", "version": "v1"})
    del body["settings"]["analysis"], body["mappings"]["properties"]["caption_keywords"]
    assert body == plain


def test_bulk_actions_carry_the_caption_keywords():
    actions = list(q.with_caption_keywords(q.bulk_actions(
        "imgsearch-v1", ["a", "b"], [[1.0], [0.5]], ["Café #Sunset 🌅", None],
        ["train", "train"], ["s0", "s0"])))
    assert actions[0]["_source"]["caption_keywords"] == "cafe #sunset sunset 🌅"
    assert actions[0]["_source"]["caption"] == "Café #Sunset 🌅"
    assert "caption_keywords" not in actions[1]["_source"]
    assert q.caption_keywords(" ,. ") is None
