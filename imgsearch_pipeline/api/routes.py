"""The API's routes: image, text and more-like-this search, images, health."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from ..core.ids import UUID_PATTERN
from ..core.images import decode_cost
from ..core.integrity import IntegrityError
from ..core.keywords import highlight_segments, matched_terms
from ..resources.vector_index import SearchFilter
from .auth import require_key, require_key_or_signature
from .models import (
    ERRORS,
    MAX_CANDIDATES,
    MAX_DEPTH,
    MAX_K,
    CaptionSegment,
    FoldedHit,
    Fusion,
    Health,
    Mode,
    SearchHit,
    SearchResponse,
)
from .service import BackendUnavailable, Found, Page, SearchService, Timings, public_model_name
from .upload import MAX_TEXT, read_capped, upload_from_body

# Dependencies are `async def`: FastAPI runs plain `def` ones on the thread pool (a hop each).
router = APIRouter()


class ServiceNotReady(RuntimeError):
    """No index loaded (the reason is in the message); answered with 503."""


async def get_service(request: Request) -> SearchService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        reason = getattr(request.app.state, "load_error", None) or "still starting"
        raise ServiceNotReady(f"search index not loaded: {reason}")
    return service


Service = Annotated[SearchService, Depends(get_service)]


@dataclass(frozen=True)
class SearchOptions:
    k: int
    num_candidates: int | None
    search_filter: SearchFilter | None
    collapse: float | None
    offset: int = 0
    min_score: float | None = None

    @property
    def page_size(self) -> int:
        """k, cut so that the page ends at rank MAX_DEPTH at the deepest."""
        return min(self.k, MAX_DEPTH - self.offset)

    def next_offset(self, page: Page) -> int | None:
        end = self.offset + self.page_size
        return end if page.more and end < MAX_DEPTH else None


async def search_options(
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Number of hits.")] = 10,
    num_candidates: Annotated[int | None, Query(
        ge=1, le=MAX_CANDIDATES,
        description="Candidates the ANN search explores (more is slower and more exact); "
                    "a value below k is raised to k."
    )] = None,
    caption: Annotated[str | None, Query(
        max_length=200, description="Words that must all appear in the caption (filter).")] = None,
    split: Annotated[Literal["train"] | None, Query(
        description="Only this split (the index holds the train posts only).")] = None,
    collapse: Annotated[float | None, Query(
        gt=0.0, le=1.0,
        description="Fold hits whose cosine similarity to a better hit is above this.")] = None,
    offset: Annotated[int, Query(
        ge=0, lt=MAX_DEPTH,
        description=f"Paging: skip this many hits of the ranked list (the next page's offset is "
                    f"`next_offset` of the answer). A page ends at rank {MAX_DEPTH} at the deepest; "
                    "the search explores at least offset + k + 1 candidates.")] = 0,
    min_score: Annotated[float | None, Query(
        ge=-1.0, le=1.0,
        description="Similarity cutoff: pictures less similar to the query (cosine) are not "
                    "returned, so an answer may hold fewer than k hits. Words-only hits of "
                    "hybrid search are kept.")] = None,
) -> SearchOptions:
    words = tuple(caption.split()) if caption else ()
    search_filter = SearchFilter(words, split) if words or split else None
    return SearchOptions(k, num_candidates, search_filter, collapse, offset, min_score)


Options = Annotated[SearchOptions, Depends(search_options)]


PostId = Annotated[str, Path(pattern=UUID_PATTERN, description="Post id (canonical lower-case uuid).")]
# Every endpoint with indexed data needs an API key when keys are configured.
KEY = [Depends(require_key)]


def image_link(request: Request, uuid: str) -> str:
    """A relative link, or one under IMGSEARCH_API_PUBLIC_URL; never built from the Host
    header. Signed when keys are on, so that an <img> tag can fetch it."""
    settings = request.app.state.settings
    base = settings.public_url or request.scope.get("root_path", "")
    link = f"{base}/images/{uuid}"
    return f"{link}?{request.app.state.signer.query(uuid)}" if settings.auth_required else link


@dataclass(frozen=True)
class Ask:
    """What one search asks, as the answer reports it."""

    query: Literal["image", "text", "similar"]
    mode: Mode
    text: str | None = None  # the words, for keyword and hybrid search (and highlighting)
    note: str | None = None  # why the mode is not the one asked for


def _answer(request: Request, response: Response, service: SearchService, ask: Ask,
            options: SearchOptions, page: Page, timings: Timings) -> SearchResponse:
    response.headers["Server-Timing"] = timings.header()

    def fields(hit: Found) -> dict:
        terms = matched_terms(hit.caption, ask.text) if ask.text else ()
        return {"uuid": hit.uuid, "score": hit.score, "caption": hit.caption,
                "image_url": image_link(request, hit.uuid), "found_by": hit.found_by,
                "keyword_score": hit.keyword_score, "rrf_score": hit.rrf_score,
                "matched_terms": list(terms),
                "highlight": [CaptionSegment(text=piece, mark=marked) for piece, marked
                              in highlight_segments(hit.caption, terms)] if terms else []}

    hits = [SearchHit(**fields(r.hit), duplicates=r.duplicates,
                      folded=[FoldedHit(**fields(f)) for f in r.folded])
            for r in page.results]
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe_stages(ask.query, timings.stages)
    settings = service.settings
    fusion = Fusion(rank_constant=settings.rrf_rank_constant, window=settings.rrf_window) \
        if ask.mode == "hybrid" else None
    return SearchResponse(query=ask.query, mode=ask.mode, fusion=fusion,
                          min_score=None if ask.mode == "keyword" else options.min_score,
                          note=ask.note, k=options.k, offset=options.offset,
                          next_offset=options.next_offset(page), model_id=service.model.model_id,
                          index_version=service.version, num_candidates=page.num_candidates,
                          hits=hits,
                          timings_ms={n: round(ms, 3) for n, ms in timings.stages.items()})


async def _embed_and_search(request: Request, response: Response, service: SearchService,
                            options: SearchOptions, ask: Ask,
                            embed: Callable[[Timings], np.ndarray] | None, pixels: int = 0
                            ) -> SearchResponse:
    """Embed the query (not in keyword mode) and search, in a worker thread; the vector
    never leaves it."""
    timings = Timings()

    def run() -> Page:
        return service.search(None if embed is None else embed(timings), k=options.page_size,
                              num_candidates=options.num_candidates,
                              search_filter=options.search_filter, collapse=options.collapse,
                              timings=timings, offset=options.offset,
                              min_score=options.min_score, text=ask.text, mode=ask.mode)

    # Off the event loop, under the bounded queue: beyond it, 503 + Retry-After at once.
    page = await request.app.state.admission.run(run, pixels)
    return _answer(request, response, service, ask, options, page, timings)


UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary"},
                       "text": {"type": "string", "maxLength": MAX_TEXT,
                                "description": "Caption words searched with the picture "
                                               "(hybrid search), as the `text` parameter."}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
}}}

MODE_HELP = ("semantic: pictures close to the words (the model's text tower); keyword: BM25 "
             "over the captions; hybrid: both rankings fused by reciprocal rank fusion.")


Text = Annotated[str | None, Query(
    max_length=MAX_TEXT,
    description="Caption words to search with the picture: the picture's nearest posts and the "
                "captions' BM25 matches fused (hybrid). Or a multipart field `text`.")]


@router.post("/search", response_model=SearchResponse, responses=ERRORS, openapi_extra=UPLOAD_BODY,
             summary="Search by image", dependencies=KEY)
async def search_by_image(request: Request, response: Response, service: Service,
                          options: Options, text: Text = None) -> SearchResponse:
    """Upload an image (multipart field `image`, or a raw image/* body); get the closest posts.
    With `text`, the posts whose captions match the words are fused in (hybrid).

    The image and its vector stay in memory for this request only.
    """
    body = await read_capped(request.stream(), service.settings.max_upload_bytes,
                             request.headers.get("content-length"))
    upload = upload_from_body(body, request.headers.get("content-type"))
    words = text if text and text.strip() else upload.text
    pixels = decode_cost(upload.image, service.settings.decode_side)  # header only: picks the lane
    ask = Ask("image", "hybrid", words) if words else Ask("image", "semantic")
    return await _embed_and_search(request, response, service, options, ask,
                                   lambda timings: service.embed_image(upload.image, timings), pixels)


@router.get("/search", response_model=SearchResponse, responses=ERRORS, summary="Search by text",
            dependencies=KEY)
async def search_by_text(
    request: Request, response: Response, service: Service, options: Options,
    text: Annotated[str, Query(min_length=1, max_length=MAX_TEXT, pattern=r"\S",
                               description="What to look for, in words.")],
    mode: Annotated[Mode, Query(description=MODE_HELP)] = "hybrid",
) -> SearchResponse:
    """Posts for words: pictures that match them (semantic: the model's text tower), captions
    that hold them (keyword: BM25), or both fused (hybrid, the default). Where the model has no
    text tower, the words are matched against captions only, and the answer's `note` says so."""
    ask = Ask("text", mode, text)
    if mode != "keyword" and not service.model.supports_text:
        ask = Ask("text", "keyword", text, note=(
            f"the index's model ({public_model_name(service.model.model_id)}) has no text "
            f"tower: the words were matched against captions only (keyword search)"))
    embed = None if ask.mode == "keyword" else (lambda timings: service.embed_text(text, timings))
    return await _embed_and_search(request, response, service, options, ask, embed)


@router.get("/images/{uuid}/similar", response_model=SearchResponse, responses=ERRORS,
            summary="More like this", dependencies=KEY)
async def similar(request: Request, response: Response, service: Service, uuid: PostId,
                  options: Options) -> SearchResponse:
    """Posts closest to a stored post, from its stored vector (the post itself left out)."""
    vector = service.vectors.get(uuid)
    if vector is None:
        known = uuid in service.posts
        raise HTTPException(404, "post has no stored vector" if known else "no post with this uuid")
    timings = Timings()
    page = await run_in_threadpool(
        service.search, vector, k=options.page_size, num_candidates=options.num_candidates,
        search_filter=options.search_filter, collapse=options.collapse, timings=timings,
        exclude=uuid, offset=options.offset, min_score=options.min_score)
    return _answer(request, response, service, Ask("similar", "semantic"), options, page, timings)


@router.get("/images/{uuid}", responses={**ERRORS, 200: {"content": {"image/*": {}}},
                                         307: {"description": "Redirect to the object store"}},
            response_class=Response, summary="The image of a post",
            dependencies=[Depends(require_key_or_signature)])
async def image(service: Service, uuid: PostId) -> Response:
    """The image bytes, or a redirect to a signed URL when the object store gives one."""
    post = service.posts.get(uuid)
    if post is None:
        raise HTTPException(404, "no post with this uuid")
    try:
        url = await run_in_threadpool(service.store.url, post.key)
        if url:
            return RedirectResponse(url, status_code=307)
        data = await run_in_threadpool(service.store.get, post.key)
    except (FileNotFoundError, KeyError):
        raise HTTPException(404, "image missing from the object store") from None
    except Exception as error:  # the object store is unreachable: say so, stay up
        raise BackendUnavailable(f"the object store failed ({type(error).__name__}): "
                                 "retry shortly") from None
    # The uuid is derived from the bytes, so the answer never changes.
    return Response(data, media_type=post.content_type,
                    headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/health", response_model=Health, responses={503: {"model": Health}}, summary="Health")
async def health(request: Request) -> JSONResponse:
    """Whether an index is loaded, and which: version, documents, model, backend."""
    service: SearchService | None = getattr(request.app.state, "service", None)
    if service is None:
        body = Health(status="unavailable", index_loaded=False,
                      message=getattr(request.app.state, "load_error", None) or "starting")
        return JSONResponse(body.model_dump(), status_code=503)
    try:
        live = await run_in_threadpool(service.index.live_version)
    except IntegrityError as error:  # a damaged LIVE pointer: the served version stays
        live, message = None, f"live pointer unusable ({error}); still serving {service.version}"
    except Exception as error:  # the index backend is unreachable: report it, stay up
        live, message = None, f"cannot read the live version: {type(error).__name__}"
    else:
        # The follower's own account when a newer version failed (why, when it retries).
        problem = getattr(request.app.state, "load_error", None)
        message = None if live == service.version else problem or f"version {live} is live: loading it"
    message = "; ".join(m for m in (message, *service.notes) if m) or None
    body = Health(status="ok", index_loaded=True, documents=service.documents,
                  index_version=service.version, live_version=live,
                  num_candidates=service.num_candidates,
                  model_id=service.model.model_id, backend=service.index.backend,
                  text_search=service.model.supports_text, message=message)
    return JSONResponse(body.model_dump())
