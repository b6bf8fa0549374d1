"""The API's routes: image, text and more-like-this search, images, health."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import anyio
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from ..core.ids import is_valid_uuid
from ..resources.vector_index import SearchFilter
from .models import ERRORS, MAX_CANDIDATES, MAX_K, Health, SearchHit, SearchResponse
from .service import Result, SearchService, Timings
from .upload import image_from_body, read_capped

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


async def search_options(
    k: Annotated[int, Query(ge=1, le=MAX_K, description="Number of hits.")] = 10,
    num_candidates: Annotated[int | None, Query(
        ge=1, le=MAX_CANDIDATES,
        description="Candidates the ANN search explores (>= k; more is slower and more exact)."
    )] = None,
    caption: Annotated[str | None, Query(
        max_length=200, description="Words that must all appear in the caption (filter).")] = None,
    split: Annotated[Literal["train", "test"] | None, Query(description="Only this split.")] = None,
    collapse: Annotated[float | None, Query(
        gt=0.0, le=1.0,
        description="Fold hits whose cosine similarity to a better hit is above this.")] = None,
) -> SearchOptions:
    if num_candidates is not None and num_candidates < k:
        raise HTTPException(422, f"num_candidates ({num_candidates}) must be >= k ({k})")
    words = tuple(caption.split()) if caption else ()
    search_filter = SearchFilter(words, split) if words or split else None
    return SearchOptions(k, num_candidates, search_filter, collapse)


Options = Annotated[SearchOptions, Depends(search_options)]


async def valid_uuid(uuid: Annotated[str, Path(description="Post id (canonical lower-case uuid).")]) -> str:
    if not is_valid_uuid(uuid):
        raise HTTPException(422, "not a canonical lower-case uuid")
    return uuid


PostId = Annotated[str, Depends(valid_uuid)]


def _answer(request: Request, response: Response, service: SearchService, query: str,
            k: int, results: list[Result], timings: Timings) -> SearchResponse:
    response.headers["Server-Timing"] = timings.header()
    base = str(request.base_url)
    hits = [SearchHit(uuid=r.hit.uuid, score=r.hit.score, caption=r.hit.caption,
                      image_url=f"{base}images/{r.hit.uuid}", duplicates=r.duplicates)
            for r in results]
    return SearchResponse(query=query, k=k, model_id=service.model.model_id,
                          index_version=service.version, hits=hits,
                          timings_ms={n: round(ms, 3) for n, ms in timings.stages.items()})


async def _in_worker(request: Request, function):
    """Model and index calls run off the event loop, at most N model calls at once."""
    return await anyio.to_thread.run_sync(function, limiter=request.app.state.limiter)


async def _embed_and_search(request: Request, response: Response, service: SearchService,
                            options: SearchOptions, query: str,
                            embed: Callable[[Timings], np.ndarray]) -> SearchResponse:
    """Embed the query and search, in a worker thread; the vector never leaves it."""
    timings = Timings()

    def run() -> list[Result]:
        return service.search(embed(timings), options.k, options.num_candidates,
                              options.search_filter, options.collapse, timings)

    results = await _in_worker(request, run)
    return _answer(request, response, service, query, options.k, results, timings)


UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string", "format": "binary"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
}}}


@router.post("/search", response_model=SearchResponse, responses=ERRORS, openapi_extra=UPLOAD_BODY,
             summary="Search by image")
async def search_by_image(request: Request, response: Response, service: Service,
                          options: Options) -> SearchResponse:
    """Upload an image (multipart field `image`, or a raw image/* body); get the closest posts.

    The image and its vector stay in memory for this request only.
    """
    body = await read_capped(request.stream(), service.settings.max_upload_bytes,
                             request.headers.get("content-length"))
    data = image_from_body(body, request.headers.get("content-type"))
    return await _embed_and_search(request, response, service, options, "image",
                                   lambda timings: service.embed_image(data, timings))


@router.get("/search", response_model=SearchResponse, responses=ERRORS, summary="Search by text")
async def search_by_text(
    request: Request, response: Response, service: Service, options: Options,
    text: Annotated[str, Query(min_length=1, max_length=500, pattern=r"\S",
                               description="What to look for, in words.")],
) -> SearchResponse:
    """Text-to-image search with the model's text tower (SigLIP); 400 for image-only models."""
    return await _embed_and_search(request, response, service, options, "text",
                                   lambda timings: service.embed_text(text, timings))


@router.get("/images/{uuid}/similar", response_model=SearchResponse, responses=ERRORS,
            summary="More like this")
async def similar(request: Request, response: Response, service: Service, uuid: PostId,
                  options: Options) -> SearchResponse:
    """Posts closest to a stored post, from its stored vector (the post itself left out)."""
    vector = service.vectors.get(uuid)
    if vector is None:
        known = uuid in service.posts
        raise HTTPException(404, "post has no stored vector" if known else "no post with this uuid")
    timings = Timings()
    results = await run_in_threadpool(
        service.search, vector, options.k, options.num_candidates, options.search_filter,
        options.collapse, timings, uuid)
    return _answer(request, response, service, "similar", options.k, results, timings)


@router.get("/images/{uuid}", responses={**ERRORS, 200: {"content": {"image/*": {}}},
                                         307: {"description": "Redirect to the object store"}},
            response_class=Response, summary="The image of a post")
async def image(service: Service, uuid: PostId) -> Response:
    """The image bytes, or a redirect to a signed URL when the object store gives one."""
    post = service.posts.get(uuid)
    if post is None:
        raise HTTPException(404, "no post with this uuid")
    url = await run_in_threadpool(service.store.url, post.key)
    if url:
        return RedirectResponse(url, status_code=307)
    try:
        data = await run_in_threadpool(service.store.get, post.key)
    except (FileNotFoundError, KeyError):
        raise HTTPException(404, "image missing from the object store") from None
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
    except Exception as error:  # the index backend is unreachable: report it, stay up
        live, message = None, f"cannot read the live version: {type(error).__name__}"
    else:
        message = None if live == service.version else "a newer version is live: loading it"
    body = Health(status="ok", index_loaded=True, documents=service.documents,
                  index_version=service.version, live_version=live,
                  model_id=service.model.model_id, backend=service.index.backend,
                  text_search=service.model.supports_text, message=message)
    return JSONResponse(body.model_dump())
