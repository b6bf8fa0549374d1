"""Elasticsearch request bodies as pure functions: index settings and mapping, bulk
actions, the kNN query, alias moves, and the reading of hits and bulk failures.

Nothing here talks to a server, so every body is unit-tested without one.
"""

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .ids import check_version
from .similarity import ES_SIMILARITY, cosine_from_es_score

VECTOR_FIELD = "vector"
INDEX_TYPES = ("hnsw", "int8_hnsw", "bbq_hnsw")
QUANTISED_TYPES = ("int8_hnsw", "bbq_hnsw")
BBQ_MIN_DIMS = 64  # Elasticsearch refuses bbq_* below this (DenseVectorFieldMapper.BBQ_MIN_DIMS)
MAX_DIMS = 4096
MAX_NUM_CANDIDATES = 10_000  # Elasticsearch's own upper bound for knn.num_candidates


def check_index_type(index_type: str, dim: int) -> None:
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
    if not 1 <= dim <= MAX_DIMS:
        raise ValueError(f"vector dimension must be in 1..{MAX_DIMS}, got {dim}")
    if index_type.startswith("bbq") and dim < BBQ_MIN_DIMS:
        raise ValueError(f"{index_type} needs at least {BBQ_MIN_DIMS} dimensions, got {dim}")


