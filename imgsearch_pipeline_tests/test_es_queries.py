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
