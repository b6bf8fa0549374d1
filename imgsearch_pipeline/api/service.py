"""What the API serves: the model, the live index version and its lookup tables, loaded once.

Everything here is read-only after ``load_service``, so request threads share it freely.
Query images and vectors live only in local variables of one request: never logged,
written or added to the index.
"""

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..core.fusion import found_by, rrf
from ..core.images import load_rgb
from ..core.index_plan import read_version_record
from ..core.integrity import IntegrityError
from ..core.layout import model_slug
from ..core.similarity import cosine, similarities
from ..core.tables import is_file, read_schema, read_table
from ..core.vectors import embedding_parts, mapped_vectors, parts_fingerprint
from ..resources.embedders import EmbeddingModel, ModelUnavailableError
from ..resources.object_store import ObjectStore
from ..resources.profiles import resources_for
from ..resources.vector_index import (
    DEFAULT_NUM_CANDIDATES,
    Hit,
    Ranking,
    SearchFilter,
    VectorIndex,
)
from ..settings import ApiSettings, ConfigurationError, Settings

log = logging.getLogger(__name__)


class ServiceUnavailable(RuntimeError):
    """The service cannot start: no live index, or no embeddings for the configured model.

    Its message goes to clients (503, /health): it names files by their place under
    IMGSEARCH_HOME and never shows a server path."""


class BackendUnavailable(RuntimeError):
    """The index or object store failed for one request; answered with 503."""


# Errors whose messages are written for clients (no server paths, no secrets).
_PUBLIC_ERRORS = (ServiceUnavailable, IntegrityError, ConfigurationError)
# Tolerance for float rounding on the cosine of unit vectors; beyond it a score means damage.
SCORE_TOLERANCE = 1e-3


def public_reason(error: BaseException) -> str:
    """What a client may read about a failed load; the full error goes to the server log."""
    if isinstance(error, _PUBLIC_ERRORS):
        return str(error)
    if isinstance(error, ModelUnavailableError):
        return "the embedding model could not be loaded (IMGSEARCH_MODEL; details in the server log)"
    return f"{type(error).__name__} (details in the server log)"


@contextmanager
def loading(what: str) -> Iterator[None]:
    """Name the stage that failed: ``reading tables/posts.parquet: ArrowInvalid ...``."""
    try:
        yield
    except ServiceUnavailable:
        raise
    except Exception as error:
        log.warning("%s failed: %r", what, error)
        raise ServiceUnavailable(f"{what}: {public_reason(error)}") from error


def credible_score(score: float) -> float | None:
    """A cosine similarity clipped to [-1, 1]; None when it cannot be one (non-finite, or out
    of range beyond rounding): a damaged index must not hand such a hit to a client."""
    if not math.isfinite(score) or abs(score) > 1.0 + SCORE_TOLERANCE:
        return None
    return min(1.0, max(-1.0, score))


@dataclass(frozen=True)
class Post:
    key: str
    content_type: str
    caption: str | None


@dataclass(frozen=True)
class StoredVectors:
    """The embeddings table of one model: a matrix (a read-only memory map of a local cache
    file, not a copy in the heap) and a uuid -> row map."""

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
class Found:
    """One hit as the API shows it: its cosine to the query vector (None in keyword mode),
    why it was found, and, from words, its BM25 and fused scores."""

    uuid: str
    caption: str | None
    score: float | None = None
    found_by: str = "picture"  # "picture", "words" or "both"
    keyword_score: float | None = None
    rrf_score: float | None = None


@dataclass(frozen=True)
class Result:
    hit: Found | Hit
    folded: tuple[Found | Hit, ...] = ()  # near-identical hits folded into this one, best first

    @property
    def duplicates(self) -> int:
        return len(self.folded)


@dataclass(frozen=True)
class Page:
    """The hits ``[offset, offset + k)`` of one ranked list, and whether it goes on."""

    results: list[Result]
    more: bool
    num_candidates: int  # the search depth used (0: no vector search)