def index_body(
    dim: int,
    index_type: str = "hnsw",
    m: int = 16,
    ef_construction: int = 100,
    shards: int = 1,
    replicas: int = 0,
    meta: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Settings and mapping of one index version (``m`` and ``ef_construction`` default to
    Elasticsearch's own; ``ElasticsearchIndex`` passes the tuned ``VectorIndex`` values).

    Refresh is off while the build runs (the index is not searched until it is published);
    ``finish_settings`` turns it back on. Vectors are kept out of the stored ``_source``
    with the index setting ``index.mapping.exclude_source_vectors`` (Elasticsearch 9.2+,
    where it is also the default for new indices; set here so that the mapping says so):
    Elasticsearch rehydrates them from the vector field when a reindex, a recovery or an
    explicit ``_source`` request needs them. The mapping's ``_source.excludes`` would
    drop them for good, and since 9.2 a reindex of such an index loses its vectors.
    ``meta`` (the owner's name and the version) marks the index as ours: versions are
    listed by it, so another deployment's ``<name>-...`` indices are never pruned.
    """
    check_index_type(index_type, dim)
    if m < 2 or ef_construction < m:
        raise ValueError(f"need m >= 2 and ef_construction >= m, got m={m}, "
                         f"ef_construction={ef_construction}")
    return {
        "settings": {
            "number_of_shards": shards,
            "number_of_replicas": replicas,
            "refresh_interval": "-1",
            "index.mapping.exclude_source_vectors": True,
        },
        "mappings": {
            "dynamic": "strict",
            "_meta": dict(meta or {}),
            "properties": {
                "uuid": {"type": "keyword"},
                VECTOR_FIELD: {
                    "type": "dense_vector",
                    "dims": dim,
                    "index": True,
                    "similarity": ES_SIMILARITY,
                    "index_options": {"type": index_type, "m": m, "ef_construction": ef_construction},
                },
                "caption": {"type": "text"},
                "split": {"type": "keyword"},
                "shard": {"type": "keyword"},
            },
        },
    }


def finish_settings() -> dict[str, Any]:
    """Settings once the build is complete: periodic refresh back to the default."""
    return {"index": {"refresh_interval": None}}


def clone_settings(replicas: int) -> dict[str, Any]:
    """Settings of an incremental version cloned from the write-blocked live one.

    A clone copies every setting of its source (``index.mapping.exclude_source_vectors``
    included) except those not copyable on resize (the replicas) and those the request sets
    (``MetadataCreateIndexService.prepareResizeIndexSettings``), and all its mappings, so the
    source's write block would come along: the request sets it to null, which keeps it out
    (as the shrink docs do with ``"index.blocks.write": null``). Refresh is off while the
    new documents go in, as in a full build (``finish_settings``)."""
    return {"index.number_of_replicas": replicas, "index.blocks.write": None,
            "index.refresh_interval": "-1"}


def delete_actions(index: str, ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    """One bulk ``delete`` per removed document (a 404 is a failure: the document the
    version's record says it holds is not there)."""
    for uuid in ids:
        yield {"_op_type": "delete", "_index": index, "_id": uuid}


def bulk_actions(
    index: str,
    ids: Sequence[str],
    vectors: Iterable[Sequence[float]],
    captions: Sequence[str | None],
    splits: Sequence[str],
    shards: Sequence[str],
) -> Iterator[dict[str, Any]]:
    """One ``index`` action per document, ``_id`` = uuid: a request retried after a timeout
    rewrites the same documents instead of failing on them (repeated uuids in the input are
    caught by ``ElasticsearchIndex.build`` before they are sent)."""
    for uuid, vector, caption, split, shard in zip(ids, vectors, captions, splits, shards, strict=True):
        source: dict[str, Any] = {"uuid": uuid, VECTOR_FIELD: [float(x) for x in vector],
                                  "split": split, "shard": shard}
        if caption is not None:
            source["caption"] = caption
        yield {"_op_type": "index", "_index": index, "_id": uuid, "_source": source}


def search_filter_query(caption_words: Sequence[str] = (), split: str | None = None) -> dict | None:
    """The filter applied inside the kNN traversal: every caption word must match, and the split."""
    clauses: list[dict[str, Any]] = []
    words = [w for w in caption_words if w.strip()]
    if words:
        clauses.append({"match": {"caption": {"query": " ".join(words), "operator": "and"}}})
    if split is not None:
        clauses.append({"term": {"split": split}})
    return {"bool": {"filter": clauses}} if clauses else None


def knn_body(
    vector: Sequence[float],
    k: int,
    num_candidates: int,
    caption_words: Sequence[str] = (),
    split: str | None = None,
    index_type: str = "hnsw",
    oversample: float = 3.0,
) -> dict[str, Any]:
    """A top-level kNN search returning ``k`` hits with their uuid and caption only."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    values = [float(x) for x in vector]
    if not values or not all(math.isfinite(x) for x in values):
        raise ValueError("query vector must be non-empty and finite")
    knn: dict[str, Any] = {
        "field": VECTOR_FIELD,
        "query_vector": values,
        "k": k,
        # Elasticsearch rejects num_candidates < k or > 10,000.
        "num_candidates": min(max(num_candidates, k), MAX_NUM_CANDIDATES),
    }
    filter_query = search_filter_query(caption_words, split)
    if filter_query is not None:
        knn["filter"] = filter_query
    if index_type in QUANTISED_TYPES and oversample > 0:
        if not 1.0 <= oversample <= 10.0:
            raise ValueError(f"oversample must be in [1, 10] (or 0 to disable), got {oversample}")
        knn["rescore_vector"] = {"oversample": oversample}
    return {"knn": knn, "size": k, "_source": ["caption"], "track_total_hits": False}



def parse_hits(response: dict[str, Any]) -> list[tuple[str, float, str | None]]:
    """(uuid, cosine similarity, caption) per hit, best first."""
    return [
        (hit["_id"], cosine_from_es_score(hit["_score"]), (hit.get("_source") or {}).get("caption"))
        for hit in response["hits"]["hits"]
    ]


def msearch_items(bodies: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``_msearch``'s header/body pairs: an empty header (the index is the request's path)
    before each search body (9.x spec: ``RequestItem = MultisearchHeader | SearchRequestBody``)."""
    return [item for body in bodies for item in ({}, body)]


class MultiSearchError(RuntimeError):
    def __init__(self, position: int, status: Any, reason: Any):
        super().__init__(f"search {position} of a multi-search failed with status {status}: "
                         f"{reason}")
        self.status = status


def parse_msearch(response: dict[str, Any]) -> list[list[tuple[str, float, str | None]]]:
    """Each search's hits in request order. A failed search comes back as an error item
    (``ErrorResponseBase``) among the others: it raises, naming its position, status and
    reason, rather than reading as a search that found nothing."""
    answers = []
    for position, item in enumerate(response["responses"]):
        if "error" in item:
            error = item["error"]
            reason = error.get("reason") or error.get("type") if isinstance(error, dict) else error
            raise MultiSearchError(position, item.get("status", "?"), reason)
        answers.append(parse_hits(item))
    return answers


def alias_actions(alias: str, new_index: str, current: Iterable[str]) -> list[dict[str, Any]]:
    """One atomic ``update_aliases`` request: the alias leaves every index it is on and
    lands on ``new_index`` in the same step, so searches never see no index or two."""
    actions: list[dict[str, Any]] = [
        {"remove": {"index": index, "alias": alias}} for index in sorted(set(current)) if index != new_index
    ]
    actions.append({"add": {"index": new_index, "alias": alias}})
    return actions


_FORBIDDEN = set(' "*\\<|,>/?#:')


def check_name(name: str) -> str:
    """An alias/index name Elasticsearch accepts: lower case, no separators, no leading _-+."""
    if not name or name != name.lower() or name[0] in "_-+." or set(name) & _FORBIDDEN:
        raise ValueError(f"invalid Elasticsearch index name: {name!r}")
    return name


def index_name(name: str, version: str) -> str:
    """``<name>-<version>``; Elasticsearch index names are lower case without separators."""
    check_name(name)
    check_version(version)  # the same rule as the embedded index's folders
    if version != version.lower():
        raise ValueError(f"invalid index version for Elasticsearch (upper case): {version!r}")
    return f"{name}-{version}"


def owned_versions(name: str, indices: dict[str, Any]) -> list[str]:
    """Versions among ``indices`` (an ``indices.get`` response) built by the index ``name``."""
    found = []
    for index, info in indices.items():
        meta = (info.get("mappings") or {}).get("_meta") or {}
        if meta.get("index_name") == name and index == f"{name}-{meta.get('version')}":
            found.append(meta["version"])
    return sorted(found)


SEARCH_DEPTH_META = "search_depth"


def mapping_meta(response: dict[str, Any], index: str | None = None) -> dict[str, Any]:
    """The ``_meta`` of ``index`` in a get-mapping response (keyed by concrete index names;
    with ``index`` None, of the newest index in it, as an alias names one)."""
    if not response:
        return {}
    info = response[index] if index is not None else response[sorted(response)[-1]]
    return dict((info.get("mappings") or {}).get("_meta") or {})


def meta_with_search_depth(meta: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The whole ``_meta`` to send back with the tuned search depth in it: a mapping update
    replaces ``_meta``, so the owner and version marks that ``owned_versions`` reads stay."""
    if int(record.get("num_candidates", 0)) < 1:
        raise ValueError(f"a search depth record needs num_candidates >= 1, got {record}")
    return {**meta, SEARCH_DEPTH_META: dict(record)}


def version_of(name: str, index: str) -> str | None:
    prefix = f"{name}-"
    return index[len(prefix):] if index.startswith(prefix) and len(index) > len(prefix) else None


def bulk_failure(item: dict[str, Any]) -> str:
    """A readable line for one rejected bulk item: its id, status and reason."""
    op_type, result = next(iter(item.items()))
    error = result.get("error") or result.get("exception") or "unknown error"
    if isinstance(error, dict):
        reason = error.get("reason") or error.get("type") or str(error)
        cause = error.get("caused_by") or {}
        if cause.get("reason"):
            reason = f"{reason}: {cause['reason']}"
        error = f"{error.get('type', 'error')}: {reason}"
    return f"{result.get('_id', '?')} ({op_type}, status {result.get('status', '?')}): {error}"


# -- caption keyword search and hybrid search (issue 22) ---------------------------------
#
# Captions are matched on their own field of the project's tokens (core/keywords.py), joined
# by spaces and split again by Elasticsearch's ``whitespace`` tokenizer: both backends then
# score the same tokens (hashtags, emoji, bigrams of unspaced scripts), and the ``caption``
# field and its filter stay as they are.

CAPTION_KEYWORDS_FIELD = "caption_keywords"
CAPTION_KEYWORDS_ANALYZER = "caption_keywords"


def caption_keywords(caption: str | None) -> str | None:
    """The ``caption_keywords`` value of a document: its tokens joined by spaces."""
    from .keywords import caption_tokens

    tokens = caption_tokens(caption)
    return " ".join(tokens) if tokens else None


def caption_keywords_analysis() -> dict[str, Any]:
    """Index settings' ``analysis``: an analyzer that splits on whitespace only (the tokens
    are already lower case, folded and split by the project)."""
    return {"analyzer": {CAPTION_KEYWORDS_ANALYZER: {"type": "custom", "tokenizer": "whitespace"}}}


def caption_keywords_property() -> dict[str, Any]:
    """The mapping of ``caption_keywords``: BM25-scored text (the default similarity) with
    term frequencies but no positions (no phrase queries are made on it)."""
    return {"type": "text", "analyzer": CAPTION_KEYWORDS_ANALYZER, "index_options": "freqs"}


def keyword_index_body(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """``index_body`` with the caption keywords field and its analyzer added."""
    body = index_body(*args, **kwargs)
    body["settings"]["analysis"] = caption_keywords_analysis()
    body["mappings"]["properties"][CAPTION_KEYWORDS_FIELD] = caption_keywords_property()
    return body


def with_caption_keywords(actions: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``bulk_actions`` with each document's ``caption_keywords`` added from its caption."""
    for action in actions:
        keywords = caption_keywords(action["_source"].get("caption"))
        if keywords is not None:
            action = {**action, "_source": {**action["_source"], CAPTION_KEYWORDS_FIELD: keywords}}
        yield action


def match_body(
    text: str,
    size: int,
    offset: int = 0,
    caption_words: Sequence[str] = (),
    split: str | None = None,
    field: str = CAPTION_KEYWORDS_FIELD,
) -> dict[str, Any] | None:
    """A BM25 ``match`` search on the caption keywords: the OR of the query's tokens (the
    match query's default operator), with the caption filter and the split as non-scoring
    filters. None when the text has no tokens (nothing to ask: no hits)."""
    from .keywords import query_tokens

    if size < 1 or offset < 0:
        raise ValueError(f"need size >= 1 and offset >= 0, got size={size}, offset={offset}")
    tokens = query_tokens(text)
    if not tokens:
        return None
    query: dict[str, Any] = {"bool": {"must": [{"match": {field: {"query": " ".join(tokens)}}}]}}
    filter_query = search_filter_query(caption_words, split)
    if filter_query is not None:
        query["bool"]["filter"] = filter_query["bool"]["filter"]
    body: dict[str, Any] = {"query": query, "size": size, "_source": ["caption"], "track_total_hits": False}
    if offset:
        body["from"] = offset
    return body


def with_min_similarity(body: dict[str, Any], min_score: float | None) -> dict[str, Any]:
    """A ``knn_body`` with the similarity cutoff: kNN ``similarity`` is compared with the raw
    vector similarity, here the cosine in [-1, 1], not with the ``_score`` ((1 + cos) / 2):
    Elasticsearch turns it into the score bound itself (``DenseVectorFieldMapper``:
    ``new VectorSimilarityQuery(knnQuery, similarity, similarity.score(similarity, ...))``,
    ``COSINE.score`` = (1 + s) / 2). So the cosine cutoff goes in unchanged."""
    if min_score is None:
        return body
    if not (math.isfinite(min_score) and -1.0 <= min_score <= 1.0):
        raise ValueError(f"min_score must be a cosine similarity in [-1, 1], got {min_score}")
    return {**body, "knn": {**body["knn"], "similarity": float(min_score)}}


def hybrid_msearch_items(knn: dict[str, Any] | None,
                         match: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One ``_msearch`` for both rankings, kNN first, match second (either may be left out:
    a text without tokens, a model without a text tower). Each search asks for the fusion
    window (``k`` and ``size`` of the window, no ``from``): the project fuses and pages."""
    return msearch_items(body for body in (knn, match) if body is not None)


def parse_match_hits(response: dict[str, Any]) -> list[tuple[str, float, str | None]]:
    """(uuid, BM25 score, caption) per hit of a match search, best first."""
    return [
        (hit["_id"], float(hit["_score"]), (hit.get("_source") or {}).get("caption"))
        for hit in response["hits"]["hits"]
    ]


def parse_hybrid_msearch(response: dict[str, Any],
                         kinds: Sequence[str]) -> list[list[tuple[str, float, str | None]]]:
    """Each search's hits in request order, read by its kind ("knn": cosine scores, "match":
    BM25 scores). A failed search raises ``MultiSearchError``, as in ``parse_msearch``."""
    items = response["responses"]
    if len(items) != len(kinds):
        raise ValueError(f"{len(items)} answers to {len(kinds)} searches")
    answers = []
    for position, (item, kind) in enumerate(zip(items, kinds, strict=True)):
        if "error" in item:
            error = item["error"]
            reason = error.get("reason") or error.get("type") if isinstance(error, dict) else error
            raise MultiSearchError(position, item.get("status", "?"), reason)
        answers.append(parse_hits(item) if kind == "knn" else parse_match_hits(item))
    return answers
