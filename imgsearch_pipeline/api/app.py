"""The search API and its web page: ``uvicorn imgsearch_pipeline.api.app:app``.

The backends come from the same environment variables as the pipeline
(IMGSEARCH_PROFILE, IMGSEARCH_EMBEDDER, IMGSEARCH_MODEL, IMGSEARCH_HOME), so the API
serves whatever index the pipeline built and published.
"""

import contextlib
import ctypes
import logging
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.images import ImageRejected
from ..resources.embedders import TextNotSupportedError
from ..settings import Settings
from .admission import Lanes, Overloaded
from .auth import KEY_HEADER, LinkSigner, Unauthorized
from .hardening import add_hardening, truthful_openapi
from .metrics import ApiMetrics, IndexState, LaneState, MetricsMiddleware
from .routes import ServiceNotReady, router
from .service import BackendUnavailable, load_service, public_reason
from .settings import ApiSettings, check_access_rules
from .upload import BadUpload, UploadTooLarge

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
# Swagger UI as an installed package ships it: /docs needs no network. (ReDoc is not served:
# it styles itself with inline <style> elements, which a strict CSP refuses.)
DOCS_ASSETS = ("fastapi_offline", "static")


def _error(status: int, message: str, detail=None, headers=None) -> JSONResponse:
    body = {"message": message} if detail is None else {"message": message, "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(error: RequestValidationError) -> tuple[str, list[dict]]:
    # Only where and what: the offending input is left out of the answer and of any log.
    detail = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""),
               "type": e.get("type", "")} for e in error.errors()]
    text = "; ".join(f"{'.'.join(d['loc'][1:]) or d['loc'][0]}: {d['msg']}" for d in detail)
    return f"invalid request: {text}", detail


def add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON with a ``message``; client input never gives a 500."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return _error(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        message, detail = _validation_message(error)
        return _error(422, message, detail)

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, error: UploadTooLarge):
        return _error(413, str(error))

    @app.exception_handler(BadUpload)
    async def bad_upload(request: Request, error: BadUpload):
        return _error(400, str(error))

    @app.exception_handler(ImageRejected)
    async def rejected(request: Request, error: ImageRejected):
        return _error(422, f"image rejected: {error.reason}")

    @app.exception_handler(TextNotSupportedError)
    async def no_text(request: Request, error: TextNotSupportedError):
        return _error(400, f"text search is not available: {error}. Serve an index built with "
                           "IMGSEARCH_EMBEDDER=siglip for text-to-image search.")

    @app.exception_handler(ServiceNotReady)
    async def not_ready(request: Request, error: ServiceNotReady):
        return _error(503, str(error))

    @app.exception_handler(BackendUnavailable)
    async def backend_down(request: Request, error: BackendUnavailable):
        return _error(503, str(error), headers={"Retry-After": "5"})

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, error: Overloaded):
        return _error(503, str(error), headers={"Retry-After": str(error.retry_after_s)})

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, error: Unauthorized):
        return _error(401, str(error), headers={"WWW-Authenticate": f'ApiKey header="{KEY_HEADER}"'})


def _load_into(app: FastAPI, full: Settings, settings: ApiSettings) -> str | None:
    """Load the live version's service and swap it in; on failure keep what is served and
    return the reason (client-safe: no server paths)."""
    try:
        service = load_service(full, settings)
    except Exception as error:  # whatever is missing or damaged: stay up and say why
        reason = public_reason(error)
        log.error("search index not loaded: %s", reason)
        return reason
    old = app.state.service
    app.state.service = service
    app.state.load_error = None
    if old is not None and old.version != service.version:
        # Released a little later: a request that started on the old version finishes first.
        app.state.retired.append((time.monotonic(), old))
    return None


def _release_retired(app: FastAPI, grace_s: float) -> None:
    """Free the memory of versions no longer served (flat memory across swaps)."""
    now = time.monotonic()
    keep = []
    for retired_at, old in app.state.retired:
        if now - retired_at < grace_s:
            keep.append((retired_at, old))
        elif app.state.service is None or old.version != app.state.service.version:
            old.index.release(old.version)
    released = len(app.state.retired) - len(keep)
    app.state.retired = keep
    if released:
        _trim_heap()


