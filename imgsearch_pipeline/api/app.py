"""The search API and its web page: ``uvicorn imgsearch_pipeline.api.app:app``.

The backends come from the same environment variables as the pipeline
(IMGSEARCH_PROFILE, IMGSEARCH_EMBEDDER, IMGSEARCH_MODEL, IMGSEARCH_HOME), so the API
serves whatever index the pipeline built and published.
"""

import logging
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.images import ImageRejected
from ..resources.embedders import ModelUnavailableError, TextNotSupportedError
from ..resources.environment import ConfigurationError
from .routes import ServiceNotReady, router
from .service import ServiceUnavailable, load_service
from .settings import ApiSettings
from .upload import BadUpload, UploadTooLarge

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


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

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception):
        log.error("internal error on %s %s: %s", request.method, request.url.path,
                  type(error).__name__)
        return _error(500, "internal error")


LOAD_ERRORS = (ServiceUnavailable, ModelUnavailableError, ConfigurationError, LookupError)


def _load_into(app: FastAPI, environ: Mapping[str, str] | None, settings: ApiSettings) -> None:
    """Load the live version's service; on failure keep what is served and say why."""
    try:
        app.state.service = load_service(environ, settings)
        app.state.load_error = None
    except LOAD_ERRORS as error:
        # Stay up and say why on /health and every search (503) rather than crash-loop.
        app.state.load_error = str(error)
        log.error("search index not loaded: %s", error)


async def follow_live_index(app: FastAPI, environ: Mapping[str, str] | None,
                            settings: ApiSettings) -> None:
    """Serve each newly published version: poll the live pointer (or alias) and swap in a
    service loaded off the request path; requests keep the old one until it is ready."""
    while True:
        await anyio.sleep(settings.live_check_s)
        service = app.state.service
        try:
            if service is not None:
                live = await anyio.to_thread.run_sync(service.index.live_version)
                if live is None or live == service.version:
                    continue
                log.info("index version %s is live (serving %s): loading it", live, service.version)
            await anyio.to_thread.run_sync(_load_into, app, environ, settings)
        except Exception as error:  # backend unreachable for a moment: keep serving, retry
            log.warning("cannot check the live index version: %s", type(error).__name__)


def create_app(environ: Mapping[str, str] | None = None,
               settings: ApiSettings | None = None) -> FastAPI:
    """The app; the model and index load once at start (``environ`` defaults to os.environ)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        chosen = settings or ApiSettings.from_env(environ)
        app.state.limiter = anyio.CapacityLimiter(chosen.inference_threads)
        app.state.service = None
        app.state.load_error = None
        await anyio.to_thread.run_sync(_load_into, app, environ, chosen)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follow_live_index, app, environ, chosen)
            yield
            tasks.cancel_scope.cancel()

    app = FastAPI(
        title="imgsearch",
        summary="Image similarity search over the pipeline's live index.",
        version="0.1.0",
        lifespan=lifespan,
    )
    add_error_handlers(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


app = create_app()
