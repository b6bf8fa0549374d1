"""GET /metrics after real searches, read back with prometheus-client's own parser."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from imgsearch_pipeline.api.app import create_app
from imgsearch_pipeline.api.service import SearchService
from imgsearch_pipeline.api.settings import ApiSettings
from imgsearch_pipeline.resources.embedders import ColorTextureModel
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex

from .test_api import Demo, build_demo, demo_env, upload


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sample_dataset) -> Demo:
    return Demo(build_demo(tmp_path_factory, sample_dataset))


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_after_a_few_searches(demo):
    queries = demo.held_out_with_twins()[:3]
    post = sorted(demo.indexed)[0]
    with TestClient(create_app(demo_env(demo.home))) as client:
        for query in queries:
            assert upload(client, demo.image(query), "?k=5").status_code == 200
        for _ in range(2):
            assert client.get(f"/images/{post}/similar").status_code == 200
        missing = "00000000-0000-5000-8000-000000000000"
        assert client.get(f"/images/{missing}/similar").status_code == 404
        assert client.get("/no/such/page").status_code == 404
        assert client.get("/static/app.js").status_code == 200
        samples = scrape(client)

    def requests(method, route, status):
        return value(samples, "imgsearch_http_requests_total", method=method, route=route,
                     status=status)

    assert requests("POST", "/search", "200") == len(queries)
    assert requests("GET", "/images/{uuid}/similar", "200") == 2
    assert requests("GET", "/images/{uuid}/similar", "404") == 1  # the template, never the uuid
    assert requests("GET", "unmatched", "404") == 1
    assert requests("GET", "/static", "200") == 1  # static files by their mount
    assert not any(post in str(labels) for labels in samples["imgsearch_http_requests_total"])
    assert value(samples, "imgsearch_http_request_duration_seconds_count", method="POST",
                 route="/search", status="200") == len(queries)
    assert value(samples, "imgsearch_http_request_duration_seconds_sum", method="POST",
                 route="/search", status="200") > 0

    # Each stage of each search is timed: decode and embed for uploads only.
    for stage in ("decode", "embed", "search"):
        assert value(samples, "imgsearch_search_stage_duration_seconds_count",
                     query="image", stage=stage) == len(queries)
    assert value(samples, "imgsearch_search_stage_duration_seconds_count",
                 query="similar", stage="search") == 2
    assert value(samples, "imgsearch_search_stage_duration_seconds_count",
                 query="similar", stage="embed") == 0

    live = FaissHnswIndex(root=str(demo.home / "index")).live_version()
    assert value(samples, "imgsearch_index_loaded") == 1
    assert value(samples, "imgsearch_index_documents") == len(demo.indexed)
    assert value(samples, "imgsearch_index_info", version=live, model=ColorTextureModel.model_id,
                 backend="faiss-hnsw") == 1
    settings = ApiSettings()
    assert value(samples, "imgsearch_inference_capacity", lane="ordinary") == settings.inference_threads
    assert value(samples, "imgsearch_inference_limit", lane="ordinary") == (
        settings.inference_threads + settings.queue)
    for lane in ("ordinary", "heavy"):
        assert value(samples, "imgsearch_inference_running", lane=lane) == 0
        assert value(samples, "imgsearch_inference_waiting", lane=lane) == 0


def test_queue_depth_counts_searches_waiting_for_the_model(demo, monkeypatch):
    """One inference thread, a model call held open: the others wait, and /metrics says so."""
    release, entered = threading.Event(), threading.Event()
    embed = SearchService.embed_image

    def held_embed(self, data, timings):
        entered.set()
        assert release.wait(30)
        return embed(self, data, timings)

    monkeypatch.setattr(SearchService, "embed_image", held_embed)
    data = demo.image(sorted(demo.indexed)[0])
    settings = ApiSettings(inference_threads=1)
    with TestClient(create_app(demo_env(demo.home), settings)) as client, \
            ThreadPoolExecutor(max_workers=4) as pool:
        try:
            answers = [pool.submit(upload, client, data) for _ in range(4)]
            assert entered.wait(30)
            for _ in range(200):  # until the three others queue behind the held one
                samples = scrape(client)
                if value(samples, "imgsearch_inference_waiting", lane="ordinary") == 3:
                    break
                threading.Event().wait(0.05)
            assert value(samples, "imgsearch_inference_running", lane="ordinary") == 1
            assert value(samples, "imgsearch_inference_waiting", lane="ordinary") == 3
            assert value(samples, "imgsearch_inference_capacity", lane="ordinary") == 1
        finally:
            release.set()
        assert [a.result().status_code for a in answers] == [200] * 4
        after = scrape(client)
    assert value(after, "imgsearch_inference_waiting", lane="ordinary") == 0
    assert value(after, "imgsearch_inference_running", lane="ordinary") == 0


def test_no_index_is_reported(tmp_path):
    with TestClient(create_app(demo_env(tmp_path / "empty"))) as client:
        samples = scrape(client)
    assert value(samples, "imgsearch_index_loaded") == 0
    assert "imgsearch_index_documents" not in samples


def test_openmetrics_on_request(demo):
    with TestClient(create_app(demo_env(demo.home))) as client:
        response = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
