"""What the API serves: the model, the live index version and its lookup tables, loaded once.

Everything here is read-only after ``load_service``, so request threads share it freely.
Query images and vectors live only in local variables of one request: never logged,
written or added to the index.
"""

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ..core.images import load_rgb
from ..core.vectors import read_vectors
from ..resources.embedders import EmbeddingModel
from ..resources.object_store import ObjectStore
from ..resources.profiles import resources_for
from ..resources.vector_index import DEFAULT_NUM_CANDIDATES, Hit, SearchFilter, VectorIndex
from .settings import ApiSettings

log = logging.getLogger(__name__)


class ServiceUnavailable(RuntimeError):
    """The service cannot start: no live index, or no embeddings for the configured model."""


@dataclass(frozen=True)
class Post:
    key: str
    content_type: str
    caption: str | None


@dataclass(frozen=True)
class StoredVectors:
    """The embeddings table of one model: a matrix and a uuid -> row map."""

    matrix: np.ndarray
    row: dict[str, int]

    def get(self, uuid: str) -> np.ndarray | None:
        position = self.row.get(uuid)
        return None if position is None else self.matrix[position]


@dataclass
class Timings:
    """Milliseconds per stage of one request, for the Server-Timing header."""

    stages: dict[str, float] = field(default_factory=dict)

    def record(self, stage: str, started: float) -> None:
        self.stages[stage] = (time.perf_counter() - started) * 1000.0

    def header(self) -> str:
        return ", ".join(f"{name};dur={ms:.3f}" for name, ms in self.stages.items())


@dataclass(frozen=True)
class Result:
    hit: Hit
    duplicates: int = 0  # near-identical hits folded into this one


def collapse_near_duplicates(
    hits: list[Hit], vector_of: Callable[[str], np.ndarray | None], threshold: float
) -> list[Result]:
    """Keep each hit unless its cosine similarity to a better kept hit is above ``threshold``.

    Vectors are L2-normalised, so the dot product is the cosine. A hit without a stored
    vector cannot be compared and is kept.
    """
    kept: list[list] = []  # [hit, vector or None, duplicates]
    for hit in hits:
        vector = vector_of(hit.uuid)
        twin = None if vector is None else next(
            (entry for entry in kept
             if entry[1] is not None and float(vector @ entry[1]) > threshold), None)
        if twin is None:
            kept.append([hit, vector, 0])
        else:
            twin[2] += 1
    return [Result(hit, duplicates) for hit, _, duplicates in kept]


@dataclass(frozen=True)
class SearchService:
    model: EmbeddingModel
    index: VectorIndex
    store: ObjectStore
    version: str
    documents: int
    posts: dict[str, Post]
    vectors: StoredVectors
    settings: ApiSettings

    # -- queries ----------------------------------------------------------------------

    def embed_image(self, data: bytes, timings: Timings) -> np.ndarray:
        """Decode (ImageRejected on bad input) and embed one uploaded image."""
        started = time.perf_counter()
        image = load_rgb(data, self.settings.max_pixels)
        timings.record("decode", started)
        started = time.perf_counter()
        vector = self.model.encode_images([image])[0]
        timings.record("embed", started)
        return vector

    def embed_text(self, text: str, timings: Timings) -> np.ndarray:
        """TextNotSupportedError when the model has no text tower."""
        started = time.perf_counter()
        vector = self.model.encode_text([text])[0]
        timings.record("embed", started)
        return vector

    def search(
        self,
        vector: np.ndarray,
        k: int,
        num_candidates: int | None,
        search_filter: SearchFilter | None,
        collapse: float | None,
        timings: Timings,
        exclude: str | None = None,
    ) -> list[Result]:
        started = time.perf_counter()
        # Ask for more when hits will be dropped (the query itself, collapsed twins).
        fetch = k + (exclude is not None)
        if collapse is not None:
            fetch = min(max(fetch * 4, fetch + 20), self.settings.max_candidates)
        candidates = max(num_candidates or 0, fetch)
        if num_candidates is None:
            # A filter hides most of the graph from the traversal: let it explore further.
            wide = 10 if search_filter is not None else 2
            candidates = min(max(DEFAULT_NUM_CANDIDATES, wide * fetch), self.settings.max_candidates)
        hits = self.index.search(vector, fetch, candidates, version=self.version,
                                 search_filter=search_filter)
        hits = [hit for hit in hits if hit.uuid != exclude]
        if collapse is None:
            results = [Result(hit) for hit in hits]
        else:
            results = collapse_near_duplicates(hits, self.vectors.get, collapse)
        timings.record("search", started)
        return results[:k]


def _read_posts(path: str) -> dict[str, Post]:
    if not Path(path).is_file():
        raise ServiceUnavailable(f"no posts table at {path}: run the pipeline first (make demo)")
    names = pq.read_schema(path).names
    columns = ["uuid", "key", "content_type"] + (["caption"] if "caption" in names else [])
    table = pq.read_table(path, columns=columns).to_pydict()
    captions = table.get("caption") or [None] * len(table["uuid"])
    return {
        uuid: Post(key, content_type, caption)
        for uuid, key, content_type, caption in zip(
            table["uuid"], table["key"], table["content_type"], captions, strict=True)
    }


def _read_vectors(folder: str, model: EmbeddingModel) -> StoredVectors:
    ids, matrix = read_vectors(folder)
    if not ids:
        raise ServiceUnavailable(
            f"no embeddings for model '{model.model_id}' under {folder}: the live index was "
            "built with another embedder? Set IMGSEARCH_EMBEDDER / IMGSEARCH_MODEL as for the "
            "pipeline run that built it.")
    if matrix.shape[1] != model.dim:
        raise ServiceUnavailable(f"stored vectors have dim {matrix.shape[1]}, model "
                                 f"'{model.model_id}' gives {model.dim}")
    return StoredVectors(np.ascontiguousarray(matrix), {u: i for i, u in enumerate(ids)})


def load_service(environ: Mapping[str, str] | None = None,
                 settings: ApiSettings | None = None) -> SearchService:
    """Build the backends from the pipeline's environment and load everything once."""
    resources = resources_for(None if environ is None else dict(environ))
    settings = settings or ApiSettings.from_env(environ)
    index: VectorIndex = resources["vector_index"]
    version = index.live_version()
    if version is None:
        raise ServiceUnavailable("no live index version: run the pipeline first (make demo)")
    model = resources["embedder"].load()
    layout = resources["home"].layout
    posts = _read_posts(layout.posts)
    vectors = _read_vectors(layout.embeddings(model.model_id), model)
    documents = index.count(version)
    log.info("serving index version %s (%s, %d documents) with model %s",
             version, index.backend, documents, model.model_id)
    return SearchService(model, index, resources["object_store"], version, documents, posts,
                         vectors, settings)