def collapse_near_duplicates(
    hits: list[Found] | list[Hit], vector_of: Callable[[str], np.ndarray | None], threshold: float
) -> list[Result]:
    """Keep each hit unless its cosine similarity to a better kept hit is above ``threshold``.

    A hit without a stored vector cannot be compared and is kept.
    """
    kept: list[tuple] = []  # hit, vector, folded into it
    for hit in hits:
        vector = vector_of(hit.uuid)
        twin = None if vector is None else next(
            (entry for entry in kept
             if entry[1] is not None and cosine(vector, entry[1]) > threshold), None)
        if twin is None:
            kept.append((hit, vector, []))
        else:
            twin[2].append(hit)
    return [Result(hit, tuple(folded)) for hit, _, folded in kept]


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
    # The version's search depth (VectorIndex.search_depth; the default for versions with none).
    num_candidates: int = DEFAULT_NUM_CANDIDATES
    notes: tuple[str, ...] = ()  # what is degraded, e.g. damaged embeddings parts left out

    # -- queries ----------------------------------------------------------------------

    def embed_image(self, data: bytes, timings: Timings) -> np.ndarray:
        """Decode (ImageRejected on bad input) and embed one uploaded image."""
        started = time.perf_counter()
        image = load_rgb(data, self.settings.max_pixels, fit=self.settings.decode_side)
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
        vector: np.ndarray | None,
        *,
        k: int,
        num_candidates: int | None,
        search_filter: SearchFilter | None,
        collapse: float | None,
        timings: Timings,
        exclude: str | None = None,
        offset: int = 0,
        min_score: float | None = None,
        text: str | None = None,
        mode: str = "semantic",
    ) -> Page:
        """Hits ``offset`` to ``offset + k`` of the ranked list, on any backend.

        ``mode`` "semantic" ranks by ``vector``, "keyword" by BM25 of ``text`` over the
        captions, "hybrid" fuses both rankings with reciprocal rank fusion (``core/fusion.py``)
        of each one's first ``rrf_window`` hits: its list ends there. ``min_score`` drops
        vector hits less similar than it.

        The index is asked for the top ``offset + k + 1`` (the one more tells whether a next
        page exists) and the page is sliced here; the candidates explored are at least that
        many: the request's ``num_candidates``, else the version's own depth (widened for
        filters and collapsing)."""
        started = time.perf_counter()
        fetch = offset + k + 1 + (exclude is not None)  # the query itself is dropped
        cap = max(self.settings.max_candidates, fetch)
        if collapse is not None:  # collapsed twins are dropped too
            fetch = min(max(fetch * 4, fetch + 20), cap)
        window = self.settings.rrf_window
        if mode == "hybrid":
            fetch = min(fetch, window)
        wanted = window if mode == "hybrid" else fetch  # from each ranking
        candidates = max(num_candidates or 0, wanted)
        if num_candidates is None:
            # A filter hides most of the graph from the traversal: let it explore further.
            # Fusion reads its window's hits whole, but their order at its end barely counts.
            wide = 10 if search_filter is not None else 1 if mode == "hybrid" else 2
            candidates = min(max(self.num_candidates, wide * wanted),
                             max(cap, self.num_candidates, wanted))
        try:
            if mode == "keyword":
                candidates = 0
                found = [Found(h.uuid, h.caption, None, "words", h.score) for h in
                         self.index.keyword_search(text or "", fetch, self.version, search_filter)]
            elif mode == "hybrid":
                pictures, words = self.index.search_both(
                    vector, text or "", window, candidates, self.version, search_filter, min_score)
                found = self._fused(vector, self._credible(pictures), words, fetch)
            else:
                found = [Found(h.uuid, h.caption, h.score) for h in self._credible(Ranking.of(
                    self.index.search(vector, fetch, candidates, self.version, search_filter,
                                      min_score)))]
        except Exception as error:  # backend down, or the version gone under a late request
            log.warning("index search failed: %s", type(error).__name__)
            raise BackendUnavailable(f"the index backend failed ({type(error).__name__}): "
                                     "retry shortly") from None
        found = [hit for hit in found if hit.uuid != exclude]
        if collapse is None:
            results = [Result(hit) for hit in found]
        else:
            results = collapse_near_duplicates(found, self.vectors.get, collapse)
        timings.record("search", started)
        return Page(results[offset:offset + k], more=len(results) > offset + k,
                    num_candidates=candidates)

    def _fused(self, vector: np.ndarray | None, pictures: Ranking, words: Ranking,
               limit: int) -> list[Found]:
        """The two rankings fused, best first, the first ``limit``; a hit found by words only
        gets its cosine from its stored vector, so every hit says how close its picture is."""
        fused = rrf([pictures.keys, words.keys], self.settings.rrf_rank_constant,
                    self.settings.rrf_window, limit)
        # A hit's rank in a ranking is its place there, from 1.
        sides = [tuple(None if rank is None else ranking[rank - 1]
                       for rank, ranking in zip(hit.ranks, (pictures, words), strict=True))
                 for hit in fused]
        cosines = self._cosines(vector, [word.uuid for picture, word in sides if picture is None])
        found = []
        for hit, (picture, word) in zip(fused, sides, strict=True):
            either = picture or word
            score = picture.score if picture is not None else cosines.get(either.uuid)
            found.append(Found(either.uuid, either.caption, score, found_by(hit),
                               None if word is None else word.score, hit.score))
        return found

    def _cosines(self, vector: np.ndarray | None, uuids: list[str]) -> dict[str, float | None]:
        """The query's cosine with the stored vectors of ``uuids`` (those that have one)."""
        rows = [(uuid, self.vectors.row[uuid]) for uuid in uuids if uuid in self.vectors.row]
        if vector is None or not rows:
            return {}
        scores = similarities(np.asarray(vector, np.float32).reshape(1, -1),
                              self.vectors.matrix[[row for _, row in rows]])[0]
        return {uuid: credible_score(float(s)) for (uuid, _), s in zip(rows, scores, strict=True)}

    def _credible(self, hits: Ranking) -> Ranking:
        # The common case, checked in C: |score| <= 1 for every hit (NaN fails it).
        if all(map((1.0).__ge__, map(abs, hits.scores))):
            return hits
        kept = []
        for hit in hits:
            score = credible_score(hit.score)
            if score is None:
                log.error("index version %s gave an impossible score (%s): hit dropped; the "
                          "index files may be damaged", self.version, type(hit.score).__name__)
                continue
            kept.append(hit if score == hit.score else hit._replace(score=score))
        return Ranking.of(kept)


