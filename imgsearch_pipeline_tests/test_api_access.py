"""Who gets in (API keys, signed image links) and what every answer carries (headers, CORS,
links, errors, logs)."""

import logging

import pytest
from fastapi.testclient import TestClient

from imgsearch_pipeline.api.app import create_app
from imgsearch_pipeline.api.settings import ApiSettings
from imgsearch_pipeline.settings import ConfigurationError, Settings

from .test_api import Demo, build_demo, demo_env

KEYS = "first-key-0123456789,second-key-abcdef"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sample_dataset) -> Demo:
    return Demo(build_demo(tmp_path_factory, sample_dataset))


@pytest.fixture(scope="module")
def locked(demo):
    with TestClient(create_app({**demo_env(demo.home), "IMGSEARCH_API_KEYS": KEYS})) as client:
        yield client


def _requests(demo: Demo) -> dict[str, tuple]:
    uuid = sorted(demo.indexed)[0]
    image = demo.image(uuid)
    return {
        "POST /search": ("POST", "/search", {"files": {"image": ("q.jpg", image, "image/jpeg")}}),
        "GET /search": ("GET", "/search?text=red", {}),
        "GET /images/{uuid}/similar": ("GET", f"/images/{uuid}/similar", {}),
        "GET /images/{uuid}": ("GET", f"/images/{uuid}", {}),
    }


ENDPOINTS = ["POST /search", "GET /search", "GET /images/{uuid}/similar", "GET /images/{uuid}"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("key, allowed", [(None, False), ("wrong-key", False),
                                          ("first-key-0123456789", True),
                                          ("second-key-abcdef", True),
                                          ("first-key-012345678", False)])
def test_every_data_endpoint_needs_a_valid_key(locked, demo, endpoint, key, allowed):
    method, url, extra = _requests(demo)[endpoint]
    headers = {} if key is None else {"X-API-Key": key}
    response = locked.request(method, url, headers=headers, **extra)
    if allowed:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 401
        assert "WWW-Authenticate" in response.headers
        assert ("required" if key is None else "invalid") in response.json()["message"]


@pytest.mark.parametrize("path", ["/health", "/", "/static/app.js", "/static/auth.js"])
def test_health_and_the_page_need_no_key(locked, path):
    assert locked.get(path).status_code == 200


def test_search_answers_give_signed_image_links_for_img_tags(locked, demo):
    uuid = sorted(demo.indexed)[0]
    hits = locked.get(f"/images/{uuid}/similar?k=3",
                      headers={"X-API-Key": "second-key-abcdef"}).json()["hits"]
    link = hits[0]["image_url"]
    assert link.startswith(f"/images/{hits[0]['uuid']}?exp=") and "&sig=" in link
    image = locked.get(link)  # no key: the signature grants this one image
    assert image.status_code == 200 and image.content == demo.image(hits[0]["uuid"])
    other = sorted(demo.indexed)[1] if hits[0]["uuid"] != sorted(demo.indexed)[1] else sorted(demo.indexed)[2]
    query = link.split("?", 1)[1]
    assert locked.get(f"/images/{other}?{query}").status_code == 401  # not for another image
    tampered = query[:-1] + ("0" if query[-1] != "0" else "1")
    assert locked.get(f"/images/{hits[0]['uuid']}?{tampered}").status_code == 401


def test_production_profile_refuses_to_start_without_keys(demo):
    env = {**demo_env(demo.home), "IMGSEARCH_PROFILE": "production"}
    with pytest.raises(ConfigurationError, match="IMGSEARCH_API_KEYS"), TestClient(create_app(env)):
        pass


def test_production_profile_starts_when_declared_public(demo, monkeypatch):
    settings = _api({"IMGSEARCH_PROFILE": "production", "IMGSEARCH_API_PUBLIC": "true"})
    assert settings.public and not settings.auth_required
    settings = _api({"IMGSEARCH_API_KEYS": " a-key , "})
    assert settings.auth_required and "a-key" not in repr(settings)  # only digests are kept


# -- hardening ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_client(demo):
    with TestClient(create_app(demo_env(demo.home))) as client:
        yield client


def test_links_never_come_from_the_host_header(open_client, demo):
    uuid = sorted(demo.indexed)[0]
    hits = open_client.get(f"/images/{uuid}/similar", headers={"Host": "evil.example"}).json()["hits"]
    assert all(h["image_url"] == f"/images/{h['uuid']}" for h in hits)


def test_links_use_the_configured_public_url(demo):
    env = {**demo_env(demo.home), "IMGSEARCH_API_PUBLIC_URL": "https://search.example.org/"}
    with TestClient(create_app(env)) as client:
        uuid = sorted(demo.indexed)[0]
        hits = client.get(f"/images/{uuid}/similar", headers={"Host": "evil.example"}).json()["hits"]
    assert hits and all(h["image_url"] == f"https://search.example.org/images/{h['uuid']}" for h in hits)


@pytest.mark.parametrize("path", ["/", "/health", "/static/app.js", "/images/x", "/docs"])
def test_security_headers_on_every_answer(open_client, path):
    headers = open_client.get(path).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]  # /docs included


def test_cors_is_off_by_default(open_client):
    preflight = open_client.options("/search", headers={
        "Origin": "https://other.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 400  # handled, and refused: never a 405
    assert "access-control-allow-origin" not in preflight.headers
    plain = open_client.get("/health", headers={"Origin": "https://other.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_allow_list(demo):
    env = {**demo_env(demo.home), "IMGSEARCH_API_CORS_ORIGINS": "https://app.example"}
    with TestClient(create_app(env)) as client:
        allowed = client.options("/search", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        other = client.options("/search", headers={
            "Origin": "https://other.example", "Access-Control-Request-Method": "POST"})
        assert other.status_code == 400


@pytest.mark.parametrize("content_type", [
    "multipart/form-data; boundary=" + "b" * 300,
    "multipart/form-data; boundary=\"\"",
    "multipart/form-data; boundary=" + "\u00e9" * 10,
])
def test_malformed_multipart_is_a_4xx_and_logs_no_traceback(open_client, caplog, content_type):
    caplog.set_level(logging.DEBUG)
    body = b"--x\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nSECRETBODY\r\n--x--\r\n"
    response = open_client.post("/search", content=body,
                                headers={"content-type": content_type.encode("utf-8")})
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in caplog.text and "SECRETBODY" not in caplog.text


def test_an_unexpected_error_is_a_json_500_logged_without_traceback(demo, caplog, monkeypatch):
    from imgsearch_pipeline.api import service as service_module

    def boom(*args, **kwargs):
        raise RuntimeError("SECRET query detail")

    monkeypatch.setattr(service_module.SearchService, "search", boom)
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(demo_env(demo.home)), raise_server_exceptions=False) as client:
        response = client.get(f"/images/{sorted(demo.indexed)[0]}/similar")
    assert response.status_code == 500 and response.json() == {"message": "internal error"}
    assert "RuntimeError" in caplog.text
    assert "SECRET" not in caplog.text and "Traceback" not in caplog.text


def _api(env: dict) -> ApiSettings:
    return Settings.read(env).api
