"""The production vector index: one Elasticsearch index per version, an alias for live.

``build`` writes ``<index_name>-<version>``; ``publish`` moves the alias ``<index_name>``
onto it in one atomic ``update_aliases`` call; searches use the alias unless a version is
named. The URL and credentials come from the environment (``dg.EnvVar``) and are never
logged or written to metadata.
"""

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from pydantic import Field, PrivateAttr, field_validator

from ..core import es_queries as q
from .environment import resolved
from .vector_index import Hit, IndexBatch, SearchFilter, VectorIndex


class BulkIndexingError(RuntimeError):
    """Documents Elasticsearch rejected; the message names each one with its reason."""

    def __init__(self, index: str, failures: list[str], sent: int):
        self.failures = failures
        shown = "\n  ".join(failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(f"{len(failures)} of {sent} documents rejected by Elasticsearch; "
                         f"index {index} was deleted, nothing was published:\n  {shown}{more}")


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

    _client: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def backend(self) -> str:
        return "elasticsearch"

    def params(self) -> dict[str, object]:
        return {**super().params(), "index_type": self.index_type, "index_name": self.index_name}

    def client(self):
        """One client per resource: it is thread-safe and keeps a connection pool."""
        with self._lock:
            if self._client is None:
                from elasticsearch import Elasticsearch

                password, api_key = resolved(self.password), resolved(self.api_key)
                username = resolved(self.username)
                self._client = Elasticsearch(
                    resolved(self.url),
                    basic_auth=(username or "elastic", password) if password else None,
                    api_key=api_key or None,
                    ca_certs=resolved(self.ca_certs),
                    verify_certs=self.verify_certs,
                    request_timeout=self.request_timeout_s,
                    retry_on_timeout=True,
                    max_retries=5,
                    retry_on_status=(429, 502, 503, 504),
                )
            return self._client

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

    def build(self, version: str, dim: int, batches: Iterable[IndexBatch]) -> int:
        from elasticsearch.helpers import streaming_bulk

        client = self.client()
        index = self._index(version)
        body = q.index_body(dim, self.index_type, self.m, self.ef_construction, self.shards,
                            self.replicas, meta={"index_name": self.index_name, "version": version})
        client.indices.create(index=index, settings=body["settings"], mappings=body["mappings"])
        sent, failures, seen = 0, [], set()
        try:
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
                    yield from q.bulk_actions(
                        index, [batch.ids[i] for i in keep], batch.vectors[keep].tolist(),
                        [(batch.captions or [None] * n)[i] for i in keep],
                        [(batch.splits or ["train"] * n)[i] for i in keep],
                        [(batch.shards or [""] * n)[i] for i in keep])

            # raise_on_error=False: every rejected document is collected with its reason,
            # then the build fails as a whole instead of publishing an index missing them.
            for ok, item in streaming_bulk(client, actions(), chunk_size=self.bulk_chunk,
                                           raise_on_error=False, max_retries=self.bulk_retries):
                if not ok:
                    failures.append(q.bulk_failure(item))
            if failures:
                raise BulkIndexingError(index, failures, sent)
            client.indices.put_settings(index=index, settings=q.finish_settings())
            client.indices.refresh(index=index)
            client.options(request_timeout=self.force_merge_timeout_s).indices.forcemerge(
                index=index, max_num_segments=1)
            count = int(client.count(index=index)["count"])
            if count != sent:
                raise RuntimeError(f"index {index} holds {count} documents, {sent} were sent")
            return count
        except BaseException:
            self._discard(index)
            raise

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
    ) -> list[Hit]:
        from elasticsearch import NotFoundError

        target = self._index(version) if version else self.index_name
        search_filter = search_filter or SearchFilter()
        body = q.knn_body(np.asarray(vector, dtype=np.float32).ravel().tolist(), k, num_candidates,
                          search_filter.caption_words, search_filter.split, self.index_type,
                          self.oversample)
        try:
            response = self.client().search(index=target, body=body)
        except NotFoundError as exc:
            raise self._missing(target) from exc
        return [Hit(uuid, score, caption) for uuid, score, caption in q.parse_hits(response.body)]

    def count(self, version: str | None = None) -> int:
        from elasticsearch import NotFoundError

        target = self._index(version) if version else self.index_name
        try:
            return int(self.client().count(index=target)["count"])
        except NotFoundError as exc:
            raise self._missing(target) from exc

    def _missing(self, target: str) -> LookupError:
        what = "no live index (alias" if target == self.index_name else "no index version ("
        return LookupError(f"{what} {target}) in Elasticsearch: build and publish one first")

    # -- versions -----------------------------------------------------------------------

    def _alias_indices(self) -> list[str]:
        response = self.client().options(ignore_status=404).indices.get_alias(name=self.index_name)
        if response.meta.status == 404:
            return []
        return sorted(response.body)

    def publish(self, version: str) -> None:
        index = self._index(version)
        client = self.client()
        if not client.indices.exists(index=index):
            raise LookupError(f"index version {version} was never built ({index} does not exist)")
        client.indices.update_aliases(actions=q.alias_actions(self.index_name, index,
                                                              self._alias_indices()))

    def live_version(self) -> str | None:
        indices = self._alias_indices()
        # publish keeps the alias on one index; if someone added more by hand, take the newest.
        versions = sorted(v for v in (q.version_of(self.index_name, i) for i in indices) if v)
        return versions[-1] if versions else None

    def versions(self) -> list[str]:
        response = self.client().indices.get(index=f"{self.index_name}-*", allow_no_indices=True,
                                             expand_wildcards="open,closed", features="mappings")
        return q.owned_versions(self.index_name, response.body)

    def delete_version(self, version: str) -> None:
        if version == self.live_version():
            raise ValueError(f"version {version} is live: publish another before deleting it")
        self.client().options(ignore_status=404).indices.delete(index=self._index(version))