def _read_posts(path: str, shown: str) -> dict[str, Post]:
    """``shown`` names the table for clients (its place under IMGSEARCH_HOME)."""
    with loading(f"reading {shown}"):
        found = is_file(path)
    if not found:
        raise ServiceUnavailable(f"no posts table ({shown}): run the pipeline first (make demo)")
    with loading(f"reading {shown}"):
        names = read_schema(path).names
        columns = ["uuid", "key", "content_type"] + (["caption"] if "caption" in names else [])
        table = read_table(path, columns=columns).to_pydict()
    captions = table.get("caption") or [None] * len(table["uuid"])
    return {
        uuid: Post(key, content_type, caption)
        for uuid, key, content_type, caption in zip(
            table["uuid"], table["key"], table["content_type"], captions, strict=True)
    }


def _read_vectors(folder: str, shown: str, model: EmbeddingModel, version: str, cache: str
                  ) -> tuple[StoredVectors, tuple[str, ...]]:
    """The model's stored vectors from the parts whose checksums match, memory-mapped from a
    local cache file named by the version and the parts' checksums (rebuilt when they change;
    the stored vectors of every embedded post, never a query's); the damaged parts are left
    out and named in the notes."""
    where = shown
    with loading(f"reading {where}"):
        parts, damaged = embedding_parts(folder)
        ids, matrix = mapped_vectors(parts, os.path.join(cache, model_slug(model.model_id)),
                                     parts_fingerprint(parts, version, model.model_id))
    notes = tuple(f"embeddings part {where}/{name} left out: {reason}"
                  for name, reason in sorted(damaged.items()))
    for note in notes:
        log.error("%s", note)
    if not ids and damaged:
        raise ServiceUnavailable(f"no usable embeddings for model '{model.model_id}': "
                                 f"{len(damaged)} damaged part(s), first: {notes[0]}; re-run "
                                 "the pipeline to embed them again")
    if not ids:
        raise ServiceUnavailable(
            f"no embeddings for model '{model.model_id}' ({where}): is the live index built "
            "with another embedder? Set IMGSEARCH_EMBEDDER / IMGSEARCH_MODEL as for the "
            "pipeline run that built it.")
    if matrix.shape[1] != model.dim:
        raise ServiceUnavailable(f"stored vectors have dim {matrix.shape[1]}, model "
                                 f"'{model.model_id}' gives {model.dim}")
    return StoredVectors(matrix, {u: i for i, u in enumerate(ids)}), notes


