"""The production vector index: one Elasticsearch index per version, an alias for live.

``build`` writes ``<index_name>-<version>``; ``publish`` moves the alias ``<index_name>``
onto it in one atomic ``update_aliases`` call; searches use the alias unless a version is
named. The URL and credentials come from the environment (``dg.EnvVar``) and are never
logged or written to metadata.

Captions are also indexed as the project's keyword tokens (``caption_keywords``, BM25): hybrid
search asks for both rankings in one ``_msearch`` and the API fuses them. Elasticsearch's own
fusion (``retriever.rrf``, ``retriever.linear``) needs an Enterprise licence: a basic-licence
cluster refuses it with 403, so it is never sent.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..core import es_queries as q
from ..core.retry import with_retries
from .environment import resolved
from .vector_index import Hit, IndexBatch, Ranking, SearchFilter, VectorIndex

log = logging.getLogger(__name__)
T = TypeVar("T")

# Answers worth another try after a wait: too many requests, and a node or proxy that is
# (briefly) unavailable. 500 is left out: it usually means a request that will fail again.
RETRY_STATUSES = (429, 502, 503, 504)


def _retryable(error: Exception) -> bool:
    return getattr(error, "status_code", None) in RETRY_STATUSES


class ClusterNotReady(TimeoutError):
    """Elasticsearch did not answer, or stayed red, for the whole wait."""


class BulkIndexingError(RuntimeError):
    """Documents Elasticsearch rejected; the message names each one with its reason."""

    def __init__(self, index: str, failures: list[str], sent: int):
        self.failures = failures
        shown = "\n  ".join(failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(f"{len(failures)} of {sent} documents rejected by Elasticsearch; "
                         f"index {index} was deleted, nothing was published:\n  {shown}{more}")


class AliasTaken(RuntimeError):
    """A concrete index holds the name of the live alias."""


class ElasticsearchIndex(VectorIndex):
    """Approximate kNN on Elasticsearch ``dense_vector`` (cosine) fields."""

    url: str = Field(description="Elasticsearch URL, e.g. http://127.0.0.1:9200 (IMGSEARCH_ES_URL)")
    username: str | None = Field(default=None, description="Basic-auth user, e.g. elastic")
    password: str | None = Field(default=None, description="Basic-auth password (use dg.EnvVar)")
    api_key: str | None = Field(default=None, description="Encoded API key, instead of a password")
    ca_certs: str | None = Field(default=None, description="CA bundle for an https URL")
    verify_certs: bool = True
    index_name: str = Field(default="imgsearch", description="Alias name and prefix of versions")
    index_type: str = Field(default="hnsw", description="hnsw | int8_hnsw | bbq_hnsw")
    oversample: float = Field(default=3.0, description="Rescore oversampling for quantised types")
    shards: int = 1
    replicas: int = 0
    bulk_chunk: int = Field(default=500, description="Documents per bulk request")
    bulk_retries: int = Field(default=5, description="Retries of documents refused with 429")
    request_timeout_s: float = 30.0
    force_merge_timeout_s: float = 1800.0
    max_retries: int = Field(default=5, description="Retries of a request refused with 429/502/"
                                                    "503/504 or lost to a connection error")
    retry_backoff_s: float = Field(default=0.5, description="Wait before the first retry; "
                                                            "doubles with each one")
    retry_backoff_cap_s: float = Field(default=30.0, description="Longest wait between retries")
    ready_timeout_s: float = Field(default=120.0, description="How long the first request waits "
                                                              "for the cluster to be yellow")

    _client: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _alias_checked: bool = PrivateAttr(default=False)

    @property
    def backend(self) -> str:
        return "elasticsearch"

    def params(self) -> dict[str, object]:
        return {**super().params(), "index_type": self.index_type, "index_name": self.index_name}

    def client(self):
        """One client per resource: it is thread-safe and keeps a connection pool. The first
        call waits until the cluster is at least yellow (``ready_timeout_s``)."""
        with self._lock:
            if self._client is None:
                from elasticsearch import Elasticsearch

                password, api_key = resolved(self.password), resolved(self.api_key)
                username = resolved(self.username)
                client = Elasticsearch(
                    resolved(self.url),
                    basic_auth=(username or "elastic", password) if password else None,
                    api_key=api_key or None,
                    ca_certs=resolved(self.ca_certs),
                    verify_certs=self.verify_certs,
                    request_timeout=self.request_timeout_s,
                    # Connection errors and timeouts: the transport retries them with
                    # jittered exponential backoff (its default backoff base is 0: none).
                    retry_on_timeout=True,
                    max_retries=self.max_retries,
                    retry_backoff_base=self.retry_backoff_s,
                    retry_backoff_cap=self.retry_backoff_cap_s,
                    # Status codes: the transport would retry them at once, with no wait
                    # (elastic-transport sleeps only after connection errors), so they are
                    # retried here instead (``_retrying``), with backoff.
                    retry_on_status=(),
                )
                self._wait_until_ready(client)
                self._client = client
            return self._client

    def _wait_until_ready(self, client) -> None:
        """Wait for a yellow (or green) cluster; a clear error after ``ready_timeout_s``."""
        deadline = time.monotonic() + self.ready_timeout_s
        problem = "no answer"
        while True:
            left = deadline - time.monotonic()
            try:
                health = client.options(ignore_status=408, max_retries=0).cluster.health(
                    wait_for_status="yellow", timeout=f"{max(1, min(10, int(left)))}s")
                if not health.body.get("timed_out") and health.body.get("status") in ("yellow", "green"):
                    return
                problem = f"cluster status {health.body.get('status')}"
            except Exception as error:  # down, starting, refusing: keep waiting until the deadline
                if getattr(error, "status_code", None) in (401, 403):
                    raise  # wrong credentials: waiting cannot help
                problem = f"{type(error).__name__}: {error}"
            if time.monotonic() >= deadline:
                raise ClusterNotReady(
                    f"Elasticsearch at {resolved(self.url)} was not ready (yellow) within "
                    f"{self.ready_timeout_s:.0f} s: {problem}. Is it running and healthy "
                    f"(docker compose ps)?")
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))

    def _retrying(self, call: Callable[[], T]) -> T:
        """``call`` retried on 429/502/503/504 after a growing wait (``retry_backoff_s``)."""
        return with_retries(call, self.max_retries, self.retry_backoff_s, log.warning,
                            retryable=_retryable, max_delay_s=self.retry_backoff_cap_s)

    @model_validator(mode="after")
    def _one_credential(self):
        if self.password is not None and self.api_key is not None:
            raise ValueError("set a password or an API key for Elasticsearch, not both")
        return self

    @field_validator("index_name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return q.check_name(value)

    @field_validator("index_type")
    @classmethod
    def _valid_type(cls, value: str) -> str:
        if value not in q.INDEX_TYPES:
            raise ValueError(f"unknown index type {value!r}: choose one of {', '.join(q.INDEX_TYPES)}")
        return value

    def _index(self, version: str) -> str:
        return q.index_name(self.index_name, version)

    # -- building -----------------------------------------------------------------------

    def build(self, version: str, dim: int, batches: Iterable[IndexBatch],
              on_indexed: Callable[[int], None] | None = None, base: str | None = None,
              removed: Collection[str] = ()) -> int:
        from elasticsearch.helpers import streaming_bulk

        client = self.client()
        index = self._index(version)
        sent, failures, seen = 0, [], set()
        try:
            # Inside the try: whatever fails from here on (a create that timed out after the
            # server made the index included) leaves no empty version behind.
            expected = self._create(index, version, dim, base)
            def actions() -> Iterator[dict]:
                nonlocal sent
                for batch in batches:
                    if batch.vectors.shape[1:] != (dim,):
                        raise ValueError(f"batch vectors have shape {batch.vectors.shape}, "
                                         f"index {index} expects dimension {dim}")
                    n = len(batch.ids)
                    sent += n
                    keep = []
                    for i, uuid in enumerate(batch.ids):
                        if uuid in seen:  # would overwrite the first one silently
                            failures.append(f"{uuid}: repeated uuid in the input, not indexed twice")
                        else:
                            seen.add(uuid)
                            keep.append(i)
                    yield from q.with_caption_keywords(q.bulk_actions(
                        index, [batch.ids[i] for i in keep], batch.vectors[keep].tolist(),
                        [(batch.captions or [None] * n)[i] for i in keep],
                        [(batch.splits or ["train"] * n)[i] for i in keep],
                        [(batch.shards or [""] * n)[i] for i in keep]))
                yield from q.delete_actions(index, removed)

            # raise_on_error=False: every rejected document is collected with its reason,
            # then the build fails as a whole instead of publishing an index missing them.
            for ok, item in streaming_bulk(client, actions(), chunk_size=self.bulk_chunk,
                                           raise_on_error=False, max_retries=self.bulk_retries):
                if not ok:
                    failures.append(q.bulk_failure(item))
                elif on_indexed and "delete" not in item:
                    on_indexed(1)
            if failures:
                raise BulkIndexingError(index, failures, sent + len(removed))
            self._retrying(lambda: client.indices.put_settings(index=index,
                                                               settings=q.finish_settings()))
            self._retrying(lambda: client.indices.refresh(index=index))
            if base is None:  # a clone keeps its base's merged segments; the few new ones
                # are left to Elasticsearch's merge policy rather than rewriting them all
                self._retrying(lambda: client.options(request_timeout=self.force_merge_timeout_s)
                               .indices.forcemerge(index=index, max_num_segments=1))
            count = int(self._retrying(lambda: client.count(index=index))["count"])
            expected = expected + sent - len(removed)
            if count != expected:
                raise RuntimeError(f"index {index} holds {count} documents, {expected} expected")
            return count
        except BaseException:
            self._discard(index)
            raise

    def _create(self, index: str, version: str, dim: int, base: str | None) -> int:
        """Create the version's index, empty or as a clone of ``base``; return the documents
        it starts with. A clone keeps its base's mapping and analysis, ``caption_keywords``
        included (a version built without them has another build key, ``params``: the
        pipeline builds the next one in full instead of cloning it)."""
        client = self.client()
        meta = {"index_name": self.index_name, "version": version}
        if base is None:
            body = q.keyword_index_body(dim, self.index_type, self.m, self.ef_construction,
                                        self.shards, self.replicas, meta=meta)
            client.indices.create(index=index, settings=body["settings"], mappings=body["mappings"])
            return 0
        source = self._index(base)
        # The clone API needs a write-blocked source (a published version is never written
        # again, so the block costs nothing) and hard-links its segments into the target.
        self._retrying(lambda: client.indices.add_block(index=source, block="write"))
        client.indices.clone(index=source, target=index,
                             settings=q.clone_settings(self.replicas), wait_for_active_shards="1")
        self._retrying(lambda: client.cluster.health(index=index, wait_for_status="yellow",
                                                     timeout=f"{int(self.ready_timeout_s)}s"))
        # A clone has its source's mapping, _meta included: the new version's own owner and
        # version marks, and no search depth until its own evaluation records one.
        self._retrying(lambda: client.indices.put_mapping(index=index, meta=meta))
        return int(self._retrying(lambda: client.count(index=index))["count"])

    def _discard(self, index: str) -> None:
        """Best effort: a failed build leaves no half-filled version behind (prune would
        remove it later anyway), without hiding the error that failed the build."""
        with contextlib.suppress(Exception):  # the build's own error is the one to report
            self.client().options(ignore_status=404).indices.delete(index=index)

    # -- searching ----------------------------------------------------------------------

    def search(
        self,
        vector: np.ndarray,
        k: int,
        num_candidates: int,
        version: str | None = None,
        search_filter: SearchFilter | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        from elasticsearch import NotFoundError

        target = self._target(version)
        body = q.with_min_similarity(
            self._knn_body(vector, k, num_candidates, search_filter or SearchFilter()), min_score)
        try:
            response = self._retrying(lambda: self.client().search(index=target, body=body))
        except NotFoundError as exc:
            raise self._missing(target) from exc
        return [Hit(uuid, score, caption) for uuid, score, caption in q.parse_hits(response.body)]

    def search_many(self, vectors, k, num_candidates, version=None) -> list[list[Hit]]:
        """One ``_msearch`` request for all rows (the recall count's batches), not a round
        trip per query."""
        target = self._target(version)
        rows = np.asarray(vectors, dtype=np.float32)
        bodies = [self._knn_body(row, k, num_candidates, SearchFilter())
                  for row in rows.reshape(len(rows), -1)]
        if not bodies:
            return []
        answers = self._msearch(target, q.msearch_items(bodies), q.parse_msearch)
        return [[Hit(uuid, score, caption) for uuid, score, caption in hits] for hits in answers]

    def keyword_search(self, text: str, k: int, version: str | None = None,
                       search_filter: SearchFilter | None = None) -> list[Hit]:
        """One BM25 ``match`` search on ``caption_keywords``; a text without tokens asks nothing."""
        from elasticsearch import NotFoundError

        body = self._match_body(text, k, search_filter or SearchFilter())
        if body is None:
            return []
        target = self._target(version)
        try:
            response = self._retrying(lambda: self.client().search(index=target, body=body))
        except NotFoundError as exc:
            raise self._missing(target) from exc
        return [Hit(uuid, score, caption)
                for uuid, score, caption in q.parse_match_hits(response.body)]

    def search_both(self, vector: np.ndarray | None, text: str, k: int, num_candidates: int,
                    version: str | None = None, search_filter: SearchFilter | None = None,
                    min_score: float | None = None) -> tuple[Ranking, Ranking]:
        """Both rankings in one ``_msearch`` (kNN, then match), one round trip; the fusion
        stays in the API (``core/fusion.rrf``): Elasticsearch's needs a paid licence."""
        search_filter = search_filter or SearchFilter()
        knn = None if vector is None else q.with_min_similarity(
            self._knn_body(vector, k, num_candidates, search_filter), min_score)
        match = self._match_body(text, k, search_filter)
        kinds = [kind for kind, body in (("knn", knn), ("match", match)) if body is not None]
        if not kinds:
            return Ranking.of([]), Ranking.of([])
        answers = self._msearch(self._target(version), q.hybrid_msearch_items(knn, match),
                                lambda body: q.parse_hybrid_msearch(body, kinds))
        found = {kind: Ranking.of(Hit(uuid, score, caption) for uuid, score, caption in hits)
                 for kind, hits in zip(kinds, answers, strict=True)}
        return found.get("knn", Ranking.of([])), found.get("match", Ranking.of([]))

    def _msearch(self, target: str, searches: list[dict], read: Callable[[dict], T]) -> T:
        """One ``_msearch`` of ``searches`` on ``target``, its answer read by ``read``; a
        missing index is the same LookupError as for one search."""
        from elasticsearch import NotFoundError

        try:
            response = self._retrying(lambda: self.client().msearch(index=target,
                                                                    searches=searches))
            return read(response.body)
        except NotFoundError as exc:
            raise self._missing(target) from exc
        except q.MultiSearchError as exc:  # a missing index fails each search, not the request
            if exc.status == 404:
                raise self._missing(target) from exc
            raise

    def _target(self, version: str | None) -> str:
        """The version's index, or the live alias."""
        return self._index(version) if version else self._alias()

    def _knn_body(self, vector, k: int, num_candidates: int, search_filter: SearchFilter) -> dict:
        return q.knn_body(np.asarray(vector, dtype=np.float32).ravel().tolist(), k, num_candidates,
                          search_filter.caption_words, search_filter.split, self.index_type,
                          self.oversample)

    def _match_body(self, text: str, k: int, search_filter: SearchFilter) -> dict | None:
        return q.match_body(text, k, caption_words=search_filter.caption_words,
                            split=search_filter.split)

    def count(self, version: str | None = None) -> int:
        from elasticsearch import NotFoundError

        target = self._target(version)
        try:
            return int(self._retrying(lambda: self.client().count(index=target))["count"])
        except NotFoundError as exc:
            raise self._missing(target) from exc

    def _missing(self, target: str) -> LookupError:
        what = "no live index (alias " if target == self.index_name else "no index version ("
        return LookupError(f"{what}{target}) in Elasticsearch: build and publish one first")

    # -- versions -----------------------------------------------------------------------

    def _alias(self) -> str:
        """The alias name, once checked not to be taken by a concrete index: Elasticsearch
        cannot put an alias on that name, and searches by it would read that index."""
        if not self._alias_checked:
            response = self._retrying(lambda: self.client().options(ignore_status=404).indices.get(
                index=self.index_name, features="aliases"))
            if response.meta.status != 404 and self.index_name in response.body:
                raise AliasTaken(
                    f"Elasticsearch has an index named {self.index_name!r}, the name this deployment "
                    f"uses for its live alias (IMGSEARCH_ES_INDEX): nothing can be published under "
                    f"it and searches would read that index. Delete or rename the index (e.g. "
                    f"reindex it elsewhere), or set IMGSEARCH_ES_INDEX to another name.")
            self._alias_checked = True
        return self.index_name

    def _alias_indices(self) -> list[str]:
        alias = self._alias()
        response = self._retrying(lambda: self.client().options(ignore_status=404)
                                  .indices.get_alias(name=alias))
        if response.meta.status == 404:
            return []
        return sorted(response.body)

    def publish(self, version: str) -> None:
        index = self._index(version)
        client = self.client()
        if not self._retrying(lambda: client.indices.exists(index=index)):
            raise LookupError(f"index version {version} was never built ({index} does not exist)")
        actions = q.alias_actions(self._alias(), index, self._alias_indices())
        self._retrying(lambda: client.indices.update_aliases(actions=actions))

    def live_version(self) -> str | None:
        indices = self._alias_indices()
        # publish keeps the alias on one index; if someone added more by hand, take the newest.
        versions = sorted(v for v in (q.version_of(self.index_name, i) for i in indices) if v)
        return versions[-1] if versions else None

    def versions(self) -> list[str]:
        response = self._retrying(lambda: self.client().indices.get(
            index=f"{self.index_name}-*", allow_no_indices=True, expand_wildcards="open,closed",
            features="mappings"))
        return q.owned_versions(self.index_name, response.body)

    def record_search_depth(self, version: str, record: dict) -> None:
        index = self._index(version)
        client = self.client()
        meta = q.mapping_meta(client.indices.get_mapping(index=index).body, index)
        client.indices.put_mapping(index=index, meta=q.meta_with_search_depth(meta, record))

    def recorded_search_depth(self, version: str | None = None) -> dict | None:
        from elasticsearch import NotFoundError

        target = self._index(version) if version else self.index_name
        try:
            response = self.client().indices.get_mapping(index=target)
        except NotFoundError as exc:
            raise self._missing(target) from exc
        return q.mapping_meta(response.body).get(q.SEARCH_DEPTH_META)

    def delete_version(self, version: str) -> None:
        if version == self.live_version():
            raise ValueError(f"version {version} is live: publish another before deleting it")
        self.client().options(ignore_status=404).indices.delete(index=self._index(version))