def _trim_heap() -> None:
    """Hand the freed heap pages back to the system (glibc keeps them otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def follow_live_index(app: FastAPI, full: Settings,
                            settings: ApiSettings) -> None:
    """Serve each newly published version: poll the live pointer (or alias) and swap in a
    service loaded off the request path; requests keep the old one until it is ready.

    A load that fails keeps the served version and is retried with a growing delay (up to
    ``retry_max_s``), at once when another version becomes live; /health says which
    version failed, why, and when the next try is."""
    failures, next_try, failed_live = 0, 0.0, None
    while True:
        await anyio.sleep(settings.live_check_s)
        _release_retired(app, max(2.0, 2 * settings.live_check_s))
        service = app.state.service
        live = None
        try:
            if service is not None:
                live = await anyio.to_thread.run_sync(service.index.live_version)
                if live is None or live == service.version:
                    failures, app.state.load_error = 0, None
                    continue
                if live != failed_live:
                    failures, next_try = 0, 0.0  # another version: try it at once
                    log.info("index version %s is live (serving %s): loading it", live,
                             service.version)
        except Exception as error:  # the pointer or the backend: /health reports it
            log.warning("cannot check the live index version: %s", type(error).__name__)
            continue
        if time.monotonic() < next_try:
            continue
        reason = await anyio.to_thread.run_sync(_load_into, app, full, settings)
        if reason is None:
            failures, failed_live = 0, None
            continue
        failures += 1
        failed_live = live
        delay = min(settings.live_check_s * 2 ** failures, settings.retry_max_s)
        next_try = time.monotonic() + delay
        serving = app.state.service
        retry = f"attempt {failures} failed, next in {delay:.0f} s"
        app.state.load_error = (
            f"{reason} ({retry})" if serving is None
            else f"newer version {live} not served: {reason}; still serving {serving.version} ({retry})")


def create_app(environ: Mapping[str, str] | None = None,
               settings: ApiSettings | None = None) -> FastAPI:
    """The app; the model and index load once at start. The settings are read here, once,
    from ``environ`` (default: the process's environment); ``settings`` overrides the API's."""
    full = Settings.read(environ)
    chosen = settings or full.api

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        check_access_rules(full, chosen)  # refuses to start, with the reason
        if chosen.auth_required and chosen.link_secret is None:
            # Works across workers (same keys, same secret), but a key rotation ends every link.
            log.warning("image links are signed with a secret derived from the API keys: changing "
                        "the keys ends the links given before; set IMGSEARCH_API_LINK_SECRET to "
                        "keep them")
        app.state.admission = Lanes(chosen.inference_threads, chosen.queue, chosen.heavy_pixels)
        app.state.service = None
        app.state.load_error = None
        app.state.retired = []
        app.state.load_error = await anyio.to_thread.run_sync(_load_into, app, full, chosen)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follow_live_index, app, full, chosen)
            yield
            tasks.cancel_scope.cancel()

    app = FastAPI(
        title="imgsearch",
        summary="Image similarity search over the pipeline's live index.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own pages load Swagger UI / ReDoc from a CDN: see add_pages
        redoc_url=None,
    )
    app.state.settings = chosen
    app.state.signer = LinkSigner.from_settings(chosen)  # the same secret in every worker
    add_error_handlers(app)
    app.include_router(router)
    add_hardening(app, chosen)
    app.openapi = lambda: truthful_openapi(app)
    add_pages(app)
    add_metrics(app)  # outermost: it sees every answer, those of the hardening included
    return app


def add_pages(app: FastAPI) -> None:
    """The web page, the API reference (/docs) and the favicon: static files only,
    no inline script or style, so they work offline and under a strict CSP."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs/assets", StaticFiles(packages=[DOCS_ASSETS]), name="docs-assets")

    def page(name: str):
        async def serve() -> FileResponse:
            return FileResponse(STATIC / name)
        return serve

    app.get("/", include_in_schema=False)(page("index.html"))
    app.get("/docs", include_in_schema=False)(page("docs.html"))
    app.get("/favicon.ico", include_in_schema=False)(page("favicon.ico"))


def _index_state(app: FastAPI) -> IndexState | None:
    service = getattr(app.state, "service", None)
    if service is None:
        return None
    return IndexState(service.version, service.model.model_id, service.index.backend,
                      service.documents)


def _queue_state(app: FastAPI) -> dict[str, LaneState]:
    lanes = getattr(app.state, "admission", None)
    if lanes is None:
        return {}
    states = {}
    for name, lane in (("ordinary", lanes.ordinary), ("heavy", lanes.heavy)):
        stats = lane.limiter.statistics()
        states[name] = LaneState(stats.borrowed_tokens, stats.tasks_waiting,
                                 int(stats.total_tokens), lane.limit)
    return states


def add_metrics(app: FastAPI) -> None:
    """``GET /metrics`` (Prometheus) and the middleware that counts and times requests."""
    metrics = ApiMetrics(lambda: _index_state(app), lambda: _queue_state(app))
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics, router=app.router)

    @app.get("/metrics", summary="Metrics", response_class=Response, responses={200: {
        "description": "Prometheus text format (OpenMetrics when the Accept header asks).",
        "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics_page(request: Request) -> Response:
        """Requests by route and status, search stage times, the served index, the queue."""
        body, content_type = metrics.exposition(request.headers.get("accept"))
        return Response(body, media_type=content_type)


app = create_app()
