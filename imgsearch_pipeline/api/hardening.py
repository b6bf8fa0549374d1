"""What every answer carries and what no answer leaks.

- security headers: ``nosniff``, a Content-Security-Policy the page works under (its own
  scripts and styles only; images from anywhere, since the object store may redirect them),
  ``frame-ancestors 'none'``, no referrer;
- CORS: off unless IMGSEARCH_API_CORS_ORIGINS lists origins (preflights from other origins
  get 400, never 405);
- an unexpected error becomes a JSON 500 whose log line holds the route and the error type:
  never a traceback, a request body or a query string (they may hold a user's query);
- the OpenAPI document states what this server enforces (keys only when configured, text
  search only with a text tower).
"""

import copy
import logging

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import KEY_HEADER
from .settings import ApiSettings

log = logging.getLogger(__name__)

# For the page and /docs alike: both load only their own scripts and styles (Swagger UI from
# the installed package, started by an external script).
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: "
            "http: https:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")


class Hardened:
    """Security headers on every answer, and a JSON 500 for an unexpected error, logged by
    route and error type only."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = PAGE_CSP
        started = False

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in ((b"x-content-type-options", b"nosniff"),
                                    (b"content-security-policy", csp.encode()),
                                    (b"x-frame-options", b"DENY"),
                                    (b"referrer-policy", b"no-referrer")):
                    if name not in present:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except Exception as error:
            route = getattr(scope.get("route"), "path", "(no route)")
            log.error("internal error on %s %s: %s", scope.get("method"), route, type(error).__name__)
            if not started:
                await JSONResponse({"message": "internal error"}, status_code=500)(
                    scope, receive, with_headers)


def add_hardening(app: FastAPI, settings: ApiSettings) -> None:
    # Added innermost first: the hardening wraps CORS (whose answers get the headers too).
    app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                       allow_methods=["GET", "POST"], allow_headers=[KEY_HEADER, "Content-Type"],
                       expose_headers=["Server-Timing", "Retry-After"], max_age=600)
    app.add_middleware(Hardened)


def truthful_openapi(app: FastAPI) -> dict:
    """The schema of this server as configured: API keys declared only when required, the
    fusion's settings stated in the text search's ``mode``, and a note there when the served
    model has no text tower (every mode is then keyword search)."""
    if app.openapi_schema is None:
        app.openapi_schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                                         routes=app.routes)
    schema = copy.deepcopy(app.openapi_schema)
    settings: ApiSettings = app.state.settings
    service = getattr(app.state, "service", None)
    for path, operations in list(schema["paths"].items()):
        for method, operation in list(operations.items()):
            if not settings.auth_required:
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
            if (path, method) == ("/search", "get"):
                _describe_modes(operation, settings, service)
    if not settings.auth_required:
        schema.get("components", {}).pop("securitySchemes", None)
    return schema


def _describe_modes(operation: dict, settings: ApiSettings, service) -> None:
    """The ``mode`` parameter's description, with this server's fusion settings."""
    for parameter in operation.get("parameters", []):
        if parameter.get("name") != "mode":
            continue
        schema = parameter.setdefault("schema", {})
        schema["x-rrf"] = {"rank_constant": settings.rrf_rank_constant,
                           "window": settings.rrf_window}
        text = (f"{parameter.get('description', '')} Fusion: rank constant "
                f"{settings.rrf_rank_constant} (IMGSEARCH_API_RRF_RANK_CONSTANT), the first "
                f"{settings.rrf_window} hits of each ranking (IMGSEARCH_API_RRF_WINDOW); a hybrid "
                f"list ends there.")
        if service is not None and not service.model.supports_text:
            text += (" The served model has no text tower: every mode is keyword search "
                     "(the answer's `note` says so).")
        parameter["description"] = text
