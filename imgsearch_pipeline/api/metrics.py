"""Prometheus metrics of the search API (``GET /metrics``), through prometheus-client.

Each app has its own registry, so several apps in one process (tests) never share series.
Requests are labelled by route template (``/images/{uuid}/similar``, never the uuid) and
status; anything that matched no route is ``route="unmatched"``, so label values stay few.
What the app holds (the served index, the inference queue) is read at scrape time.
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Seconds; a search is about a millisecond, an embedding milliseconds to a second.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class IndexState:
    """What the app serves now, for the index gauges (None: no index loaded)."""

    version: str
    model_id: str
    backend: str
    documents: int


@dataclass(frozen=True)
class LaneState:
    """One lane of the decode + embed queue: calls running, waiting for a worker thread,
    threads, and the calls admitted at most (beyond it: 503)."""

    running: int
    waiting: int
    capacity: int
    limit: int


class _StateCollector:
    """Gauges read when Prometheus scrapes, from callables the app provides."""

    def __init__(self, index: Callable[[], IndexState | None],
                 queue: Callable[[], dict[str, LaneState]]):
        self.index = index
        self.queue = queue

    def collect(self) -> Iterable[Metric]:
        state = self.index()
        loaded = GaugeMetricFamily("imgsearch_index_loaded", "1 when an index version is served.")
        loaded.add_metric([], 0 if state is None else 1)
        yield loaded
        info = GaugeMetricFamily("imgsearch_index_info", "The served index version (value 1).",
                                 labels=["version", "model", "backend"])
        documents = GaugeMetricFamily("imgsearch_index_documents",
                                      "Documents in the served index version.")
        if state is not None:
            info.add_metric([state.version, state.model_id, state.backend], 1)
            documents.add_metric([], state.documents)
        yield info
        yield documents
        lanes = self.queue()
        for name, text in (
                ("running", "Queries being decoded and embedded now, by lane."),
                ("waiting", "Queries queued for a worker thread (the queue depth), by lane."),
                ("capacity", "Worker threads, by lane."),
                ("limit", "Queries admitted at most (running + waiting), by lane; beyond: 503.")):
            gauge = GaugeMetricFamily(f"imgsearch_inference_{name}", text, labels=["lane"])
            for lane, state in lanes.items():
                gauge.add_metric([lane], getattr(state, name))
            yield gauge


class ApiMetrics:
    """The registry and the instruments of one app."""

    def __init__(self, index: Callable[[], IndexState | None],
                 queue: Callable[[], dict[str, LaneState]]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "imgsearch_http_requests", "HTTP requests answered, by route template and status.",
            ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram(
            "imgsearch_http_request_duration_seconds",
            "Time to answer a request, by route template and status.",
            ["method", "route", "status"], buckets=REQUEST_BUCKETS, registry=self.registry)
        self.stages = Histogram(
            "imgsearch_search_stage_duration_seconds",
            "Server time per search stage (decode, embed, search), by query kind.",
            ["query", "stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.registry.register(_StateCollector(index, queue))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_stages(self, query: str, stages_ms: dict[str, float]) -> None:
        for stage, ms in stages_ms.items():
            self.stages.labels(query, stage).observe(ms / 1000.0)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The text format (or OpenMetrics when the scraper asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def mount_of(app: ASGIApp, scope: Scope) -> str | None:
    """The path of the mount (static files) that ``scope`` falls under, before routing."""
    for route in getattr(app, "routes", ()):
        if isinstance(route, Mount) and route.matches(scope)[0] == Match.FULL:
            return route.path
    return None


def route_template(scope: Scope, mount: str | None) -> str:
    """The path template of the route that answered (FastAPI leaves it in the scope), else
    the mount, else "unmatched"."""
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or mount or "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status (pure ASGI,
    so streamed bodies are not buffered)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, router: ASGIApp):
        self.app = app
        self.metrics = metrics
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        mount = mount_of(self.router, scope)
        status = 500  # an exception that escapes the app is answered with a 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe_request(scope["method"], route_template(scope, mount), status,
                                         time.perf_counter() - started)
