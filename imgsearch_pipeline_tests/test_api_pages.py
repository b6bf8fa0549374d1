"""The page's and the API reference's files: served from the install, nothing from elsewhere."""

import io
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgsearch_pipeline.api.app import create_app

from .test_api import demo_env


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # No index is needed to serve pages: they load and say so.
    with TestClient(create_app(demo_env(tmp_path_factory.mktemp("empty")))) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_pages_load_only_local_files(client, path):
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<style" not in page.text and not re.search(r"<script(?![^>]*\bsrc=)", page.text)
    links = [link for link in re.findall(r'(?:src|href)="([^"]+)"', page.text)
             if not link.startswith("#")]
    assert links and all(link.startswith("/") and not link.startswith("//") for link in links)
    for link in links:
        assert client.get(link).status_code == 200, link


def test_swagger_ui_comes_from_the_installed_package(client):
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    assert client.get("/redoc").status_code == 404  # not served: it needs inline styles


def test_favicon(client):
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    image = Image.open(io.BytesIO(icon.content))
    assert image.format == "ICO" and image.size[0] >= 16