def live_model_id(layout, version: str) -> str | None:
    """The model id the version was built from (its record, ``core/index_plan.py``); None
    when it has no readable record (then the embeddings check below is what remains)."""
    found = read_version_record(layout.index_record(version))
    return None if found is None else found[1].build_key.get("model_id")


def check_same_model(version: str, built_with: str | None, configured: str) -> None:
    """Queries must be embedded by the model the index was built from: vectors of two
    models are not comparable, and the answers would be silently wrong."""
    if built_with is not None and built_with != configured:
        log.error("live index version %s was built with model %r; this API's model is %r",
                  version, built_with, configured)
        built_with, configured = public_model_name(built_with), public_model_name(configured)
        raise ServiceUnavailable(
            f"the live index version {version} holds vectors of model '{built_with}', but this "
            f"API embeds queries with model '{configured}' (IMGSEARCH_EMBEDDER / IMGSEARCH_MODEL): "
            f"set IMGSEARCH_MODEL to '{built_with}', or run the pipeline with '{configured}' so that "
            "a version of its own goes live")


def public_model_name(model_id: str) -> str:
    """A Hub id as it is; a local folder by its last component (no server paths to clients)."""
    if model_id.count("/") == 1 and not model_id.startswith((".", "/", "~")):
        return model_id
    return os.path.basename(model_id.rstrip("/")) or model_id


def load_service(settings: Settings, api: ApiSettings) -> SearchService:
    """Build the backends from the pipeline's settings and load everything once.

    ServiceUnavailable (with a client-safe reason) for anything missing or damaged."""
    with loading("configuration"):
        resources = resources_for(settings)
    index: VectorIndex = resources["vector_index"]
    with loading("reading the live version"):
        version = index.live_version()
    if version is None:
        raise ServiceUnavailable("no live index version: run the pipeline first (make demo)")
    with loading("loading the embedding model"):
        model = resources["embedder"].load()
    layout = resources["home"].layout
    with loading(f"reading the record of index version {version}"):
        built_with = live_model_id(layout, version)
    check_same_model(version, built_with, model.model_id)

    def shown(location: str) -> str:  # a place under IMGSEARCH_HOME, never a server path
        return location.removeprefix(layout.root).lstrip("/")

    posts = _read_posts(layout.posts, shown(layout.posts))
    folder = layout.embeddings(model.model_id)
    vectors, notes = _read_vectors(folder, shown(folder), model, version, api.vector_cache)
    with loading(f"loading index version {version}"):
        documents = index.count(version)  # verifies the version's checksums first
        depth = index.search_depth(version)
    log.info("serving index version %s (%s, %d documents, search depth %d) with model %s",
             version, index.backend, documents, depth, model.model_id)
    return SearchService(model, index, resources["object_store"], version, documents, posts,
                         vectors, api, depth, notes)
